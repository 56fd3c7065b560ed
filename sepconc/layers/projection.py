"""Learned linear projection `P`, the standardization before it, the normalization after it.

Layout: the 1x1 path works on *channel-major* activations, the `(B, C, n, n)` tensor
stored as `(C, B, n, n)` (a `permute(1, 0, 2, 3)` view: same shape, same values). Then
every channel is one contiguous row of `B n^2` numbers, so the batch statistics are
row reductions and `P` is one matrix product `(O, C) @ (C, B n^2)` with no transpose
copy; the frames and the phase scattering (`phase_conv`) read and write the same
layout, so a whole block runs without reordering its largest tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sepconc.scattering.phase_conv import (
    dense_input_gradient,
    dense_linear,
    fold_rectified_gradient_into,
    rectify_into,
)


class Projection(nn.Module):
    """`P`: a bias-free convolution `in_channels -> out_channels`, kernel `k`, orthogonal init.

    For `k > 1` the input is reflect-padded by `(k - 1) // 2` so the spatial size
    is kept (odd `k`). `x: (B, in, n, n) -> (B, out, n, n)`. Its weight is kept
    near a tight frame by the Parseval step (applied by the trainer).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.orthogonal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == 1:  # a matmul over positions: faster backward than a 1x1 conv
            batch, channels, height, width = x.shape
            w = self.weight.reshape(self.weight.shape[0], channels)
            y = torch.matmul(w, x.reshape(batch, channels, height * width))
            return y.reshape(batch, -1, height, width)
        pad = (self.kernel_size - 1) // 2
        if pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(x, self.weight)


def standardize_project(
    x: torch.Tensor, norm: nn.BatchNorm2d, projection: Projection
) -> torch.Tensor:
    """`projection(norm(x))` for a 1x1 `projection` and `norm = BatchNorm2d(C, affine=False)`.

    The same numbers and the same running-statistics update as the two modules (training
    mode: batch statistics, biased variance to normalize, unbiased into the running
    variance; eval mode: the running statistics), but standardization is folded into the
    projection: `P (x - mu) / sigma = (P / sigma) x - (P / sigma) mu`, so the standardized
    `x` is never written, and its backward (`_StandardizedProjection`) costs one matrix
    product and one pass over `x`. `x`: `(B, C, n, n)` in any layout (channel-major is
    free); returns `(B, O, n, n)` channel-major.
    """
    batch, channels, height, width = x.shape
    cols = x.transpose(0, 1).reshape(channels, -1)  # a view when x is channel-major
    p = projection.weight.reshape(projection.weight.shape[0], channels)
    if norm.training:
        y = _StandardizedProjection.apply(
            cols, p, norm.eps, norm.running_mean, norm.running_var, _count_batch(norm)
        )
    else:
        y = _project_standardized(p, norm.running_mean, (norm.running_var + norm.eps).rsqrt(),
                                  cols)  # fmt: skip
    return y.view(-1, batch, height, width).transpose(0, 1)


