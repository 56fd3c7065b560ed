"""Standardization (BatchNorm, no affine) then a 1x1 projection `P` (notation: `sepconc.kernels`).

- `standardize_project_reference`: the two stock modules, `projection(norm(x))`.
- `standardize_project` / `StandardizedProjection`: the same numbers and the same
  running-statistics update, with the standardization folded into the projection:
  `P (x - mu) / sigma = (P / sigma) x - (P / sigma) mu`, so the standardized `x` is never
  written and the backward costs one matrix product and one pass over `x`.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import (
    AUTOCAST_BACKWARD,
    AUTOCAST_FORWARD,
    count_batch,
    row_var_mean,
    update_running_stats,
)


def standardize_project_reference(x: torch.Tensor, norm: nn.Module, projection: nn.Module):
    """`projection(norm(x))`: stock modules, autograd."""
    return projection(norm(x))


def standardize_project(
    x: torch.Tensor, norm: nn.BatchNorm2d, projection: nn.Module
) -> torch.Tensor:
    """`projection(norm(x))` for a 1x1 `projection` (weight `(O, C, 1, 1)`) and
    `norm = BatchNorm2d(C, affine=False)`.

    Training mode: batch statistics, biased variance to normalize, unbiased into the
    running variance (as BatchNorm); eval mode: the running statistics. `x`: `(B, C, n, n)`
    in any layout (channel-major is free); returns `(B, O, n, n)` channel-major.
    """
    B, C, h, w = x.shape
    cols = x.transpose(0, 1).reshape(C, -1)  # a view when x is channel-major
    p = projection.weight.reshape(projection.weight.shape[0], C)
    if norm.training:
        y = StandardizedProjection.apply(
            cols, p, norm.eps, norm.running_mean, norm.running_var, count_batch(norm)
        )
    else:
        y = project_standardized(p, norm.running_mean, (norm.running_var + norm.eps).rsqrt(),
                                 cols)  # fmt: skip
    return y.view(-1, B, h, w).transpose(0, 1)


class StandardizedProjection(torch.autograd.Function):
    """`cols: (C, N)`, `p: (O, C)` -> `p xhat` with `xhat = (cols - mu) / sigma` per row.

    Backward, with `g = p^T dy` the gradient at `xhat` and `G = dy cols^T`:
    `dp = (G - (dy 1) mu^T) / sigma` (= `dy xhat^T`), and BatchNorm's input gradient
    `dx = (g - mean(g) - xhat mean(g xhat)) / sigma`, whose two row means come from
    `O x C` products: `mean(g) = p^T (dy 1) / N`, `mean(g xhat) = sum_o p * dp / N`.
    So `dx = (p / sigma)^T dy + u x + v` (per-row `u`, `v`): one GEMM plus one pass.
    Running statistics (when given) are updated in place, as BatchNorm does.
    """

    @staticmethod
    @AUTOCAST_FORWARD
    def forward(ctx, cols, p, eps, running_mean, running_var, momentum):
        var, mean = row_var_mean(cols)
        inv_std = (var + eps).rsqrt()
        y = project_standardized(p, mean, inv_std, cols)
        update_running_stats(running_mean, running_var, mean, var, cols.shape[1], momentum)
        ctx.save_for_backward(cols, p, mean, inv_std)
        return y

    @staticmethod
    @AUTOCAST_BACKWARD
    def backward(ctx, grad):
        cols, p, mean, inv_std = ctx.saved_tensors
        sums = grad.sum(1)
        mean_g = (p.T @ sums) / cols.shape[1]
        grad_cols = torch.empty_like(cols) if ctx.needs_input_grad[0] else None
        grad_p = standardized_projection_grads(grad, sums, cols, p, mean, inv_std, mean_g,
                                               grad_cols)  # fmt: skip
        return grad_cols, grad_p, None, None, None, None


def project_standardized(p, mean, inv_std, cols) -> torch.Tensor:
    """`p (cols - mean) inv_std` (per row) as `(p inv_std) cols - (p inv_std) mean`."""
    scaled = p * inv_std
    return torch.addmm((scaled @ mean).neg_().unsqueeze(1), scaled, cols)


def standardized_projection_grads(grad, sums, cols, p, mean, inv_std, mean_g, grad_cols):
    """Gradients of `p xhat` (`StandardizedProjection`) for the rows `cols` of `xhat`.

    `grad: (O, N)` and its row sums `sums`; `p`, `mean`, `inv_std`, `mean_g` (`p^T sums
    / N`) restricted to those rows. Returns `dp`; writes `dx` into `grad_cols` unless it
    is None.
    """
    N = cols.shape[1]
    grad_p = (grad @ cols.T).sub_(sums.unsqueeze(1) * mean).mul_(inv_std)
    if grad_cols is not None:
        mean_gx = (p * grad_p).sum(0) / N
        u = -mean_gx * inv_std.square()
        v = -mean_g * inv_std - mean * u
        torch.addcmul(v.unsqueeze(1), cols, u.unsqueeze(1), out=grad_cols)
        grad_cols.addmm_((p * inv_std).T, grad)
    return grad_p
