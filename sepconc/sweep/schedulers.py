"""The sweep file's `scheduler:` section: checked at parse time, built as a Ray Tune scheduler.

```yaml
scheduler: {type: fifo}                           # every trial runs all its epochs (default)
scheduler: {type: asha, grace_period: 1, reduction_factor: 2, max_t: 6}   # ASHAScheduler
scheduler: {type: hyperband, reduction_factor: 3, max_t: 6}               # HyperBandScheduler
scheduler: {type: median, grace_period: 1, min_samples_required: 3}       # MedianStoppingRule
scheduler:                                        # PopulationBasedTraining
  type: pbt
  perturbation_interval: 1     # epochs between exploit/explore steps
  burn_in_period: 0            # epochs before the first one
  quantile_fraction: 0.25      # the bottom fraction clones the top fraction
  resample_probability: 0.25   # else a continuous value is multiplied by 0.8 or 1.2
  synch: false                 # true: all trials perturbed together at each interval
  mutations:                   # keys PBT may change while a trial trains (PERTURBABLE)
    lr: {loguniform: [0.001, 0.1]}     # or {uniform: [a, b]}, or a list of values
    pars_beta: [0.0001, 0.0005, 0.001]
```
The time axis of every scheduler is the reported `epoch`; the metric is the sweep's first
(`metric:`). A PBT trial that clones another continues from that trial's checkpoint with
the new values (`sepconc.sweep.pbt`); its MLflow run records each change.
"""

from __future__ import annotations

import logging
import math
import random
from typing import TYPE_CHECKING, Any

from sepconc.config import suggest

if TYPE_CHECKING:
    from sepconc.sweep.spec import SweepSpec

log = logging.getLogger(__name__)

TYPES = ("fifo", "asha", "hyperband", "median", "pbt")
NUMBER = (int, float)
# key -> (type, default or None: filled in from the schedule)
OPTIONS: dict[str, dict[str, tuple[Any, Any]]] = {
    "fifo": {},
    "asha": {"grace_period": (int, 1), "reduction_factor": (NUMBER, 2), "max_t": (int, None)},
    "hyperband": {"reduction_factor": (NUMBER, 3), "max_t": (int, None)},
    "median": {"grace_period": (int, 1), "min_samples_required": (int, 3)},
    "pbt": {"perturbation_interval": (int, 1), "burn_in_period": (int, 0),
            "quantile_fraction": (NUMBER, 0.25), "resample_probability": (NUMBER, 0.25),
            "synch": (bool, False), "mutations": (dict, None)},
}  # fmt: skip
# Keys PBT may change mid-training: each takes effect on a restored checkpoint (the epoch
# loop sets the optimizer's lr from the config every epoch; `pars_beta` is read every
# step). Their valid ranges clip a perturbed value.
PERTURBABLE = {"lr": (0.0, math.inf), "pars_beta": (0.0, math.inf)}


