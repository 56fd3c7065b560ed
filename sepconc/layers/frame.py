"""Tight-frame operator `A`: separation (ReLU) or concentration (soft-thresholding).

For a signal `x: (B, C, n, n)`, the frame `F` has `width` atoms of shape
`(C, k, k)` (`d = C k^2`). Patches `x_p` (k x k, stride s) are normalized, then
`A x = fold_p F^T rho(F x_p / ||x_p||)`, where overlapping reconstructions are
averaged. `A` maps a signal to the same space (docs/models.md "Tight-frame operator").
The arithmetic (reference and fused) is in `sepconc.kernels.frame`.
"""

from __future__ import annotations

import torch
from torch import nn

from sepconc.frames import (
    relu_threshold,
    reset_atom_norms,
    softshrink_threshold,
    target_atom_norm,
)
from sepconc.kernels.choose import frame_path, output_layout
from sepconc.kernels.frame import frame_reference, patch_frame, pointwise_frame, rho
from sepconc.kernels.layout import to_layout

__all__ = ["TightFrame", "rho"]


class TightFrame(nn.Module):
    """The operator `A`, with atom norms reset to the tight-frame value before each forward.

    `x: (B, C, n, n) -> (B, C, n, n)`. `kernels` (`sepconc.kernels.choose`): with the fused
    kernels the frame runs as matrix products (k = 1 on the positions, else on the
    `k x k` patch rows), and the output is
    channel-major (`sepconc.kernels.layout`; a copy only when the operator's own result is
    not); with the reference kernels it runs as two convolutions and is contiguous.
    """

    def __init__(
        self,
        channels: int,
        width: int,
        kernel_size: int = 1,
        stride: int = 1,
        non_linearity: str = "relu",
        zero_bias: bool = False,
        kernels: str = "auto",
    ):
        super().__init__()
        self.channels, self.width = channels, width
        self.kernel_size, self.stride = kernel_size, stride
        self.non_linearity = non_linearity
        self.kernels = kernels
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

    def output_layout(self, device: torch.device | str) -> str:
        """The layout `forward` returns on `device` (`sepconc.kernels.layout`)."""
        return output_layout(self.kernels, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Through `.data`: the reset must not bump the parameter's autograd version, or a
        # second forward before `backward()` (e.g. `A(x) - A(-x)`) invalidates the first
        # graph. Values only change after an optimizer/Parseval step, which bumps it itself.
        reset_atom_norms(self.weight.data, self.atom_norm)
        path = frame_path(self.kernels, x.device, self.kernel_size, self.stride)
        if path == "pointwise":
            y = pointwise_frame(x, self.weight, self.non_linearity, self.threshold)
        elif path == "patches":
            y = patch_frame(x, self.weight, self.stride, self.non_linearity, self.threshold)
        else:
            y = frame_reference(x, self.weight, self.stride, self.non_linearity, self.threshold)
        return to_layout(y, self.output_layout(x.device))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, width={self.width}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, non_linearity={self.non_linearity}, "
            f"threshold={self.threshold:.4g}, kernels={self.kernels!r}"
        )
