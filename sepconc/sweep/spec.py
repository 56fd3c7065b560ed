"""The sweep file: YAML -> a validated `SweepSpec`, refused before Ray starts when wrong.

```yaml
name: quickstart                # letters, digits, - and _ (used in paths)
description: ...
base: {dataset: digits, arch: scatnetblockanalysis, epochs: 6, ...}   # training config
search:                         # one spec per parameter
  non_linearity: {grid: [relu, softshrink]}
  frame_width: {grid: [[256, 512], [512, 1024]]}   # per-block lists allowed
  lr: {loguniform: [0.001, 0.1]}
samples: 1                      # repeats of the grid (x random draws)
metric: val_acc1                # or a list of objectives: [val_acc1, params] (objectives.py)
mode: max                       # or [max, min]
searcher: {type: tpe, seed: 0, startup_trials: 4}   # random (default) | grid | tpe | nsga2
constraints: {params: {max: 5e6}, flops: {max: 2e9}}   # never trained (constraints.py)
scheduler: {type: asha, grace_period: 1, reduction_factor: 2, max_t: 6}   # see sweep/schedulers.py
budget: {time: 2h, gpu_hours: 10, trials: 20}   # optional; see sweep/budget.py
resources: {workers_per_trial: 2, gpus_per_worker: 0, cpus_per_worker: 1, max_concurrent_trials: 1}
failure: {max_retries: 1}
checkpoint: {every: 1, keep: 2}
tracking: {uri: null, experiment: null, system_metrics: false}   # true: MLflow's sampler per trial
storage: null                   # default ./runs; a shared path or s3:// on a cluster
```
Every error names the key path (`scheduler.grace_period`), the value and the fix,
with a close-match suggestion for a mistyped key. All the problems of a file are
reported at once (one line each), not only the first. Numbers are read the YAML 1.2
way (`1e-3` is a float, see `sepconc.yamlio`). Every search value a trial can draw is
checked through the trial's own config (`space.trial_flat_config`): each grid/choice
option, uniform/loguniform's ends and middle as floats, and every integer a randint can
draw, model on its data set's shape included (`sepconc.sweep.drawable`).
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sepconc.config import Config, suggest
from sepconc.errors import UserError
from sepconc.sweep import rules, space
from sepconc.sweep.constraints import parse_constraints
from sepconc.sweep.drawable import randint_problems
from sepconc.sweep.objectives import parse_objectives
from sepconc.sweep.search import parse_searcher
from sepconc.yamlio import dump_yaml, load_yaml

SEARCH_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
TOP_KEYS = ("name", "description", "base", "search", "samples", "metric", "mode", "scheduler",
            "resources", "failure", "checkpoint", "tracking", "storage", "searcher",
            "constraints", "budget")  # fmt: skip
SECTION_KEYS = {  # `scheduler:` and `budget:` are checked by sepconc.sweep.{schedulers,budget}
    "resources": {"workers_per_trial": int, "gpus_per_worker": (int, float),
                  "cpus_per_worker": (int, float), "max_concurrent_trials": int},
    "failure": {"max_retries": int},
    "checkpoint": {"every": int, "keep": int},
    "tracking": {"uri": str, "experiment": str, "system_metrics": bool},
}  # fmt: skip
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class SweepSpec:
    name: str
    base: dict[str, Any]
    search: dict[str, dict[str, Any]]
    description: str = ""
    samples: int = 1
    metric: str | list[str] = "val_acc1"  # a list: several objectives (see `metrics`)
    mode: str | list[str] = "max"
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "fifo"})
    resources: dict[str, Any] = field(default_factory=dict)
    failure: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    tracking: dict[str, Any] = field(default_factory=dict)
    storage: str | None = None
    searcher: dict[str, Any] = field(default_factory=lambda: {"type": "random"})  # search.py
    constraints: dict[str, dict[str, float]] = field(default_factory=dict)  # constraints.py
    budget: dict[str, Any] = field(default_factory=dict)  # sepconc.sweep.budget.check_budget
    auto_resources: bool = False  # `resources: auto`: fitted to the machine by the driver
    text: str = ""  # the sweep file as given (logged as an artifact)
    overrides: list[str] = field(default_factory=list)  # `--set` items applied to `text`

    @property
    def metrics(self) -> list[str]:
        """The objectives, first one first (`metric:` a name or a list of names); what needs
        ONE metric (scheduler, progress table, budget) uses `metrics[0]`."""
        return list(self.metric) if isinstance(self.metric, (list, tuple)) else [self.metric]

    @property
    def modes(self) -> list[str]:
        """`min`/`max` of each of `metrics`, in the same order."""
        return list(self.mode) if isinstance(self.mode, (list, tuple)) else [self.mode]

    @property
    def workers(self) -> int:
        return self.resources.get("workers_per_trial", 1)

    @property
    def cpus_per_worker(self) -> float:
        return self.resources.get("cpus_per_worker", 1)

    @property
    def gpus_per_worker(self) -> float:
        return self.resources.get("gpus_per_worker", 0)

    @property
    def max_retries(self) -> int:
        return self.failure.get("max_retries", 1)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @property
    def epochs(self) -> int:
        return Config.from_flat(self.base, "base").optim.epochs


def check_name(name: str, what: str = "sweep name") -> str:
    """A name safe to use in a path: no `/`, no `..`, no leading dot."""
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        raise UserError(
            f"{what} {name!r} is not allowed; use letters, digits, '-', '_' and '.' "
            f"(no '/', no '..', at most 100 characters)"
        )
    return name


def read_sweep_file(path: str | Path) -> tuple[dict[str, Any], str]:
    """`(mapping, text)` of a sweep file, read once; a one-line `UserError` when the file is
    missing, not YAML, or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file {path} does not exist; give the path of a YAML sweep file")
    text = path.read_text()
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{path}: YAML syntax error{where}: {problem}; fix the file") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a sweep file is a mapping (name:, base:, search:, ...)")
    return raw, text


