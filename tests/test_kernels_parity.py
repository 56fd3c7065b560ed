"""Fused kernels against their references, per kernel family, and on the loss-parity run.

- `--kernels reference` and `--kernels fused` give the same per-epoch losses on the
  loss-parity run (tests/data/generate_loss_parity.py, tolerance `KERNELS_LOSS_RTOL`
  stated there with its reason), and each matches the stored run like `auto` does.
- Each kernel family (relu frame, patch frames, fused phase projection, conv path
  n > 16, scattering tree, mlp head): one float64 training step from a fixed seed gives the same loss,
  block outputs, parameter gradients and running statistics with both settings.
- The one private ATen overload (`common.relu_backward_`) still exists and is ReLU's mask.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from sepconc.config import Config
from sepconc.kernels.common import relu_backward_
from sepconc.model import build_model
from tests.helpers import loss_parity_generator

KERNEL_SETTINGS = ("reference", "fused")


def test_loss_parity_reference_equals_fused(tmp_path):
    generator = loss_parity_generator()
    stored = json.loads(generator.REFERENCE.read_text())
    runs = {k: generator.run(tmp_path / k, kernels=k) for k in KERNEL_SETTINGS}
    rtol = generator.KERNELS_LOSS_RTOL
    for key in ("train_loss", "val_loss"):
        assert runs["fused"][key] == pytest.approx(runs["reference"][key], rel=rtol), key
        # and both are the stored run (as tests/test_trainer.py::test_loss_parity checks auto)
        for values in runs.values():
            assert values[key][0] == pytest.approx(stored[key][0], rel=1e-4), key
            assert values[key][1:] == pytest.approx(stored[key][1:], rel=2e-2), key
    for key in ("train_acc1", "val_acc1"):
        assert runs["fused"][key] == pytest.approx(runs["reference"][key], abs=0.1), key


FAMILIES = {
    # the k = 1 relu frame (PointwiseReluFrame) after a dense phase block
    "relu frame": (
        {
            "arch": "scatnetblockanalysis",
            "n_blocks": 1,
            "P_proj_size": [6],
            "frame_width": [24],
            "non_linearity": "relu",
        },
        (2, 8, 8),
    ),  # fmt: skip
    "analysis relu frame": ({"arch": "analysis", "frame_width": [24]}, (3, 6, 6)),
    # overlapping patches (kernels.frame.patch_frame): the MNIST seed's 14/7 on 28x28, and
    # 2/2 patches on a channel-major phase block's output
    "analysis patch frame 14/7": (
        {"arch": "analysis", "frame_kernel_size": [14], "frame_stride": [7], "frame_width": [40]},
        (1, 28, 28),
    ),  # fmt: skip
    "patch frame 2/2 after phase": (
        {
            "arch": "scatnetblockanalysis",
            "n_blocks": 1,
            "P_proj_size": [6],
            "frame_width": [32],
            "frame_kernel_size": [2],
            "frame_stride": [2],
            "non_linearity": "softshrink",
        },
        (2, 8, 8),
    ),  # fmt: skip
    # dense phase scattering + standardization + projection (two blocks, both fused)
    "fused phase projection": (
        {"arch": "scatnetblock", "n_blocks": 2, "P_proj_size": [6, 8]},
        (2, 16, 16),
    ),  # fmt: skip
    # n > 16: the convolution path, then the standardization folded into P
    "conv path n > 16": (
        {
            "arch": "scatnetblockanalysis",
            "n_blocks": 2,
            "P_proj_size": [6, 8],
            "frame_width": [12, 16],
            "non_linearity": "softshrink",
        },
        (2, 32, 32),
    ),  # fmt: skip
    "scattering tree": ({"arch": "scatnet", "scattering_J": 2, "P_proj_size": [12]}, (2, 16, 16)),
    "mlp head": (
        {
            "arch": "scatnetblockanalysis",
            "n_blocks": 1,
            "P_proj_size": [6],
            "frame_width": [12],
            "classifier_type": "mlp",
            "nb_hidden_units": 16,
            "avg_ker_size": 2,
        },
        (1, 8, 8),
    ),  # fmt: skip
}


def _step(flat: dict, shape: tuple, kernels: str):
    config = Config.from_flat({**flat, "scat_angles": [2], "kernels": kernels}).model
    torch.manual_seed(0)
    net = build_model(config, shape, 3).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, *shape, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 1])
    torch.manual_seed(2)  # the same dropout masks
    feats = net.features(x)
    loss = F.cross_entropy(net.classifier(feats[-1]), labels)
    grads = torch.autograd.grad(loss, [p for p in net.parameters()])
    stats = [b.standardize.running_var for b in net.blocks if b.standardize is not None]
    return loss, feats, grads, stats


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fused_equals_reference_per_family(family):
    flat, shape = FAMILIES[family]
    ref, fused = (_step(flat, shape, k) for k in KERNEL_SETTINGS)
    torch.testing.assert_close(fused[0], ref[0], rtol=1e-10, atol=1e-12)
    for group in (1, 2, 3):
        assert len(fused[group]) == len(ref[group])
        for a, b in zip(fused[group], ref[group]):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_the_private_relu_backward_overload_exists():
    """`relu_backward_` relies on `torch.ops.aten.threshold_backward.grad_input` (private):
    if a PyTorch release drops or changes it, this fails here first, by name."""
    assert hasattr(torch.ops.aten.threshold_backward, "grad_input"), (
        "torch.ops.aten.threshold_backward.grad_input is gone: replace the body of "
        "sepconc.kernels.common.relu_backward_ with grad.mul_(out > 0)"
    )
    grad, out = torch.randn(50, 7), torch.randn(50, 7).relu()
    want = grad * (out > 0)
    assert relu_backward_(grad, out) is grad
    torch.testing.assert_close(grad, want, rtol=0, atol=0)
