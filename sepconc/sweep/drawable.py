"""What a trial would refuse, checked before launch over everything the sweep can draw.

`validate` (and `sweep` before Ray starts) builds each discrete option and the ends and
middle of each range (`space.architecture_variants`). That is not enough for an integer
range: a trial's config refuses some integers between good ends (a `batch_size` not
divisible by `workers_per_trial`, an even `P_kernel_size`, a `frame_kernel_size` that
does not tile its input with its stride). So:

- `randint_problems`: every integer a `randint` entry can draw is checked as a trial's
  config with the rest of the base (as `spec` checks each grid option), data set shape
  included; one line per entry with a value that fails, naming the key, the range, the
  first bad value and the values that work. It also covers tpe/nsga2, whose values are
  drawn after launch.
- `planned_problems`: under random/grid every trial is drawn before launch
  (`space.plan_trials`); each planned trial is checked as it will run, so no trial that
  a trial's own checks refuse is ever scheduled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sepconc.config import Config
from sepconc.errors import UserError
from sepconc.sweep.trial_config import sampler_values, trial_flat_config

if TYPE_CHECKING:
    from sepconc.sweep.spec import SweepSpec

SCAN_LIMIT = 4096  # integers checked one by one; a wider range: its ends (EDGE each side)
EDGE = 256  # covers any divisibility up to 256 (workers, strides) and every bound near an end


def trial_problems(spec: SweepSpec, params: dict[str, Any]) -> list[str]:
    """The problems (lines, in the sweep file's words) a trial with swept values `params`
    would refuse itself with before training: its config's invariants, then its model on
    its data set's shape (`cost.model_cost`); [] when it would train."""
    from sepconc.cost import model_cost
    from sepconc.sweep.space import sweep_wording

    config, problems = Config.check_flat(trial_flat_config(spec, params), where="")
    if not problems:
        try:
            model_cost(config)
        except UserError as exc:
            problems = str(exc).splitlines()
    return [sweep_wording(p, spec) for p in problems]


def drawable_ints(low: int, high: int) -> list[int]:
    """The integers of `randint: [low, high]` (both included) that `randint_problems`
    checks: all of them up to `SCAN_LIMIT`, else the `EDGE` first and last ones."""
    if high - low < SCAN_LIMIT:
        return list(range(low, high + 1))
    return [*range(low, low + EDGE), *range(high - EDGE + 1, high + 1)]


def randint_problems(spec: SweepSpec, where: str) -> list[str]:
    """One line per `randint` entry of `spec.search` that can draw a value a trial refuses
    (an entry refused at its ends or middle is reported by those checks and skipped).

    The line names the key, the range, the first bad value with its problem, and the fix:
    a `choice` of the values that work (or a new range when none does)."""
    out = []
    for key, entry in spec.search.items():
        kind, args = next(iter(entry.items()))
        if kind != "randint":
            continue
        shown = sampler_values(kind, args)
        if any(trial_problems(spec, {key: value}) for value in shown):
            continue  # refused at its ends or middle: reported with those (`validate_sweep`)
        good, bad = [], None
        for value in drawable_ints(*args):
            found = trial_problems(spec, {key: value})
            if not found:
                good.append(value)
            elif bad is None:
                bad = (value, found[0])
        if bad is None:
            continue
        value, problem = bad
        count = f" ({len(good)} of the range)" if args[1] - args[0] < SCAN_LIMIT else ""
        fix = (f"draw only values that work, e.g. {{choice: {_some(good)}}}{count}" if good
               else "no value of the range works; change it")  # fmt: skip
        out.append(f"{where}: search.{key}.randint {args} can draw {value} "
                   f"({problem.split('; ')[0]}); {fix}")  # fmt: skip
    return out


def planned_problems(spec: SweepSpec) -> list[str]:
    """Under random/grid: the first planned trial (`space.plan_trials`) a trial would
    refuse, as one line with how many planned trials share that fate; [] otherwise
    (tpe/nsga2 plan nothing: `randint_problems` covers their integer draws)."""
    from sepconc.sweep.space import describe, plan_trials

    refused = [(p, found) for p in plan_trials(spec).trials if (found := trial_problems(spec, p))]
    if not refused:
        return []
    params, found = refused[0]
    return [f"planned trial {describe(params)}: {found[0]} ({len(refused)} of the "
            f"planned trials would fail so); change the search space"]  # fmt: skip


def _some(values: list[int]) -> str:
    """`[32, 34, 36, ..., 64]`: a short list of integers for a message."""
    if len(values) <= 6:
        return str(values)
    return f"[{values[0]}, {values[1]}, {values[2]}, ..., {values[-1]}]"