def check_scheduler(value, epochs: int | None, workers: int, where: str) -> tuple[dict, list[str]]:
    """`(scheduler, problems)`: the `scheduler:` mapping with its defaults filled in
    (`max_t` from `epochs` when known), each problem one line naming the key and the fix."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        return {"type": "fifo"}, [f"{where}: scheduler must be a mapping, got "
                                  f"{type(value).__name__}"]  # fmt: skip
    kind = value.get("type", "fifo")
    if kind not in TYPES:
        return {"type": "fifo"}, [f"{where}: scheduler.type must be one of {', '.join(TYPES)}, "
                                  f"got {kind!r}{suggest(str(kind), TYPES)}"]  # fmt: skip
    allowed, sched, problems = OPTIONS[kind], {"type": kind}, []
    for key, item in value.items():
        if key == "type":
            continue
        if key not in allowed:
            others = [t for t in TYPES if key in OPTIONS[t]]
            fix = (f": an option of {', '.join(others)}, not {kind}" if others
                   else suggest(str(key), allowed))  # fmt: skip
            problems.append(f"{where}: unknown key 'scheduler.{key}'{fix}")
            continue
        kind_ok = allowed[key][0]
        if item is None:
            continue
        if isinstance(item, bool) and kind_ok is not bool or not isinstance(item, kind_ok):
            name = kind_ok.__name__ if isinstance(kind_ok, type) else "number"
            problems.append(f"{where}: scheduler.{key} must be {name}, got {item!r}")
            continue
        sched[key] = item
    for key, (_, default) in allowed.items():
        if default is not None:
            sched.setdefault(key, default)
    if "max_t" in allowed:
        sched.setdefault("max_t", epochs or 1)
    problems += _check_values(sched, epochs, workers, where)
    return sched, problems


def _check_values(sched: dict, epochs: int | None, workers: int, where: str) -> list[str]:
    kind, problems = sched["type"], []
    add = problems.append
    at = f"{where}: scheduler"
    if "max_t" in sched:
        if sched["max_t"] < 1:
            add(f"{at}.max_t must be >= 1 epoch, got {sched['max_t']}")
        elif epochs is not None and sched["max_t"] > epochs:
            add(f"{at}.max_t {sched['max_t']} exceeds base.epochs {epochs}; trials never reach "
                f"it, lower max_t")  # fmt: skip
    if "reduction_factor" in sched and sched["reduction_factor"] <= 1:
        add(f"{at}.reduction_factor must be > 1, got {sched['reduction_factor']}")
    if kind == "asha" and not 1 <= sched["grace_period"] <= sched["max_t"]:
        add(f"{at}.grace_period must be in [1, max_t={sched['max_t']}], "
            f"got {sched['grace_period']}")  # fmt: skip
    if kind == "hyperband" and "reduction_factor" in sched and sched["reduction_factor"] > 1:
        if sched["max_t"] >= 1 and sched["reduction_factor"] > sched["max_t"]:
            add(f"{at}.reduction_factor {sched['reduction_factor']} exceeds max_t "
                f"{sched['max_t']}: hyperband would make one bracket that stops nothing; "
                f"use a reduction_factor <= max_t, or type: fifo")  # fmt: skip
    if kind == "median":
        if sched["grace_period"] < 1:
            add(f"{at}.grace_period must be >= 1 epoch, got {sched['grace_period']}")
        elif epochs is not None and sched["grace_period"] >= epochs:
            add(
                f"{at}.grace_period {sched['grace_period']} is not below base.epochs {epochs}: "
                f"the median rule would never stop a trial; lower it, or use type: fifo"
            )
        if sched["min_samples_required"] < 1:
            add(f"{at}.min_samples_required must be >= 1, got {sched['min_samples_required']}")
    if kind == "pbt":
        problems += _check_pbt(sched, epochs, workers, at)
    return problems


def _check_pbt(sched: dict, epochs: int | None, workers: int, at: str) -> list[str]:
    problems = []
    add = problems.append
    mutations = sched.get("mutations") or {}
    if not mutations:
        add(
            f"{at}: pbt needs mutations: with at least one perturbable key, e.g. mutations: "
            f"{{lr: {{loguniform: [0.001, 0.1]}}}}; perturbable: {', '.join(PERTURBABLE)}"
        )
    for key, domain in mutations.items():
        if key not in PERTURBABLE:
            add(f"{at}.mutations.{key}: pbt can only change {', '.join(PERTURBABLE)} while a "
                f"trial trains (they take effect on a restored checkpoint){suggest(str(key), PERTURBABLE)}")  # fmt: skip
            continue
        problem = _check_domain(key, domain)
        if problem:
            add(f"{at}.mutations.{key}: {problem}")
    if sched["perturbation_interval"] < 1:
        add(f"{at}.perturbation_interval must be >= 1 epoch, got {sched['perturbation_interval']}")
    elif epochs is not None and sched["burn_in_period"] + sched["perturbation_interval"] >= epochs:
        add(f"{at}: burn_in_period {sched['burn_in_period']} + perturbation_interval "
            f"{sched['perturbation_interval']} must be below base.epochs {epochs}, or pbt never "
            f"perturbs a trial; lower them")  # fmt: skip
    if not 0 < sched["quantile_fraction"] <= 0.5:
        add(f"{at}.quantile_fraction must be in (0, 0.5], got {sched['quantile_fraction']}")
    if not 0 <= sched["resample_probability"] <= 1:
        add(f"{at}.resample_probability must be in [0, 1], got {sched['resample_probability']}")
    if workers != 1:
        add(f"{at}: pbt needs resources.workers_per_trial: 1 (a cloned trial restarts from "
            f"another trial's checkpoint in its own process), got {workers}")  # fmt: skip
    return problems


def _check_domain(key: str, domain) -> str | None:
    """Why a mutation's domain is not usable, or None: a non-empty list of numbers, or
    `{uniform|loguniform: [low, high]}` inside the key's valid range."""
    low_ok, high_ok = PERTURBABLE[key]
    if isinstance(domain, list):
        numbers = [v for v in domain if isinstance(v, NUMBER) and not isinstance(v, bool)]
        if not domain or len(numbers) != len(domain):
            return f"a list of values needs numbers, got {domain!r}"
        values = numbers
    elif isinstance(domain, dict) and len(domain) == 1 and next(iter(domain)) in ("uniform",
                                                                                  "loguniform"):  # fmt: skip
        kind, args = next(iter(domain.items()))
        ok = isinstance(args, list) and len(args) == 2 and all(
            isinstance(a, NUMBER) and not isinstance(a, bool) for a in args)  # fmt: skip
        if not ok or args[0] >= args[1]:
            return f"{kind} needs [low, high] with low < high, got {args!r}"
        if kind == "loguniform" and args[0] <= 0:
            return f"loguniform needs low > 0, got {args[0]}"
        values = args
    else:
        return (f"give a list of values or {{uniform|loguniform: [low, high]}}, "
                f"got {domain!r}")  # fmt: skip
    bad = [v for v in values if not low_ok <= v <= high_ok]
    if bad or key == "lr" and 0 in values:
        return f"{key} must be {'> 0' if key == 'lr' else '>= 0'}, got {(bad or [0])[0]}"
    return None


