"""Tight-frame operator `A`: separation (ReLU) or concentration (soft-thresholding).

For a signal `x: (B, C, n, n)`, the frame `F` has `width` atoms of shape
`(C, k, k)` (`d = C k^2`). Patches `x_p` (k x k, stride s) are normalized, then
`A x = fold_p F^T rho(F x_p / ||x_p||)`, where overlapping reconstructions are
averaged. `A` maps a signal to the same space (docs/models.md "Tight-frame operator").

Normalizing patch by patch equals dividing the frame coefficients of the raw
patch by the patch norm, so the whole operator is two convolutions:
`z = conv(x, F, stride=s) / sqrt(conv(x^2, 1_{k x k}, stride=s))` and the output
`conv_transpose(rho(z), F, stride=s) / count`, with `count` the number of
patches covering each pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sepconc.frames import (
    relu_threshold,
    reset_atom_norms,
    softshrink_threshold,
    target_atom_norm,
)


def rho(z: torch.Tensor, non_linearity: str, threshold: float) -> torch.Tensor:
    """The frame non-linearity: `relu(z - lambda)`, `sign(z) relu(|z| - lambda)` or `|z|`."""
    if non_linearity == "relu":
        return F.relu(z - threshold)
    if non_linearity == "softshrink":
        return F.softshrink(z, threshold)
    if non_linearity == "absolute":
        return z.abs()
    raise ValueError(f"unknown non-linearity {non_linearity!r}")


class TightFrame(nn.Module):
    """The operator `A`, with atom norms reset to the tight-frame value before each forward."""

    def __init__(
        self,
        channels: int,
        width: int,
        kernel_size: int = 1,
        stride: int = 1,
        non_linearity: str = "relu",
        zero_bias: bool = False,
    ):
        super().__init__()
        self.channels, self.width = channels, width
        self.kernel_size, self.stride = kernel_size, stride
        self.non_linearity = non_linearity
        self.dim = channels * kernel_size**2
        self.atom_norm = target_atom_norm(width, self.dim)
        self.threshold = {
            "relu": relu_threshold(width, zero_bias),
            "softshrink": softshrink_threshold(width),
            "absolute": 0.0,
        }[non_linearity]
        self.weight = nn.Parameter(torch.empty(width, channels, kernel_size, kernel_size))
        nn.init.orthogonal_(self.weight)
        reset_atom_norms(self.weight, self.atom_norm)
        self.register_buffer(
            "patch_ones", torch.ones(1, channels, kernel_size, kernel_size), persistent=False
        )

    def patch_norms(self, x: torch.Tensor) -> torch.Tensor:
        """`||x_p||` for every patch: `(B, 1, n', n')`."""
        return F.conv2d(x.square(), self.patch_ones, stride=self.stride).sqrt()

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """Frame coefficients of the normalized patches, `F x_p / ||x_p||`: `(B, width, n', n')`."""
        # Through `.data`: the reset must not bump the parameter's autograd version, or a
        # second forward before `backward()` (e.g. `A(x) - A(-x)`) invalidates the first
        # graph. Values only change after an optimizer/Parseval step, which bumps it itself.
        reset_atom_norms(self.weight.data, self.atom_norm)
        z = F.conv2d(x, self.weight, stride=self.stride)
        return z / self.patch_norms(x).clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == 1 and self.stride == 1:
            return self._forward_pointwise(x)
        z = rho(self.coefficients(x), self.non_linearity, self.threshold)
        y = F.conv_transpose2d(z, self.weight, stride=self.stride)
        if self.kernel_size == 1 and self.stride == 1:
            return y
        count = F.conv_transpose2d(
            torch.ones_like(z[:, :1]), self.patch_ones[:, :1], stride=self.stride
        )
        return y / count.clamp_min(1)

    def _forward_pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """k = 1, stride 1: the same operator as two matrix products over all positions.

        `x: (B, C, n, n)` -> rows `X: (B n^2, C)`, normalized (dividing the C inputs is
        cheaper than the `width` coefficients), `Z = X F^T`, output `rho(Z) F`. On CPU one
        large GEMM and its backward are several times faster than a 1x1 convolution and
        its transpose (oneDNN), for the same numbers.
        """
        reset_atom_norms(self.weight.data, self.atom_norm)
        batch, channels, height, width = x.shape
        w = self.weight.reshape(self.width, channels)
        # channel-major x (see `sepconc.layers.projection`): `rows` is a transposed view
        rows = x.permute(0, 2, 3, 1).reshape(-1, channels)
        if self.non_linearity == "relu":
            y = PointwiseReluFrame.apply(rows, w, self.threshold)
        else:
            rows = rows / _row_norms(rows)
            y = _matmul_like(rho(rows @ w.T, self.non_linearity, self.threshold), w, rows)
        return y.reshape(batch, height, width, channels).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, width={self.width}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, non_linearity={self.non_linearity}, "
            f"threshold={self.threshold:.4g}"
        )


class PointwiseReluFrame(torch.autograd.Function):
    """`rows: (N, C)`, `w: (width, C)` -> `relu(X w^T - lambda) w`, `X` the unit-normed rows.

    The same numbers as the autograd graph of `_forward_pointwise`, with the `(N, width)`
    coefficient matrix (the largest tensor of the step: 128 MiB for the first CIFAR-10
    block) written once and rectified in place, and its gradient masked in place: two
    fewer passes over it forward and one fewer backward (measured on CPU: 390 -> 327 ms
    forward+backward at N = 32768, C = 64, width = 1024). The ReLU's output is its own
    mask (`out > 0` iff `z > lambda`), so nothing else of that size is saved.
    """

    @staticmethod
    def forward(ctx, rows, w, threshold):
        norms = _row_norms(rows)
        unit = rows / norms
        coeffs = unit.new_empty(len(unit), len(w))
        out = _empty_like_rows(rows)
        # a block of rows at a time: each block of coefficients is rectified and multiplied
        # back while it is still in cache (one read of `coeffs` from memory fewer)
        for block in _row_blocks(len(unit), len(w)):
            z = torch.mm(unit[block], w.T, out=coeffs[block]).sub_(threshold).clamp_(min=0)
            out[block] = z @ w
        ctx.save_for_backward(norms, unit, w, coeffs)
        return out

    @staticmethod
    def backward(ctx, grad):
        norms, unit, w, coeffs = ctx.saved_tensors
        grad_w = coeffs.T @ grad
        grad_unit = torch.empty_like(unit)
        # The coefficients' gradient `mask * (grad w^T)` is as large as `coeffs`; made and
        # used a block of rows at a time (a reused ~16 MiB buffer), it never costs a fresh
        # (N, width) allocation, whose page faults on CPU cost more than the masking pass.
        for block in _row_blocks(len(unit), len(w)):
            grad_z = grad[block] @ w.T
            # relu's own backward kernel, in place: grad where coeffs > 0, one pass
            torch.ops.aten.threshold_backward.grad_input(
                grad_z, coeffs[block], 0, grad_input=grad_z
            )
            grad_unit[block] = grad_z @ w
            grad_w.addmm_(grad_z.T, unit[block])
        # through `unit = rows / ||rows||`: project out the radial part, divide by the norm
        grad_rows = (grad_unit - unit * (unit * grad_unit).sum(1, keepdim=True)) / norms
        return grad_rows, grad_w, None


#: Elements of one row block of the frame's coefficients (4M floats: 16 MiB), and the
#: fewest rows in a block (so its matrix products stay large).
_BLOCK_ELEMENTS = 1 << 22
_MIN_BLOCK_ROWS = 256


def _row_blocks(rows: int, width: int) -> list[slice]:
    """Row blocks of about `_BLOCK_ELEMENTS` coefficients each."""
    step = max(_MIN_BLOCK_ROWS, _BLOCK_ELEMENTS // width)
    return [slice(start, start + step) for start in range(0, rows, step)]


def _stored_transposed(rows: torch.Tensor) -> bool:
    """Whether `(N, C)` `rows` is stored as `(C, N)` (a channel-major block's rows)."""
    return rows.stride(0) == 1 and rows.shape[1] > 1


def _empty_like_rows(rows: torch.Tensor) -> torch.Tensor:
    """An uninitialized `(N, C)` tensor stored as `rows` is."""
    if _stored_transposed(rows):
        return rows.new_empty(rows.shape[1], rows.shape[0]).T
    return rows.new_empty(rows.shape)


def _row_norms(rows: torch.Tensor) -> torch.Tensor:
    """`||row||` as `(N, 1)`, floored at 1e-12. For rows stored transposed the sum of
    squares runs down contiguous columns: a strided `norm` is ~10x slower."""
    if _stored_transposed(rows):
        return rows.T.square().sum(0).sqrt().clamp_min(1e-12).unsqueeze(1)
    return rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _matmul_like(a: torch.Tensor, b: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`a @ b`, stored transposed when `like` is (a channel-major block's rows stay so)."""
    if _stored_transposed(like):
        return (b.T @ a.T).T
    return a @ b
