"""The sweep file's `budget:` section: when the sweep stops starting trials and epochs.

```yaml
budget: {time: "2h", gpu_hours: 10, trials: 20}   # any of them; the first reached ends it
```
- `time`: wall time of the sweep (`45s`, `30m`, `2h`, `1.5h`, `1h30m`, `1d`), summed over
  `sweep` and every `resume`;
- `gpu_hours`: GPUs held by running trials x hours (workers_per_trial x gpus_per_worker
  per trial);
- `trials`: trials started.

When one is reached the sweep starts no new trial and no new epoch: each running trial
finishes the epoch it is in (its checkpoint is kept) and is paused; trials never started
stay `not_started`. The summary says which budget ended the sweep; the amounts spent are
kept in `runs/sweeps/<name>/budget.json`, so `resume NAME` continues under what is left
(`resume NAME --set budget.time=4h` raises a budget), and so does `sweep FILE --extend`
under the file's `budget:` (the study's: raise it there to add trials). The mechanism is a Tune scheduler
wrapped around the sweep's own
(`sepconc.sweep.budget_scheduler.BudgetScheduler`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KEYS = ("time", "gpu_hours", "trials")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[smhd]\s*)+$")
PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
FILE = "budget.json"
NOTHING_SPENT = {"seconds": 0.0, "gpu_hours": 0.0, "started": [], "ended": None}


def parse_duration(text) -> float | None:
    """Seconds of a duration such as `90s`, `45m`, `2h`, `1.5h`, `1h30m`, `1d`; None if not one."""
    if not isinstance(text, str) or not DURATION.match(text):
        return None
    return sum(float(n) * UNITS[u] for n, u in PART.findall(text))


def check_budget(value, where: str) -> tuple[dict[str, Any], list[str]]:
    """`(budget, problems)`: the `budget:` mapping as numbers (`time` in seconds, as
    `time_s`, beside the text given), each problem one line naming the key and the fix."""
    if value is None:
        return {}, []
    if not isinstance(value, dict):
        return {}, [f"{where}: budget must be a mapping such as {{time: 2h, gpu_hours: 10, "
                    f"trials: 20}}, got {value!r}"]  # fmt: skip
    from sepconc.config import suggest

    out, problems = {}, []
    for key, item in value.items():
        if key not in KEYS:
            problems.append(f"{where}: unknown key 'budget.{key}'{suggest(str(key), KEYS)}; "
                            f"the budgets are {', '.join(KEYS)}")  # fmt: skip
        elif item is None:
            continue
        elif key == "time":
            seconds = parse_duration(item)
            if seconds is None or seconds <= 0:
                problems.append(f"{where}: budget.time {item!r} is not a duration; give a number "
                                f"with a unit s, m, h or d, e.g. '90m', '2h', '1h30m'")  # fmt: skip
            else:
                out["time"], out["time_s"] = item, seconds
        elif key == "gpu_hours":
            ok = isinstance(item, (int, float)) and not isinstance(item, bool) and item > 0
            if not ok:
                problems.append(f"{where}: budget.gpu_hours must be a number of GPU-hours > 0 "
                                f"(e.g. 10 or 0.5, no unit), got {item!r}")  # fmt: skip
            else:
                out["gpu_hours"] = item
        elif isinstance(item, bool) or not isinstance(item, int) or item < 1:
            problems.append(f"{where}: budget.trials must be a whole number of trials >= 1, "
                            f"got {item!r}")  # fmt: skip
        else:
            out["trials"] = item
    return out, problems


def describe_budget(budget: dict[str, Any]) -> str:
    """`budget: time 2h, 10 GPU-hours, 20 trials` (for `validate` and the summary)."""
    parts = []
    if "time" in budget:
        parts.append(f"time {budget['time']}")
    if "gpu_hours" in budget:
        parts.append(f"{budget['gpu_hours']:g} GPU-hours")
    if "trials" in budget:
        parts.append(f"{budget['trials']} trials")
    return "budget: " + (", ".join(parts) if parts else "none")


def read_spent(meta_dir: Path) -> dict[str, Any]:
    """What earlier runs of a sweep spent: `seconds`, `gpu_hours`, `started` (trial ids),
    and `ended` (the budget that ended the last run, or None)."""
    try:
        spent = json.loads((Path(meta_dir) / FILE).read_text()).get("spent", {})
    except (OSError, ValueError):
        spent = {}
    return {**NOTHING_SPENT, "started": [], **spent}


def write_state(meta_dir: Path, budget: dict[str, Any], spent: dict[str, Any]) -> None:
    path = Path(meta_dir) / FILE
    tmp = path.with_name(f".{FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"budget": budget, "spent": spent}, indent=1))
    os.replace(tmp, path)


def extend_state(meta_dir: Path, budget: dict[str, Any], name: str) -> dict[str, Any]:
    """Before `sweep FILE --extend`: the file's `budget:` is the study's, and what the sweep
    spent so far counts against it (its trials started included). Returns the
    `budget.json` state to write when the extension starts (`write_state`); a budget the
    sweep has already spent is refused (`UserError`, one line naming it and the fix)."""
    from sepconc.errors import UserError

    spent = read_spent(meta_dir)
    ended = exhausted(budget, spent)
    key = "time" if ended and ended.startswith("time") else "gpu_hours"
    if ended is None and "trials" in budget and len(spent["started"]) >= budget["trials"]:
        ended, key = f"{budget['trials']} trials", "trials"
    if ended:
        raise UserError(f"--extend: sweep '{name}' has spent its budget {ended} "
                        f"({_duration(spent['seconds'])}, {spent['gpu_hours']:.2f} GPU-hours, "
                        f"{len(spent['started'])} trials started); raise budget.{key} in the "
                        f"sweep file to add trials")  # fmt: skip
    return {"budget": budget, "spent": {**spent, "ended": None}}


def exhausted(budget: dict[str, Any], spent: dict[str, Any]) -> str | None:
    """The first budget reached by `spent` (`"time 2h"`, `"10 GPU-hours"`), or None.
    The trial budget is reached when that many trials have started."""
    if "time_s" in budget and spent["seconds"] >= budget["time_s"]:
        return f"time {budget['time']}"
    if "gpu_hours" in budget and spent["gpu_hours"] >= budget["gpu_hours"]:
        return f"{budget['gpu_hours']:g} GPU-hours"
    return None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def budget_line(meta_dir: Path) -> str | None:
    """One line on a sweep's budget for the summary and `status`: which budget ended it,
    the trials `not_started` and `paused`, what was spent; None for a sweep without one."""
    try:
        state = json.loads((Path(meta_dir) / FILE).read_text())
    except (OSError, ValueError):
        return None
    budget, spent = state.get("budget") or {}, {**read_spent(meta_dir)}
    if not budget and not spent.get("ended"):
        return None
    used = f"spent {_duration(spent['seconds'])}, {len(spent['started'])} trial(s) started"
    if spent["gpu_hours"]:
        used += f", {spent['gpu_hours']:.2f} GPU-hours"
    if not spent.get("ended"):
        return f"{describe_budget(budget)} ({used})"
    left = spent.get("not_started", 0)
    paused = spent.get("paused", [])
    name = Path(meta_dir).name
    return (f"budget {spent['ended']} ended the sweep ({used}): {left} trial(s) not_started, "
            f"{len(paused)} paused after their current epoch; `resume {name}` continues them "
            f"under what is left (raise it with --set budget.KEY=VALUE)")  # fmt: skip


def record_outcome(meta_dir: Path, trials, total: int) -> dict[str, Any]:
    """After a sweep run: store in `budget.json` how many of the `total` planned trials
    never started (`not_started`: Tune creates trials lazily, so counted from the plan)
    and which started trials of Tune's `trials` the budget paused (`paused`); returns
    the spent record."""
    state_path = Path(meta_dir) / FILE
    if not state_path.exists():
        return read_spent(meta_dir)
    budget = json.loads(state_path.read_text()).get("budget", {})
    spent = read_spent(meta_dir)
    started = set(spent["started"])
    spent["paused"] = [t.trial_id for t in trials
                       if t.trial_id in started and str(t.status) in ("PENDING", "PAUSED")]  # fmt: skip
    spent["not_started"] = max(total - len(started), 0) if spent.get("ended") else 0
    spent["held"] = [t.trial_id for t in trials  # held back before their first epoch
                     if t.trial_id not in started and str(t.status) in ("PENDING", "PAUSED")]  # fmt: skip
    write_state(meta_dir, budget, spent)
    return spent


def start_state(meta_dir: Path, budget: dict[str, Any], resuming: bool, name: str) -> None:
    """Before a `sweep` (nothing spent) or a `resume` (what earlier runs spent): write
    `budget.json` with the budget now in force; a `resume` whose budget is already spent is
    refused (`UserError`, one line) before anything runs."""
    from sepconc.errors import UserError

    spent = read_spent(meta_dir) if resuming else {**NOTHING_SPENT, "started": []}
    ended = exhausted(budget, spent)
    if resuming and ended:
        key = "time" if ended.startswith("time") else "gpu_hours"
        raise UserError(f"cannot resume '{name}': its budget {ended} is spent "
                        f"({_duration(spent['seconds'])}, {spent['gpu_hours']:.2f} GPU-hours); "
                        f"raise it, e.g. resume {name} --set budget.{key}=...")  # fmt: skip
    write_state(meta_dir, budget, {**spent, "ended": None})
