"""The order-2 scattering tree computed batched over filters: the ``fft`` backend.

The same numbers as Kymatio 0.3's ``Scattering2D(J, (M, N), L, max_order=2)`` (its
filter bank, padding, Fourier products, subsampling, modulus, output order), with the
per-path Python loop replaced by one batched step per scale pair:

1. ``x`` ``(B, C, M, N)`` -> ``(X, M, N)`` (``X = B*C``), reflection padding to Kymatio's
   ``(Mp, Np) = compute_padding(M, N, J)`` as one index gather (``padding_indices``:
   Kymatio's own ``Pad`` applied to the positions, so its ``pad == size`` case is kept),
   then ``U0 = fft2`` (a real-to-complex FFT: the input is real).
2. Order 1, per scale ``j1``: the ``L`` wavelets ``psi_{j1, theta}`` at full resolution
   multiply ``U0`` and the product is periodized by ``2^j1`` (Kymatio's
   ``subsample_fourier``) in one step (``filter_subsample``: for ``k > 1`` a batched
   matrix product over the ``k^2`` aliases, so the full-resolution product is never
   stored); one batched ``ifft2``, modulus: ``|U1|`` ``(X, L, Mp/2^j1, Np/2^j1)``.
3. ``fft2(|U1|)`` (real-to-complex). Low pass ``phi`` at level ``j1``, periodized by
   ``2^(J-j1)``, ``irfft2``, border crop ``[1:-1]``: ``S1``.
4. Order 2, per pair ``j1 < j2``: the ``L`` wavelets ``psi_{j2, theta}`` at level ``j1``
   times every ``fft2(|U1|)`` of scale ``j1`` (``(X, L, L, ...)``: ``theta1`` then
   ``theta2``), periodized by ``2^(j2-j1)``, ``ifft2``, modulus, ``fft2``, low pass at
   level ``j2`` periodized by ``2^(J-j2)``, ``irfft2``, crop: ``S2``.
5. Output ``[S0, S1 (j1, theta1), S2 (j1, theta1, j2, theta2)]`` per channel, as Kymatio
   orders its paths: ``(B, C*K, Mp/2^J - 2, Np/2^J - 2)``, channel ``c*K + k``.

Only differentiable torch ops (gather, FFTs, products, ``abs``): any device, float32 or
float64 (the float64 filters are cast to the input's dtype), gradients w.r.t. ``x``.
The batch is processed in chunks (``chunk_size``) so the largest temporary stays
bounded whatever the image size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft
import torch
from kymatio.scattering2d.backend.torch_backend import Pad
from kymatio.scattering2d.filter_bank import gabor_2d, morlet_2d
from kymatio.scattering2d.utils import compute_padding

__all__ = ["TreeFilters", "filter_bank_fast", "filter_subsample", "padding_indices",
           "periodize", "scattering_tree_fft"]  # fmt: skip

#: Largest temporary of one chunk, in complex values (64 Mi = 512 MB in complex64).
MAX_CHUNK_VALUES = 1 << 26


def padding_indices(M: int, N: int, J: int) -> tuple[np.ndarray, np.ndarray]:
    """Source row (``(Mp,)``) and column (``(Np,)``) of each padded pixel, Kymatio's padding.

    Obtained by running Kymatio's own ``Pad`` on the row and column positions, so every
    case it handles (reflection, its ``pad == size`` fix-up) is reproduced exactly.
    """
    Mp, Np = compute_padding(M, N, J)
    pad = Pad([(Mp - M) // 2, (Mp - M + 1) // 2, (Np - N) // 2, (Np - N + 1) // 2], [M, N])
    rows = torch.arange(M, dtype=torch.float64)[:, None].expand(M, N).contiguous()
    cols = torch.arange(N, dtype=torch.float64)[None, :].expand(M, N).contiguous()
    r = pad(rows[None])[0, :, 0, 0].round().long().numpy()
    c = pad(cols[None])[0, 0, :, 0].round().long().numpy()
    return r, c


def periodize(x: np.ndarray, res: int) -> np.ndarray:
    """Kymatio's ``periodize_filter_fft(x, res)`` vectorized (it loops in Python).

    The same mask (the band ``[M 2^(-res-1), M (1 - 2^(-res-1)))`` of each axis zeroed),
    then the sum of the ``2^res x 2^res`` aliased blocks, added in Kymatio's order and
    dtype (so the result is bit-identical): ``(M/2^res, N/2^res)``.
    """
    M, N = x.shape
    k = 2**res
    mask = np.ones(x.shape, np.float32)
    start_x, len_x = int(M * 2 ** (-res - 1)), int(M * (1 - 2 ** (-res)))
    start_y, len_y = int(N * 2 ** (-res - 1)), int(N * (1 - 2 ** (-res)))
    mask[start_x : start_x + len_x, :] = 0
    mask[:, start_y : start_y + len_y] = 0
    masked = np.multiply(x, mask)
    m, n = M // k, N // k
    crop = np.zeros((m, n), x.dtype)
    for i in range(k):  # Kymatio's summation order and dtype: the same bits
        for j in range(k):
            crop += masked[i * m : (i + 1) * m, j * n : (j + 1) * n]
    return crop


@lru_cache(maxsize=16)
def filter_bank_fast(Mp: int, Np: int, J: int, L: int = 8) -> dict:
    """``kymatio.scattering2d.filter_bank.filter_bank(Mp, Np, J, L)``, same dict, faster.

    Kymatio's ``morlet_2d``/``gabor_2d`` and parameters; only the periodization is
    vectorized (``periodize``), bit-identical. Cached per process.
    """
    psis = []
    for j in range(J):
        for theta in range(L):
            signal = morlet_2d(Mp, Np, 0.8 * 2**j, (int(L - L / 2 - 1) - theta) * np.pi / L,
                               3.0 / 4.0 * np.pi / 2**j, 4.0 / L)  # fmt: skip
            fourier = np.real(scipy.fft.fft2(signal))
            levels = [periodize(fourier, res) for res in range(min(j + 1, max(J - 1, 1)))]
            psis.append({"levels": levels, "j": j, "theta": theta})
    phi_fourier = np.real(scipy.fft.fft2(gabor_2d(Mp, Np, 0.8 * 2 ** (J - 1), 0, 0)))
    phi = {"levels": [periodize(phi_fourier, res) for res in range(J)], "j": J}
    return {"psi": psis, "phi": phi}


class TreeFilters:
    """Kymatio's bank regrouped for the batched tree (float64 torch tensors).

    ``phi[j]``: ``(Mp/2^j, Np/2^j)``, ``j < J``; ``psi1[j1]``: ``(L, Mp, Np)`` (the
    wavelets of scale ``j1`` at level 0); ``psi2[(j1, j2)]``: ``(L, Mp/2^j1, Np/2^j1)``
    (scale ``j2`` at level ``j1``), ``theta`` in Kymatio's order.
    """

    def __init__(self, M: int, N: int, J: int, L: int) -> None:
        self.Mp, self.Np = compute_padding(M, N, J)
        bank = filter_bank_fast(self.Mp, self.Np, J, L)

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.tensor(np.asarray(a, dtype=np.float64))

        psi = {(p["j"], p["theta"]): p["levels"] for p in bank["psi"]}
        self.phi = [t(level) for level in bank["phi"]["levels"]]
        self.psi1 = [torch.stack([t(psi[j1, th][0]) for th in range(L)]) for j1 in range(J)]
        self.psi2 = {
            (j1, j2): torch.stack([t(psi[j2, th][j1]) for th in range(L)])
            for j1 in range(J)
            for j2 in range(j1 + 1, J)
        }


def filter_subsample(spec: torch.Tensor, filters: torch.Tensor, k: int) -> torch.Tensor:
    """``subsample_fourier(spec[:, None] * filters, k)`` without the full product.

    ``spec``: ``(X, m, n)`` complex; ``filters``: ``(F, m, n)`` real, same dtype family;
    ``m, n`` divisible by ``k``. Returns ``(X, F, m/k, n/k)`` complex: the mean over the
    ``k^2`` aliased copies ``(a, b)`` of ``spec * filter`` (Kymatio's periodization).
    For ``k > 1`` it is one batched real matrix product per output frequency:
    ``(2X, k^2) @ (k^2, F)``.
    """
    X, m, n = spec.shape
    F = filters.shape[0]
    re = torch.view_as_real(spec)  # (X, m, n, 2)
    if k == 1:
        out = re[:, None] * filters[None, :, :, :, None]
        return torch.view_as_complex(out)
    p, q = m // k, n // k
    # left: (p, q, X, 2, k, k); right: (p, q, k, k, F) with the 1/k^2 of the mean
    left = re.reshape(X, k, p, k, q, 2).permute(2, 4, 0, 5, 1, 3).reshape(p * q, 2 * X, k * k)
    right = (filters * (1.0 / (k * k))).reshape(F, k, p, k, q).permute(2, 4, 1, 3, 0)
    out = torch.bmm(left, right.reshape(p * q, k * k, F))  # (p*q, 2X, F)
    out = out.reshape(p, q, X, 2, F).permute(2, 4, 0, 1, 3).contiguous()
    return torch.view_as_complex(out)


def _lowpass(spec: torch.Tensor, phi: torch.Tensor, k: int) -> torch.Tensor:
    """Real ``irfft2(subsample(spec * phi, k))`` cropped ``[1:-1]``: ``(..., m/k - 2, n/k - 2)``.

    ``spec`` ``(..., m, n)`` complex (Hermitian: the transform of a real signal);
    ``phi`` ``(m, n)`` real.
    """
    m, n = spec.shape[-2:]
    p, q = m // k, n // k
    re = torch.view_as_real(spec)
    lead = re.shape[:-3]
    prod = re.reshape(*lead, k, p, k, q, 2) * phi.reshape(k, p, k, q, 1)
    small = torch.view_as_complex(prod.sum(dim=(-5, -3)).mul_(1.0 / (k * k)))
    out = torch.fft.ifft2(small).real
    return out[..., 1:-1, 1:-1]


def scattering_tree_fft(
    x: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    phi: list[torch.Tensor],
    psi1: list[torch.Tensor],
    psi2: dict[tuple[int, int], torch.Tensor],
) -> torch.Tensor:
    """Order-2 scattering of ``x`` ``(X, M, N)`` -> ``(X, K, Mp/2^J - 2, Np/2^J - 2)``.

    ``rows``/``cols``: ``padding_indices`` (long, on ``x``'s device); ``phi``, ``psi1``,
    ``psi2``: ``TreeFilters``' tensors in ``x``'s dtype and device.
    """
    J = len(phi)
    X = x.shape[0]
    xp = x.index_select(-2, rows).index_select(-1, cols)  # (X, Mp, Np)
    u0 = torch.fft.fft2(xp)  # real input: a real-to-complex transform
    out0 = _lowpass(u0, phi[0], 2**J)[:, None]
    out1, out2 = [], []
    for j1 in range(J):
        u1 = torch.fft.ifft2(filter_subsample(u0, psi1[j1], 2**j1)).abs()  # (X, L, m1, n1)
        L = u1.shape[1]
        u1f = torch.fft.fft2(u1)
        out1.append(_lowpass(u1f, phi[j1], 2 ** (J - j1)))
        if j1 == J - 1:
            continue
        flat = u1f.reshape(X * L, *u1f.shape[-2:])
        per_j2 = []
        for j2 in range(j1 + 1, J):
            u2 = filter_subsample(flat, psi2[j1, j2], 2 ** (j2 - j1))  # (X*L, L, m2, n2)
            u2 = torch.fft.fft2(torch.fft.ifft2(u2).abs())
            s2 = _lowpass(u2, phi[j2], 2 ** (J - j2))
            per_j2.append(s2.reshape(X, L, L, *s2.shape[-2:]))
        out2.append(torch.cat(per_j2, dim=2).flatten(1, 2))  # (X, theta1*(j2, theta2), ...)
    return torch.cat([out0, *out1, *out2], dim=1)