def spec_from_raw(
    raw: dict[str, Any],
    text: str,
    overrides: list[str] = (),
    name: str | None = None,
    where: str = "sweep",
) -> SweepSpec:
    """The `SweepSpec` of a read sweep file (`raw` is not changed) after `--set` overrides
    (`key=value`, YAML-typed, dotted for sections) and `--name`; raises `UserError`."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        _apply_override(raw, item)
    if name is not None:
        raw["name"] = name
    spec = parse_sweep(raw, text=text, where=where)
    spec.overrides = list(overrides)
    return spec


def load_sweep(path: str | Path, overrides: list[str] = (), name: str | None = None) -> SweepSpec:
    """Read, override and validate a sweep file: `spec_from_raw(*read_sweep_file(path), ...)`.
    A command parses its sweep file once, then passes the `SweepSpec` on."""
    return spec_from_raw(*read_sweep_file(path), overrides, name, where=str(path))


def _apply_override(raw: dict, item: str) -> None:
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected key=value, e.g. --set base.epochs=3")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    target = raw
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise UserError(f"--set {item!r}: {part} is not a section")
    try:
        target[parts[-1]] = load_yaml(value)
    except yaml.YAMLError:
        raise UserError(f"--set {item!r}: the value is not valid YAML; quote it") from None


def parse_sweep(raw: dict[str, Any], text: str = "", where: str = "sweep") -> SweepSpec:
    """Validate the mapping of a sweep file into a `SweepSpec`.

    Raises `UserError` whose message lists every problem found, one line each
    (`where: key path: value and fix`).
    """
    problems: list[str] = []
    add = problems.append
    for key in raw:
        if key not in TOP_KEYS:
            add(f"{where}: unknown key '{key}'{suggest(str(key), TOP_KEYS)}")
    if "name" not in raw:
        add(f"{where}: missing 'name' (the sweep's name, used for its runs folder)")
    else:
        _collect(problems, check_name, raw["name"], f"{where}: sweep name")
    base = _collect(problems, _mapping, raw.get("base", {}), "base", where) or {}
    search = _collect(problems, _mapping, raw.get("search", {}), "search", where) or {}
    spec = SweepSpec(name=raw.get("name", ""), base=dict(base), search={},
                     text=text or dump_yaml(raw, sort_keys=True))  # fmt: skip
    spec.description = str(raw.get("description", ""))
    samples = _collect(problems, _typed, raw.get("samples", 1), int, "samples", where)
    spec.samples = 1 if samples is None else samples
    if spec.samples < 1:
        add(f"{where}: samples must be >= 1, got {spec.samples}")
    problems += parse_objectives(raw, spec, where)  # metric/mode: sepconc.sweep.objectives
    spec.auto_resources = raw.get("resources") == "auto"  # sepconc.sweep.resources fits it
    for section in SECTION_KEYS:
        value = None if section == "resources" and spec.auto_resources else raw.get(section)
        setattr(spec, section, _section(value, section, where, problems))
    storage = raw.get("storage")
    spec.storage = None if storage is None else _collect(problems, _typed, storage, str,
                                                         "storage", where)  # fmt: skip
    problems += _check_resources(spec, where)
    base_config, base_problems = Config.check_flat(space.trial_flat_config(spec, {}),
                                                   where=f"{where}: base")  # fmt: skip
    problems += [space.sweep_wording(p, spec) for p in base_problems]
    known = {p.split(": base: ", 1)[-1] for p in base_problems}
    for key, value in search.items():
        entry, entry_problems = _search_entry(key, value, spec, where, known)
        problems += entry_problems
        if entry:
            spec.search[key] = entry
    problems += parse_searcher(raw, spec, where) + parse_constraints(raw, spec, where)
    if "seed" not in spec.base and "seed" not in spec.search and spec.samples == 1:
        spec.base["seed"] = 0  # logged with each trial: `best --out` retrains the same run
    epochs_ok = not any(": base: epochs " in p for p in base_problems)
    problems += _check_scheduler(spec, raw.get("scheduler"), raw.get("budget"),
                                 base_config.optim.epochs if epochs_ok else None, where)  # fmt: skip
    if not problems:  # every integer a randint can draw, not only its ends and middle
        problems += randint_problems(spec, where)
    if problems:
        raise UserError("\n".join(dict.fromkeys(problems)))
    return spec


def _collect(problems: list[str], check, *args):
    """`check(*args)`, or None with its `UserError` message appended to `problems`."""
    try:
        return check(*args)
    except UserError as exc:
        problems.append(str(exc))
        return None


def _mapping(value, key: str, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: {key} must be a mapping, got {type(value).__name__}")
    return value


def _typed(value, kind, key: str, where: str):
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "number"
        raise UserError(f"{where}: {key} must be {name}, got {value!r}")
    return value


def _section(value, section: str, where: str, problems: list[str]) -> dict:
    """The section's mapping without its empty values; each bad key or type a problem."""
    value = _collect(problems, _mapping, value, section, where) or {}
    allowed, out = SECTION_KEYS[section], {}
    for key, item in value.items():
        if key not in allowed:
            problems.append(f"{where}: unknown key '{section}.{key}'{suggest(str(key), allowed)}")
        elif item is not None and _collect(problems, _typed, item, allowed[key],
                                           f"{section}.{key}", where) is not None:  # fmt: skip
            out[key] = item
    return out


