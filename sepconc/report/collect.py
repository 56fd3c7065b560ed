"""Read what a report draws from MLflow: a sweep's trials, or one run, with metric histories.

A sweep is found through its `sweep.json` (`sepconc.sweep.driver.read_meta`); its trials
are the child runs of the sweep's parent run, with the tags the sweep callback writes
(`sepconc.trial_id`, `sepconc.status`, `sepconc.asha_rung`). Per-layer statistics use the
names the trainer logs: `input/<stat>` and `block{i}/<stat>` (`sepconc.probes`).

Only the histories a figure needs are fetched (`MlflowClient.get_metric_history`, one call
per run and key): the metric's per-epoch values for every trial; the per-layer statistics
over epochs for a single run. The last epoch's values come with the run itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from sepconc.errors import UserError
from sepconc.sweep.results import HIDDEN_PARAMS  # internal per-trial settings, not swept
from sepconc.tracking.store import PARENT, TAG_RUNG, TAG_STATUS, TAG_TRIAL
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
        return self.last.get(key, math.nan)

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
    from mlflow.tracking import MlflowClient

    from sepconc.sweep.driver import read_meta

    meta = read_meta(name, runs_dir)
    client = MlflowClient(meta["tracking_uri"])
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
    return SweepRecord(name, meta, trials, varying_params(trials))


def collect_run(run_id: str, tracking_uri: str) -> Trial:
    """One run with the histories of val/train top-1 and of every layer statistic (+ NCM)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run {run_id!r} in {tracking_uri}; check the id "
                        f"(mlflow ui) or --tracking-uri") from None  # fmt: skip
    trial = _trial(run)
    keys = ["val_acc1", "train_acc1"]
    stats = (*LAYER_STATS, "ncm_acc")
    keys += [f"{layer}/{stat}" for layer in layers_of(run.data.metrics) for stat in stats]
    for key in keys:
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
