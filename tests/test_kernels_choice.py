"""The one switch (`sepconc.kernels.choose`): its decisions, and that no other code decides.

- `choose_kernels` on CPU with `auto` makes the decisions measured there (dense phase
  scattering for n <= 16, its fusion with the standardization and projection from
  `FUSED_MIN_ELEMENTS` on, the k = 1 frame and the 1x1 projection fused); on CUDA `auto`
  is the reference; `fused` and `reference` mean the same on every device.
- Grep level: the fused kernels' Functions are applied only in `sepconc/kernels/`, the fused
  entry points are called only from the module-building code, and the decision constants
  and rules appear nowhere but `choose.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from sepconc.config import Config
from sepconc.errors import UserError
from sepconc.kernels import choose
from sepconc.kernels.choose import FUSED_MIN_ELEMENTS, choose_kernels
from sepconc.model import plan_model

ROOT = Path(__file__).resolve().parent.parent / "sepconc"
KERNELS_DIR = ROOT / "kernels"
#: The code that builds modules from the kernels (and asks `choose` which to run).
BUILDERS = {ROOT / "model.py", ROOT / "layers" / "frame.py", ROOT / "scattering" / "phase.py"}
FUNCTIONS = ("DenseRectified", "StandardizedProjection", "DensePhaseStandardizedProjection",
             "PointwiseReluFrame", "PatchRows", "FoldRows")  # fmt: skip
ENTRY_POINTS = ("phase_dense_fused", "standardize_project", "phase_standardize_project",
                "pointwise_frame", "patch_frame")  # fmt: skip
RULES = ("FUSED_MIN_ELEMENTS", "AUTO_DENSE_MAX_N", "frame_is_pointwise", "KernelChoice(")


def sources() -> dict[Path, str]:
    return {path: path.read_text() for path in ROOT.rglob("*.py")}


def cifar_plans(**flat):
    config = Config.from_flat({"arch": "scatnetblockanalysis", "n_blocks": 4,
                               "P_proj_size": [64, 128, 256, 512], **flat}).model  # fmt: skip
    return config, plan_model(config, (3, 32, 32))


def test_auto_on_cpu_is_the_measured_choice():
    config, plans = cifar_plans()
    choices = [choose_kernels(p, config, "cpu") for p in plans]
    assert [c.phase_method for c in choices] == ["conv", "dense", "dense", "dense"]
    assert all(c.fused and c.fused_projection and c.fused_frame for c in choices)
    per_image = [p.frontend_channels * p.frontend_size**2 for p in plans]
    fused_at_128 = [c.fuses_frontend(128 * e, True) for c, e in zip(choices, per_image)]
    assert fused_at_128 == [False, True, True, False]  # blocks 2, 3: >= FUSED_MIN_ELEMENTS
    assert not choices[1].fuses_frontend(FUSED_MIN_ELEMENTS, training=False)  # eval: never
    assert choices[1].fuses_frontend(FUSED_MIN_ELEMENTS, True)


@pytest.mark.parametrize("device", ("cpu", "cuda"))
def test_fused_and_reference_mean_the_same_on_every_device(device):
    config, plans = cifar_plans(kernels="fused")
    for c in (choose_kernels(p, config, device) for p in plans):
        assert c.fused and c.layout == "channel-major"
        assert c.fuses_frontend(1, True) == (c.phase_method == "dense")  # whatever its size
    config, plans = cifar_plans(kernels="reference")
    for c in (choose_kernels(p, config, device) for p in plans):
        assert not (c.fused or c.fused_projection or c.fused_frame)
        assert not c.fuses_frontend(10**12, True) and c.layout == "contiguous"
        assert c.phase_method in ("conv", "dense")  # phase_method stays its own option


def test_auto_on_cuda_is_the_reference():
    config, plans = cifar_plans()
    reference, _ = cifar_plans(kernels="reference")
    for p in plans:
        assert choose_kernels(p, config, torch.device("cuda")) == choose_kernels(
            p, reference, "cuda"
        )


def test_phase_method_and_projection_kernel_are_respected():
    config, plans = cifar_plans(phase_method="fourier", P_kernel_size=[3, 1, 1, 1], kernels="fused")
    choices = [choose_kernels(p, config, "cpu") for p in plans]
    assert {c.phase_method for c in choices} == {"fourier"}
    assert [c.fused_projection for c in choices] == [False, True, True, True]
    assert not any(c.fuses_frontend(10**9, True) for c in choices)  # no dense form: no fusion


def test_an_unknown_setting_is_a_user_error():
    with pytest.raises(UserError, match=r"kernels.*fast.*auto, fused, reference"):
        Config.from_flat({"kernels": "fast"}).validate()
    with pytest.raises(ValueError, match="unknown kernels"):
        choose.uses_fused("fast", "cpu")


def test_no_fused_path_decision_outside_the_chooser():
    for path, text in sources().items():
        where = path.relative_to(ROOT.parent)
        if path != KERNELS_DIR / "choose.py":
            for rule in RULES:
                assert rule not in text, f"{where} uses {rule}: decide in kernels/choose.py"
        for function in FUNCTIONS:
            if re.search(rf"\b{function}\.apply\(", text):
                assert path.parent == KERNELS_DIR, f"{where} applies {function}"
        if path.parent != KERNELS_DIR and path not in BUILDERS:
            for entry in ENTRY_POINTS:
                assert not re.search(rf"\b{entry}\(", text), f"{where} calls {entry}"
        if path in BUILDERS:  # every builder asks the chooser
            assert "from sepconc.kernels.choose import" in text, where


def test_every_frame_is_fused_patches_included():
    config, plans = cifar_plans(frame_kernel_size=[2, 2, 1], frame_stride=[2, 1, 1],
                                frame_width=[64, 256, 256, 512])  # fmt: skip
    assert [(p.frame_kernel, p.frame_stride) for p in plans[:3]] == [(2, 2), (2, 1), (1, 1)]
    assert all(choose_kernels(p, config, "cpu").fused_frame for p in plans)
    paths = [choose.frame_path("auto", "cpu", p.frame_kernel, p.frame_stride) for p in plans]
    assert paths == ["patches", "patches", "pointwise", "pointwise"]
    assert choose.frame_path("auto", "cuda", 2, 2) == "reference"
