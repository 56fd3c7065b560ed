"""Classifier after the last block: BatchNorm, optional average pooling, fc or mlp."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Module):
    """`x: (B, C, n, n) -> logits (B, classes)`.

    `BatchNorm2d(C)` (affine), `avg_pool2d(avg_ker_size, stride=1)` when
    `avg_ker_size > 1`, flatten, then `fc` (one Linear) or `mlp` (`Linear(in, H)`,
    `nb_l_mlp - 1` x [ReLU, Dropout, Linear(H, H)], ReLU, Dropout, `Linear(H, classes)`).
    """

    def __init__(
        self,
        channels: int,
        size: int,
        classes: int,
        kind: str = "fc",
        avg_ker_size: int = 1,
        hidden: int = 2048,
        dropout: float = 0.3,
        layers: int = 2,
    ):
        super().__init__()
        self.avg_ker_size = avg_ker_size
        self.bn = nn.BatchNorm2d(channels)
        pooled = size - avg_ker_size + 1
        features = channels * pooled * pooled
        if kind == "fc":
            self.head = nn.Linear(features, classes)
        else:
            modules: list[nn.Module] = [nn.Linear(features, hidden)]
            for _ in range(layers - 1):
                modules += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)]
            modules += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes)]
            self.head = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(x)
        if self.avg_ker_size > 1:
            x = F.avg_pool2d(x, self.avg_ker_size, stride=1)
        return self.head(x.flatten(1))