def first_metric(spec: SweepSpec) -> tuple[str, str]:
    """The metric and mode the scheduler and the budget use: the sweep's first objective."""
    metrics = getattr(spec, "metrics", None) or [spec.metric]
    modes = getattr(spec, "modes", None) or [spec.mode]
    return metrics[0], modes[0]


def build_scheduler(spec: SweepSpec):
    """The Ray Tune scheduler of `spec.scheduler` (time axis `epoch`, the first metric)."""
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        HyperBandScheduler,
        MedianStoppingRule,
    )

    sched = spec.scheduler
    metric, mode = first_metric(spec)
    kind = sched["type"]
    common = {"time_attr": "epoch", "metric": metric, "mode": mode}
    if kind == "asha":
        return ASHAScheduler(**common, max_t=sched["max_t"], grace_period=sched["grace_period"],
                             reduction_factor=sched["reduction_factor"])  # fmt: skip
    if kind == "hyperband":
        return HyperBandScheduler(**common, max_t=sched["max_t"],
                                  reduction_factor=sched["reduction_factor"])  # fmt: skip
    if kind == "median":
        return MedianStoppingRule(**common, grace_period=sched["grace_period"],
                                  min_samples_required=sched["min_samples_required"])  # fmt: skip
    if kind == "pbt":
        from functools import partial

        from sepconc.sweep.pbt import SweepPBT

        return SweepPBT(
            **common, epochs=spec.epochs, perturbation_interval=sched["perturbation_interval"],
            burn_in_period=sched["burn_in_period"],
            quantile_fraction=sched["quantile_fraction"],
            resample_probability=sched["resample_probability"], synch=sched["synch"],
            hyperparam_mutations={"params": mutation_domains(sched["mutations"])},
            custom_explore_fn=partial(clip_to_ranges, ranges=mutation_ranges(sched["mutations"])),
        )  # fmt: skip
    return FIFOScheduler()


def mutation_domains(mutations: dict[str, Any]) -> dict[str, Any]:
    """PBT's `hyperparam_mutations` for the trial's `params`: a list stays a list (PBT
    shifts to a neighbour or resamples), `{uniform|loguniform: [a, b]}` a Tune domain."""
    from ray import tune

    out = {}
    for key, domain in mutations.items():
        if isinstance(domain, dict):
            kind, (low, high) = next(iter(domain.items()))
            out[key] = (
                tune.loguniform(low, high) if kind == "loguniform" else tune.uniform(low, high)
            )
        else:
            out[key] = list(domain)
    return out


