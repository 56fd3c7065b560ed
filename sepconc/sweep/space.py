"""Search space: a `SweepSpec` as a Ray Tune parameter space, and its expansion for `validate`.

Grid entries multiply; `choice`/`uniform`/`loguniform`/`randint` are drawn once per
sample, by sepconc before launch (`plan_trials`: the same file plans the same trials).
Options that do not apply to a trial's model are dropped from it, identical trials are
merged and constraint violators refused, so a sweep runs `trial_count` distinct trials
(at most the product of grid sizes x `samples`). Under tpe/nsga2 the searcher suggests
each trial instead (`sepconc.sweep.search`). Without a `seed` in the file, trials use
seed 0, or with `samples > 1` a drawn seed each (so repeats of a grid point are not the
same run); the seed is logged with the trial.
A value may be a per-block list: `frame_width: {grid: [[1024, 2048], [512, 1024]]}`.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sepconc.config import PER_BLOCK, Config
from sepconc.errors import short_number

# one trial's config and a search entry's checked values live there (no import cycle with
# constraints/dedup); callers import them from here as before
from sepconc.sweep.trial_config import RANGES as RANGES
from sepconc.sweep.trial_config import sampler_values, trial_flat_config

if TYPE_CHECKING:
    from sepconc.sweep.spec import SweepSpec

MODEL_BASED = ("tpe", "nsga2")  # searchers that suggest each trial (sepconc.sweep.search)


def tune_param_space(spec: SweepSpec, previous=()) -> dict[str, Any]:
    """`{"params": ...}` for `Tuner(param_space=...)`: under random/grid, Tune's grid over the
    `planned_trials` (each a dict of swept values; `num_samples` 1); under tpe/nsga2 the
    searcher suggests every trial's params (`sepconc.sweep.search.build_search_alg`)."""
    from ray import tune

    if spec.searcher.get("type", "random") in MODEL_BASED:
        return {"params": {}}
    return {"params": tune.grid_search(planned_trials(spec, previous))}


def tune_num_samples(spec: SweepSpec) -> int:
    """`TuneConfig.num_samples`: the trial budget under tpe/nsga2, else 1 (the planned list)."""
    return spec.samples if spec.searcher.get("type", "random") in MODEL_BASED else 1


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
    """Trials the sweep runs: the distinct planned ones (random/grid), the budget (tpe/nsga2)."""
    if spec.searcher.get("type", "random") in MODEL_BASED:
        return spec.samples
    return len(planned_trials(spec))


@dataclass
class Plan:
    """The trials of a random/grid sweep, and what was taken out before launch.

    `drawn`: configurations enumerated (grid product x `samples`); `refused`: `(params,
    broken bounds)` of those outside `constraints:`; `merged`: those identical to an
    earlier one (or to a `previous` trial); `dropped`: swept key -> trials it did not apply
    to (removed from their params)."""

    trials: list[dict[str, Any]]
    drawn: int = 0
    refused: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)
    merged: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def planned_trials(spec: SweepSpec, previous=()) -> list[dict[str, Any]]:
    """The swept values of every trial a random/grid sweep launches (`plan_trials`), in
    Tune's order (the grid, `samples` times); [] under tpe/nsga2 (the searcher suggests)."""
    return plan_trials(spec, previous).trials


def plan_trials(spec: SweepSpec, previous=()) -> Plan:
    """Enumerate the grid x `samples` (drawn entries from `random.Random(searcher.seed or
    0)`: the same file plans the same trials), then per trial: drop the swept options that
    do not apply to its model (`dedup.drop_inapplicable`), merge it into an identical
    earlier trial or a `previous` one (`[(params, result)]`, already run), refuse it when
    it breaks `constraints:` (each distinct configuration counted once)."""
    from sepconc.sweep.constraints import violations
    from sepconc.sweep.dedup import drop_inapplicable, trial_key

    if spec.searcher.get("type", "random") in MODEL_BASED:
        return Plan([])
    plan = Plan([])
    seen = {trial_key(spec, drop_inapplicable(spec, dict(p))[0]) for p, _ in previous}
    for params in _enumerate(spec):
        plan.drawn += 1
        params, dropped = drop_inapplicable(spec, params)
        for key in dropped:
            plan.dropped[key] = plan.dropped.get(key, 0) + 1
        key = trial_key(spec, params)
        if key in seen:
            plan.merged += 1
            continue
        seen.add(key)
        broken = violations(spec, params)
        if broken:
            plan.refused.append((params, broken))
            continue
        plan.trials.append(params)
    return plan


def _enumerate(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """Every configuration of a random/grid sweep before any is removed (`plan_trials`)."""
    rng = random.Random(spec.searcher.get("seed", 0))
    grids = {k: e["grid"] for k, e in spec.search.items() if "grid" in e}
    draw_seed = "seed" not in spec.base and "seed" not in spec.search  # samples > 1 (spec.py)
    for _ in range(spec.samples):
        for combo in itertools.product(*grids.values()):
            chosen = dict(zip(grids, combo, strict=True))
            params = {k: chosen[k] if k in chosen else _draw(e, rng)
                      for k, e in spec.search.items()}  # fmt: skip
            if draw_seed:  # repeats of a grid point differ in their seed, each one logged
                params["seed"] = rng.randrange(2**31 - 1)
            yield params


def _draw(entry: dict[str, list], rng: random.Random) -> Any:
    """One value of a `choice`/`uniform`/`loguniform`/`randint` (both ends included) entry."""
    kind, args = next(iter(entry.items()))
    if kind == "choice":
        return copy.deepcopy(rng.choice(args))
    if kind == "randint":
        return rng.randint(args[0], args[1])
    if kind == "uniform":
        return rng.uniform(args[0], args[1])
    return math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))


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
    return " ".join(f"{k}={short_number(v)}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items()) or "(base)"  # fmt: skip
