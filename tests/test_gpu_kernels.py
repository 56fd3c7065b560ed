"""The `gpu` tier: fused kernels against their references on CUDA (skipped without a GPU).

`auto` runs the reference on CUDA (`sepconc.kernels.choose`) until these tests and a
benchmark show a fused path equal and faster; `kernels="fused"` forces the fused kernels
there. Checked per kernel family (the same models as tests/test_kernels_parity.py) and
per kernel, in three numeric modes, each with its tolerance:

- `fp32`: float32, TF32 off: rounding only (`rtol 1e-4`);
- `tf32`: float32 matmuls/convolutions in TF32 (10-bit mantissa): `rtol 2e-2`;
- `bf16`: `torch.autocast(dtype=bfloat16)` (8-bit mantissa): `rtol 6e-2` on the loss.

Every mode is also compared with the float64 CPU reference, so a CUDA-only fault in
both paths (say a wrong stride assumption) cannot pass by agreeing with itself.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from sepconc.config import Config
from sepconc.kernels.frame import PointwiseReluFrame, relu_frame_reference
from sepconc.kernels.layout import is_channel_major
from sepconc.kernels.phase_dense import phase_dense_fused, phase_dense_reference
from sepconc.model import build_model
from sepconc.precision import autocast, set_tf32, tf32_enabled
from sepconc.scattering import PhaseScattering2D
from tests.test_kernels_parity import FAMILIES

pytestmark = pytest.mark.gpu

#: (loss rtol, gradient/output rtol) per numeric mode (see the module docstring).
TOLERANCES = {"fp32": (1e-4, 1e-3), "tf32": (2e-2, 5e-2), "bf16": (6e-2, 2e-1)}


@contextmanager
def numeric_mode(mode: str):
    """TF32 on for `tf32` (through `sepconc.precision`: torch refuses a mix of the legacy
    `allow_tf32` flags and the `fp32_precision` API), bfloat16 autocast for `bf16`."""
    before = tf32_enabled()
    set_tf32(mode == "tf32")
    try:
        with autocast(mode, "cuda"):
            yield
    finally:
        set_tf32(before)


def _step(flat, shape, kernels, device, dtype, mode=None):
    config = Config.from_flat({**flat, "scat_angles": [2], "kernels": kernels}).model
    torch.manual_seed(0)
    net = build_model(config, shape, 3).to(device, dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, *shape, generator=gen).to(device, dtype)
    labels = torch.tensor([0, 1, 2, 1, 0, 1, 2, 0], device=device)
    if "mlp" in flat.get("classifier_type", ""):
        net.eval()  # dropout masks differ between devices
    with numeric_mode(mode) if mode else numeric_mode("fp32"):
        loss = F.cross_entropy(net(x).float(), labels)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    return loss.double().cpu(), [g.double().cpu() for g in grads]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("mode", list(TOLERANCES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_fused_equals_reference_on_cuda(family, mode):
    flat, shape = FAMILIES[family]
    loss_tol, grad_tol = TOLERANCES[mode]
    cpu_loss, cpu_grads = _step(flat, shape, "reference", "cpu", torch.float64)
    results = {
        k: _step(flat, shape, k, "cuda", torch.float32, mode) for k in ("reference", "fused")
    }
    for loss, grads in results.values():
        assert _rel(loss, cpu_loss) <= loss_tol
        for g, want in zip(grads, cpu_grads):
            assert _rel(g, want) <= grad_tol
    (ref_loss, ref_grads), (fused_loss, fused_grads) = results.values()
    assert _rel(fused_loss, ref_loss) <= loss_tol
    for g, want in zip(fused_grads, ref_grads):
        assert _rel(g, want) <= grad_tol


@pytest.mark.parametrize("mode", ("fp32", "tf32"))
def test_kernels_on_cuda(mode):
    """Each fused Function against its reference function on CUDA (values and gradients),
    and the channel-major layout of its output."""
    _, grad_tol = TOLERANCES[mode]
    torch.manual_seed(0)
    phase = PhaseScattering2D(16, 4, method="dense").cuda()
    x = torch.randn(16, 3, 16, 16, device="cuda", requires_grad=True)
    with numeric_mode(mode):
        got, want = phase_dense_fused(x, phase.dense), phase_dense_reference(x, phase.dense)
        assert is_channel_major(got)
        assert _rel(got, want) <= grad_tol
        grad = torch.randn_like(want)
        (g1,), (g2,) = torch.autograd.grad(got, x, grad), torch.autograd.grad(want, x, grad)
        assert _rel(g1, g2) <= grad_tol
        rows = torch.randn(4096, 32, device="cuda", requires_grad=True)
        w = (torch.randn(256, 32, device="cuda") / 8).requires_grad_(True)
        got, want = PointwiseReluFrame.apply(rows, w, 0.05), relu_frame_reference(rows, w, 0.05)
        assert _rel(got, want) <= grad_tol
        grad = torch.randn_like(want)
        for a, b in zip(torch.autograd.grad(got, (rows, w), grad),
                        torch.autograd.grad(want, (rows, w), grad)):  # fmt: skip
            assert _rel(a, b) <= grad_tol
