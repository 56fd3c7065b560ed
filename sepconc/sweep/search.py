"""The sweep file's `searcher:`: how a sweep picks its trials.

```yaml
searcher: {type: tpe, seed: 0, startup_trials: 4}
```
- `random` (the default): grid entries multiply, the other entries are drawn once per
  sample (`samples` repeats), every trial listed before launch (`space.planned_trials`).
- `grid`: every `search:` entry must be a `grid:`; the full product, `samples` times.
- `tpe` / `nsga2`: Optuna's `TPESampler` (multivariate when more than one key is swept;
  multi-objective with a list `metric:`) / `NSGAIISampler` through Ray Tune's
  `OptunaSearch`. Every `search:` entry is the searcher's space (`grid`/`choice`:
  categorical, `uniform`, `loguniform`, `randint`: integers, both ends included) and
  `samples` is the trial budget. `seed` makes the sequence of suggested configurations
  reproducible; `startup_trials`: random trials before the model is used (TPE's
  `n_startup_trials`, default 10; NSGA-II's population size, default 50).

Repeats under tpe/nsga2: a suggestion that builds the same model with the same training
settings as an earlier one (after dropping options that do not apply to its model) is
not trained again: Optuna is told the earlier result and asked again; a discrete space
whose distinct configurations were all suggested ends the search.

Constraints (`constraints:`) under tpe/nsga2: each suggestion's cost is computed from its
model plan; a configuration that breaks a bound is told to Optuna at once as finished,
with its constraint values (`Trial.set_constraint`, Optuna 5's API for c-TPE and
constrained NSGA-II: such trials are infeasible, ranked after every feasible one) and
the worst objective values, and never trained; the searcher is asked again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sepconc.config import suggest

if TYPE_CHECKING:
    from sepconc.sweep.spec import SweepSpec

SEARCHERS = ("random", "grid", "tpe", "nsga2")
MODEL_BASED = ("tpe", "nsga2")
SEARCHER_KEYS = ("type", "seed", "startup_trials")


def parse_searcher(raw: dict[str, Any], spec: SweepSpec, where: str) -> list[str]:
    """Set `spec.searcher` (`{"type": ..., "seed"?: int, "startup_trials"?: int}`); the
    problems, one line each. Needs `spec.search` parsed."""
    value = raw.get("searcher") or {}
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        return [f"{where}: searcher must be a mapping like {{type: tpe, seed: 0}}, got {value!r}"]
    problems = [f"{where}: unknown key 'searcher.{k}'{suggest(str(k), SEARCHER_KEYS)}"
                for k in value if k not in SEARCHER_KEYS]  # fmt: skip
    kind = value.get("type", "random")
    if kind not in SEARCHERS:
        return problems + [f"{where}: searcher.type must be one of {', '.join(SEARCHERS)}, "
                           f"got {kind!r}{suggest(str(kind), SEARCHERS)}"]  # fmt: skip
    for key in ("seed", "startup_trials"):
        item = value.get(key)
        if item is not None and (isinstance(item, bool) or not isinstance(item, int) or item < 0):
            problems.append(f"{where}: searcher.{key} must be an integer >= 0, got {item!r}")
    if "startup_trials" in value and kind not in MODEL_BASED:
        problems.append(f"{where}: searcher.startup_trials applies to tpe and nsga2, not "
                        f"{kind}; remove it or use type: tpe")  # fmt: skip
    drawn = [k for k, e in spec.search.items() if "grid" not in e]
    if kind == "grid" and drawn:
        problems.append(f"{where}: searcher grid needs grid: entries only; search.{drawn[0]} is "
                        f"{spec.search[drawn[0]]}; use grid: [...] or searcher type: random")  # fmt: skip
    if kind in MODEL_BASED and not spec.search:
        problems.append(f"{where}: searcher {kind} needs a search: space; add entries or use "
                        f"type: random")  # fmt: skip
    spec.searcher = {k: v for k, v in value.items() if v is not None and k in SEARCHER_KEYS}
    spec.searcher["type"] = kind
    if kind in MODEL_BASED and "seed" not in spec.base and "seed" not in spec.search:
        spec.base["seed"] = 0  # samples is the budget here, not repeats: one training seed
    return problems


def build_search_alg(spec: SweepSpec, previous=()):
    """The Tune searcher of `spec`: None for random/grid (the planned list is the space,
    `space.tune_param_space`), else a `SepconcOptunaSearch` that already knows `previous`
    (`[(params, result)]`: finished trials' swept values and `{metric: value}`)."""
    if spec.searcher.get("type", "random") not in MODEL_BASED:
        return None
    from sepconc.sweep.optuna_search import SepconcOptunaSearch

    return SepconcOptunaSearch(spec, previous)


def search_summary(spec: SweepSpec, tuner=None) -> str:
    """The end-of-sweep line on what never ran: configurations merged as identical and
    refused by the constraints (random/grid, `space.plan_trials`), or suggestions the
    tpe/nsga2 searcher had refused (`tuner._sepconc_search`, set by `tuner.build_tuner`)."""
    from sepconc.sweep.space import plan_trials

    if spec.searcher.get("type", "random") in MODEL_BASED:
        searcher = getattr(tuner, "_sepconc_search", None)
        if searcher is None:
            return ""
        return (f"searcher {spec.searcher['type']}: {searcher.infeasible} suggestion(s) broke the "
                f"constraints and {searcher.merged} repeated an earlier trial (none of them "
                f"trained)")  # fmt: skip
    plan = plan_trials(spec)
    return (f"planned before launch: {plan.drawn} configuration(s); {plan.merged} merged as "
            f"identical and {len(plan.refused)} refused by constraints were not trained")  # fmt: skip
