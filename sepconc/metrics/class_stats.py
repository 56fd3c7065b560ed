"""In-sample class-separation statistics of a layer's output.

The trainer logs the layer-comparable, held-out measures of `sepconc.metrics.separation`;
of this module it logs only ``fisher`` as ``fisher_insample`` (CAVEAT: computed in up to
``N - C`` dimensions on the same samples, its value depends mostly on ``N``, ``D`` and the
ridge, so it does not compare layers; docs/statistics.md).

For features ``Phi(x)`` flattened to ``X: (N, D)`` with labels ``y: (N,)``:

- priors ``p_c = n_c / N`` over the classes present in ``y`` (absent classes are skipped),
- class means ``mu_c``, global mean ``mu = sum_c p_c mu_c`` (the plain mean of ``X``),
- within-class covariance ``Sigma_W = sum_c p_c Sigma_c`` with the biased (``1/n_c``)
  class covariances ``Sigma_c``, i.e. ``Sigma_W = R^T R / N`` where ``R = X - mu_{y}``
  is the within-class-centred data,
- between-class covariance ``Sigma_B = sum_c p_c (mu_c - mu)(mu_c - mu)^T``.

Returned (plain floats):

- ``within = tr(Sigma_W)``, ``between = tr(Sigma_B)``,
  ``within_rel = within / (within + between)``, ``between_rel = between / (within + between)``;
- ``fisher = tr(Sigma_W^{-1} Sigma_B) = sum_c p_c fisher_class/c``;
- ``fisher_class/{c} = ||Sigma_W^{-1/2} (mu_c - mu)||^2`` for every present class ``c``;
- ``ncm_acc``: nearest-class-mean accuracy on the same samples (the means include the sample
  itself), in percent (0 to 100, the unit of ``val_acc1``); ties go to the smallest class
  index;
- ``fisher_dim``: the dimension ``r`` of the subspace the Fisher terms are computed in;
- ``between_kept``: the fraction of ``tr(Sigma_B)`` lying in that subspace (1 when
  ``Sigma_W`` is non-singular). A small value means the class means differ mostly along
  directions with no observed within-class variance (typical when ``D >= N``), which the
  Fisher terms below do not count.

Singular ``Sigma_W`` (the rule is part of the scientific output)
---------------------------------------------------------------
``Sigma_W`` has rank at most ``N - C`` and is singular whenever ``D > N - C`` or the features
are degenerate. Let ``lambda_1 >= lambda_2 >= ...`` and ``v_i`` be its eigenpairs. The Fisher
terms use

    ``Sigma_W^+ = sum_{i <= r} v_i v_i^T / (lambda_i + eps)``,
    ``r = min(#{i : lambda_i > rtol * lambda_1}, max_dim)``,
    ``eps = ridge * tr(Sigma_W) / r0``, ``r0 = #{i : lambda_i > rtol * lambda_1}``,

i.e. a pseudo-inverse restricted to the leading principal subspace of ``Sigma_W`` (the
numerical range, optionally capped at ``max_dim`` directions), with a ridge relative to the
mean non-zero eigenvalue. Components of ``mu_c - mu`` orthogonal to that subspace are
ignored (``between_kept`` reports how much of ``tr(Sigma_B)`` that leaves). With
``ridge = 0``, ``max_dim = None`` and a non-singular, well-conditioned ``Sigma_W`` this is
exactly ``tr(Sigma_W^{-1} Sigma_B)``; the default ``ridge = 1e-3`` bounds the weight of the
tiniest (noise) eigen-directions at ``1000 / mean eigenvalue``. The relative ridge keeps
``fisher`` invariant to scaling and to orthogonal maps of the features; invariance to
general invertible maps holds for ``ridge = 0`` only. If no direction is kept (no
within-class variance at all) the Fisher terms are 0.

Computation
-----------
In float64 and never forming a ``D x D`` matrix when ``D > N``: the rows of
``Z = [R; M]`` (``M`` the ``C x D`` centred class means ``mu_c - mu``) are accumulated into
the ``(N + C) x (N + C)`` Gram matrix over column chunks of ``X``. The non-zero eigenvalues
of ``Sigma_W`` are those of ``R R^T / N`` (eigenvectors ``U``, eigenvalues ``w = N lambda``),
and ``v_i^T (mu_c - mu) = (U^T R M^T)_{ic} / sqrt(w_i)``. When ``D <= N`` the ``D x D``
covariance is decomposed directly. Cost ``O(N^2 D + N^3)`` (dual) or ``O(N D^2 + D^3)``
(primal), on the device of the input.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: Eigenvalues of Sigma_W at or below RTOL * lambda_max are treated as zero.
RTOL = 1e-10
#: Default relative ridge (times the mean non-zero eigenvalue of Sigma_W).
RIDGE = 1e-3
#: Float64 elements per column chunk of the dual path (16 MB).
_CHUNK_ELEMS = 2_000_000


def class_statistics(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    ridge: float = RIDGE,
    max_dim: int | None = None,
    rtol: float = RTOL,
) -> dict[str, float]:
    """Within/between-class statistics, Fisher ratios and NCM accuracy (module docstring).

    features: (N, ...) flattened to (N, D); labels: (N,) integers in [0, num_classes).
    ridge: relative ridge (>= 0); max_dim: cap on the Fisher subspace dimension (None: no
    cap); rtol: relative eigenvalue threshold. Non-finite features give NaN everywhere.
    """
    x, y = _check_inputs(features, labels, num_classes, ridge, max_dim)
    n, d = x.shape
    present = torch.unique(y)
    if not bool(torch.isfinite(x).all()):
        log.warning("class_statistics: non-finite features, returning NaN")
        return _nan_result(present)
    counts = torch.bincount(y, minlength=num_classes)[present].to(torch.float64)
    idx = torch.searchsorted(present, y)  # class index in 0..C'-1 for each sample
    if d <= n:
        rr, rm, mm, lam, coords = _primal(x, idx, counts)
    else:
        rr, rm, mm, lam, coords = _dual(x, idx, counts)
    return _assemble(rr, rm, mm, lam, coords, idx, counts, present, ridge, max_dim, rtol)


def class_statistics_by_layer(
    outputs: dict[str, Tensor],
    labels: Tensor,
    num_classes: int,
    prefix_fmt: str = "{name}/",
    ridge: float = RIDGE,
    max_dim: int | None = None,
    rtol: float = RTOL,
) -> dict[str, float]:
    """`class_statistics` of each named output, flattened: ``{"input/fisher": ..., ...}``.

    outputs: name -> (N, ...) features of the same N samples (insertion order kept);
    the key prefix is ``prefix_fmt.format(name=name)``.
    """
    flat: dict[str, float] = {}
    for name, feats in outputs.items():
        prefix = prefix_fmt.format(name=name)
        stats = class_statistics(feats, labels, num_classes, ridge, max_dim, rtol)
        flat.update({prefix + key: value for key, value in stats.items()})
    return flat


def _check_inputs(
    features: Tensor, labels: Tensor, num_classes: int, ridge: float, max_dim: int | None
) -> tuple[Tensor, Tensor]:
    if features.dim() < 1 or features.shape[0] == 0:
        raise ValueError(
            f"features must be (N, ...) with N >= 1, got shape {tuple(features.shape)}"
        )
    x = features.detach().reshape(features.shape[0], -1)
    y = labels.detach().reshape(-1).to(device=x.device, dtype=torch.long)
    if y.numel() != x.shape[0]:
        raise ValueError(f"labels has {y.numel()} entries but features has N={x.shape[0]} rows")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if max_dim is not None and max_dim < 1:
        raise ValueError(f"max_dim must be >= 1 or None, got {max_dim}")
    return x, y


def _centre_into(z: Tensor, x: Tensor, idx: Tensor, counts: Tensor) -> None:
    """Fill z: (N + C', w) float64 with [R; M] for the columns x: (N, w), in place.

    R = x - mu_{y} (within-class centred rows), M = mu_c - mu (centred class means).
    """
    n = x.shape[0]
    rows, means = z[:n], z[n:]
    rows.copy_(x)
    means.zero_().index_add_(0, idx, rows).div_(counts[:, None])
    rows.sub_(means[idx])
    means.sub_((counts / n) @ means)


def _primal(x: Tensor, idx: Tensor, counts: Tensor):
    """D <= N: decompose the D x D Sigma_W. Returns (rr, R M^T, M M^T, lambda, coords).

    rr: (N,) ||r_i||^2; lambda: (D,) eigenvalues of Sigma_W, descending;
    coords: (D, C') entries v_i^T (mu_c - mu).
    """
    n, d = x.shape
    z = torch.empty(n + counts.numel(), d, dtype=torch.float64, device=x.device)
    _centre_into(z, x, idx, counts)
    r, m = z[:n], z[n:]
    lam, v = torch.linalg.eigh(r.T @ r / n)
    lam, v = lam.flip(0), v.flip(1)
    return (r * r).sum(dim=1), r @ m.T, m @ m.T, lam, v.T @ m.T


def _dual(x: Tensor, idx: Tensor, counts: Tensor):
    """D > N: work with the (N + C') x (N + C') Gram matrix of Z = [R; M], by column chunks.

    Same returns as `_primal`, with lambda: (N,) the eigenvalues of R R^T / N (the non-zero
    ones of Sigma_W and zeros) and coords: (N, C').
    """
    n, d = x.shape
    c = counts.numel()
    gram = torch.zeros(n + c, n + c, dtype=torch.float64, device=x.device)
    step = min(d, max(1, _CHUNK_ELEMS // (n + c)))
    buf = torch.empty(n + c, step, dtype=torch.float64, device=x.device)
    for start in range(0, d, step):
        cols = x[:, start : start + step]
        z = buf[:, : cols.shape[1]]
        _centre_into(z, cols, idx, counts)
        gram.addmm_(z, z.T)
    return dual_from_gram(gram, n)


def dual_from_gram(gram: Tensor, n: int):
    """`_dual`'s returns from the (N + C') x (N + C') float64 Gram matrix of ``Z = [R; M]``."""
    k_r, rm, mm = gram[:n, :n], gram[:n, n:], gram[n:, n:]
    w, u = torch.linalg.eigh(k_r)
    w, u = w.flip(0), u.flip(1)
    scale = torch.where(w > 0, w.clamp_min(torch.finfo(w.dtype).tiny).rsqrt(), 0.0)
    coords = (u.T @ rm) * scale[:, None]
    return torch.diagonal(k_r).clone(), rm, mm, w / n, coords


def _assemble(rr, rm, mm, lam, coords, idx, counts, present, ridge, max_dim, rtol):
    """Traces, Fisher terms under the singular rule, and NCM accuracy -> dict of floats."""
    n = idx.numel()
    priors = counts / n
    within = float(rr.sum()) / n
    between = float((priors * torch.diagonal(mm)).sum())
    total = within + between

    lam_max = float(lam[0]) if lam.numel() else 0.0
    r0 = int((lam > rtol * lam_max).sum()) if lam_max > 0 else 0
    r = r0 if max_dim is None else min(r0, max_dim)
    if r > 0:
        eps = ridge * within / r0
        kept = coords[:r] ** 2
        per_class = (kept / (lam[:r, None] + eps)).sum(dim=0)
        between_kept = float((priors * kept.sum(dim=0)).sum()) / between if between > 0 else 1.0
    else:
        per_class = torch.zeros_like(priors)
        between_kept = 0.0 if between > 0 else 1.0

    # ||x_i - mu_c||^2 = ||r_i||^2 + 2 <r_i, m_{y_i} - m_c> + ||m_{y_i} - m_c||^2
    diag_mm = torch.diagonal(mm)
    rm_own = rm.gather(1, idx[:, None])
    mm_own = mm[idx]
    dist = (
        rr[:, None] + 2.0 * (rm_own - rm) + diag_mm[idx][:, None] - 2.0 * mm_own + diag_mm[None, :]
    )
    ncm_acc = 100.0 * float((dist.argmin(dim=1) == idx).to(torch.float64).mean())

    out = {
        "within": within,
        "between": between,
        "within_rel": within / total if total > 0 else math.nan,
        "between_rel": between / total if total > 0 else math.nan,
        "fisher": float((priors * per_class).sum()),
        "ncm_acc": ncm_acc,
        "fisher_dim": float(r),
        "between_kept": between_kept,
    }
    for cls, value in zip(present.tolist(), per_class.tolist(), strict=True):
        out[f"fisher_class/{cls}"] = float(value)
    return out


def _nan_result(present: Tensor) -> dict[str, float]:
    keys = ["within", "between", "within_rel", "between_rel", "fisher", "ncm_acc"]
    keys += ["fisher_dim", "between_kept"]
    keys += [f"fisher_class/{c}" for c in present.tolist()]
    return dict.fromkeys(keys, math.nan)
