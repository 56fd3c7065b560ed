"""Phase scattering at j=0 computed in Fourier: the reference definition (the oracle).

For one input channel ``x`` of size ``n x n`` (``n >= 2``), with ``M = padded_size(n)``
and ``p = pad_left(n)`` (Kymatio's ``compute_padding(n, n, J=1)``):

1. ``x_pad = x[R(i - p), R(j - p)]`` for ``i, j in [0, M)``: reflection padding, where
   ``R`` is the iterated reflection of period ``2n - 2`` (``R(-1) = 1``, ``R(n) = n - 2``;
   numpy's ``np.pad(mode="reflect")``). It equals torch's ``reflect`` padding whenever
   that is defined (pad < n); for ``n = 2`` (pad 2 = n) it keeps reflecting:
   ``[a, b] -> [a, b, a, b, a, b]``. This is the documented choice for tiny inputs.
2. ``X = FFT2(x_pad)``; for each filter ``f`` in ``[phi, psi_0, ..., psi_{L-1}]``
   (``filters.fourier_filters``): ``y_f = IFFT2(X * f)`` -- a circular convolution on
   the ``M x M`` grid -- subsampled by 2 (``y_f[2a, 2b]``, done in Fourier by periodizing
   the spectrum, as Kymatio does), then one border pixel dropped on each side:
   ``(M/2 - 2)^2 = (n//2)^2`` values (7 -> 3).
3. Channels per input channel, ``K = 1 + 4L``, in this order:
   ``[Re(y_phi), relu(Re y_psi0), relu(Im y_psi0), relu(-Re y_psi0), relu(-Im y_psi0),
   ... theta_1 ...]``; input channels outermost (output channel ``c*K + k``).

Shapes: ``(B, C, n, n) -> (B, C*(1 + 4L), n//2, n//2)``. Differentiable (torch ops
only); any device, float32 or float64 (the filters are cast to the input's dtype).
"""

from __future__ import annotations

import numpy as np
import torch

from .filters import pad_left, padded_size

__all__ = ["padding_index", "phase_scattering_fourier", "reflect_index"]


def reflect_index(i: np.ndarray, n: int) -> np.ndarray:
    """Map integer positions ``i`` (any range) into ``[0, n)`` by iterated reflection.

    Period ``2n - 2``, no edge repetition: ``-1 -> 1``, ``n -> n - 2``. ``n >= 2``.
    """
    period = 2 * n - 2
    m = np.mod(np.asarray(i, dtype=np.int64), period)
    return np.where(m < n, m, period - m)


def padding_index(n: int) -> np.ndarray:
    """Source index in ``[0, n)`` of each position of the ``M``-long padded axis (step 1)."""
    return reflect_index(np.arange(padded_size(n)) - pad_left(n), n)


def phase_scattering_fourier(
    x: torch.Tensor, filters: torch.Tensor, pad_idx: torch.Tensor
) -> torch.Tensor:
    """Phase scattering of ``x`` ``(B, C, n, n)`` -> ``(B, C*(1 + 4L), n//2, n//2)``.

    ``filters``: ``(1 + L, M, M)`` real, Kymatio's bank in Fourier (row 0 ``phi``);
    ``pad_idx``: ``(M,)`` long, ``padding_index(n)`` on ``x``'s device.
    """
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected a (B, C, n, n) input, got shape {tuple(x.shape)}")
    B, C = x.shape[:2]
    M = filters.shape[-1]
    L = filters.shape[0] - 1
    xp = x.index_select(-2, pad_idx).index_select(-1, pad_idx)  # (B, C, M, M)
    # (B, C, 1+L, M, M); the 1/4 is the mean of the four aliased copies below
    spec = torch.fft.fft2(xp).unsqueeze(2) * (0.25 * filters.to(x.dtype))
    h = M // 2
    spec = spec[..., :h, :] + spec[..., h:, :]  # subsample by 2 = periodize the spectrum
    spec = spec[..., :h] + spec[..., h:]
    y = torch.fft.ifft2(spec)[..., 1:-1, 1:-1]  # (B, C, 1+L, n//2, n//2) complex
    low, wav = y.split([1, L], dim=2)
    wav = torch.stack([wav.real, wav.imag], dim=3)  # (B, C, L, 2, h', w')
    phases = torch.cat([wav, -wav], dim=3).relu()  # [Re, Im, -Re, -Im]
    out = torch.cat([low.real, phases.flatten(2, 3)], dim=2)  # (B, C, 1+4L, h', w')
    return out.reshape(B, C * (1 + 4 * L), out.shape[-2], out.shape[-1])
