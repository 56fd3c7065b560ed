"""The Pareto front of a multi-objective sweep: the trials no other trial beats on every objective.

A trial dominates another when it is at least as good on every objective (`mode` per
objective) and better on one. The front is computed by sorting the trials
lexicographically by their objectives (best first): a trial can only be dominated by one
sorted before it, so each is compared with the front found so far. Trials with a missing
(NaN) objective are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sepconc.tracking.read import Trial, score


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """True when objective values `a` dominate `b` (`modes`: `min`/`max` per objective)."""
    better = False
    for x, y, mode in zip(a, b, modes, strict=True):
        if mode == "min":
            x, y = -x, -y
        if x < y:
            return False
        better |= x > y
    return better


def pareto_front(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """Indices of the non-dominated `points` (rows of objective values), ordered by the
    first objective, best first (ties: the next objectives, then the index). Points with a
    NaN are never on the front; equal points are all on it."""
    signs = [1.0 if m == "min" else -1.0 for m in modes]  # sort key: smaller is better
    valid = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    order = sorted(valid, key=lambda i: ([s * v for s, v in zip(signs, points[i], strict=True)], i))
    front: list[int] = []
    for i in order:
        if not any(dominates(points[j], points[i], modes) for j in front):
            front.append(i)
    return front


def trial_points(trials: Sequence[Trial], metrics: Sequence[str], modes: Sequence[str]):
    """Each trial's objective values, as `best` ranks by them (`read.score`: the trainer's
    best-so-far `best_<metric>` where logged, else the best of the fetched history, else
    the last value, e.g. `params`/`flops` logged at step 0)."""
    return [[score(t, m, mode) for m, mode in zip(metrics, modes, strict=True)] for t in trials]
