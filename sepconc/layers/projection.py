"""Learned linear projection `P` and the normalization after it.

The standardization + projection kernels (fused and reference) are in
`sepconc.kernels.projection` and `sepconc.kernels.phase_projection`; `sepconc.model.Block`
chooses between them (`sepconc.kernels.choose`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Projection(nn.Module):
    """`P`: a bias-free convolution `in_channels -> out_channels`, kernel `k`, orthogonal init.

    For `k > 1` the input is reflect-padded by `(k - 1) // 2` so the spatial size
    is kept (odd `k`). `x: (B, in, n, n) -> (B, out, n, n)`, contiguous (any input
    layout). Its weight is kept near a tight frame by the Parseval step (applied by
    the trainer). Stock ops only: this is the reference projection.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.orthogonal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == 1:  # the same map as a 1x1 conv; a matmul's backward is faster
            batch, channels, height, width = x.shape
            w = self.weight.reshape(self.weight.shape[0], channels)
            y = torch.matmul(w, x.reshape(batch, channels, height * width))
            return y.reshape(batch, -1, height, width)
        pad = (self.kernel_size - 1) // 2
        if pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(x, self.weight)


def normalize_positions(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each spatial position's channel vector by its Euclidean norm.

    `x: (B, C, n, n)`, output in `x`'s layout. `eps` only guards an all-zero vector (left
    at zero).
    """
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)