def with_mutations(spec: SweepSpec, space: dict[str, Any]) -> dict[str, Any]:
    """The Tune param space of a `pbt` sweep: each mutated key that `search:` does not set
    starts from a value drawn from its mutation (as Ray's PBT does for top-level keys).

    Under random/grid the space is Tune's grid over the planned trials
    (`sepconc.sweep.space.tune_param_space`): each planned trial gets its starting values
    drawn here, seeded by `searcher.seed`, so the same file starts the same population."""
    if spec.scheduler.get("type") != "pbt":
        return space
    from ray import tune

    params = space["params"]
    if isinstance(params, dict) and "grid_search" in params:
        rng = random.Random(spec.searcher.get("seed", 0))
        mutations = spec.scheduler["mutations"]
        planned = [{**{k: _draw(d, rng) for k, d in mutations.items() if k not in trial}, **trial}
                   for trial in params["grid_search"]]  # fmt: skip
        return {**space, "params": tune.grid_search(planned)}
    drawn = mutation_domains(spec.scheduler["mutations"])
    start = {k: tune.choice(v) if isinstance(v, list) else v for k, v in drawn.items()}
    return {**space, "params": {**start, **params}}


def _draw(domain, rng: random.Random):
    """One value of a mutation: a list's element, or uniform / log-uniform in `[a, b]`."""
    if not isinstance(domain, dict):
        return rng.choice(list(domain))
    kind, (low, high) = next(iter(domain.items()))
    if kind == "loguniform":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    return rng.uniform(low, high)


def check_population(spec: SweepSpec, where: str) -> list[str]:
    """PBT needs a population: at least two trials (grid x samples)."""
    from sepconc.sweep.space import trial_count

    if spec.scheduler.get("type") != "pbt" or trial_count(spec) >= 2:
        return []
    return [f"{where}: scheduler pbt needs at least 2 trials to clone from, the sweep has "
            f"{trial_count(spec)}; raise samples: (e.g. samples: 4)"]  # fmt: skip


def mutation_ranges(mutations: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Each mutated key's [low, high]: its range, or the span of its list of values."""
    out = {}
    for key, domain in mutations.items():
        values = next(iter(domain.values())) if isinstance(domain, dict) else domain
        out[key] = (min(values), max(values))
    return out


def clip_to_ranges(config: dict, ranges: dict[str, tuple[float, float]]) -> dict:
    """PBT's explore step multiplies a value by 0.8 or 1.2: keep it inside its range."""
    params = config.get("params", {})
    for key, (low, high) in ranges.items():
        if isinstance(params.get(key), (int, float)):
            params[key] = min(max(params[key], low), high)
    return config


def describe_scheduler(sched: dict[str, Any]) -> str:
    """One line for `validate`: the scheduler and its settings."""
    options = [f"{k} {v}" for k, v in sched.items() if k not in ("type", "mutations")]
    for key, domain in (sched.get("mutations") or {}).items():
        options.append(f"mutates {key} in {domain}")
    return f"scheduler {sched['type']}" + (f" ({', '.join(options)})" if options else "")


def scheduler_warnings(spec: SweepSpec) -> list[str]:
    """Settings that work but may mislead: an ASHA rung before the first learning-rate
    decay while `lr` differs between trials (high-lr trials often look worse before the
    decay and are stopped, though they end best: the quickstart's trade-off)."""
    from sepconc.config import Config

    sched = spec.scheduler
    if sched.get("type") != "asha" or "lr" not in spec.search:
        return []
    adjust = Config.from_flat(spec.base, "base").optim.learning_rate_adjust_frequency
    entry = spec.search.get("learning_rate_adjust_frequency")
    if entry:  # the earliest decay any trial can have
        kind, args = next(iter(entry.items()))
        adjust = min(int(a) for a in args)
    rungs, t = [], sched["grace_period"]
    while t < sched["max_t"]:
        rungs.append(int(t))
        t *= sched["reduction_factor"]
    early = [r for r in rungs if r <= adjust]
    if not early:
        return []
    return [f"scheduler asha: rung(s) at epoch {', '.join(map(str, early))} come before the first "
            f"learning-rate decay (after epoch {adjust}) while lr differs between trials: trials "
            f"are compared before the decay, which favours small lr; raise grace_period above "
            f"{adjust} or use type: fifo / hyperband"]  # fmt: skip
