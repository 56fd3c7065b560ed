"""Memory layout at block boundaries: *channel-major* activations (the trick, stated once).

A `(B, C, n, n)` activation is *channel-major* when it is stored as `(C, B, n, n)`: it is
`y.transpose(0, 1)` of a contiguous `(C, B, n, n)` tensor `y` (same shape, same values as
an ordinary tensor; only the strides differ). Then every channel is one contiguous row of
`N = B n^2` numbers, so

- the batch statistics of the standardization are row reductions,
- the projection `P` is one matrix product `(O, C) @ (C, N)` with no transpose copy,
- the k = 1 frame's rows `(N, C)` are a transposed view, and the dense phase scattering
  reads its `(C B, n^2)` images as a view,

and a whole block runs without reordering its largest tensors. The fused kernels
(`sepconc.kernels.choose`, setting `fused`) read any layout and return channel-major;
the reference path returns ordinary contiguous tensors.

Contract (tested in tests/test_kernels_layout.py): with fused kernels, `PhaseScattering2D`
(every method and size), `TightFrame`, `Block` and `SepConcNet.features` return
channel-major tensors; with reference kernels they return contiguous ones. `Projection`
always returns a contiguous tensor. A channel-major tensor is NOT `.is_contiguous()`:
`x.view(B, -1)` raises on it; use `x.reshape(B, -1)` or `contiguous(x)` first.
"""

from __future__ import annotations

import torch

CHANNEL_MAJOR = "channel-major"
CONTIGUOUS = "contiguous"
LAYOUTS = (CHANNEL_MAJOR, CONTIGUOUS)


def is_channel_major(x: torch.Tensor) -> bool:
    """Whether `x: (B, C, ...)` is stored as `(C, B, ...)` (true for `B == 1` or `C == 1`
    contiguous tensors too: both orders are the same storage then)."""
    return x.transpose(0, 1).is_contiguous()


def channel_major(x: torch.Tensor) -> torch.Tensor:
    """`x`'s values stored as `(C, B, ...)`: `x` itself when it already is, else one copy."""
    if is_channel_major(x):
        return x
    return x.transpose(0, 1).contiguous().transpose(0, 1)


def contiguous(x: torch.Tensor) -> torch.Tensor:
    """`x`'s values in the ordinary contiguous layout (`x` itself when it already is)."""
    return x.contiguous()


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """`x` in `layout` (`CHANNEL_MAJOR` or `CONTIGUOUS`), copying only when needed."""
    if layout == CHANNEL_MAJOR:
        return channel_major(x)
    if layout == CONTIGUOUS:
        return contiguous(x)
    raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")


def has_layout(x: torch.Tensor, layout: str) -> bool:
    """Whether `x` is stored in `layout`."""
    return is_channel_major(x) if layout == CHANNEL_MAJOR else x.is_contiguous()
