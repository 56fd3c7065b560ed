"""Read what a report draws from MLflow: a sweep's trials, or one run, with metric histories.

Runs are found, read, ranked and sorted into "varying" parameters by
`sepconc.tracking.read` (the rules `status`, `compare` and `best` use too); this module
groups them for the figures. Per-layer statistics use the names the trainer logs:
`input/<stat>` and `block{i}/<stat>` (`sepconc.probes`).

Only the histories a figure needs are fetched (`MlflowClient.get_metric_history`, one call
per run and key): the metric's per-epoch values for every trial; the per-layer statistics
over epochs for a single run, and for the trials `best_per_group` picks in a sweep. The
last epoch's values come with the run itself. Trials are compared at common epochs
(`sepconc.tracking.epochs`), never at their own last epochs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from sepconc.errors import UserError
from sepconc.metrics.separation import FISHER_KEY
from sepconc.tracking.epochs import common_epoch, comparison_epochs
from sepconc.tracking.read import (
    Trial,
    best_trial,
    fetch_histories,
    load_run,
    sweep_trials,
    varying_params,
)
from sepconc.yamlio import load_yaml

#: Per-layer statistics drawn by the report (`sepconc.metrics.separation`), each with `_se`.
LAYER_STATS = ("within_rel", "between_rel", FISHER_KEY)
_LAYER = re.compile(r"^(input|block(\d+))/")


@dataclass
class SweepRecord:
    """A sweep as the report sees it: its trials (failed ones included), what varies
    (`read.varying_params`) and the direction of the reported metric (`mode`)."""

    name: str
    meta: dict[str, Any]
    trials: list[Trial]
    varying: list[str]
    mode: str = "max"

    @property
    def parent_run_id(self) -> str:
        return self.meta["parent_run_id"]

    def best(self, metric: str) -> Trial | None:
        """The best non-failed trial by `metric`, ranked as `best` ranks (`read.rank`)."""
        return best_trial(self.trials, metric, self.mode)

    @property
    def finished(self) -> list[Trial]:
        return [t for t in self.trials if t.status != "failed"]

    @property
    def failed(self) -> list[Trial]:
        return [t for t in self.trials if t.status == "failed"]

    def compared(self, metric: str) -> list[Trial]:
        """Non-failed trials that logged `metric` at least once (the ones compared)."""
        return [t for t in self.finished if t.history.get(metric)]

    def common_epoch(self, metric: str) -> int | None:
        """The largest epoch every compared trial logged `metric` at (None: no such epoch)."""
        return common_epoch([t.history[metric] for t in self.compared(metric)])

    def comparison_epochs(self, metric: str, max_epochs: int = 3) -> list[int]:
        """The common epoch, then later stop epochs reached by >= 2 trials (ascending)."""
        return comparison_epochs([t.history[metric] for t in self.compared(metric)], max_epochs)


def layers_of(metrics: dict[str, float] | list[str]) -> list[str]:
    """Layer names present in metric keys, in network order: input, block1, block2, ..."""
    found = {}
    for key in metrics:
        match = _LAYER.match(key)
        if match and key.endswith("/within_rel"):
            found[match.group(1)] = int(match.group(2) or 0)
    return sorted(found, key=found.get)


def collect_sweep(name: str, runs_dir: str = "runs", metric: str = "val_acc1",
                  mode: str | None = None) -> SweepRecord:  # fmt: skip
    """The sweep's trials with the `metric` history of each; a UserError if it has none.

    `mode` (max | min) defaults to the sweep's own for its objective, else
    `read.mode_for(metric)` (`sepconc.sweep.results.metric_mode`).
    """
    from sepconc.sweep.results import metric_mode

    meta, client, trials = sweep_trials(name, runs_dir)
    if not trials:
        raise UserError(f"sweep '{name}' has no trial in {meta['tracking_uri']} yet; "
                        f"see `status {name}`")  # fmt: skip
    fetch_histories(client, trials, [metric])
    mode = mode or metric_mode(name, metric, runs_dir)
    record = SweepRecord(name, meta, trials, varying_params(trials), mode)
    _, groups = best_per_group(record, metric=metric)
    for trial in groups.values():  # the per-layer figure reads these at a common epoch
        fetch_histories(client, [trial], layer_keys(trial.last))
    return record


def best_per_group(record: SweepRecord, key: str = "non_linearity",
                   metric: str = "val_acc1") -> tuple[int | None, dict[str, Trial]]:  # fmt: skip
    """`(epoch, {value of key: best trial})` over trials with per-layer statistics.

    The epoch is the largest one that every group has a trial at; each group's best trial
    is the one with the highest `metric` at that epoch (ties: the first by name). Groups
    come in `ordered_values` order. `(None, {})` when no trial has statistics.
    """
    trials = sorted((t for t in record.compared(metric) if layers_of(t.last)),
                    key=lambda t: t.name)  # fmt: skip
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(trial.params.get(key, "-"), []).append(trial)
    epochs = sorted({s for t in trials for s, _ in t.history[metric]}, reverse=True)
    for epoch in epochs:
        at = {g: [t for t in ts if not math.isnan(t.at(metric, epoch))] for g, ts in groups.items()}
        if all(at.values()):
            best = {g: max(ts, key=lambda t: t.at(metric, epoch)) for g, ts in at.items()}
            return epoch, {g: best[g] for g in ordered_values(list(best))}
    return None, {}


def layer_keys(metrics: dict[str, float] | list[str]) -> list[str]:
    """Keys of the per-layer statistics the report draws (and NCM accuracy), layer by layer."""
    stats = [f"{s}{e}" for s in (*LAYER_STATS, "ncm_acc") for e in ("", "_se")]
    return [f"{layer}/{stat}" for layer in layers_of(metrics) for stat in stats
            if f"{layer}/{stat}" in metrics]  # fmt: skip


def collect_run(run_id: str, tracking_uri: str) -> Trial:
    """One run with the histories of val/train top-1 and of every layer statistic (+ NCM)."""
    client, trial = load_run(run_id, tracking_uri)
    keys = ["val_acc1", "train_acc1", *layer_keys(trial.last)]
    fetch_histories(client, [trial], [k for k in keys if k in trial.last])
    return trial


def ordered_values(values: list[str]) -> list[str]:
    """Distinct parameter texts in a natural order: numbers and per-block lists by value."""
    distinct = list(dict.fromkeys(values))
    parsed = {v: _parse(v) for v in distinct}
    if all(isinstance(p, (int, float)) for p in parsed.values()):
        return sorted(distinct, key=lambda v: parsed[v])
    if all(isinstance(p, list) for p in parsed.values()):
        return sorted(distinct, key=lambda v: (len(parsed[v]), parsed[v]))
    return sorted(distinct)


def short_value(text: str) -> str:
    """A parameter value for a label: numbers to 3 significant digits, other text as is."""
    value = _parse(text)
    if isinstance(value, float):
        return f"{value:.3g}"
    return text


def is_continuous(values: list[str], at_least: int = 5) -> bool:
    """True when `values` are numbers with at least `at_least` distinct ones (a sampled lr)."""
    distinct = set(values)
    parsed = [_parse(v) for v in distinct]
    return len(distinct) >= at_least and all(isinstance(p, (int, float)) for p in parsed)


def _parse(text: str) -> Any:
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, bool) or value is None:
        return text
    if isinstance(value, list) and not all(isinstance(v, (int, float)) for v in value):
        return text
    return value
