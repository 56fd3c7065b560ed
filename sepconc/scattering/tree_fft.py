"""The order-2 scattering tree computed batched over filters: the ``fft`` backend.

The same numbers as Kymatio 0.3's ``Scattering2D(J, (M, N), L, max_order=2)`` (its
filter bank, padding, Fourier products, subsampling, modulus, output order), with the
per-path Python loop replaced by one batched step per scale pair:

1. ``x`` ``(B, C, M, N)`` -> ``(X, M, N)`` (``X = B*C``), reflection padding to Kymatio's
   ``(Mp, Np) = compute_padding(M, N, J)`` as one index gather (``padding_indices``:
   Kymatio's own ``Pad`` applied to the positions, so its ``pad == size`` case is kept),
   then ``U0 = fft2`` (``fft2_real``).
2. Order 1, per scale ``j1``: the ``L`` wavelets ``psi_{j1, theta}`` at full resolution
   multiply ``U0`` and the product is periodized by ``2^j1`` (Kymatio's
   ``subsample_fourier``) in one step (``filter_subsample``: folded by 2 as the product is
   formed, then by block sums, so the full-resolution product is never stored); one
   batched ``ifft2`` (unnormalized: the weights carry its ``1/(m n)``), modulus:
   ``|U1|`` ``(X, L, Mp/2^j1, Np/2^j1)``.
3. Low pass of ``|U1|``: ``phi`` at level ``j1``, periodized by ``2^(J-j1)``, inverse FFT,
   border crop ``[1:-1]`` (``S1``). This map is linear and its output tiny, so it runs as
   one matrix (``lowpass_matrix``, float64-exact, image row by image row so the float32
   rounding stays at the FFT's level); in Fourier when the matrix would be large.
   ``S0`` likewise, with the padding folded into the matrix (``fold_padding``).
4. Order 2, per pair ``j1 < j2``: the ``L`` wavelets ``psi_{j2, theta}`` at level ``j1``
   times every ``fft2(|U1|)`` (``fft2_real``) of scale ``j1`` (``(X, L, L, ...)``: ``theta1`` then
   ``theta2``), periodized by ``2^(j2-j1)``, ``ifft2``, modulus, low pass at level ``j2``
   (as in 3): ``S2``.
5. Output ``[S0, S1 (j1, theta1), S2 (j1, theta1, j2, theta2)]`` per channel, as Kymatio
   orders its paths: ``(B, C*K, Mp/2^J - 2, Np/2^J - 2)``, channel ``c*K + k``.

Only differentiable torch ops (gather, FFTs, products, ``abs``): any device, float32 or
float64 (the float64 filters are cast to the input's dtype), gradients w.r.t. ``x``.
The batch is processed in chunks (``chunk_values``) so the largest temporary stays
bounded whatever the image size (small on CPU, where that is faster: cache-resident).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft
import torch
from kymatio.scattering2d.backend.torch_backend import Pad
from kymatio.scattering2d.filter_bank import gabor_2d, morlet_2d
from kymatio.scattering2d.utils import compute_padding

__all__ = ["TreeFilters", "fft2_real", "filter_bank_fast", "filter_subsample", "padding_indices",
           "periodize", "prepare_filters", "scattering_tree_fft", "subsample_weights"]  # fmt: skip

#: Largest temporary of one chunk, in complex values, on an accelerator (64 Mi = 512 MB in
#: complex64): few large launches.
MAX_CHUNK_VALUES = 1 << 26
#: The same on CPU (2 Mi = 16 MB in complex64): a chunk's temporaries stay in cache and reuse
#: freed heap blocks (large fresh blocks are new pages the kernel must zero), and there are
#: enough chunks to keep every core busy (``cpu_chunks``). Measured on 2 threads, batch 128:
#: chunks of 8-64 image channels within ~10 % of each other, all 1.4-1.9x faster than one
#: chunk of 128 (``benchmarks/scattering_tree.py``).
MAX_CHUNK_VALUES_CPU = 1 << 21
#: Largest low-pass matrix (``lowpass_matrix``), in entries (4 Mi: 16 MB in float32); a
#: larger low pass (ImageNet's full-size levels) runs in Fourier.
MAX_LOWPASS_ENTRIES = 1 << 22


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
        # the low pass of level j as one matrix when small enough (None: in Fourier)
        self.low = [lowpass_matrix(self.phi[j], 2 ** (J - j)) for j in range(J)]
        rows, cols = padding_indices(M, N, J)
        self.low0 = None if self.low[0] is None else fold_padding(self.low[0], rows, cols)


def lowpass_matrix(phi: torch.Tensor, k: int) -> torch.Tensor | None:
    """The real low pass of a real ``(m, n)`` signal as a matrix: ``(m*n, (m/k-2)*(n/k-2))``.

    ``u.flatten() @ matrix`` = ``Re ifft2(subsample_fourier(fft2(u) * phi, k))[1:-1, 1:-1]``
    (subsampling in Fourier is sampling in space: ``y[k s]``; ``h = ifft2(phi)``,
    ``out[s, t] = sum_uv u[u, v] Re h[k(s+1) - u, k(t+1) - v]``, indices mod ``(m, n)``),
    computed in float64. None when it would exceed ``MAX_LOWPASS_ENTRIES``.
    """
    m, n = phi.shape
    p, q = m // k - 2, n // k - 2
    if m * n * p * q > MAX_LOWPASS_ENTRIES:
        return None
    h = torch.fft.ifft2(phi.to(torch.float64)).real  # (m, n)
    a = (k * (torch.arange(p) + 1)[None, :] - torch.arange(m)[:, None]) % m  # (m, p)
    b = (k * (torch.arange(q) + 1)[None, :] - torch.arange(n)[:, None]) % n  # (n, q)
    out = h[a[:, None, :, None], b[None, :, None, :]]  # (m, n, p, q)
    return out.reshape(m * n, p * q)


def fold_padding(matrix: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """``matrix`` ``(Mp*Np, P)`` acting on the padded image -> ``(M*N, P)`` on the image.

    Padded pixel ``(a, b)`` is image pixel ``(rows[a], cols[b])``: the rows of ``matrix``
    are summed onto the image pixels they copy.
    """
    Mp, Np, M, N = len(rows), len(cols), int(rows.max()) + 1, int(cols.max()) + 1
    src = torch.tensor(rows)[:, None] * N + torch.tensor(cols)[None, :]  # (Mp, Np)
    out = torch.zeros(M * N, matrix.shape[1], dtype=matrix.dtype)
    return out.index_add_(0, src.reshape(Mp * Np), matrix)


def subsample_weights(filters: torch.Tensor, k: int, scale: float) -> torch.Tensor:
    """``filters`` ``(F, m, n)`` real, prepared once for ``filter_subsample(., ., k)``:
    ``(F, m, 2n)``, each weight twice (the real and imaginary parts of the spectrum side by
    side), times ``scale / k^2`` (``1/k^2``: the mean of Kymatio's periodization; ``scale``:
    the ``1/(m' n')`` of the inverse FFT that follows, ``m' = m/k``, so that it runs
    unnormalized, ``_ifft2``).
    """
    F, m, n = filters.shape
    scaled = filters * (scale / (k * k))
    return scaled[..., None].expand(F, m, n, 2).reshape(F, m, 2 * n).contiguous()


def filter_subsample(spec: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
    """``subsample_fourier(spec[:, None] * filters, k)`` without the full product.

    ``spec``: ``(X, m, n)`` complex; ``weights``: ``(F, m, 2n)``,
    ``subsample_weights(filters, k, scale)`` (``filters`` ``(F, m, n)`` real, same dtype
    family); ``k``: a power of 2 dividing ``m`` and ``n``. Returns ``(X, F, m/k, n/k)``
    complex: the mean over the ``k^2`` aliased copies ``(a, b)`` of ``spec * filter``
    (Kymatio's periodization), times the weights' ``scale``.

    The products are folded by 2 as they are formed (4 broadcast multiply-adds into
    ``(X, F, m/2, n/2)``; ``k = 1``: one product), then by the remaining ``k/2`` as block
    sums of that quarter-size result: on one thread 1.6-1.9x faster for ``k = 4`` than 16
    multiply-adds or one matrix product per output frequency. Called once per filter group
    (one ``j2``): its result stays cache-sized (the CIFAR-10 tree's largest product: 75 -> 69
    ms per batch of 128 on one thread, measured against all groups in one tensor).
    """
    X, m, n = spec.shape
    F = weights.shape[0]
    flat = torch.view_as_real(spec).reshape(X, 1, m, 2 * n)  # re, im side by side
    first = min(k, 2)
    p, q = m // first, n // first
    out = None
    for a in range(first):
        for b in range(first):
            rows, cols = slice(a * p, (a + 1) * p), slice(2 * b * q, 2 * (b + 1) * q)
            part, weight = flat[..., rows, cols], weights[None, :, rows, cols]
            out = part * weight if out is None else out.addcmul_(part, weight)
    return torch.view_as_complex(_fold(out.view(X, F, p, q, 2), k // first))


def _fold(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` ``(X, F, p, q, 2)`` contiguous -> ``(X, F, p/k, q/k, 2)``: the sum of its
    ``k x k`` blocks (contiguous)."""
    if k == 1:
        return x
    X, F, p, q, _ = x.shape
    blocks = x.reshape(X, F, k, p // k, k, q // k, 2)
    out = torch.add(blocks[:, :, 0, :, 0], blocks[:, :, 0, :, 1]).contiguous()
    for a in range(k):
        for b in range(k):
            if (a, b) not in ((0, 0), (0, 1)):  # those two: the first add
                out.add_(blocks[:, :, a, :, b])
    return out


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


def fft2_real(u: torch.Tensor) -> torch.Tensor:
    """``fft2(u)`` of a real ``u`` ``(..., m, n)``: complex ``(..., m, n)``.

    A full complex FFT of the promoted input: measured faster on CPU (2 threads, MKL)
    than ``rfft2`` plus rebuilding the other half from the Hermitian symmetry (the
    flips and concatenations cost more than the FFT they save).
    """
    return torch.fft.fft2(u)


def _ifft2(z: torch.Tensor) -> torch.Tensor:
    """The unnormalized inverse FFT of ``z`` ``(..., m, n)`` complex (no ``1/(m n)``: the
    weights of ``filter_subsample`` carry it, ``subsample_weights``' ``scale``). Measured on
    one thread in the tree: 6-10 % faster than ``ifft2``, which scales in a pass of its own."""
    return torch.fft.ifft2(z, norm="forward")


class _Modulus(torch.autograd.Function):
    """``|z|`` = ``sqrt(re^2 + im^2)`` of a complex ``z``; gradient ``g z / |z|``, 0 at 0."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        out = _modulus_value(z)
        ctx.save_for_backward(z, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        z, out = ctx.saved_tensors
        scale = torch.where(out > 0, grad / out, torch.zeros_like(out))
        return z * scale


def _modulus(z: torch.Tensor) -> torch.Tensor:
    """``|z|`` of a complex tensor ``(...)`` -> real ``(...)``, Kymatio's ``ModulusStable``
    (gradient 0 at 0). ``z`` is a temporary (an inverse FFT's output): when no graph is
    recorded it is squared in place and then dropped."""
    if z.requires_grad and torch.is_grad_enabled():
        return _Modulus.apply(z)
    parts = torch.view_as_real(z)  # no graph: without the autograd.Function's per-call cost
    parts.mul_(parts)  # one contiguous pass, in place: 1.4x faster than _modulus_value
    return torch.add(parts[..., 0], parts[..., 1]).sqrt_()


def _modulus_value(z: torch.Tensor) -> torch.Tensor:
    """``|z|`` without touching ``z``: two fused passes over the real and imaginary parts
    (4x faster on CPU than ``abs`` or ``vector_norm``, which reduce over a length-2 axis)."""
    re = torch.view_as_real(z)
    return torch.addcmul(re[..., 0] * re[..., 0], re[..., 1], re[..., 1]).sqrt_()


def _low(u: torch.Tensor, matrix: torch.Tensor | None, phi: torch.Tensor, k: int, shape):
    """Low pass of the real ``u`` ``(..., m, n)``: by ``matrix`` if given, else in Fourier."""
    if matrix is None:
        return _lowpass(fft2_real(u), phi, k)
    return _rows_matmul(u, matrix).reshape(*u.shape[:-2], *shape)


def _rows_matmul(u: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``u.flatten(-2) @ matrix`` summed image row by image row: ``(rows of u, P)``.

    One product per image row (a batched matrix product), then a cascade sum over the
    rows: the float32 rounding grows like ``sqrt(n)`` for rows of ``n`` pixels instead
    of ``sqrt(m n)`` for one long dot product (a 40 x 40 image: 1.2e-6 -> ~1e-7).
    """
    m, n = u.shape[-2:]
    rows = u.reshape(-1, m, n).transpose(0, 1)  # (m, X, n), a view
    return torch.bmm(rows, matrix.reshape(m, n, -1)).sum(0)


def prepare_filters(t: dict, dtype: torch.dtype) -> dict:
    """``TreeFilters``' tensors (float64, on the input's device) as ``scattering_tree_fft``
    takes them: cast to ``dtype``, the wavelets as ``subsample_weights``.

    ``t``: ``rows``, ``cols`` (long), ``low0``, ``phi[j]``, ``low[j]``, ``psi1[j1]``,
    ``psi2[(j1, j2)]`` as ``TreeFilters`` names them. Cache the result per dtype and device:
    it is the per-call setup of the tree.
    """

    def cast(v: torch.Tensor | None) -> torch.Tensor | None:
        return v.to(dtype) if v is not None else None

    def weights(filters: torch.Tensor, k: int) -> torch.Tensor:  # (F, m, 2n), ifft scale in
        m, n = filters.shape[-2:]  # scaled in float64, then rounded once to dtype
        return subsample_weights(filters, k, scale=k * k / (m * n)).to(dtype)

    return {"rows": t["rows"], "cols": t["cols"], "low0": cast(t["low0"]),
            "phi": [cast(v) for v in t["phi"]], "low": [cast(v) for v in t["low"]],
            "psi1": [weights(v, 2**j1) for j1, v in enumerate(t["psi1"])],
            "psi2": {(j1, j2): weights(v, 2 ** (j2 - j1)) for (j1, j2), v in t["psi2"].items()}}  # fmt: skip


def scattering_tree_fft(x: torch.Tensor, f: dict) -> torch.Tensor:
    """Order-2 scattering of ``x`` ``(X, M, N)`` -> ``(X, K, Mp/2^J - 2, Np/2^J - 2)``.

    ``f``: ``prepare_filters`` of ``TreeFilters``' tensors, in ``x``'s dtype and device.
    """
    phi, psi1, psi2, low = f["phi"], f["psi1"], f["psi2"], f["low"]
    J = len(phi)
    X = x.shape[0]
    m, n = phi[0].shape[0] // 2**J - 2, phi[0].shape[1] // 2**J - 2
    if f["low0"] is not None:  # padding folded into the matrix
        out0 = _rows_matmul(x, f["low0"]).reshape(X, 1, m, n)
    xp = x.index_select(-2, f["rows"]).index_select(-1, f["cols"])  # (X, Mp, Np)
    u0 = fft2_real(xp)
    if f["low0"] is None:
        out0 = _lowpass(u0, phi[0], 2**J)[:, None]
    out1, out2 = [], []
    for j1 in range(J):
        u1 = _modulus(_ifft2(filter_subsample(u0, psi1[j1], 2**j1)))  # (X, L, m1, n1)
        L = u1.shape[1]
        out1.append(_low(u1, low[j1], phi[j1], 2 ** (J - j1), (m, n)))
        if j1 == J - 1:
            continue
        u1f = fft2_real(u1)
        flat = u1f.reshape(X * L, *u1f.shape[-2:])
        per_j2 = []
        for j2 in range(j1 + 1, J):
            u2 = filter_subsample(flat, psi2[j1, j2], 2 ** (j2 - j1))  # (X*L, L, m2, n2)
            s2 = _low(_modulus(_ifft2(u2)), low[j2], phi[j2], 2 ** (J - j2), (m, n))
            per_j2.append(s2.reshape(X, L, L, m, n))
        out2.append(torch.cat(per_j2, dim=2).flatten(1, 2))  # (X, theta1*(j2, theta2), ...)
    return torch.cat([out0, *out1, *out2], dim=1)