def phase_standardize_project(
    x: torch.Tensor, operator: torch.Tensor, norm: nn.BatchNorm2d, projection: Projection
) -> torch.Tensor:
    """`standardize_project(phase_scattering_dense(x, operator), norm, projection)` in
    training mode, without ever writing the phase scattering's output or its gradient.

    That output is the step's second-largest tensor (64 MiB for CIFAR-10's block 2) and
    is only read by the standardization and the projection, so
    `_DensePhaseStandardizedProjection` rectifies the linear channels `z = x D` a block of
    input channels at a time into a small buffer, takes that block's statistics and
    accumulates its share of the projection; the backward rebuilds each block from `z`
    and folds its gradient straight back into `z`'s. `x`: `(B, C, n, n)`, any layout;
    returns `(B, O, n/2, n/2)` channel-major.
    """
    batch, n = x.shape[0], x.shape[-1]
    p = projection.weight.reshape(projection.weight.shape[0], -1)
    y = _DensePhaseStandardizedProjection.apply(
        x, operator.to(x.dtype), p, norm.eps, norm.running_mean, norm.running_var,
        _count_batch(norm),
    )  # fmt: skip
    return y.view(-1, batch, n // 2, n // 2).transpose(0, 1)


def _count_batch(norm: nn.BatchNorm2d) -> float:
    """Count one training batch in `norm` and return the running statistics' momentum."""
    momentum = norm.momentum
    if norm.track_running_stats:
        norm.num_batches_tracked.add_(1)
        if momentum is None:  # cumulative moving average, as BatchNorm
            momentum = 1.0 / float(norm.num_batches_tracked)
    return momentum or 0.0


class _StandardizedProjection(torch.autograd.Function):
    """`cols: (C, N)`, `p: (O, C)` -> `p xhat` with `xhat = (cols - mu) / sigma` per row.

    Backward, with `g = p^T dy` the gradient at `xhat` and `G = dy cols^T`:
    `dp = (G - (dy 1) mu^T) / sigma` (= `dy xhat^T`), and BatchNorm's input gradient
    `dx = (g - mean(g) - xhat mean(g xhat)) / sigma`, whose two row means come from
    `O x C` products: `mean(g) = p^T (dy 1) / N`, `mean(g xhat) = sum_o p * dp / N`.
    So `dx = (p / sigma)^T dy + u x + v` (per-row `u`, `v`): one GEMM plus one pass.
    Running statistics (when given) are updated in place, as BatchNorm does.
    """

    @staticmethod
    def forward(ctx, cols, p, eps, running_mean, running_var, momentum):
        var, mean = _row_var_mean(cols)
        inv_std = (var + eps).rsqrt()
        y = _project_standardized(p, mean, inv_std, cols)
        _update_running_stats(running_mean, running_var, mean, var, cols.shape[1], momentum)
        ctx.save_for_backward(cols, p, mean, inv_std)
        return y

    @staticmethod
    def backward(ctx, grad):
        cols, p, mean, inv_std = ctx.saved_tensors
        sums = grad.sum(1)
        mean_g = (p.T @ sums) / cols.shape[1]
        grad_cols = torch.empty_like(cols) if ctx.needs_input_grad[0] else None
        grad_p = _standardized_projection_grads(grad, sums, cols, p, mean, inv_std, mean_g,
                                                grad_cols)  # fmt: skip
        return grad_cols, grad_p, None, None, None, None


def _project_standardized(p, mean, inv_std, cols) -> torch.Tensor:
    """`p (cols - mean) inv_std` (per row) as `(p inv_std) cols - (p inv_std) mean`."""
    scaled = p * inv_std
    return torch.addmm((scaled @ mean).neg_().unsqueeze(1), scaled, cols)


def _update_running_stats(running_mean, running_var, mean, var, n: int, momentum) -> None:
    """BatchNorm's update, in place: the unbiased variance goes into the running one."""
    if running_mean is not None:
        running_mean.lerp_(mean, momentum)
        running_var.lerp_(var * (n / max(n - 1, 1)), momentum)


def _standardized_projection_grads(grad, sums, cols, p, mean, inv_std, mean_g, grad_cols):
    """Gradients of `p xhat` (`_StandardizedProjection`) for the rows `cols` of `xhat`.

    `grad: (O, N)` and its row sums `sums`; `p`, `mean`, `inv_std`, `mean_g` (`p^T sums
    / N`) restricted to those rows. Returns `dp`; writes `dx` into `grad_cols` unless it
    is None.
    """
    n = cols.shape[1]
    grad_p = (grad @ cols.T).sub_(sums.unsqueeze(1) * mean).mul_(inv_std)
    if grad_cols is not None:
        mean_gx = (p * grad_p).sum(0) / n
        u = -mean_gx * inv_std.square()
        v = -mean_g * inv_std - mean * u
        torch.addcmul(v.unsqueeze(1), cols, u.unsqueeze(1), out=grad_cols)
        grad_cols.addmm_((p * inv_std).T, grad)
    return grad_p


class _DensePhaseStandardizedProjection(torch.autograd.Function):
    """`x` -> `p xhat`, `xhat` the standardized rows of the dense phase scattering of `x`.

    The same arithmetic as `_DenseRectified` then `_StandardizedProjection`, a block of
    input channels (`_channel_blocks`) at a time: the phase scattering's `C(1+4L)` rows
    exist only as one block's rows in a reused buffer, forward and backward.
    """

    @staticmethod
    def forward(ctx, x, operator, p, eps, running_mean, running_var, momentum):
        z = dense_linear(x, operator)
        channels, batch, linear, m = z.shape
        k, n = 2 * linear - 1, batch * m
        mean, var = p.new_empty(channels * k), p.new_empty(channels * k)
        y = p.new_zeros(p.shape[0], n)
        buf = None
        for block in _channel_blocks(channels, k * n):
            cols, buf = _phase_rows(z, block, buf)
            rows = slice(block.start * k, block.stop * k)
            var[rows], mean[rows] = _row_var_mean(cols)
            y.addmm_(p[:, rows] * (var[rows] + eps).rsqrt(), cols)
        inv_std = (var + eps).rsqrt()
        y.sub_(((p * inv_std) @ mean).unsqueeze(1))
        _update_running_stats(running_mean, running_var, mean, var, n, momentum)
        ctx.save_for_backward(z, operator, p, mean, inv_std)
        return y

    @staticmethod
    def backward(ctx, grad):
        z, operator, p, mean, inv_std = ctx.saved_tensors
        channels, batch, linear, m = z.shape
        k, n = 2 * linear - 1, batch * m
        sums = grad.sum(1)
        grad_p = torch.empty_like(p)
        need_x = ctx.needs_input_grad[0]
        grad_z = torch.empty_like(z) if need_x else None
        mean_g = (p.T @ sums) / n
        buf = grad_buf = None
        for block in _channel_blocks(channels, k * n):
            cols, buf = _phase_rows(z, block, buf)
            rows = slice(block.start * k, block.stop * k)
            grad_cols = None
            if need_x:
                if grad_buf is None:
                    grad_buf = buf.new_empty(buf.numel())
                grad_cols = grad_buf[: cols.numel()].view_as(cols)
            grad_p[:, rows] = _standardized_projection_grads(
                grad, sums, cols, p[:, rows], mean[rows], inv_std[rows], mean_g[rows], grad_cols
            )
            if need_x:  # folded straight into z's gradient
                fold_rectified_gradient_into(grad_cols.view(-1, k, batch, m),
                                             cols.view(-1, k, batch, m), grad_z[block])  # fmt: skip
        grad_x = dense_input_gradient(grad_z, operator) if need_x else None
        return grad_x, None, grad_p, None, None, None, None


#: Elements of one block of phase-scattering rows (2M floats: 8 MiB, cache-sized).
_BLOCK_ELEMENTS = 1 << 21
#: Smallest phase-scattering output (elements) worth fusing. Measured on CPU, forward +
#: backward, batch 128, L = 8: CIFAR-10 block 2 (17.3M elements) 256 -> 206 ms, block 3
#: (8.7M) 152 -> 117 ms, block 4 (4.3M) 122 -> 130 ms (too few blocks to pay for them).
FUSED_MIN_ELEMENTS = 1 << 23


def _channel_blocks(channels: int, per_channel: int) -> list[slice]:
    """Input-channel blocks of about `_BLOCK_ELEMENTS` output elements (at least one)."""
    step = max(1, _BLOCK_ELEMENTS // per_channel)
    return [slice(start, min(start + step, channels)) for start in range(0, channels, step)]


def _phase_rows(z: torch.Tensor, block: slice, buf: torch.Tensor | None):
    """One block's rectified phase scattering as rows `(c(1+4L), B m)`, in `buf`."""
    c = block.stop - block.start
    _, batch, linear, m = z.shape
    if buf is None:
        buf = z.new_empty(c, 2 * linear - 1, batch, m)
    out = rectify_into(z[block], buf[:c])
    return out.view(-1, batch * m), buf


def _row_var_mean(cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Biased variance and mean of every row of `cols: (C, N)`.

    On CPU, `E[x^2] - E[x]^2` from two vectorized reductions: about 20x faster than
    `torch.var_mean` (Welford), whose cost was the largest part of the block's
    standardization. Its rounding error grows like `(mean / std)^2`, so rows with
    `mean^2 > 100 var` (error above ~1e-5 relative in float32) are recomputed exactly.
    Other devices use `torch.var_mean`.
    """
    if cols.device.type != "cpu":  # fast there, and no host sync for the fallback's test
        return torch.var_mean(cols, dim=1, correction=0)
    n = cols.shape[1]
    mean = cols.sum(1) / n
    var = (torch.linalg.vector_norm(cols, dim=1).square() / n - mean.square()).clamp_min_(0)
    risky = (mean.square() > 100 * var).nonzero().squeeze(1)
    if len(risky):
        var[risky], mean[risky] = torch.var_mean(cols[risky], dim=1, correction=0)
    return var, mean


def normalize_positions(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each spatial position's channel vector by its Euclidean norm.

    `x: (B, C, n, n)`. `eps` only guards an all-zero vector (left at zero).
    """
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)
