"""Helpers shared by the fused kernels (notation: `sepconc.kernels`).

- the phase scattering's rectification `[low, w] -> [low, relu(w), relu(-w)]` (docs/models.md's
  channel order `[Re, Im, -Re, -Im]` per orientation): the stock-ops reference `rectify`,
  the in-place `rectify_into`, and the two ways of folding its gradient back;
- `relu_backward_`: ReLU's gradient mask in place (the one use of a private ATen overload);
- batch statistics: `row_var_mean`, `update_running_stats`, `count_batch`;
- `channel_blocks`: cache-sized blocks of input channels;
- `AUTOCAST_FORWARD` / `AUTOCAST_BACKWARD`: the fused Functions' autocast rule.
"""

from __future__ import annotations

import torch
from torch import nn

#: Under CUDA autocast (bf16/fp16) the fused Functions run in float32: their inputs are
#: cast and autocast is off inside (their in-place accumulations mix no dtypes). The
#: reference path autocasts op by op. No effect without autocast.
AUTOCAST_FORWARD = torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
AUTOCAST_BACKWARD = torch.amp.custom_bwd(device_type="cuda")


def rectify(z: torch.Tensor, B: int, C: int, L: int) -> torch.Tensor:
    """Reference rectification with stock ops: `(B C, 1+2L, h, h)` `[low, Re_0, Im_0, ...]`
    (images ordered `(b, c)`) -> `(B, C K, h, h)`, per orientation `[relu(Re), relu(Im),
    relu(-Re), relu(-Im)]` after the low-pass. Contiguous output."""
    h, w = z.shape[-2:]
    low, wav = z.split([1, 2 * L], dim=1)
    wav = wav.reshape(B * C, L, 2, h, w)
    phases = torch.cat([wav, -wav], dim=2).relu()  # [Re, Im, -Re, -Im] per orientation
    out = torch.cat([low, phases.reshape(B * C, 4 * L, h, w)], dim=1)
    return out.reshape(B, C * (1 + 4 * L), h, w)


def rectify_into(z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`z` `(C, B, 1+2L, m)` -> `out` `(C, K, B, m)`: `[low, relu(Re), relu(Im), relu(-Re),
    relu(-Im), ...]` per input channel, written in place (the channel-major rows of the
    phase scattering)."""
    C, B, lin, m = z.shape
    L = (lin - 1) // 2
    out[:, 0] = z[:, :, 0]
    wav = z[:, :, 1:].view(C, B, L, 2, m).permute(0, 2, 3, 1, 4)
    phases = out[:, 1:].view(C, L, 4, B, m)
    torch.clamp(wav, min=0, out=phases[:, :, :2])
    torch.clamp(wav, max=0, out=phases[:, :, 2:]).neg_()
    return out


def fold_gradient_into(grad: torch.Tensor, z: torch.Tensor, grad_z: torch.Tensor) -> torch.Tensor:
    """Gradient at `z` `(C, B, 1+2L, m)` from the gradient `grad` `(C, K, B, m)` at
    `rectify_into`'s output: `g+` where `w > 0`, `-g-` where `w < 0`, 0 where `w == 0` (both
    ReLUs' gradient at 0). Written into `grad_z` (`z`'s shape)."""
    C, B, lin, m = z.shape
    L = (lin - 1) // 2
    grad_z[:, :, 0] = grad[:, 0]
    wav = z[:, :, 1:].view(C, B, L, 2, m).permute(0, 2, 3, 1, 4)
    phases = grad[:, 1:].view(C, L, 4, B, m)
    grad_wav = grad_z[:, :, 1:].view(C, B, L, 2, m).permute(0, 2, 3, 1, 4)
    torch.where(wav > 0, phases[:, :, :2], phases[:, :, 2:].neg(), out=grad_wav)
    grad_wav.masked_fill_(wav == 0, 0)
    return grad_z


def fold_rectified_gradient_into(
    grad: torch.Tensor, out: torch.Tensor, grad_z: torch.Tensor
) -> torch.Tensor:
    """`fold_gradient_into` reading the masks from `rectify_into`'s output `out` instead of
    `z` (`relu(w) > 0` iff `w > 0`, `relu(-w) > 0` iff `w < 0`), and masking `grad` in place:
    three half-size passes and no temporary. Overwrites `grad`'s phase rows (scratch)."""
    C, B, lin, m = grad_z.shape
    L = (lin - 1) // 2
    grad_z[:, :, 0] = grad[:, 0]
    g, x = grad[:, 1:].view(C, L, 4, B, m), out[:, 1:].view(C, L, 4, B, m)
    plus, minus = g[:, :, :2], g[:, :, 2:]
    relu_backward_(plus, x[:, :, :2])
    relu_backward_(minus, x[:, :, 2:])
    grad_wav = grad_z[:, :, 1:].view(C, B, L, 2, m).permute(0, 2, 3, 1, 4)
    return torch.sub(plus, minus, out=grad_wav)


