"""Separation statistics comparable across layers of different dimension, with standard errors.

For features ``X: (N, D)`` with labels ``y`` (priors ``p_c = n_c / N``, class means ``mu_c``,
mean ``mu``, within-class traces ``t_c = E_c ||x - mu_c||^2``) the logged measures are
(formulas and biases: docs/statistics.md):

- ``within`` = ``sum_c p_c t_c`` estimated by ``sum_c p_c sum_{i in c} ||x_i - mu_c||^2 /
  (n_c - 1)`` (unbiased), ``between`` = ``sum_c p_c ||mu_c - mu||^2`` estimated from
  distinct pairs of samples (the plug-in value minus its noise term ``sum_c (1 - p_c) t_c / N``;
  unbiased, may be slightly negative when the classes do not differ), and the shares
  ``within_rel``, ``between_rel`` = each over ``within + between``;
- ``ncm_acc``: nearest-class-mean accuracy (percent) where a sample's own class mean leaves it
  out (``||x_i - mu_c^{(-i)}||^2 = (n_c / (n_c - 1))^2 ||x_i - mu_c||^2``, closed form);
- ``fisher_k{K}``: the Fisher ratio ``tr(Sigma_W^{-1} Sigma_B)`` in the ``K`` leading principal
  directions of the probe (the same ``K`` for every layer; fewer when the features span
  fewer), cross-fitted: the probe is split in two class-stratified halves A and B,
  ``F = sum_c p_c (m_c^A - m^A)^T W^A (m_c^B - m^B)`` with ``W^A`` the inverse within-class
  covariance of A times the Wishart factor ``(n_A - C - K - 1) / n_A``, averaged with the
  roles of A and B swapped. For Gaussian classes with a shared covariance it is unbiased
  for the population ratio in that subspace, whatever ``D``;
- ``fisher_insample``: the old in-sample ratio in ``N - C`` dimensions
  (`sepconc.metrics.class_stats`). CAVEAT: its value depends mostly on ``N``, ``D`` and the
  ridge; never compare it between layers;
- ``<name>_se`` for every measure but ``fisher_insample``: the standard error at the probe
  size, from ``HALVES`` random class-stratified half-samples (delete-``N/2`` jackknife, Shao
  and Wu 1989: the variance of the half-sample values estimates the variance at size ``N``).
  `paired_deltas` gives the change between two layers of the same probe with the standard
  error of the change (the same halves for both layers: much smaller than either ``_se``).

Everything is computed in float64 from the ``N x N`` Gram matrix of the centred features
(accumulated over column chunks on the features' device; no ``D x D`` matrix), then on the
CPU from that matrix (the same numbers whatever the device), cost ``O(N^2 D + N^3)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sepconc.metrics.class_stats import (
    _CHUNK_ELEMS,
    RIDGE,
    RTOL,
    _assemble,
    _check_inputs,
    dual_from_gram,
)

#: Leading principal directions of the cross-fitted Fisher ratio (the same for every layer).
FISHER_K = 16
#: Key of the cross-fitted Fisher ratio.
FISHER_KEY = f"fisher_k{FISHER_K}"
#: Random half-samples behind each standard error.
HALVES = 8
#: Measures that get a standard error, in the order they are logged.
MEASURES = ("within", "between", "within_rel", "between_rel", "ncm_acc", FISHER_KEY)


def centred_gram(features: Tensor) -> Tensor:
    """``Xc Xc^T`` (float64, (N, N)) of the features flattened to ``X: (N, D)``, mean removed."""
    x = features.detach().reshape(features.shape[0], -1)
    n, d = x.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    step = min(d, max(1, _CHUNK_ELEMS // n))
    for start in range(0, d, step):
        cols = x[:, start : start + step].to(torch.float64)
        cols = cols - cols.mean(dim=0)
        gram.addmm_(cols, cols.T)
    return gram


def separation_statistics(
    features: Tensor, labels: Tensor, num_classes: int, k: int = FISHER_K,
    halves: int = HALVES, seed: int = 0, half_values: list[dict[str, float]] | None = None,
) -> dict[str, float]:  # fmt: skip
    """The layer-comparable measures of the module docstring, their ``_se``, ``fisher_insample``.

    features: (N, ...) flattened to (N, D); labels: (N,) integers in [0, num_classes).
    The Fisher key is ``fisher_k{k}``; ``halves`` = 0 skips the standard errors. Every present
    class needs at least 4 samples (2 per fold), else the measures are NaN. ``half_values``,
    if a list, receives the measures of each half-sample: the halves depend on the labels
    and ``seed`` only, so two layers of the same probe share them (paired differences). Raises
    ValueError on malformed input; non-finite features give NaN everywhere.
    """
    x, y = _check_inputs(features, labels, num_classes, RIDGE, None)
    if k < 1 or halves < 0:
        raise ValueError(f"k must be >= 1 and halves >= 0, got k={k}, halves={halves}")
    if not bool(torch.isfinite(x).all()):
        keys = [*_keys(k), *(f"{m}_se" for m in _keys(k)), "fisher_insample"]
        return dict.fromkeys(keys, math.nan)
    gram = centred_gram(x).cpu()  # the O(N^2 D) part on the features' device, the rest on CPU
    present, idx = torch.unique(y.cpu(), return_inverse=True)
    gen = torch.Generator().manual_seed(seed)
    out = _measures(gram, idx, present.numel(), k, gen)
    out["fisher_insample"] = _insample_fisher(gram, idx, present)
    if halves:
        values = [_measures(*_half(gram, idx, gen), present.numel(), k, gen) for _ in range(halves)]
        for key in _keys(k):
            column = torch.tensor([v[key] for v in values], dtype=torch.float64)
            out[f"{key}_se"] = float(column.std()) if halves > 1 else math.nan
        if half_values is not None:
            half_values.extend(values)
    return out


def _keys(k: int) -> tuple[str, ...]:
    return (*MEASURES[:-1], f"fisher_k{k}")


def _half(gram: Tensor, idx: Tensor, gen: Tensor) -> tuple[Tensor, Tensor]:
    """A class-stratified random half of the samples: (sub-Gram, sub-labels)."""
    keep = torch.cat([c[torch.randperm(c.numel(), generator=gen)[: c.numel() // 2]]
                      for c in _members(idx)])  # fmt: skip
    return gram[keep][:, keep], idx[keep]


def _members(idx: Tensor) -> list[Tensor]:
    return [torch.nonzero(idx == c).flatten() for c in range(int(idx.max()) + 1)]


def _averaging(idx: Tensor, classes: int) -> tuple[Tensor, Tensor]:
    """(A: (C, n) with A_ci = 1/n_c for y_i = c, counts: (C,) float64)."""
    counts = torch.bincount(idx, minlength=classes).to(torch.float64)
    a = torch.zeros(classes, idx.numel(), dtype=torch.float64, device=idx.device)
    a[idx, torch.arange(idx.numel())] = 1.0
    return a / counts.clamp_min(1)[:, None], counts


def _measures(gram: Tensor, idx: Tensor, classes: int, k: int, gen) -> dict[str, float]:
    """Shares, leave-one-out NCM accuracy and the cross-fitted Fisher ratio of one sample."""
    n = idx.numel()
    a, counts = _averaging(idx, classes)
    keys = _keys(k)
    if bool((counts < 4).any()):
        return dict.fromkeys(keys, math.nan)
    priors = counts / n
    ga = gram @ a.T  # <x_i, mu_c>
    aga = a @ ga  # <mu_c, mu_c'>
    dist = torch.diagonal(gram)[:, None] - 2.0 * ga + torch.diagonal(aga)[None, :]
    rr = dist.gather(1, idx[:, None]).squeeze(1)  # ||x_i - mu_{y_i}||^2
    t = torch.zeros(classes, dtype=torch.float64).index_add_(0, idx, rr) / (counts - 1)
    within = float((priors * t).sum())
    centred = torch.diagonal(aga) - 2.0 * (aga @ priors) + priors @ aga @ priors
    between = float((priors * centred).sum()) - float(((1.0 - priors) * t).sum()) / n
    total = within + between
    loo = dist.clone()
    loo[torch.arange(n), idx] = rr * (counts[idx] / (counts[idx] - 1)) ** 2
    ncm = 100.0 * float((loo.argmin(dim=1) == idx).to(torch.float64).mean())
    values = (within, between, within / total if total > 0 else math.nan,
              between / total if total > 0 else math.nan, ncm,
              _crossfit_fisher(gram, idx, priors, k, gen))  # fmt: skip
    return dict(zip(keys, values, strict=True))


def _scores(gram: Tensor, k: int, oversample: int = 10, power: int = 4) -> Tensor:
    """(n, k') principal-component scores from the centred Gram matrix, k' <= k non-zero.

    Randomized subspace iteration (Halko et al. 2011) with a fixed seed: ``O(n^2 k)``.
    """
    n = gram.shape[0]
    width = min(n, k + oversample)
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(n, width, generator=gen, dtype=torch.float64).to(gram.device)
    for _ in range(power):
        basis, _ = torch.linalg.qr(gram @ basis)
    w, v = torch.linalg.eigh(basis.T @ gram @ basis)
    w, v = w.flip(0), v.flip(1)
    top = float(w[0]) if w.numel() else 0.0
    keep = min(k, int((w > RTOL * top).sum())) if top > 0 else 0
    return (basis @ v[:, :keep]) * w[:keep].sqrt()


def _crossfit_fisher(gram: Tensor, idx: Tensor, priors: Tensor, k: int, gen) -> float:
    """Cross-fitted, Wishart-corrected Fisher ratio in the k leading principal directions."""
    z = _scores(gram, k)
    classes, dim = priors.numel(), z.shape[1]
    if dim == 0:
        return 0.0
    fold = torch.zeros(idx.numel(), dtype=torch.bool)
    for members in _members(idx):
        fold[members[torch.randperm(members.numel(), generator=gen)[: members.numel() // 2]]] = True
    parts = []
    for part in (fold, ~fold):
        zs, ys = z[part], idx[part]
        a, counts = _averaging(ys, classes)
        means = a @ zs
        resid = zs - means[ys]
        n_part = ys.numel()
        dof = n_part - classes - dim - 1
        if dof <= 0:
            return math.nan
        cov = resid.T @ resid / n_part
        parts.append((means - priors @ means, torch.linalg.inv(cov) * (dof / n_part)))
    (m_a, w_a), (m_b, w_b) = parts
    cross = 0.5 * ((m_a @ w_a) * m_b).sum(dim=1) + 0.5 * ((m_b @ w_b) * m_a).sum(dim=1)
    return float((priors * cross).sum())


def _insample_fisher(gram: Tensor, idx: Tensor, present: Tensor) -> float:
    """`class_statistics`' in-sample Fisher ratio, from the centred Gram matrix."""
    n = idx.numel()
    a, counts = _averaging(idx, present.numel())
    eye = torch.eye(n, dtype=torch.float64, device=gram.device)
    t = torch.cat([eye - a[idx], a - (counts / n) @ a])  # [R; M] = T Xc
    lifted = t @ gram @ t.T
    rr, rm, mm, lam, coords = dual_from_gram(lifted, n)
    stats = _assemble(rr, rm, mm, lam, coords, idx, counts, present, RIDGE, None, RTOL)
    return stats["fisher"]


def paired_deltas(
    before: tuple[dict[str, float], list[dict[str, float]]],
    after: tuple[dict[str, float], list[dict[str, float]]],
    keys: tuple[str, ...] = (FISHER_KEY, "ncm_acc", "within_rel"),
) -> dict[str, float]:
    """``delta_<key>`` = after - before and ``delta_<key>_se`` from the paired half-samples.

    before, after: (`separation_statistics` result, its ``half_values``) of two layers of the
    same probe with the same ``halves`` and ``seed`` (NaN SE with fewer than 2 halves).
    """
    out: dict[str, float] = {}
    for key in keys:
        out[f"delta_{key}"] = after[0][key] - before[0][key]
        diffs = torch.tensor([b[key] - a[key] for a, b in zip(before[1], after[1], strict=True)],
                             dtype=torch.float64)  # fmt: skip
        out[f"delta_{key}_se"] = float(diffs.std()) if diffs.numel() > 1 else math.nan
    return out
