"""One trial's config from a sweep: its base plus its swept values, and the values `validate`
checks for a search entry (re-exported by `sepconc.sweep.space`; kept apart so that the
modules `space` uses, `constraints` and `dedup`, can use them too without an import cycle)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sepconc.sweep.rules import resolve_per_block

if TYPE_CHECKING:
    from sepconc.sweep.spec import SweepSpec

RANGES = ("uniform", "loguniform", "randint")  # [low, high]; randint's high is inclusive


def sampler_values(kind: str, args: list) -> list:
    """The values `validate` checks for one search entry, as a trial would receive them:
    every grid/choice option; randint's low, middle and high (ints); uniform's and
    loguniform's low, middle (arithmetic / geometric) and high, as the floats Tune draws."""
    if kind in ("grid", "choice"):
        return list(args)
    low, high = args
    if kind == "randint":
        return sorted({low, (low + high) // 2, high})
    middle = (low + high) / 2 if kind == "uniform" else math.sqrt(low * high)
    return [float(low), float(middle), float(high)]


def trial_flat_config(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The flat training config of one trial, as `sweep/trial.py` builds it: `base`
    overridden by the sampled `params`, then the sweep's run settings (one DDP process per
    `workers_per_trial`, checkpoints, no per-trial MLflow run), seed 0 unless drawn."""
    flat = {**spec.base, **params}
    flat.update(num_workers=spec.resources.get("workers_per_trial", 1), tracking=False,
                checkpoint_every=spec.checkpoint.get("every", 1),
                checkpoint_keep=spec.checkpoint.get("keep", 2))  # fmt: skip
    flat.setdefault("seed", 0)
    return resolve_per_block(flat)  # per-block rules' `{start, factor}` (sepconc.sweep.rules)
