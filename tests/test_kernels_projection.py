"""The standardization + projection kernels (`sepconc.kernels.projection`,
`sepconc.kernels.phase_projection`) against the stock modules, and a whole network step
with `kernels="fused"` against `kernels="reference"`.

- `standardize_project` gives BatchNorm2d(affine=False) then `Projection`'s values,
  gradients, running statistics and batch count (train, eval; any input layout).
- The dense phase + standardization + projection fusion, in several channel blocks,
  gives Fourier phase scattering + BatchNorm2d + Projection; its reference too.
- Both Functions pass `gradcheck` in float64.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sepconc.config import Config
from sepconc.kernels import common
from sepconc.kernels.choose import KernelChoice
from sepconc.kernels.projection import StandardizedProjection, standardize_project
from sepconc.layers.projection import Projection
from sepconc.model import build_model

KERNEL_SETTINGS = ("reference", "fused")


def model(**flat):
    return Config.from_flat(flat).model


@pytest.mark.parametrize("layout", ["nchw", "channel-major"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_standardize_project_equals_batchnorm_then_projection(layout, momentum):
    """The fused standardization + 1x1 projection gives BatchNorm2d(affine=False) then
    `Projection`'s values, input and weight gradients, running statistics and batch count,
    in training (three steps) and eval mode; float64. One channel has mean 10^3 x its
    spread (the exact-variance fallback) and one is constant."""
    torch.manual_seed(0)
    ref_norm = nn.BatchNorm2d(7, affine=False, momentum=momentum).double()
    norm = nn.BatchNorm2d(7, affine=False, momentum=momentum).double()
    proj = Projection(7, 5).double()
    for step in range(3):
        x = torch.randn(4, 7, 3, 3, dtype=torch.float64) + step
        x[:, 2] = 1e3 + 1e-3 * x[:, 2]
        x[:, 4] = 2.0
        if layout == "channel-major":
            x = _channel_major(x)
        x.requires_grad_(True)
        want = proj(ref_norm(x))
        got = standardize_project(x, norm, proj)
        assert got.shape == want.shape
        _assert_same_step(got, want, (x, proj.weight), values_tol=1e-9)
    _assert_same_running_statistics(norm, ref_norm)
    norm.eval(), ref_norm.eval()
    torch.testing.assert_close(standardize_project(x, norm, proj), proj(ref_norm(x)))


def _channel_major(x: torch.Tensor) -> torch.Tensor:
    """`x`'s values, stored as `(C, B, n, n)`."""
    return x.transpose(0, 1).contiguous().transpose(0, 1)


def _assert_same_step(got, want, inputs, values_tol: float) -> None:
    """`got` is channel-major and equals `want`, and so do their gradients at `inputs`."""
    assert got.transpose(0, 1).is_contiguous()
    torch.testing.assert_close(got, want, rtol=values_tol, atol=values_tol)
    grad = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, inputs, grad),
                    torch.autograd.grad(want, inputs, grad)):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7)


def _assert_same_running_statistics(norm: nn.BatchNorm2d, ref_norm: nn.BatchNorm2d) -> None:
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(norm, name), getattr(ref_norm, name))


def test_standardized_projection_gradcheck():
    cols = torch.randn(6, 20, dtype=torch.float64, requires_grad=True)
    p = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    fn = lambda c, w: StandardizedProjection.apply(c, w, 1e-5, None, None, 0.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (cols, p), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", ["nchw", "channel-major"])
def test_fused_phase_standardize_project_equals_the_plain_modules(layout, monkeypatch):
    """The fused dense phase scattering + standardization + projection, computed in
    several channel blocks (the last one shorter), gives the plain modules' values
    (Fourier phase scattering, BatchNorm2d, Projection), input and weight gradients and
    running statistics, float64. An all-zero input channel checks the ReLUs' zero
    gradient at 0, where the fused backward reads its masks from the rectified rows."""
    from sepconc.kernels.phase_projection import (
        DensePhaseStandardizedProjection,
        phase_standardize_project,
        phase_standardize_project_reference,
    )
    from sepconc.scattering import PhaseScattering2D

    monkeypatch.setattr(common, "CHANNEL_BLOCK_ELEMENTS", 2 * 9 * 3 * 16)  # 2 channels
    assert len(common.channel_blocks(5, 9 * 3 * 16)) == 3
    torch.manual_seed(0)
    dense = PhaseScattering2D(8, 2, method="dense").double()
    fourier = PhaseScattering2D(8, 2, method="fourier").double()
    norm, ref_norm, ref2_norm = (nn.BatchNorm2d(45, affine=False).double() for _ in range(3))
    proj = Projection(45, 6).double()
    for step in range(2):
        x = torch.randn(3, 5, 8, 8, dtype=torch.float64) + step
        x[:, 3] = 0
        if layout == "channel-major":
            x = _channel_major(x)
        x.requires_grad_(True)
        got = phase_standardize_project(x, dense.dense, norm, proj)
        want = proj(ref_norm(fourier(x)))
        _assert_same_step(got, want, (x, proj.weight), values_tol=1e-8)
        reference = phase_standardize_project_reference(x, dense.dense, ref2_norm, proj)
        assert reference.is_contiguous()
        torch.testing.assert_close(reference, want, rtol=1e-8, atol=1e-8)
    _assert_same_running_statistics(norm, ref_norm)
    _assert_same_running_statistics(ref2_norm, ref_norm)
    cm = torch.randn(3, 5, 8, 8, dtype=torch.float64, requires_grad=True)  # no kink at 0
    p = proj.weight.detach().reshape(6, 45).requires_grad_(True)
    fn = lambda a, w: DensePhaseStandardizedProjection.apply(  # noqa: E731
        a, dense.dense, w, 1e-5, None, None, 0.0
    )
    assert torch.autograd.gradcheck(fn, (cm, p), eps=1e-6, atol=1e-6)


def test_a_network_trains_the_same_with_fused_and_reference_kernels():
    """A whole scatnetblockanalysis step (loss, every gradient, running statistics) is the
    same with `kernels="fused"` (its dense-phase blocks fused with the standardization and
    projection) and `kernels="reference"` (stock modules), float64."""
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 1])
    results = []
    for kernels in KERNEL_SETTINGS:
        config = model(arch="scatnetblockanalysis", n_blocks=2, scat_angles=[2],
                       P_proj_size=[6, 8], frame_width=[12, 16], kernels=kernels)  # fmt: skip
        torch.manual_seed(0)
        net = build_model(config, (2, 8, 8), 3).double()
        choice = net.blocks[0].kernels(x.device)
        assert isinstance(choice, KernelChoice)
        assert choice.fuses_frontend(4 * 18 * 16, True) == (kernels == "fused")
        loss = nn.functional.cross_entropy(net(x), labels)
        grads = torch.autograd.grad(loss, list(net.parameters()))
        results.append((loss, grads, [b.standardize.running_var.clone() for b in net.blocks]))
    (loss_a, grads_a, var_a), (loss_b, grads_b, var_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads_a + tuple(var_a), grads_b + tuple(var_b)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
