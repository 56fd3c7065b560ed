"""Dense phase scattering + standardization + 1x1 projection as one operation (notation:
`sepconc.kernels`).

- `phase_standardize_project_reference`: `standardize_project_reference` of
  `phase_dense_reference`: stock ops and modules, autograd.
- `phase_standardize_project` / `DensePhaseStandardizedProjection`: the same numbers
  without ever writing the phase scattering's output `(B, C K, h, h)` or its gradient.
  That output is the step's second-largest tensor (64 MiB for CIFAR-10's block 2) and is
  only read by the standardization and the projection, so the linear channels `z = x D`
  are rectified a block of input channels at a time (`common.channel_blocks`) into a
  small buffer, whose statistics are taken and whose share of the projection is
  accumulated; the backward rebuilds each block from `z` and folds its gradient straight
  back into `z`'s. Training mode only (it always uses batch statistics).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import (
    AUTOCAST_BACKWARD,
    AUTOCAST_FORWARD,
    channel_blocks,
    count_batch,
    fold_rectified_gradient_into,
    rectify_into,
    row_var_mean,
    update_running_stats,
)
from .phase_dense import dense_input_gradient, dense_linear, phase_dense_reference
from .projection import standardize_project_reference, standardized_projection_grads


def phase_standardize_project_reference(
    x: torch.Tensor, operator: torch.Tensor, norm: nn.Module, projection: nn.Module
) -> torch.Tensor:
    """`projection(norm(phase_dense_reference(x, operator)))`; contiguous output."""
    return standardize_project_reference(phase_dense_reference(x, operator), norm, projection)


def phase_standardize_project(
    x: torch.Tensor, operator: torch.Tensor, norm: nn.BatchNorm2d, projection: nn.Module
) -> torch.Tensor:
    """The reference's values in training mode through `DensePhaseStandardizedProjection`.

    `x`: `(B, C, n, n)`, any layout; `operator`: `D`; `projection` 1x1 with weight
    `(O, C K, 1, 1)`. Returns `(B, O, h, h)` channel-major.
    """
    B, n = x.shape[0], x.shape[-1]
    p = projection.weight.reshape(projection.weight.shape[0], -1)
    y = DensePhaseStandardizedProjection.apply(
        x, operator.to(x.dtype), p, norm.eps, norm.running_mean, norm.running_var,
        count_batch(norm),
    )  # fmt: skip
    return y.view(-1, B, n // 2, n // 2).transpose(0, 1)


class DensePhaseStandardizedProjection(torch.autograd.Function):
    """`x` -> `p xhat`, `xhat` the standardized rows of the dense phase scattering of `x`.

    The arithmetic of `DenseRectified` then `StandardizedProjection`, a block of input
    channels at a time: the phase scattering's `C K` rows exist only as one block's rows
    in a reused buffer, forward and backward.
    """

    @staticmethod
    @AUTOCAST_FORWARD
    def forward(ctx, x, operator, p, eps, running_mean, running_var, momentum):
        z = dense_linear(x, operator)
        C, B, lin, m = z.shape
        K, N = 2 * lin - 1, B * m
        mean, var = p.new_empty(C * K), p.new_empty(C * K)
        y = p.new_zeros(p.shape[0], N)
        buf = None
        for block in channel_blocks(C, K * N):
            cols, buf = _phase_rows(z, block, buf)
            rows = slice(block.start * K, block.stop * K)
            var[rows], mean[rows] = row_var_mean(cols)
            y.addmm_(p[:, rows] * (var[rows] + eps).rsqrt(), cols)
        inv_std = (var + eps).rsqrt()
        y.sub_(((p * inv_std) @ mean).unsqueeze(1))
        update_running_stats(running_mean, running_var, mean, var, N, momentum)
        ctx.save_for_backward(z, operator, p, mean, inv_std)
        return y

    @staticmethod
    @AUTOCAST_BACKWARD
    def backward(ctx, grad):
        z, operator, p, mean, inv_std = ctx.saved_tensors
        C, B, lin, m = z.shape
        K, N = 2 * lin - 1, B * m
        sums = grad.sum(1)
        grad_p = torch.empty_like(p)
        need_x = ctx.needs_input_grad[0]
        grad_z = torch.empty_like(z) if need_x else None
        mean_g = (p.T @ sums) / N
        buf = grad_buf = None
        for block in channel_blocks(C, K * N):
            cols, buf = _phase_rows(z, block, buf)
            rows = slice(block.start * K, block.stop * K)
            grad_cols = None
            if need_x:
                if grad_buf is None:
                    grad_buf = buf.new_empty(buf.numel())
                grad_cols = grad_buf[: cols.numel()].view_as(cols)
            grad_p[:, rows] = standardized_projection_grads(
                grad, sums, cols, p[:, rows], mean[rows], inv_std[rows], mean_g[rows], grad_cols
            )
            if need_x:  # folded straight into z's gradient
                fold_rectified_gradient_into(grad_cols.view(-1, K, B, m),
                                             cols.view(-1, K, B, m), grad_z[block])  # fmt: skip
        grad_x = dense_input_gradient(grad_z, operator) if need_x else None
        return grad_x, None, grad_p, None, None, None, None


def _phase_rows(z: torch.Tensor, block: slice, buf: torch.Tensor | None):
    """One block's rectified phase scattering as rows `(c K, B m)`, in `buf`."""
    c = block.stop - block.start
    _, B, lin, m = z.shape
    if buf is None:
        buf = z.new_empty(c, 2 * lin - 1, B, m)
    out = rectify_into(z[block], buf[:c])
    return out.view(-1, B * m), buf
