"""Search space: a `SweepSpec` as a Ray Tune parameter space, and its expansion for `validate`.

Grid entries multiply (Tune's `grid_search`); `choice`/`uniform`/`loguniform`/
`randint` are drawn once per sample. Trial count = product of grid sizes x `samples`.
Without a `seed` in the file, trials use seed 0, or with `samples > 1` a drawn seed each
(so repeats of a grid point are not the same run); the seed is logged with the trial.
A value may be a per-block list: `frame_width: {grid: [[1024, 2048], [512, 1024]]}`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

from sepconc.config import Config
from sepconc.sweep.spec import SweepSpec


def tune_param_space(spec: SweepSpec) -> dict[str, Any]:
    """`{"params": {name: tune domain or constant}}` for `Tuner(param_space=...)`."""
    from ray import tune

    params: dict[str, Any] = {}
    for key, entry in spec.search.items():
        kind, args = next(iter(entry.items()))
        params[key] = {
            "grid": lambda a: tune.grid_search(a),
            "choice": lambda a: tune.choice(a),
            "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(a[0], a[1] + 1),  # inclusive high, like the YAML says
        }[kind](args)
    if "seed" not in spec.base and "seed" not in params:  # samples > 1 (spec.py): the repeats
        params["seed"] = tune.randint(0, 2**31 - 1)  # differ in their seed, each one logged
    return {"params": params}


def trial_count(spec: SweepSpec) -> int:
    grids = [len(e["grid"]) for e in spec.search.values() if "grid" in e]
    return math.prod(grids) * spec.samples


def trial_flat_config(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The flat training config of one trial: `base` overridden by the sampled `params`."""
    return {**spec.base, **params}


def architecture_variants(spec: SweepSpec) -> Iterator[tuple[dict[str, Any], Config]]:
    """Every distinct combination of the discrete options (grid and choice; both ends of
    randint), with continuous parameters at their low end: what `validate` builds."""
    keys, options = [], []
    for key, entry in spec.search.items():
        kind, args = next(iter(entry.items()))
        if kind in ("grid", "choice"):
            values = args
        elif kind == "randint":
            values = sorted({args[0], args[1]})
        else:
            values = [args[0]]
        keys.append(key)
        options.append(values)
    for combo in itertools.product(*options):
        params = dict(zip(keys, combo, strict=True))
        flat = trial_flat_config(spec, params)
        yield params, Config.from_flat(flat, where=f"trial {_describe(params)}")


def _describe(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items()) or "(base)"  # fmt: skip


def describe(params: dict[str, Any]) -> str:
    """`key=value ...` of a trial's swept parameters (for messages and tables)."""
    return _describe(params)
