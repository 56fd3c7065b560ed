"""Top-k accuracy counts (the training recipe's top-1 / top-5 metrics)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def topk_correct(logits: Tensor, target: Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the k largest logits, for each k in ks.

    logits: (B, K); target: (B,) class indices. k is capped at K (so top-5 with 3 classes
    counts every sample). Ties between equal logits are broken by `torch.topk`.
    Returns one int per entry of ks, in order.
    """
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (B, K) and target (B,), got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got ks={tuple(ks)}")
    num_classes = logits.shape[1]
    if not ks or logits.shape[0] == 0:
        return [0 for _ in ks]
    maxk = min(max(ks), num_classes)
    with torch.no_grad():
        pred = logits.topk(maxk, dim=1).indices  # (B, maxk), best first
        hit = pred == target.to(pred.device)[:, None]  # at most one True per row
        cum = hit.cumsum(dim=1).sum(dim=0)  # cum[j]: samples correct within the top j+1
    return [int(cum[min(k, num_classes) - 1]) for k in ks]
