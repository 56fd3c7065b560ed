"""Tight-frame and projection diagnostics (logged every epoch; docs/models.md, Training recipe).

A frame weight ``F: (width, C, k, k)`` (or ``(width, d)``) is read as ``width`` atoms
``f_i`` in ``R^d``, ``d = C k^2``, rows of ``W: (width, d)``. A tight frame of unit bound has
``W^T W = I_d`` (``width >= d``) or ``W W^T = I_width`` (``width <= d``): every eigenvalue of
the smaller Gram matrix is 1. Atom norms are held at `target_atom_norm`.

Coherence: ``|<f_i, f_j>| / (||f_i|| ||f_j||)`` over distinct pairs ``i < j``; an atom of
zero norm has cosine 0 with every other atom. The maximum is exact. The median is exact
(mean of the two middle values, as NumPy) when there are at most ``EXACT_MEDIAN_PAIRS``
pairs; above that (``width > 2048``) it is read from a histogram of all pairs with
``HIST_BINS`` bins on [0, 1] (the centre of the median bin: error <= 0.5 / HIST_BINS).
Cosines are computed in float32 (float64 if the weight is float64), by row chunks, so the
``width x width`` matrix is never held (width 8192: blocks of 512 x 8192).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sepconc.frames import target_atom_norm  # noqa: F401 - re-exported

#: Largest number of distinct pairs for which the median coherence is computed exactly.
EXACT_MEDIAN_PAIRS = 2048 * 2047 // 2
#: Histogram bins on [0, 1] for the median coherence of larger frames.
HIST_BINS = 1 << 16
_ROW_CHUNK = 512


def frame_diagnostics(weight: Tensor, target_norm: float, tol: float = 0.01) -> dict[str, float]:
    """Atom norms, Gram spectrum and coherence of a frame.

    weight: (width, C, k, k) or (width, d). Returns
    ``atoms_off_norm`` (atoms with ``| ||f_i|| - target_norm | > tol``, as a float),
    ``norm_ratio`` (max / min atom norm; inf if an atom is zero),
    ``gram_eig_min``, ``gram_eig_max`` (smaller Gram matrix, float64 eigvalsh),
    ``coherence_max``, ``coherence_median`` (module docstring; NaN for a single atom).
    """
    w = _as_matrix(weight)
    norms = w.to(torch.float64).norm(dim=1)
    n_min, n_max = float(norms.min()), float(norms.max())
    eig = _small_gram_eigvals(w)
    coh_max, coh_median = _coherence(w)
    return {
        "atoms_off_norm": float(((norms - target_norm).abs() > tol).sum()),
        "norm_ratio": n_max / n_min if n_min > 0 else math.inf,
        "gram_eig_min": float(eig[0]),
        "gram_eig_max": float(eig[-1]),
        "coherence_max": coh_max,
        "coherence_median": coh_median,
    }


def projection_diagnostics(weight: Tensor) -> dict[str, float]:
    """Smallest and largest eigenvalue of the smaller Gram matrix of a projection P.

    weight: (out, in, k, k) or (out, d), reshaped to (out, in k^2). Both are 1 when the
    rows (out <= d) or columns are orthonormal.
    """
    eig = _small_gram_eigvals(_as_matrix(weight))
    return {"gram_eig_min": float(eig[0]), "gram_eig_max": float(eig[-1])}


def _as_matrix(weight: Tensor) -> Tensor:
    if weight.dim() < 2 or weight.numel() == 0:
        raise ValueError(
            f"weight must be (width, d) or (width, C, k, k), got {tuple(weight.shape)}"
        )
    return weight.detach().reshape(weight.shape[0], -1)


def _small_gram_eigvals(w: Tensor) -> Tensor:
    """Ascending eigenvalues of W W^T (width <= d) or W^T W (width > d), in float64."""
    w64 = w.to(torch.float64)
    gram = w64 @ w64.T if w64.shape[0] <= w64.shape[1] else w64.T @ w64
    return torch.linalg.eigvalsh(gram)


def _coherence(w: Tensor) -> tuple[float, float]:
    """(max, median) absolute cosine over distinct pairs; see the module docstring."""
    width = w.shape[0]
    pairs = width * (width - 1) // 2
    if pairs == 0:
        return math.nan, math.nan
    dtype = torch.float64 if w.dtype == torch.float64 else torch.float32
    u = w.to(dtype)
    u = u / u.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    exact = pairs <= EXACT_MEDIAN_PAIRS
    values: list[Tensor] = []
    hist = torch.zeros(HIST_BINS, dtype=torch.long, device=w.device)
    cmax = 0.0
    for start in range(0, width - 1, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, width)
        block = (u[start:stop] @ u[start:].T).abs_()  # rows i, columns j >= start
        rows = torch.arange(start, stop, device=w.device)[:, None]
        cols = torch.arange(start, width, device=w.device)[None, :]
        upper = block[cols > rows].clamp_(max=1.0)
        cmax = max(cmax, float(upper.max()))
        if exact:
            values.append(upper.to(torch.float64))
        else:
            bins = (upper * HIST_BINS).long().clamp_(max=HIST_BINS - 1)
            hist += torch.bincount(bins, minlength=HIST_BINS)
    if exact:
        sorted_vals = torch.cat(values).sort().values
        mid = pairs // 2
        median = sorted_vals[mid] if pairs % 2 else 0.5 * (sorted_vals[mid - 1] + sorted_vals[mid])
        return cmax, float(median)
    # first bin whose cumulative count reaches half the pairs
    rank = (pairs + 1) // 2
    b = int(torch.searchsorted(hist.cumsum(0), torch.tensor(rank, device=w.device)))
    return cmax, (b + 0.5) / HIST_BINS