def relu_backward_(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """ReLU's backward in place: `grad` where `out > 0`, else 0 (`out` the ReLU's output, or
    its input: same mask). One pass, no mask tensor.

    The one use of a private ATen overload (`threshold_backward.grad_input`, the out-variant
    of ReLU's own backward kernel): the public `grad.mul_(out > 0)` writes a mask as large as
    `grad` first. tests/test_kernels_parity.py fails loudly if the overload disappears.
    """
    return torch.ops.aten.threshold_backward.grad_input(grad, out, 0, grad_input=grad)


def row_var_mean(cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Biased variance and mean of every row of `cols: (C, N)`.

    On CPU, `E[x^2] - E[x]^2` from two vectorized reductions: about 20x faster than
    `torch.var_mean` (Welford), whose cost was the largest part of the block's
    standardization. Its rounding error grows like `(mean / std)^2`, so rows with
    `mean^2 > 100 var` (error above ~1e-5 relative in float32) are recomputed exactly.
    Other devices use `torch.var_mean` (fast there, and no host sync for the fallback).
    """
    if cols.device.type != "cpu":
        return torch.var_mean(cols, dim=1, correction=0)
    n = cols.shape[1]
    mean = cols.sum(1) / n
    var = (torch.linalg.vector_norm(cols, dim=1).square() / n - mean.square()).clamp_min_(0)
    risky = (mean.square() > 100 * var).nonzero().squeeze(1)
    if len(risky):
        var[risky], mean[risky] = torch.var_mean(cols[risky], dim=1, correction=0)
    return var, mean


def update_running_stats(running_mean, running_var, mean, var, n: int, momentum) -> None:
    """BatchNorm's update, in place: the unbiased variance goes into the running one."""
    if running_mean is not None:
        running_mean.lerp_(mean, momentum)
        running_var.lerp_(var * (n / max(n - 1, 1)), momentum)


def count_batch(norm: nn.BatchNorm2d) -> float:
    """Count one training batch in `norm` and return the running statistics' momentum."""
    momentum = norm.momentum
    if norm.track_running_stats:
        norm.num_batches_tracked.add_(1)
        if momentum is None:  # cumulative moving average, as BatchNorm
            momentum = 1.0 / float(norm.num_batches_tracked)
    return momentum or 0.0


#: Elements of one block of phase-scattering rows (2M floats: 8 MiB, cache-sized).
CHANNEL_BLOCK_ELEMENTS = 1 << 21


def channel_blocks(channels: int, per_channel: int) -> list[slice]:
    """Input-channel blocks of about `CHANNEL_BLOCK_ELEMENTS` elements (at least one channel)."""
    step = max(1, CHANNEL_BLOCK_ELEMENTS // per_channel)
    return [slice(start, min(start + step, channels)) for start in range(0, channels, step)]
