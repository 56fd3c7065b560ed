"""The fixed j=0 filters of the phase scattering front-end (pure numpy).

Both filter sets come from Kymatio 0.3's 2D Morlet filter bank
(``kymatio.scattering2d.filter_bank.filter_bank(M, N, J=1, L)``):

- ``phi``: the low-pass of scale J=1 (a real Gaussian, sigma = 0.8);
- ``psi_theta``, ``theta = 0..L-1``: the complex Morlet wavelets at j=0
  (sigma = 0.8, central frequency 3*pi/4, slant 4/L).

Kymatio stores them in Fourier on the *padded* grid
``(M, N) = compute_padding(n, n, J=1)``; its filters are real in Fourier, so in
space ``h(-u) = conj(h(u))`` (``phi`` is real and even).

``fourier_filters(n, L)`` returns that bank as one array ``(1 + L, M, N)``
(row 0 is ``phi``). ``spatial_filters(L, k)`` returns the same filters in space,
centred, truncated to a ``k x k`` support: ``(1 + L, k, k)`` complex, index
``[r, r]`` (``r = (k - 1) // 2``) is the origin ``u = 0``. They are computed on a
grid large enough that the Gaussian envelope does not alias, so they are the
plane filters; a caller that convolves on a periodic grid of size ``M`` must
wrap its indices modulo ``M`` (``phase_conv`` does), which periodizes them
exactly as the Fourier product does.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Import from the 2D modules directly: ``kymatio.torch`` also pulls the 1D/3D frontends.
from kymatio.scattering2d.filter_bank import filter_bank
from kymatio.scattering2d.utils import compute_padding

__all__ = ["fourier_filters", "pad_left", "padded_size", "spatial_filters"]


def padded_size(n: int) -> int:
    """Kymatio's padded size for an ``n x n`` input at J=1: ``2 * ((n + 2) // 2 + 1)``.

    Even ``n``: ``n + 4`` (2 px of reflection on each side); odd ``n``: ``n + 3``
    (1 px on the left/top, 2 on the right/bottom).
    """
    if n < 2:
        raise ValueError(f"phase scattering needs n >= 2, got n={n}")
    m, _ = compute_padding(n, n, 1)
    return int(m)


def pad_left(n: int) -> int:
    """Pixels of reflection Kymatio adds before the signal (``(M - n) // 2``)."""
    return (padded_size(n) - n) // 2


@lru_cache(maxsize=32)
def _bank(grid: int, L: int) -> np.ndarray:
    """Kymatio's J=1 bank on a ``grid x grid`` padded grid, stacked ``(1 + L, grid, grid)``.

    Row 0: ``phi`` (level 0), rows ``1 + theta``: ``psi_theta`` at j=0 (level 0).
    float64, real (Kymatio's filters are real in Fourier). Cached (Kymatio builds them
    with Python loops: ~1 s at 228 x 228) and returned read-only.
    """
    bank = filter_bank(grid, grid, 1, L)
    psis = sorted(bank["psi"], key=lambda p: p["theta"])
    assert all(p["j"] == 0 for p in psis) and len(psis) == L
    rows = [bank["phi"]["levels"][0]] + [p["levels"][0] for p in psis]
    out = np.stack([np.asarray(r, dtype=np.float64) for r in rows])
    out.flags.writeable = False
    return out


def fourier_filters(n: int, L: int = 8) -> np.ndarray:
    """Kymatio's phi (J=1) and L wavelets psi (j=0) in Fourier for an ``n x n`` input.

    Returns a real float64 array ``(1 + L, M, M)``, ``M = padded_size(n)``, row 0 ``phi``.
    """
    if L < 1:
        raise ValueError(f"L must be >= 1, got L={L}")
    return _bank(padded_size(n), L).copy()


def spatial_filters(L: int = 8, k: int = 13) -> np.ndarray:
    """The same filters in space, centred and truncated to ``k x k`` (``k`` odd).

    ``out[f, r + a, r + b] = h_f(a, b)`` for ``|a|, |b| <= r = (k - 1) // 2``, where
    ``h_f = ifft2(fourier filter f)`` on a grid of size ``G >= 2k + 4`` (large enough
    that the envelope's periodization is below float64 precision beyond the support,
    so these are the plane filters: independent of the input size). Complex128,
    shape ``(1 + L, k, k)``; ``h(-u) = conj(h(u))``.
    """
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel size must be odd and >= 1, got k={k}")
    r = (k - 1) // 2
    grid = max(64, 2 * k + 4)
    grid += grid % 2
    space = np.fft.ifft2(_bank(grid, L), axes=(-2, -1))
    idx = np.arange(-r, r + 1) % grid
    return space[:, idx][:, :, idx]
