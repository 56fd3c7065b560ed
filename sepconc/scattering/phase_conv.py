"""Phase scattering at j=0 as one real convolution: the fast path.

It computes the oracle of ``phase_fourier`` with the filters truncated to ``k x k``
in space (``filters.spatial_filters``). With ``r = (k - 1) // 2``, ``M`` the padded
size, ``p`` the left padding and ``R`` the iterated reflection of ``phase_fourier``,
output pixel ``i`` (one axis; the other is the same) of filter ``h`` is

    y[i] = sum_{|u| <= r} h(u) x_pad[(2 + 2i - u) mod M],   x_pad[q] = x[R(q - p)],

i.e. reflection padding composed with the circular wrap of the ``M``-periodic
Fourier product. Both are folded into one index gather:
``E[t] = x[R(((t + 2 - r) mod M) - p)]`` for ``t in [0, T)``, ``T = 2*(n//2) + k - 1``,
then ``y[i] = sum_s K[s] E[2i + s]`` with the flipped kernel ``K[s] = h(r - s)``:
a valid, stride-2 cross-correlation. It is evaluated in polyphase form: ``K`` is
zero-padded to ``k + 1`` (even), ``E`` and ``K`` are ``pixel_unshuffle``d by 2 and a
stride-1 convolution with 4 input channels sums the four phases (its backward is
faster on CPU than a stride-2 convolution's).

The ``1 + 2L`` filters are ``[phi, Re psi_0, Im psi_0, Re psi_1, ...]``, applied to the
``(B*C, 1, n, n)`` view; ``z = [low, w]`` then becomes ``[low, relu(w), relu(-w)]``
interleaved per orientation as ``[Re, Im, -Re, -Im]`` (split + cat, no slicing).
Truncation error (relative L2 to the oracle) is measured by the tests; see
``phase.DEFAULT_KERNEL_SIZE``.

Dense form (small ``n``): the map ``x -> z = [phi x, Re W_0 x, Im W_0 x, ...]`` is
linear, ``R^{n*n} -> R^{(1+2L)*(n//2)^2}``; ``dense_operator`` tabulates it *exactly*
(the oracle applied to the ``n*n`` unit images; ``Re = relu(Re) - relu(-Re)``), and
``sepconc.kernels.phase_dense`` evaluates it as one matrix product (backward: one more).
Its size is ``n^2 * (1+2L) * (n//2)^2`` (n = 16, L = 8: 278,528 values), so it is
for small inputs only: on CPU it beats the convolution for n <= 16 (see ``phase``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sepconc.kernels.common import rectify

from .filters import pad_left, padded_size, spatial_filters
from .phase_fourier import phase_scattering_fourier, reflect_index

__all__ = [
    "conv_gather_index",
    "conv_weight",
    "dense_operator",
    "phase_scattering_conv",
]


def conv_gather_index(n: int, k: int) -> np.ndarray:
    """Source index in ``[0, n)`` of each of the ``T = 2*(n//2) + k - 1`` gathered rows."""
    r = (k - 1) // 2
    M = padded_size(n)
    t = np.arange(2 * (n // 2) + k - 1)
    return reflect_index(np.mod(t + 2 - r, M) - pad_left(n), n)


def conv_weight(L: int, k: int) -> np.ndarray:
    """Polyphase weight ``(1 + 2L, 4, (k+1)/2, (k+1)/2)`` float64 for ``phase_scattering_conv``.

    Before ``pixel_unshuffle`` the kernels are ``K_f[s1, s2] = g_f(r - s1, r - s2)``
    for ``g`` in ``[phi, Re psi_0, Im psi_0, ...]`` (real parts of a complex
    ``h`` taken after the flip), zero-padded at the end to ``k + 1``.
    """
    h = spatial_filters(L, k)[:, ::-1, ::-1]  # flipped: K[s] = h(r - s)
    rows = [h[0].real] + [part for f in h[1:] for part in (f.real, f.imag)]
    kern = np.zeros((len(rows), 1, k + 1, k + 1))
    kern[:, 0, :k, :k] = np.stack(rows)
    return F.pixel_unshuffle(torch.from_numpy(kern), 2).numpy()


def phase_scattering_conv(
    x: torch.Tensor, weight: torch.Tensor, gather_idx: torch.Tensor
) -> torch.Tensor:
    """Phase scattering of ``x`` ``(B, C, n, n)`` -> ``(B, C*(1 + 4L), n//2, n//2)``.

    ``weight``: ``conv_weight(L, k)`` as a tensor; ``gather_idx``: ``conv_gather_index(n, k)``
    (long) on ``x``'s device.
    """
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected a (B, C, n, n) input, got shape {tuple(x.shape)}")
    B, C, n, _ = x.shape
    L = (weight.shape[0] - 1) // 2
    e = x.reshape(B * C, 1, n, n).index_select(-2, gather_idx).index_select(-1, gather_idx)
    z = F.conv2d(F.pixel_unshuffle(e, 2), weight.to(x.dtype))  # (B*C, 1+2L, n//2, n//2)
    return rectify(z, B, C, L)


def dense_operator(filters: torch.Tensor, pad_idx: torch.Tensor) -> torch.Tensor:
    """Exact matrix ``(n*n, (1+2L)*(n//2)^2)`` of the linear map
    ``x -> [phi x, Re W_0 x, Im W_0 x, Re W_1 x, ...]`` (before rectification).

    ``filters`` / ``pad_idx``: as for ``phase_scattering_fourier`` (``n`` is read from
    ``pad_idx``'s source range). Row ``i`` is the response to the unit image ``e_i``
    (row-major); columns are ``(channel, row, col)``-major. Same dtype as ``filters``.
    """
    n = int(pad_idx.max()) + 1
    L = filters.shape[0] - 1
    eye = torch.eye(n * n, dtype=filters.dtype, device=filters.device)
    out = phase_scattering_fourier(eye.reshape(n * n, 1, n, n), filters, pad_idx)
    h = out.shape[-1]
    low, ph = out.split([1, 4 * L], dim=1)
    ph = ph.reshape(n * n, L, 4, h, h)
    wav = ph[:, :, :2] - ph[:, :, 2:]  # relu(v) - relu(-v) = v: [Re, Im]
    return torch.cat([low, wav.reshape(n * n, 2 * L, h, h)], dim=1).reshape(n * n, -1)
