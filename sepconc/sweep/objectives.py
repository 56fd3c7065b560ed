"""The sweep file's `metric:`/`mode:`: one objective, or several (a Pareto front).

```yaml
metric: val_acc1                 # one objective
metric: [val_acc1, params]       # several: mode a list of the same length
mode: [max, min]
```
An objective is a per-epoch metric or a model cost known before training (`params`:
trainable parameters, `flops`: forward FLOPs per image, `sepconc.cost`). Without `mode:`
each objective takes its usual direction (losses, `params`, `flops`: min; else max).
The scheduler, the progress table and budgets use the first objective.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sepconc.config import suggest
from sepconc.cost import COST_KEYS

if TYPE_CHECKING:
    from sepconc.sweep.spec import SweepSpec

EPOCH_OBJECTIVES = ("val_acc1", "val_acc5", "val_loss", "train_loss", "train_acc1")
OBJECTIVES = EPOCH_OBJECTIVES + COST_KEYS


def default_mode(metric: str) -> str:
    """`min` for losses and costs, `max` for accuracies."""
    return "min" if metric.endswith("loss") or metric in COST_KEYS else "max"


def parse_objectives(raw: dict[str, Any], spec: SweepSpec, where: str) -> list[str]:
    """Set `spec.metric`/`spec.mode` from the file (a name each, or lists of the same
    length); the problems, one line each."""
    metric = raw.get("metric", "val_acc1")
    several = isinstance(metric, list)
    names = metric if several else [metric]
    if not names or not all(isinstance(m, str) for m in names):
        return [f"{where}: metric must be a name or a list of names (e.g. [val_acc1, params]), "
                f"got {metric!r}"]  # fmt: skip
    problems = [f"{where}: metric '{m}' is not one of {', '.join(OBJECTIVES)}"
                f"{suggest(m, OBJECTIVES)}" for m in names if m not in OBJECTIVES]  # fmt: skip
    if len(set(names)) < len(names):
        problems.append(f"{where}: metric {names} names an objective twice; list each once")
    mode = raw.get("mode", [default_mode(m) for m in names] if several else default_mode(names[0]))
    modes = mode if isinstance(mode, list) else [mode]
    if several != isinstance(mode, list) or len(modes) != len(names):
        problems.append(f"{where}: metric {metric!r} needs mode with one entry per objective, "
                        f"got mode {mode!r}; e.g. metric: [val_acc1, params] with "
                        f"mode: [max, min]")  # fmt: skip
    else:
        problems += [f"{where}: mode must be 'min' or 'max', got {m!r}"
                     for m in modes if m not in ("min", "max")]  # fmt: skip
    spec.metric = list(names) if several else names[0]
    spec.mode = list(modes) if several and len(modes) == len(names) else (
        mode if not several else [default_mode(m) for m in names])  # fmt: skip
    return problems