def _search_entry(key: str, value, spec: SweepSpec, where: str, known: set[str]):
    """`(entry, problems)` for `search.<key>`: the entry's shape, then every value a trial
    can draw from it built as that trial's config (problems already reported for `base`,
    in `known`, are not repeated)."""
    from sepconc.config import FIELD_SECTION, field_kind

    path = f"search.{key}"
    if key not in FIELD_SECTION:
        return None, [f"{where}: unknown parameter '{path}'{suggest(key, FIELD_SECTION)}"]
    value, problem = rules.search_entry(key, value, f"{where}: {path}")  # per-block rules
    if problem:
        return None, [problem]
    if not isinstance(value, dict) or len(value) != 1:
        return None, [f"{where}: {path} must be one of {{grid|choice|uniform|loguniform|"
                      f"randint: [...]}}, got {value!r}"]  # fmt: skip
    kind, args = next(iter(value.items()))
    if kind not in SEARCH_KINDS:
        return None, [f"{where}: {path}: unknown kind '{kind}'{suggest(str(kind), SEARCH_KINDS)}"]
    if not isinstance(args, list) or not args:
        return None, [f"{where}: {path}.{kind} needs a non-empty list, got {args!r}"]
    if kind in space.RANGES:
        numbers = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
        if len(args) != 2 or not numbers or args[0] >= args[1]:
            return None, [f"{where}: {path}.{kind} needs [low, high] with low < high, "
                          f"got {args}"]  # fmt: skip
        if kind == "randint" and not all(isinstance(a, int) for a in args):
            return None, [f"{where}: {path}.randint needs integer ends, got {args}"]
        if kind == "loguniform" and args[0] <= 0:
            return None, [f"{where}: {path}.loguniform needs low > 0, got {args[0]}"]
    target = field_kind(key)
    if kind in ("uniform", "loguniform") and target != "float":
        if target in ("int", "int list"):
            low, high = math.ceil(args[0]), math.floor(args[1])
            fix = f"use randint: [{low}, {high}] or grid: [...]" if low < high else "use grid"
            return None, [f"{where}: {path}.{kind} {args}: {key} is an integer and {kind} draws "
                          f"floats (e.g. {args[0] + 0.37 * (args[1] - args[0]):.3g}); {fix}"]  # fmt: skip
        return None, [f"{where}: {path}.{kind} {args}: {key} is a {target}; "
                      f"use grid or choice"]  # fmt: skip
    problems = []
    for option in space.sampler_values(kind, args):  # each must make a valid trial on its own
        flat = space.trial_flat_config(spec, {key: option})
        _, found = Config.check_flat(flat, where=f"{where}: {path}={option!r}")
        problems += [space.sweep_wording(p, spec) for p in found
                     if p.split(f"{option!r}: ", 1)[-1] not in known]  # fmt: skip
    return {kind: args}, problems


