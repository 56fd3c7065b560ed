"""Overlapping `k x k` patches at stride `s` as rows, and their adjoint (notation: `sepconc.kernels`).

A frame on patches (`frame_kernel_size = k > 1`, or a stride `s > 1`) is one matrix
product over the rows `X: (N, d)`, `N = B h' w'` patches ordered `(b, i, j)`, `d = C k^2`
ordered `(c, u, v)` (the order of a convolution weight `(width, C, k, k)` flattened):

- `patch_rows(x, k, s)`: `x: (B, C, H, W)` -> `X`, row `(b, i, j)` = `x[b, :, i s + u, j s + v]`
  for `u, v < k`. One gather pass through `Tensor.unfold` views (no `F.unfold`, whose
  `im2col` was the slowest operation of the step on CPU);
- `fold_rows(X, (H, W), k, s)`: the adjoint, `y[b, c, i s + u, j s + v] += X[(b, i, j), (c, u, v)]`:
  `ceil(k / s)^2` strided additions of whole `s x s` tiles (4 for the MNIST 14/7 frame),
  not `F.fold`'s `col2im` scatter;
- `patch_count(...)`: how many patches cover each pixel, computed once per shape and kept
  (the averaging of overlapping reconstructions).

Each operation's backward is the other one, so autograd never sees the `(N, d)` gather.
Both read any input layout and write their image output in the layout of `x` (a
channel-major input gives a channel-major output, `sepconc.kernels.layout`).
"""

from __future__ import annotations

import math

import torch

from .common import AUTOCAST_BACKWARD, AUTOCAST_FORWARD
from .layout import is_channel_major


def patch_grid(size: tuple[int, int], k: int, s: int) -> tuple[int, int]:
    """Patch positions `(h', w')` of `k x k` patches at stride `s` in an `(H, W)` image:
    `(H - k) // s + 1` per side (a convolution's output size, no padding)."""
    return (size[0] - k) // s + 1, (size[1] - k) // s + 1


def covered_size(grid: tuple[int, int], k: int, s: int) -> tuple[int, int]:
    """The pixels the patches of `grid` cover, from the top-left: `(h' - 1) s + k` per side
    (the size of a transposed convolution's output)."""
    return (grid[0] - 1) * s + k, (grid[1] - 1) * s + k


def gather_rows(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """`patch_rows` without autograd: `(B, C, H, W)` -> contiguous `(B h' w', C k^2)`."""
    B, C = x.shape[:2]
    view = x.unfold(2, k, s).unfold(3, k, s)  # (B, C, h', w', k, k), no copy
    return view.permute(0, 2, 3, 1, 4, 5).reshape(-1, C * k * k)


def scatter_rows(rows: torch.Tensor, batch: int, channels: int, size: tuple[int, int],
                 k: int, s: int, channel_major: bool) -> torch.Tensor:  # fmt: skip
    """`fold_rows` without autograd: rows `(B h' w', C k^2)` summed into a zero image
    `(B, C, H, W)` (stored `(C, B, H, W)` when `channel_major`); pixels no patch covers
    stay 0."""
    grid = patch_grid(size, k, s)
    r = math.ceil(k / s)  # tiles per patch side
    tiles = (grid[0] - 1 + r, grid[1] - 1 + r)
    H, W = max(size[0], tiles[0] * s), max(size[1], tiles[1] * s)
    if channel_major:
        image = rows.new_zeros(channels, batch, H, W).transpose(0, 1)
    else:
        image = rows.new_zeros(batch, channels, H, W)
    # (B, C, tiles_h, s, tiles_w, s): a view of the image's top-left tiles
    tiled = image[:, :, : tiles[0] * s, : tiles[1] * s].unflatten(2, (tiles[0], s))
    tiled = tiled.unflatten(4, (tiles[1], s))
    patches = rows.view(batch, grid[0], grid[1], channels, k, k).permute(0, 3, 1, 4, 2, 5)
    for a in range(r):  # (B, C, h', k, w', k): tile row a of every patch
        u = slice(a * s, min(a * s + s, k))
        for b in range(r):
            v = slice(b * s, min(b * s + s, k))
            target = tiled[:, :, a : a + grid[0], : u.stop - u.start, b : b + grid[1],
                           : v.stop - v.start]  # fmt: skip
            target.add_(patches[:, :, :, u, :, v])
    return image[:, :, : size[0], : size[1]]


class PatchRows(torch.autograd.Function):
    """`x: (B, C, H, W)` -> rows `(B h' w', C k^2)`; backward: `scatter_rows`."""

    @staticmethod
    @AUTOCAST_FORWARD
    def forward(ctx, x, k, s):
        ctx.shape, ctx.k, ctx.s = x.shape, k, s
        ctx.channel_major = is_channel_major(x)
        return gather_rows(x, k, s)

    @staticmethod
    @AUTOCAST_BACKWARD
    def backward(ctx, grad):
        B, C, H, W = ctx.shape
        image = scatter_rows(grad, B, C, (H, W), ctx.k, ctx.s, ctx.channel_major)
        return image, None, None


class FoldRows(torch.autograd.Function):
    """Rows `(B h' w', C k^2)` -> the image `(B, C, H, W)` they sum to; backward: `gather_rows`."""

    @staticmethod
    @AUTOCAST_FORWARD
    def forward(ctx, rows, batch, channels, size, k, s, channel_major):
        ctx.k, ctx.s = k, s
        return scatter_rows(rows, batch, channels, size, k, s, channel_major)

    @staticmethod
    @AUTOCAST_BACKWARD
    def backward(ctx, grad):
        return gather_rows(grad, ctx.k, ctx.s), None, None, None, None, None, None


def patch_rows(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """The `(B h' w', C k^2)` patch rows of `x: (B, C, H, W)` (module docstring), with autograd."""
    return PatchRows.apply(x, k, s)


def fold_rows(rows: torch.Tensor, batch: int, channels: int, size: tuple[int, int], k: int,
              s: int, channel_major: bool = False) -> torch.Tensor:  # fmt: skip
    """The adjoint of `patch_rows`: `(B h' w', C k^2)` -> `(B, C, *size)`, with autograd."""
    return FoldRows.apply(rows, batch, channels, tuple(size), k, s, channel_major)


_COUNTS: dict[tuple, torch.Tensor] = {}


def patch_count(size: tuple[int, int], k: int, s: int, device, dtype) -> torch.Tensor:
    """`(H, W)`: how many `k x k` patches at stride `s` cover each pixel of the covered
    `size` (at least 1). Computed on the first call for a shape and kept (a few KiB each);
    made outside inference mode, so a count first made during an `inference_mode`
    evaluation can still be saved for a later training step's backward."""
    key = (tuple(size), k, s, torch.device(device), dtype)
    count = _COUNTS.get(key)
    if count is None:
        grid = patch_grid(size, k, s)
        with torch.inference_mode(False), torch.no_grad():
            ones = torch.ones(grid[0] * grid[1], k * k, dtype=dtype, device=device)
            count = scatter_rows(ones, 1, 1, size, k, s, False)[0, 0].clamp_min(1)
        _COUNTS[key] = count
    return count
