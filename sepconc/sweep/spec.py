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
metric: val_acc1
mode: max
scheduler: {type: asha, grace_period: 1, reduction_factor: 2, max_t: 6}   # or {type: fifo}
resources: {workers_per_trial: 2, gpus_per_worker: 0, cpus_per_worker: 1, max_concurrent_trials: 1}
failure: {max_retries: 1}
checkpoint: {every: 1, keep: 2}
tracking: {uri: null, experiment: null}
storage: null                   # default ./runs; a shared path or s3:// on a cluster
```
Every error names the key path (`scheduler.grace_period`), the value and the fix,
with a close-match suggestion for a mistyped key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sepconc.config import Config, suggest
from sepconc.errors import UserError

SEARCH_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
TOP_KEYS = ("name", "description", "base", "search", "samples", "metric", "mode", "scheduler",
            "resources", "failure", "checkpoint", "tracking", "storage")  # fmt: skip
SECTION_KEYS = {
    "scheduler": {"type": str, "grace_period": int, "reduction_factor": (int, float),
                  "max_t": int},
    "resources": {"workers_per_trial": int, "gpus_per_worker": (int, float),
                  "cpus_per_worker": (int, float), "max_concurrent_trials": int},
    "failure": {"max_retries": int},
    "checkpoint": {"every": int, "keep": int},
    "tracking": {"uri": str, "experiment": str},
}  # fmt: skip
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
METRICS = ("val_acc1", "val_acc5", "val_loss", "train_loss", "train_acc1")


@dataclass
class SweepSpec:
    name: str
    base: dict[str, Any]
    search: dict[str, dict[str, Any]]
    description: str = ""
    samples: int = 1
    metric: str = "val_acc1"
    mode: str = "max"
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "fifo"})
    resources: dict[str, Any] = field(default_factory=dict)
    failure: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    tracking: dict[str, Any] = field(default_factory=dict)
    storage: str | None = None
    auto_resources: bool = False  # `resources: auto`: fitted to the machine by the driver
    text: str = ""  # the sweep file as given (logged as an artifact)

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


def load_sweep(path: str | Path, overrides: list[str] = (), name: str | None = None) -> SweepSpec:
    """Read, override (`key=value`, YAML-typed, dotted for sections) and validate a sweep file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file {path} does not exist; give the path of a YAML sweep file")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{path}: YAML syntax error{where}: {problem}; fix the file") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a sweep file is a mapping (name:, base:, search:, ...)")
    for item in overrides:
        _apply_override(raw, item)
    if name is not None:
        raw["name"] = name
    return parse_sweep(raw, text=text, where=str(path))


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
    target[parts[-1]] = yaml.safe_load(value)


def parse_sweep(raw: dict[str, Any], text: str = "", where: str = "sweep") -> SweepSpec:
    """Validate the mapping of a sweep file into a `SweepSpec`."""
    for key in raw:
        if key not in TOP_KEYS:
            raise UserError(f"{where}: unknown key '{key}'{suggest(str(key), TOP_KEYS)}")
    if "name" not in raw:
        raise UserError(f"{where}: missing 'name' (the sweep's name, used for its runs folder)")
    check_name(raw["name"], f"{where}: sweep name")
    base = _mapping(raw.get("base", {}), "base", where)
    search = _mapping(raw.get("search", {}), "search", where)
    spec = SweepSpec(name=raw["name"], base=dict(base), search={}, text=text or yaml.safe_dump(raw))
    spec.description = str(raw.get("description", ""))
    for key in ("samples",):
        spec.samples = _typed(raw.get(key, 1), int, key, where)
        if spec.samples < 1:
            raise UserError(f"{where}: samples must be >= 1, got {spec.samples}")
    spec.metric = _typed(raw.get("metric", "val_acc1"), str, "metric", where)
    if spec.metric not in METRICS:
        raise UserError(f"{where}: metric '{spec.metric}' is not one of {', '.join(METRICS)}"
                        f"{suggest(spec.metric, METRICS)}")  # fmt: skip
    spec.mode = raw.get("mode", "min" if spec.metric.endswith("loss") else "max")
    if spec.mode not in ("min", "max"):
        raise UserError(f"{where}: mode must be 'min' or 'max', got {spec.mode!r}")
    spec.auto_resources = raw.get("resources") == "auto"  # sepconc.sweep.resources fits it
    for section in SECTION_KEYS:
        value = None if section == "resources" and spec.auto_resources else raw.get(section)
        setattr(spec, section, _section(value, section, where))
    storage = raw.get("storage")
    spec.storage = None if storage is None else _typed(storage, str, "storage", where)
    Config.from_flat(spec.base, where=f"{where}: base")
    for key, value in search.items():
        spec.search[key] = _search_entry(key, value, spec.base, where)
    if "seed" not in spec.base and "seed" not in spec.search and spec.samples == 1:
        spec.base["seed"] = 0  # logged with each trial: `best --out` retrains the same run
    _check_scheduler(spec, where)
    _check_resources(spec, where)
    return spec


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


def _section(value, section: str, where: str) -> dict:
    value = _mapping(value, section, where)
    allowed = SECTION_KEYS[section]
    for key, item in value.items():
        if key not in allowed:
            raise UserError(f"{where}: unknown key '{section}.{key}'{suggest(str(key), allowed)}")
        if item is not None:
            _typed(item, allowed[key], f"{section}.{key}", where)
    return {k: v for k, v in value.items() if v is not None}


def _search_entry(key: str, value, base: dict, where: str) -> dict:
    path = f"search.{key}"
    from sepconc.config import FIELD_SECTION

    if key not in FIELD_SECTION:
        raise UserError(f"{where}: unknown parameter '{path}'{suggest(key, FIELD_SECTION)}")
    if not isinstance(value, dict) or len(value) != 1:
        raise UserError(f"{where}: {path} must be one of {{grid|choice|uniform|loguniform|"
                        f"randint: [...]}}, got {value!r}")  # fmt: skip
    kind, args = next(iter(value.items()))
    if kind not in SEARCH_KINDS:
        raise UserError(f"{where}: {path}: unknown kind '{kind}'{suggest(str(kind), SEARCH_KINDS)}")
    if not isinstance(args, list) or not args:
        raise UserError(f"{where}: {path}.{kind} needs a non-empty list, got {args!r}")
    if kind in ("uniform", "loguniform", "randint"):
        if (
            len(args) != 2
            or not all(isinstance(a, (int, float)) for a in args)
            or args[0] >= args[1]
        ):
            raise UserError(f"{where}: {path}.{kind} needs [low, high] with low < high, got {args}")
        if kind == "loguniform" and args[0] <= 0:
            raise UserError(f"{where}: {path}.loguniform needs low > 0, got {args[0]}")
    else:
        for option in args:  # each option must make a valid config on its own
            Config.from_flat({**base, key: option}, where=f"{where}: {path}={option!r}")
    return {kind: args}


def _check_scheduler(spec: SweepSpec, where: str) -> None:
    sched = {"type": "fifo", **spec.scheduler}
    if sched["type"] not in ("asha", "fifo"):
        raise UserError(f"{where}: scheduler.type must be 'asha' or 'fifo', got {sched['type']!r}"
                        f"{suggest(str(sched['type']), ('asha', 'fifo'))}")  # fmt: skip
    if sched["type"] == "asha":
        epochs = spec.epochs
        sched.setdefault("max_t", epochs)
        sched.setdefault("grace_period", 1)
        sched.setdefault("reduction_factor", 2)
        if not 1 <= sched["grace_period"] <= sched["max_t"]:
            raise UserError(f"{where}: scheduler.grace_period must be in [1, max_t="
                            f"{sched['max_t']}], got {sched['grace_period']}")  # fmt: skip
        if sched["reduction_factor"] <= 1:
            raise UserError(f"{where}: scheduler.reduction_factor must be > 1, "
                            f"got {sched['reduction_factor']}")  # fmt: skip
        if sched["max_t"] > epochs:
            raise UserError(f"{where}: scheduler.max_t {sched['max_t']} exceeds base.epochs "
                            f"{epochs}; trials never reach it, lower max_t")  # fmt: skip
    spec.scheduler = sched


def _check_resources(spec: SweepSpec, where: str) -> None:
    res = {"workers_per_trial": 1, "gpus_per_worker": 0, "cpus_per_worker": 1, **spec.resources}
    for key in ("workers_per_trial", "cpus_per_worker"):
        if res[key] <= 0:
            raise UserError(f"{where}: resources.{key} must be > 0, got {res[key]}")
    if res["gpus_per_worker"] < 0:
        raise UserError(f"{where}: resources.gpus_per_worker must be >= 0")
    if res.get("max_concurrent_trials", 1) < 1:
        raise UserError(f"{where}: resources.max_concurrent_trials must be >= 1")
    batch = Config.from_flat(spec.base).optim.batch_size
    if batch % res["workers_per_trial"]:
        raise UserError(f"{where}: base.batch_size {batch} is not divisible by "
                        f"resources.workers_per_trial {res['workers_per_trial']}")  # fmt: skip
    spec.resources = res
    spec.failure = {"max_retries": 1, **spec.failure}
    spec.checkpoint = {"every": 1, "keep": 2, **spec.checkpoint}
