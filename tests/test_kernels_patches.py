"""The frame on overlapping patches (`kernels.frame.patch_frame`, `kernels.patches`) against
the reference's convolutions, in float64.

- `patch_frame` equals `frame_reference` (output, gradients at the input and at the atoms)
  for every patch size and stride of the configs (MNIST 14/7, CIFAR-10 4..16/4, the
  layout tests' 2/2), a stride that does not divide `k` (3/2), a size the patches do not
  tile, every non-linearity, contiguous and channel-major inputs;
- `patch_rows` and `fold_rows` are each other's adjoint, and `patch_count` is the
  reference's count, computed once per shape;
- `TightFrame` with fused kernels runs the patch path and gives the reference's numbers.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sepconc.kernels import patches
from sepconc.kernels.choose import frame_path
from sepconc.kernels.frame import frame_reference, patch_frame
from sepconc.kernels.layout import channel_major, is_channel_major
from sepconc.layers.frame import TightFrame

#: (C, n, k, s, width, non-linearity, channel-major input): the configs' patch frames at
#: small sizes (MNIST 14/7; CIFAR-10 k = 4..16 at stride 4; the layout tests' 2/2), a
#: stride that does not divide k, sizes the patches do not tile, k = 1 at stride 2.
CASES = {
    "mnist 14/7": (1, 28, 14, 7, 40, "relu", False),
    "mnist 14/7 cm": (1, 28, 14, 7, 40, "softshrink", True),
    "cifar 8/4": (3, 16, 8, 4, 24, "absolute", False),
    "cifar 16/4": (3, 20, 16, 4, 24, "relu", True),
    "cifar 12/4": (2, 20, 12, 4, 20, "softshrink", False),
    "cifar 4/4": (3, 8, 4, 4, 24, "relu", True),
    "block 2/2": (4, 6, 2, 2, 12, "softshrink", True),
    "3/2": (2, 9, 3, 2, 12, "absolute", True),
    "3/2 untiled": (2, 10, 3, 2, 12, "relu", False),
    "1/2": (2, 7, 1, 2, 6, "softshrink", False),
}


def _forward_backward(fn, x, w):
    y = fn(x, w)
    g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad((y * g).sum(), [x, w])
    return (y, *grads)


@pytest.mark.parametrize("case", list(CASES))
def test_patch_frame_equals_the_convolutions(case):
    C, n, k, s, width, non_linearity, cm = CASES[case]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, C, n, n, dtype=torch.float64, generator=gen)
    x = (channel_major(x) if cm else x).requires_grad_()
    w = torch.randn(width, C, k, k, dtype=torch.float64, generator=gen)
    w = (w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).requires_grad_()
    lam = 0.1 if non_linearity != "absolute" else 0.0
    want = _forward_backward(lambda x, w: frame_reference(x, w, s, non_linearity, lam), x, w)
    got = _forward_backward(lambda x, w: patch_frame(x, w, s, non_linearity, lam), x, w)
    assert is_channel_major(got[0])
    for a, b, name in zip(got, want, ("output", "grad x", "grad atoms")):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("case", ("mnist 14/7", "3/2 untiled", "cifar 16/4"))
def test_rows_and_fold_are_adjoint(case):
    C, n, k, s = CASES[case][:4]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, C, n, n, dtype=torch.float64, generator=gen)
    rows = patches.patch_rows(x, k, s)
    grid = patches.patch_grid((n, n), k, s)
    assert rows.shape == (2 * grid[0] * grid[1], C * k * k)
    # the last row is the last image's bottom-right patch, flattened (c, u, v)
    i, j = (grid[0] - 1) * s, (grid[1] - 1) * s
    torch.testing.assert_close(rows[-1], x[-1, :, i : i + k, j : j + k].reshape(-1), rtol=0, atol=0)
    r = torch.randn(rows.shape, dtype=torch.float64, generator=gen)
    image = patches.fold_rows(r, 2, C, (n, n), k, s)
    assert image.shape == x.shape
    torch.testing.assert_close((image * x).sum(), (r * rows).sum(), rtol=1e-12, atol=1e-12)
    # and autograd uses each as the other's backward
    x.requires_grad_()
    grad_x = torch.autograd.grad((patches.patch_rows(x, k, s) * r).sum(), x)[0]
    torch.testing.assert_close(grad_x, image, rtol=0, atol=0)
    r.requires_grad_()
    grad_r = torch.autograd.grad((patches.fold_rows(r, 2, C, (n, n), k, s) * x).sum(), r)[0]
    torch.testing.assert_close(grad_r, rows, rtol=0, atol=0)


def test_patch_count_is_the_reference_count_and_kept():
    size, k, s = (28, 28), 14, 7
    count = patches.patch_count(size, k, s, "cpu", torch.float64)
    ones = torch.ones(1, 1, k, k, dtype=torch.float64)
    want = F.conv_transpose2d(torch.ones(1, 1, 3, 3, dtype=torch.float64), ones, stride=s)
    torch.testing.assert_close(count, want[0, 0], rtol=0, atol=0)
    assert patches.patch_count(size, k, s, "cpu", torch.float64) is count  # once per shape
    # a count first made under inference mode still serves a training step
    with torch.inference_mode():
        first = patches.patch_count((11, 11), 3, 4, "cpu", torch.float64)
    assert not first.is_inference()
    x = torch.randn(1, 1, 11, 11, dtype=torch.float64, requires_grad=True)
    patch_frame(x, torch.randn(5, 1, 3, 3, dtype=torch.float64), 4, "relu", 0.1).sum().backward()


@pytest.mark.parametrize("non_linearity", ("relu", "softshrink"))
def test_tight_frame_runs_the_patch_path(non_linearity):
    assert frame_path("fused", "cpu", 14, 7) == "patches"
    assert frame_path("auto", "cpu", 2, 2) == "patches"
    assert frame_path("auto", "cpu", 1, 1) == "pointwise"
    assert frame_path("reference", "cpu", 14, 7) == "reference"
    assert frame_path("auto", "cuda", 14, 7) == "reference"
    torch.manual_seed(0)
    frames = {k: TightFrame(1, 40, 14, 7, non_linearity, kernels=k).double() for k in
              ("fused", "reference")}  # fmt: skip
    frames["fused"].load_state_dict(frames["reference"].state_dict())
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    out = {k: f(x) for k, f in frames.items()}
    for y in out.values():
        y.square().sum().backward()
    torch.testing.assert_close(out["fused"], out["reference"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(frames["fused"].weight.grad, frames["reference"].weight.grad,
                               rtol=1e-10, atol=1e-12)  # fmt: skip
