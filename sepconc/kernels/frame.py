"""The tight-frame operator `A x = fold_p F^T rho(F x_p / ||x_p||)` (notation: `sepconc.kernels`;
the frame's atoms `w: (width, C k^2)`, patches `k x k` at stride `s`).

- `frame_reference`: the operator as two convolutions, stock ops, autograd, any `k`, `s`
  (normalizing patch by patch equals dividing the coefficients of the raw patch by its
  norm): `z = conv(x, F, s) / sqrt(conv(x^2, 1_{k x k}, s))`, output
  `conv_transpose(rho(z), F, s) / count` (`count`: patches covering each pixel). Contiguous.
- `pointwise_frame` (k = 1, stride 1): the same operator as two matrix products over the
  `N = B n^2` rows `X (N, C)`; for relu through `PointwiseReluFrame`, otherwise plain
  autograd on the rows. Channel-major in, channel-major out (`sepconc.kernels.layout`).
- `patch_frame` (k > 1 or stride > 1: overlapping patches): the same matrix products over
  the patch rows `(B h' w', C k^2)` (`sepconc.kernels.patches`), the overlap averaging's
  counts kept per shape. Any layout in, channel-major out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sepconc.precision import float32_region, full

from .common import AUTOCAST_BACKWARD, AUTOCAST_FORWARD, relu_backward_
from .patches import covered_size, fold_rows, patch_count, patch_grid, patch_rows


def rho(z: torch.Tensor, non_linearity: str, threshold: float) -> torch.Tensor:
    """The frame non-linearity: `relu(z - lambda)`, `sign(z) relu(|z| - lambda)` or `|z|`."""
    if non_linearity == "relu":
        return F.relu(z - threshold)
    if non_linearity == "softshrink":
        return F.softshrink(z, threshold)
    if non_linearity == "absolute":
        return z.abs()
    raise ValueError(f"unknown non-linearity {non_linearity!r}")


def frame_reference(x: torch.Tensor, weight: torch.Tensor, stride: int, non_linearity: str,
                    threshold: float) -> torch.Tensor:  # fmt: skip
    """`A x` for `x: (B, C, n, n)` and atoms `weight: (width, C, k, k)`; `(B, C, n, n)`."""
    ones = weight.new_ones(1, *weight.shape[1:])
    with float32_region(x.device.type):  # patch norms in float32 under bf16 (gpu's 2 lines)
        norms = F.conv2d(full(x).square(), ones, stride=stride).sqrt().clamp_min(1e-12)
    z = rho(F.conv2d(x, weight, stride=stride) / norms, non_linearity, threshold)
    y = F.conv_transpose2d(z, weight, stride=stride)
    count = F.conv_transpose2d(torch.ones_like(z[:, :1]), ones[:, :1], stride=stride)
    return y / count.clamp_min(1)


def pointwise_frame(
    x: torch.Tensor, weight: torch.Tensor, non_linearity: str, threshold: float
) -> torch.Tensor:
    """`A x` for 1x1 atoms `weight: (width, C, 1, 1)`, stride 1, as matrix products.

    `x: (B, C, n, n)` -> rows `X: (N, C)` (a transposed view when `x` is channel-major),
    normalized (dividing the C inputs is cheaper than the `width` coefficients),
    `Z = X F^T`, output `rho(Z) F`. On CPU one large GEMM and its backward are several
    times faster than a 1x1 convolution and its transpose (oneDNN), for the same numbers.
    Returns channel-major `(B, C, n, n)`.
    """
    B, C, h, w_ = x.shape
    rows = x.transpose(0, 1).reshape(C, -1).T  # (N, C), stored (C, N); ordered (b, i, j)
    y = frame_rows(rows, weight.reshape(weight.shape[0], C), non_linearity, threshold)
    return y.T.reshape(C, B, h, w_).transpose(0, 1)


def patch_frame(x: torch.Tensor, weight: torch.Tensor, stride: int, non_linearity: str,
                threshold: float) -> torch.Tensor:  # fmt: skip
    """`A x` for atoms `weight: (width, C, k, k)` at any stride, as matrix products over the
    patch rows (`sepconc.kernels.patches`): `X = patch_rows(x)` `(N, C k^2)`, `N = B h' w'`,
    `Y = frame_rows(X)`, output `fold_rows(Y) / count` (`count`: patches covering each pixel,
    kept per shape). The same numbers as `frame_reference` (same patches, same
    normalization, same averaging) with one GEMM and its backward in place of each
    convolution, and no per-step count. `x: (B, C, H, W)` in any layout -> channel-major
    `(B, C, H', W')` (`H' = (h' - 1) s + k`: `H` when the patches tile `x`).
    """
    B, C = x.shape[:2]
    k = weight.shape[-1]
    grid = patch_grid(x.shape[2:], k, stride)
    size = covered_size(grid, k, stride)
    rows = patch_rows(x, k, stride)
    y = frame_rows(rows, weight.reshape(weight.shape[0], -1), non_linearity, threshold)
    image = fold_rows(y, B, C, size, k, stride, channel_major=True)
    return image / patch_count(size, k, stride, x.device, image.dtype)


def frame_rows(rows: torch.Tensor, w: torch.Tensor, non_linearity: str,
               threshold: float) -> torch.Tensor:  # fmt: skip
    """The frame on rows: `rows: (N, d)`, atoms `w: (width, d)` -> `rho(X w^T) w` `(N, d)`,
    `X` the unit-normed rows; relu through `PointwiseReluFrame`, otherwise plain autograd."""
    if non_linearity == "relu":
        return PointwiseReluFrame.apply(rows, w, threshold)
    rows = rows / _row_norms(rows)
    return (w.T @ rho(rows @ w.T, non_linearity, threshold).T).T


class PointwiseReluFrame(torch.autograd.Function):
    """`rows: (N, C)`, `w: (width, C)` -> `relu(X w^T - lambda) w`, `X` the unit-normed rows.

    The same numbers as the plain autograd expression, with the `(N, width)` coefficient
    matrix (the largest tensor of the step: 128 MiB for the first CIFAR-10 block) written
    once and rectified in place, and its gradient masked in place: two fewer passes over
    it forward and one fewer backward (measured on CPU: 390 -> 327 ms forward+backward at
    N = 32768, C = 64, width = 1024). The ReLU's output is its own mask (`out > 0` iff
    `z > lambda`), so nothing else of that size is saved. The output is stored as `rows` is.
    """

    @staticmethod
    @AUTOCAST_FORWARD
    def forward(ctx, rows, w, threshold):
        norms = _row_norms(rows)
        unit = rows / norms
        coeffs = unit.new_empty(len(unit), len(w))
        out = _empty_like_rows(rows)
        # a block of rows at a time: each block of coefficients is rectified and multiplied
        # back while it is still in cache (one read of `coeffs` from memory fewer)
        for block in row_blocks(len(unit), len(w)):
            z = torch.mm(unit[block], w.T, out=coeffs[block]).sub_(threshold).clamp_(min=0)
            torch.mm(z, w, out=out[block])
        ctx.save_for_backward(norms, unit, w, coeffs)
        return out

    @staticmethod
    @AUTOCAST_BACKWARD
    def backward(ctx, grad):
        norms, unit, w, coeffs = ctx.saved_tensors
        grad_w = coeffs.T @ grad
        # No gradient at the rows when nothing asks for it (the `analysis` frame reads the
        # images): one of the four (N, width)-sized matrix products fewer.
        needs_rows = ctx.needs_input_grad[0]
        grad_unit = torch.empty_like(unit) if needs_rows else None
        # The coefficients' gradient `mask * (grad w^T)` is as large as `coeffs`; made and
        # used a block of rows at a time (a reused ~16 MiB buffer), it never costs a fresh
        # (N, width) allocation, whose page faults on CPU cost more than the masking pass.
        for block in row_blocks(len(unit), len(w)):
            grad_z = relu_backward_(grad[block] @ w.T, coeffs[block])
            if needs_rows:
                grad_unit[block] = grad_z @ w
            grad_w.addmm_(grad_z.T, unit[block])
        if not needs_rows:
            return None, grad_w, None
        # through `unit = rows / ||rows||`: project out the radial part, divide by the norm
        grad_rows = (grad_unit - unit * (unit * grad_unit).sum(1, keepdim=True)) / norms
        return grad_rows, grad_w, None


def relu_frame_reference(rows: torch.Tensor, w: torch.Tensor, threshold: float) -> torch.Tensor:
    """`PointwiseReluFrame`'s reference: `relu(X w^T - lambda) w`, plain autograd."""
    unit = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return F.relu(unit @ w.T - threshold) @ w


#: Elements of one row block of the frame's coefficients (4M floats: 16 MiB), and the
#: fewest rows in a block (so its matrix products stay large).
ROW_BLOCK_ELEMENTS = 1 << 22
MIN_BLOCK_ROWS = 256


def row_blocks(rows: int, width: int) -> list[slice]:
    """Row blocks of about `ROW_BLOCK_ELEMENTS` coefficients each."""
    step = max(MIN_BLOCK_ROWS, ROW_BLOCK_ELEMENTS // width)
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
