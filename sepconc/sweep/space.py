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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sepconc.config import PER_BLOCK, Config
from sepconc.sweep.rules import resolve_per_block

if TYPE_CHECKING:
    from sepconc.sweep.spec import SweepSpec

RANGES = ("uniform", "loguniform", "randint")  # [low, high]; randint's high is inclusive


def tune_param_space(spec: SweepSpec, previous=()) -> dict[str, Any]:
    """`{"params": {name: tune domain or constant}}` for `Tuner(param_space=...)`; with
    `previous` (`--extend`), a grid over the trials not finished yet (`num_samples` 1)."""
    from ray import tune

    if previous:  # --extend (sepconc.sweep.extend): search's planned_trials replaces this
        return {"params": tune.grid_search(remaining_trials(spec, previous))}

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


def remaining_trials(spec: SweepSpec, previous=()) -> list[dict[str, Any]]:
    """The trials of `spec` (grid x `samples`, drawn entries from `random.Random(0)`)
    without those whose resolved config equals another's or a `previous` one's
    (`[(params, result)]`, `sepconc.sweep.extend.previous_trials`). Stand-in for issue
    13.7's `planned_trials(spec, previous)` until it lands."""
    import random

    rng = random.Random(0)
    grids = {k: e["grid"] for k, e in spec.search.items() if "grid" in e}
    seen = {config_identity(spec, p) for p, _ in previous}
    out = []
    for _ in range(spec.samples):
        for combo in itertools.product(*grids.values()):
            params = dict(zip(grids, combo, strict=True))
            for key, entry in spec.search.items():
                kind, args = next(iter(entry.items()))
                if kind == "choice":
                    params[key] = rng.choice(args)
                elif kind == "randint":
                    params[key] = rng.randint(args[0], args[1])
                elif kind in ("uniform", "loguniform"):
                    low, high = args
                    params[key] = (rng.uniform(low, high) if kind == "uniform" else
                                   low * (high / low) ** rng.random())  # fmt: skip
            if "seed" not in spec.base and "seed" not in spec.search and spec.samples > 1:
                params["seed"] = rng.randint(0, 2**31 - 1)
            key = config_identity(spec, params)
            if key not in seen:
                seen.add(key)
                out.append(params)
    return out


def config_identity(spec: SweepSpec, params: dict[str, Any]) -> str:
    """Equal for two trials of `spec` with the same resolved training config."""
    from sepconc.errors import UserError

    try:
        flat = Config.from_flat(trial_flat_config(spec, params)).to_flat()
    except UserError:
        flat = params
    return repr(sorted(flat.items()))


def trial_count(spec: SweepSpec) -> int:
    grids = [len(e["grid"]) for e in spec.search.values() if "grid" in e]
    return math.prod(grids) * spec.samples


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


def sweep_wording(problem: str, spec: SweepSpec) -> str:
    """A trial config's problem in the sweep file's words: a trial's `num_workers` is the
    file's `resources.workers_per_trial`."""
    workers = spec.resources.get("workers_per_trial", 1)
    return problem.replace(
        f"by num_workers {workers};", f"by resources.workers_per_trial {workers};"
    )


@dataclass
class Variant:
    """One combination of the discrete options: its label (the values the trials use,
    ranges for what is drawn), its config (None when refused) and its problems."""

    params: dict[str, Any]
    label: str
    config: Config | None
    problems: list[str] = field(default_factory=list)


def architecture_variants(spec: SweepSpec) -> Iterator[Variant]:
    """Every combination of the discrete options (each grid and choice option; randint's
    low, middle and high), continuous parameters at their middle: what `validate` builds."""
    keys, options = [], []
    for key, entry in spec.search.items():
        kind, args = next(iter(entry.items()))
        values = sampler_values(kind, args)
        keys.append(key)
        options.append(values if kind not in ("uniform", "loguniform") else [values[1]])
    for combo in itertools.product(*options):
        params = dict(zip(keys, combo, strict=True))
        config, problems = Config.check_flat(trial_flat_config(spec, params), where="")
        label = describe_variant(spec, params, config if not problems else None)
        yield Variant(params, label, None if problems else config,
                      [f"trial {label}: {sweep_wording(p, spec)}" for p in problems])  # fmt: skip


def describe_variant(spec: SweepSpec, params: dict[str, Any], config: Config | None) -> str:
    """`key=value ...` with the values a trial uses (a per-block list as padded), drawn
    parameters as their ranges (`lr ~ loguniform[0.003, 0.03]`)."""
    flat = config.to_flat() if config is not None else {}
    parts = []
    for key, value in params.items():
        kind, args = next(iter(spec.search[key].items()))
        if kind in ("uniform", "loguniform"):
            parts.append(f"{key} ~ {kind}[{args[0]}, {args[1]}]")
            continue
        used = flat.get(key, value)
        if key in PER_BLOCK and used in ([value], value):
            used = value  # shown as given when padding changed nothing
        suffix = f" (of randint[{args[0]}, {args[1]}])" if kind == "randint" else ""
        parts.append(f"{key}={used}{suffix}")
    return " ".join(parts) or "(base)"


def describe(params: dict[str, Any]) -> str:
    """`key=value ...` of a trial's swept parameters (for messages and tables); floats at 4
    significant digits."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items()) or "(base)"  # fmt: skip