def _check_scheduler(spec: SweepSpec, value, budget, epochs: int | None, where: str) -> list[str]:
    """`scheduler:` and `budget:` (`sepconc.sweep.schedulers`, `sepconc.sweep.budget`): their
    defaults filled in; their problems (max_t checked when `epochs` is known)."""
    from sepconc.sweep.budget import check_budget
    from sepconc.sweep.schedulers import check_population, check_scheduler

    spec.scheduler, problems = check_scheduler(value, epochs, spec.workers, where)
    spec.budget, found = check_budget(budget, where)
    return problems + found + check_population(spec, where)


def _check_resources(spec: SweepSpec, where: str) -> list[str]:
    """Fill in the resources', failure's and checkpoint's defaults; their problems."""
    res = {"workers_per_trial": 1, "gpus_per_worker": 0, "cpus_per_worker": 1, **spec.resources}
    problems = [f"{where}: resources.{key} must be > 0, got {res[key]}"
                for key in ("workers_per_trial", "cpus_per_worker") if res[key] <= 0]  # fmt: skip
    if res["gpus_per_worker"] < 0:
        problems.append(f"{where}: resources.gpus_per_worker must be >= 0")
    if res.get("max_concurrent_trials", 1) < 1:
        problems.append(f"{where}: resources.max_concurrent_trials must be >= 1")
    # a batch size not divisible by workers_per_trial is refused by each trial's config
    # (num_workers = workers_per_trial, see space.trial_flat_config)
    spec.resources = res if not problems else {**res, "workers_per_trial": 1}
    spec.failure = {"max_retries": 1, **spec.failure}
    spec.checkpoint = {"every": 1, "keep": 2, **spec.checkpoint}
    return problems
