"""The layout contract (`sepconc.kernels.layout`): the strides of every public module's output.

With fused kernels `PhaseScattering2D` (every method, n <= 16 and n > 16), `TightFrame`,
`Block` and `SepConcNet.features` return channel-major tensors (`(B, C, n, n)` views of
`(C, B, n, n)` storage); with reference kernels, contiguous ones; `Projection` is always
contiguous. Strides are asserted explicitly, not through the helpers under test.
"""

from __future__ import annotations

import pytest
import torch

from sepconc.config import Config
from sepconc.kernels.layout import (
    CHANNEL_MAJOR,
    CONTIGUOUS,
    channel_major,
    contiguous,
    has_layout,
    is_channel_major,
)
from sepconc.layers.frame import TightFrame
from sepconc.layers.projection import Projection
from sepconc.model import build_model
from sepconc.scattering import PhaseScattering2D

KERNEL_SETTINGS = ("reference", "fused")
LAYOUT = {"reference": CONTIGUOUS, "fused": CHANNEL_MAJOR, "auto": CHANNEL_MAJOR}  # on CPU
B = 3


@pytest.fixture(params=KERNEL_SETTINGS)
def kernels(request) -> str:
    return request.param


def expected_strides(x: torch.Tensor, layout: str) -> tuple[int, ...]:
    """The strides of a `(B, C, h, w)` tensor stored in `layout`."""
    b, c, h, w = x.shape
    if layout == CHANNEL_MAJOR:
        return (h * w, b * h * w, w, 1)
    return (c * h * w, h * w, w, 1)


def assert_layout(x: torch.Tensor, layout: str) -> None:
    assert x.stride() == expected_strides(x, layout), (tuple(x.shape), x.stride(), layout)
    assert has_layout(x, layout)


@pytest.mark.parametrize("method", ("auto", "fourier", "conv", "dense"))
@pytest.mark.parametrize("n", (8, 16, 32))
@pytest.mark.parametrize("setting", ("reference", "fused", "auto"))
def test_phase_scattering_layout_for_every_method_and_size(method, n, setting):
    module = PhaseScattering2D(n, 2, method=method, kernels=setting)
    x = torch.randn(B, 2, n, n)
    y = module(x)
    assert module.output_layout(x.device) == LAYOUT[setting]
    assert_layout(y, LAYOUT[setting])
    # the same layout for n <= 16 and n > 16: reshape always works, view after contiguous()
    assert contiguous(y).view(B, -1).shape == (B, 2 * 9 * (n // 2) ** 2)
    torch.testing.assert_close(y.reshape(B, -1), contiguous(y).view(B, -1))


BLOCK_CASES = {
    "phase+P": {"arch": "scatnetblock", "n_blocks": 1, "P_proj_size": [6]},
    "phase+P3": {"arch": "scatnetblock", "n_blocks": 1, "P_proj_size": [6], "P_kernel_size": [3]},
    "phase+P+frame1": {
        "arch": "scatnetblockanalysis",
        "n_blocks": 1,
        "P_proj_size": [6],
        "frame_width": [12],
    },  # fmt: skip
    "phase+P+frame2": {
        "arch": "scatnetblockanalysis",
        "n_blocks": 1,
        "P_proj_size": [6],
        "frame_width": [12],
        "frame_kernel_size": [2],
        "frame_stride": [2],
    },  # fmt: skip
    "tree+P": {"arch": "scatnet", "scattering_J": 2, "P_proj_size": [6]},
    "frame1": {"arch": "analysis", "frame_width": [12]},
    "frame4": {
        "arch": "analysis",
        "frame_width": [12],
        "frame_kernel_size": [4],
        "frame_stride": [4],
    },  # fmt: skip
}


@pytest.mark.parametrize(
    "case,method",
    [(case, method) for case in BLOCK_CASES
     for method in (("auto", "fourier", "conv", "dense") if "phase" in case else ("auto",))],
)  # fmt: skip
@pytest.mark.parametrize("n", (16, 32))
@pytest.mark.parametrize("train", (True, False))
def test_block_output_layout(case, method, n, train, kernels):
    """Every block's output, training and eval, for every phase method and size (the
    fused front-end of `kernels="fused"` runs for the dense blocks in training)."""
    flat = {**BLOCK_CASES[case], "scat_angles": [2], "phase_method": method, "kernels": kernels}
    torch.manual_seed(0)
    net = build_model(Config.from_flat(flat).model, (2, n, n), 3).train(train)
    x = torch.randn(B, 2, n, n)
    (out,) = net.features(x)
    assert net.blocks[0].output_layout(x.device) == LAYOUT[kernels]
    assert_layout(out, LAYOUT[kernels])


def test_features_of_every_block_and_the_cached_input(kernels):
    """`SepConcNet.features`: every block, also with the first front-end skipped (a
    contiguous cached input, as `np.load` gives)."""
    flat = {"arch": "scatnetblockanalysis", "n_blocks": 3, "P_proj_size": [6, 8, 8],
            "frame_width": [12], "scat_angles": [2], "kernels": kernels}  # fmt: skip
    torch.manual_seed(0)
    net = build_model(Config.from_flat(flat).model, (2, 32, 32), 3)
    x = torch.randn(B, 2, 32, 32)
    feats = net.features(x)
    for out in feats:
        assert_layout(out, LAYOUT[kernels])
    cached = net.blocks[0].frontend(x).contiguous()
    with net.frontend_skipped():
        skipped = net.features(cached)
    for out, want in zip(skipped, feats):
        assert_layout(out, LAYOUT[kernels])
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", (1, 2))
@pytest.mark.parametrize("input_layout", (CONTIGUOUS, CHANNEL_MAJOR))
def test_frame_and_projection_layouts(k, input_layout, kernels):
    torch.manual_seed(0)
    x = torch.randn(B, 4, 8, 8)
    if input_layout == CHANNEL_MAJOR:
        x = channel_major(x)
    frame = TightFrame(4, 12, k, k, "relu", kernels=kernels)
    assert_layout(frame(x), LAYOUT[kernels])
    assert_layout(Projection(4, 3, 1)(x), CONTIGUOUS)
    assert_layout(Projection(4, 3, 3)(x), CONTIGUOUS)


def test_helpers():
    x = torch.randn(B, 4, 5, 5)
    cm = channel_major(x)
    assert is_channel_major(cm) and not is_channel_major(x) and not cm.is_contiguous()
    assert torch.equal(cm, x) and channel_major(cm) is cm and contiguous(x) is x
    assert is_channel_major(torch.randn(1, 4, 5, 5)) and is_channel_major(torch.randn(3, 1, 5, 5))
    with pytest.raises(RuntimeError):
        cm.view(B, -1)  # the trap the contract documents
