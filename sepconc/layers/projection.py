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
        momentum = norm.momentum
        if norm.track_running_stats:
            norm.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative moving average, as BatchNorm
                momentum = 1.0 / float(norm.num_batches_tracked)
        y = _StandardizedProjection.apply(
            cols, p, norm.eps, norm.running_mean, norm.running_var, momentum or 0.0
        )
    else:
        scaled = p * (norm.running_var + norm.eps).rsqrt()
        y = torch.addmm((scaled @ norm.running_mean).neg_().unsqueeze(1), scaled, cols)
    return y.view(-1, batch, height, width).transpose(0, 1)


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
        scaled = p * inv_std
        y = torch.addmm((scaled @ mean).neg_().unsqueeze(1), scaled, cols)
        if running_mean is not None:
            n = cols.shape[1]
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (n / max(n - 1, 1)), momentum)
        ctx.save_for_backward(cols, p, mean, inv_std)
        return y

    @staticmethod
    def backward(ctx, grad):
        cols, p, mean, inv_std = ctx.saved_tensors
        n = cols.shape[1]
        sums = grad.sum(1)
        grad_p = (grad @ cols.T).sub_(sums.unsqueeze(1) * mean).mul_(inv_std)
        grad_cols = None
        if ctx.needs_input_grad[0]:
            mean_g = (p.T @ sums) / n
            mean_gx = (p * grad_p).sum(0) / n
            u = -mean_gx * inv_std.square()
            v = -mean_g * inv_std - mean * u
            grad_cols = torch.addcmul(v.unsqueeze(1), cols, u.unsqueeze(1))
            grad_cols.addmm_((p * inv_std).T, grad)
        return grad_cols, grad_p, None, None, None, None


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
