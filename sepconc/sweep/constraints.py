"""The sweep file's `constraints:`: bounds on a model's cost, checked before any training.

```yaml
constraints: {params: {max: 5e6}, flops: {min: 1e8, max: 2e9}}
```
`params` (trainable parameters) and `flops` (forward FLOPs per image) are exact from the
model plan (`sepconc.cost`). A configuration outside a bound is never trained: `validate`
lists it with its numbers; `sweep` drops it before launch (grid/random,
`space.planned_trials`) or reports it to the model-based searcher as infeasible
(tpe/nsga2, `sepconc.sweep.search`); the summary counts them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sepconc.config import Config, suggest
from sepconc.cost import COST_KEYS, model_cost
from sepconc.errors import UserError

if TYPE_CHECKING:
    from sepconc.sweep.spec import SweepSpec

BOUNDS = ("min", "max")


def parse_constraints(raw: dict[str, Any], spec: SweepSpec, where: str) -> list[str]:
    """Set `spec.constraints` (`{cost key: {min|max: number}}`); the problems, one line each."""
    value = raw.get("constraints") or {}
    if not isinstance(value, dict):
        return [f"{where}: constraints must be a mapping like {{params: {{max: 5e6}}}}, "
                f"got {value!r}"]  # fmt: skip
    problems, out = [], {}
    for key, bounds in value.items():
        path = f"constraints.{key}"
        if key not in COST_KEYS:
            problems.append(f"{where}: unknown constraint '{key}'; constrain one of "
                            f"{', '.join(COST_KEYS)}{suggest(str(key), COST_KEYS)}")  # fmt: skip
            continue
        if not isinstance(bounds, dict) or not bounds:
            problems.append(f"{where}: {path} must be {{min: N}}, {{max: N}} or both, "
                            f"got {bounds!r}")  # fmt: skip
            continue
        bad = [b for b in bounds if b not in BOUNDS]
        if bad:
            problems.append(f"{where}: {path}: unknown bound '{bad[0]}'; use min or max"
                            f"{suggest(str(bad[0]), BOUNDS)}")  # fmt: skip
            continue
        numbers = {b: v for b, v in bounds.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0}  # fmt: skip
        if len(numbers) < len(bounds):
            wrong = next(b for b in bounds if b not in numbers)
            problems.append(f"{where}: {path}.{wrong} must be a number >= 0 (e.g. 5e6), "
                            f"got {bounds[wrong]!r}")  # fmt: skip
            continue
        if numbers.get("min", 0) > numbers.get("max", float("inf")):
            problems.append(f"{where}: {path}: min {numbers['min']:g} > max {numbers['max']:g}; "
                            f"no model can satisfy it")  # fmt: skip
            continue
        out[key] = numbers
    spec.constraints = out
    return problems


def violations(spec: SweepSpec, flat_params: dict[str, Any]) -> list[str]:
    """How the trial with swept values `flat_params` breaks `spec.constraints`, one phrase
    each (`params 6,215,690 > max 5e+06`); [] when it meets them or there are none (an
    impossible configuration is refused elsewhere, not here)."""
    if not spec.constraints:
        return []
    cost = trial_cost(spec, flat_params)
    if cost is None:
        return []
    return cost_violations(spec.constraints, cost)


def cost_violations(constraints: dict[str, dict[str, float]], cost: dict[str, int]) -> list[str]:
    """The broken bounds of `constraints` for a model of `cost` (`sepconc.cost.model_cost`)."""
    out = []
    for key, bounds in constraints.items():
        if "max" in bounds and cost[key] > bounds["max"]:
            out.append(f"{key} {cost[key]:,} > max {bounds['max']:g}")
        if "min" in bounds and cost[key] < bounds["min"]:
            out.append(f"{key} {cost[key]:,} < min {bounds['min']:g}")
    return out


def constraint_values(
    constraints: dict[str, dict[str, float]], cost: dict[str, int]
) -> list[float]:
    """Optuna's constraint values for a model of `cost`: one per bound, <= 0 when met
    (relative excess over the bound otherwise)."""
    out = []
    for key, bounds in sorted(constraints.items()):
        if "max" in bounds:
            out.append((cost[key] - bounds["max"]) / max(bounds["max"], 1))
        if "min" in bounds:
            out.append((bounds["min"] - cost[key]) / max(bounds["min"], 1))
    return out


def trial_cost(spec: SweepSpec, flat_params: dict[str, Any]) -> dict[str, int] | None:
    """`model_cost` of the trial with swept values `flat_params`; None when it cannot be
    built (its problem is reported by `validate`)."""
    from sepconc.sweep.trial_config import trial_flat_config

    try:
        return model_cost(Config.from_flat(trial_flat_config(spec, flat_params)))
    except UserError:
        return None
