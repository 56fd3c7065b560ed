"""Dense phase scattering: `x (B, C, n, n) -> (B, C K, h, h)` as one matrix product with the
exact operator `D (n^2, (1+2L) m)` (`sepconc.scattering.phase_conv.dense_operator`), then the
rectification (notation: `sepconc.kernels`).

- `phase_dense_reference`: stock ops (GEMM, `common.rectify`), autograd, contiguous output.
- `phase_dense_fused` / `DenseRectified`: the same numbers, channel-major in and out
  (`sepconc.kernels.layout`), the rectification written straight into the output and its
  backward folded into one GEMM with `D^T`.
"""

from __future__ import annotations

import torch

from .common import AUTOCAST_BACKWARD, AUTOCAST_FORWARD, fold_gradient_into, rectify, rectify_into


def _check(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected a (B, C, n, n) input, got shape {tuple(x.shape)}")


def phase_dense_reference(x: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """Phase scattering of `x` `(B, C, n, n)` with `operator = D`: `(B, C K, h, h)`, contiguous."""
    _check(x)
    B, C, n, _ = x.shape
    D = operator.to(x.dtype)
    lin = D.shape[1] // (n // 2) ** 2
    z = (x.reshape(B * C, n * n) @ D).view(B * C, lin, n // 2, n // 2)
    return rectify(z, B, C, (lin - 1) // 2)


def phase_dense_fused(x: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """`phase_dense_reference`'s values through `DenseRectified`; channel-major output."""
    _check(x)
    return DenseRectified.apply(x, operator.to(x.dtype))


class DenseRectified(torch.autograd.Function):
    """`z = x D` (one GEMM over the `1+2L` linear channels), then `[low, relu(w), relu(-w)]`
    written straight into the output in the order `[Re, Im, -Re, -Im]`.

    Half the GEMM of tabulating the negated channels too, and no concatenation: the
    backward folds the two signed gradients into one (`g+` where `w > 0`, `-g-` where
    `w < 0`) and does one GEMM with `D^T`. The GEMM's rows are the `(c, b)` images of the
    `(C, B, n, n)` storage (a view when `x` is channel-major); the output
    `(B, C K, h, h)` is a view of `(C K, B, h, h)` storage.
    """

    @staticmethod
    @AUTOCAST_FORWARD
    def forward(ctx, x, operator):
        z = dense_linear(x, operator)
        C, B, lin, m = z.shape
        out = rectify_into(z, x.new_empty(C, 2 * lin - 1, B, m))
        ctx.save_for_backward(z, operator)
        h = x.shape[-1] // 2
        return out.view(-1, B, h, h).transpose(0, 1)

    @staticmethod
    @AUTOCAST_BACKWARD
    def backward(ctx, grad):
        z, operator = ctx.saved_tensors
        C, B, lin, m = z.shape
        grad_z = fold_gradient_into(grad.transpose(0, 1).reshape(C, 2 * lin - 1, B, m), z,
                                    torch.empty_like(z))  # fmt: skip
        return dense_input_gradient(grad_z, operator), None


def dense_linear(x: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """The linear channels `z = x D` of `x` `(B, C, n, n)`: `(C, B, 1+2L, m)`.

    The GEMM's rows are the `(c, b)` images of `x`'s channel-major storage (a view when `x`
    is channel-major, else one copy of the input, the smallest tensor here).
    """
    B, C, n, _ = x.shape
    rows = x.transpose(0, 1).reshape(C * B, n * n)
    return (rows @ operator).view(C, B, -1, (n // 2) ** 2)


def dense_input_gradient(grad_z: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """`grad_z D^T` as the `(B, C, n, n)` input gradient (channel-major storage)."""
    C, B = grad_z.shape[:2]
    n = int(round(operator.shape[0] ** 0.5))
    grad_rows = grad_z.reshape(C * B, -1) @ operator.T
    return grad_rows.view(C, B, n, n).transpose(0, 1)
