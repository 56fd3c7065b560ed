"""Read what a report draws from MLflow: a sweep's trials, or one run, with metric histories.

A sweep is found through its `sweep.json` (`sepconc.sweep.driver.read_meta`); its trials
are the child runs of the sweep's parent run, with the tags the sweep callback writes
(`sepconc.trial_id`, `sepconc.status`, `sepconc.asha_rung`). Per-layer statistics use the
names the trainer logs: `input/<stat>` and `block{i}/<stat>` (`sepconc.probes`).

Only the histories a figure needs are fetched (`MlflowClient.get_metric_history`, one call
per run and key): the metric's per-epoch values for every trial; the per-layer statistics
over epochs for a single run, and for the trials `best_per_group` picks in a sweep. The
last epoch's values come with the run itself. Trials are compared at common epochs
(`sepconc.report.epochs`), never at their own last epochs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from sepconc.errors import UserError
from sepconc.report.epochs import common_epoch, comparison_epochs, value_at
from sepconc.sweep.results import HIDDEN_PARAMS  # internal per-trial settings, not swept
from sepconc.tracking.store import PARENT, TAG_RUNG, TAG_STATUS, TAG_TRIAL, tracking_client
from sepconc.yamlio import load_yaml

#: Per-layer class statistics drawn by the report (`sepconc.metrics.class_stats`).
LAYER_STATS = ("within_rel", "between_rel", "fisher")
_LAYER = re.compile(r"^(input|block(\d+))/")


@dataclass
class Trial:
    """One run: identity, status, parameters (text as logged), last values and histories.

    `history[key]` is a list of `(epoch, value)` sorted by epoch; `rung` is the ASHA
    milestone (epoch) where the trial was stopped, or None.
    """

    run_id: str
    name: str
    status: str
    params: dict[str, str]
    last: dict[str, float]
    rung: int | None = None
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def value(self, key: str) -> float:
        """The value of `key` at the run's last logged epoch (NaN if never logged)."""
        return self.last.get(key, math.nan)

    def at(self, key: str, epoch: int | None) -> float:
        """The value of `key` at `epoch`, from its fetched history (NaN if not logged)."""
        return value_at(self.history.get(key, []), epoch)

    @property
    def epochs(self) -> int:
        return int(self.last.get("epoch", max((s for s, _ in self.history.get("val_acc1", [])),
                                              default=0)))  # fmt: skip


@dataclass
class SweepRecord:
    """A sweep as the report sees it: its trials (failed ones included) and what varies."""

    name: str
    meta: dict[str, Any]
    trials: list[Trial]
    varying: list[str]

    @property
    def parent_run_id(self) -> str:
        return self.meta["parent_run_id"]

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


def collect_sweep(name: str, runs_dir: str = "runs", metric: str = "val_acc1") -> SweepRecord:
    """The sweep's trials with the `metric` history of each; a UserError if it has none."""

    from sepconc.sweep.driver import read_meta

    meta = read_meta(name, runs_dir)
    client = tracking_client(meta["tracking_uri"])
    runs = client.search_runs([meta["experiment_id"]],
                              filter_string=f"tags.`{PARENT}` = '{meta['parent_run_id']}'",
                              max_results=10000)  # fmt: skip
    if not runs:
        raise UserError(f"sweep '{name}' has no trial in {meta['tracking_uri']} yet; "
                        f"see `status {name}`")  # fmt: skip
    trials = [_trial(run) for run in runs]
    for trial in trials:
        if trial.status != "failed":
            trial.history[metric] = _history(client, trial.run_id, metric)
    record = SweepRecord(name, meta, trials, varying_params(trials))
    _, groups = best_per_group(record, metric=metric)
    for trial in groups.values():  # the per-layer figure reads these at a common epoch
        for key in layer_keys(trial.last):
            trial.history[key] = _history(client, trial.run_id, key)
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
    stats = (*LAYER_STATS, "ncm_acc")
    return [f"{layer}/{stat}" for layer in layers_of(metrics) for stat in stats
            if f"{layer}/{stat}" in metrics]  # fmt: skip


def collect_run(run_id: str, tracking_uri: str) -> Trial:
    """One run with the histories of val/train top-1 and of every layer statistic (+ NCM)."""
    from mlflow.exceptions import MlflowException

    client = tracking_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run {run_id!r} in {tracking_uri}; check the id "
                        f"(mlflow ui) or --tracking-uri") from None  # fmt: skip
    trial = _trial(run)
    for key in ["val_acc1", "train_acc1", *layer_keys(run.data.metrics)]:
        if key in run.data.metrics:
            trial.history[key] = _history(client, run_id, key)
    return trial


def varying_params(trials: list[Trial]) -> list[str]:
    """Parameters (not internal settings) whose value differs between non-failed trials."""
    params = [t.params for t in trials if t.status != "failed"] or [t.params for t in trials]
    keys = set().union(*params) - HIDDEN_PARAMS
    return sorted(k for k in keys if len({p.get(k) for p in params}) > 1)


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


def _trial(run) -> Trial:
    tags = run.data.tags
    rung = tags.get(TAG_RUNG)
    status = tags.get(TAG_STATUS) or {"FAILED": "failed", "FINISHED": "completed"}.get(
        run.info.status, run.info.status.lower()
    )
    return Trial(run_id=run.info.run_id,
                 name=tags.get(TAG_TRIAL) or run.info.run_name or run.info.run_id[:8],
                 status=status, params=dict(run.data.params), last=dict(run.data.metrics),
                 rung=int(rung) if rung and rung.isdigit() else None)  # fmt: skip


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    points = {m.step: m.value for m in client.get_metric_history(run_id, key)}
    return sorted(points.items())
