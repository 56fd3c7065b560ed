"""The read side of tracking: a sweep's trials, one run, metric histories, ranking, what varies.

Every command that reads results back (`status`, `compare`, `best`, `report`) goes through
this module, so they find the same trials, rank them the same way and list the same
varying parameters. The write side is the trainer's run logging and the sweep callback
(`sepconc.sweep.callbacks`): a sweep is one parent run, found through its `sweep.json`;
its trials are the child runs (`mlflow.parentRunId` = the parent's id) with the tags
`sepconc.trial_id`, `sepconc.status` and `sepconc.asha_rung`, their resolved config logged
as parameters (one line of YAML each, `sepconc.tracking.store.param_text`) and one metric
batch per epoch at `step = epoch`.

The varying-parameters rule (`varying_params`): a parameter varies when at least two
trials hold different values for it, where

- values are compared after parsing them as the config's types (`parse_param`): `1e-3`,
  `0.001` and `1.0e-03` are one learning rate, `16` and `[16]` one per-block width, `1`
  and `1.0` one float;
- every trial that logged parameters counts, failed ones included: a failed trial is a
  configuration the sweep tried, and what distinguishes it is what `compare` must show;
- a trial that did not log the parameter holds "absent", which differs from any value;
  except a failed trial: one whose config did not resolve logged only what it was given
  (every other run logs every field), so what it lacks is unknown, not different (else
  one such trial made every field "vary" in `compare`, the summary and `report`);
- the per-run bookkeeping (`BOOKKEEPING`: output folders, checkpoint cadence, tracking
  settings, the worker count) never varies in the user's sense: each trial has its own
  folder. The seed is not bookkeeping: a sweep over seeds lists it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepconc.errors import UserError
from sepconc.tracking.epochs import value_at
from sepconc.tracking.store import PARENT, TAG_RUNG, TAG_STATUS, TAG_TRIAL, tracking_client

#: Per-run plumbing logged with a trial's config, never a "varying parameter".
BOOKKEEPING = frozenset({"out", "resume", "cache_dir", "tracking", "tracking_uri", "experiment",
                         "checkpoint_every", "checkpoint_keep", "evaluate", "num_workers"})  # fmt: skip

_ABSENT = object()  # the value of a parameter a trial did not log


@dataclass
class Trial:
    """One run: identity, status, parameters (text as logged), last values and histories.

    `status` is the sweep callback's tag (running | completed | early_stopped | failed) or,
    for a run without it, MLflow's status (FINISHED -> completed, FAILED -> failed).
    `history[key]` is a list of `(epoch, value)` sorted by epoch, filled by
    `fetch_histories`; `rung` is the ASHA milestone (epoch) where the trial was stopped,
    or None.
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
        """The last epoch logged (the `epoch` metric, else the val_acc1 history's last step)."""
        return int(self.last.get("epoch", max((s for s, _ in self.history.get("val_acc1", [])),
                                              default=0)))  # fmt: skip

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def trial_from_run(run) -> Trial:
    """A `Trial` from an MLflow `Run` (no history fetched)."""
    tags = run.data.tags
    rung = tags.get(TAG_RUNG)
    status = tags.get(TAG_STATUS) or {"FAILED": "failed", "FINISHED": "completed"}.get(
        run.info.status, run.info.status.lower()
    )
    return Trial(run_id=run.info.run_id,
                 name=tags.get(TAG_TRIAL) or run.info.run_name or run.info.run_id[:8],
                 status=status, params=dict(run.data.params), last=dict(run.data.metrics),
                 rung=int(rung) if rung and rung.isdigit() else None)  # fmt: skip


def sweep_trials(name: str, runs_dir: str | Path = "runs"):
    """`(meta, client, trials)` of sweep `name`: its `sweep.json`, an `MlflowClient` on its
    store and one `Trial` per child run of its parent run ([] before the first trial).

    Raises `UserError` when no sweep of that name exists in `runs_dir` or its store cannot
    be opened.
    """
    from sepconc.sweep.paths import read_meta

    meta = read_meta(name, runs_dir)
    client = tracking_client(meta["tracking_uri"])
    runs = client.search_runs([meta["experiment_id"]],
                              filter_string=f"tags.`{PARENT}` = '{meta['parent_run_id']}'",
                              max_results=10000)  # fmt: skip
    return meta, client, [trial_from_run(run) for run in runs]


def load_run(run_id: str, tracking_uri: str):
    """`(client, trial)` for MLflow run `run_id`; a one-line `UserError` if the store lacks it."""
    from mlflow.exceptions import MlflowException

    client = tracking_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run {run_id!r} in {tracking_uri}; check the id "
                        f"(mlflow ui) or --tracking-uri") from None  # fmt: skip
    return client, trial_from_run(run)


def fetch_history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """`[(epoch, value), ...]` of metric `key`, by epoch; a step logged twice keeps its last."""
    points = {m.step: m.value for m in client.get_metric_history(run_id, key)}
    return sorted(points.items())


def fetch_histories(client, trials: list[Trial], keys: list[str]) -> None:
    """Fill `trial.history[key]` for every trial and key (one MLflow call per pair)."""
    for trial in trials:
        for key in keys:
            trial.history[key] = fetch_history(client, trial.run_id, key)


def parse_param(name: str, text: str) -> Any:
    """A logged parameter as a comparable (hashable) value of the config's type.

    The text is read with `sepconc.yamlio.load_yaml`; a field of the config is then given
    its type: floats as `float` (`1` and `1.0` are equal), per-block options as a tuple of
    ints (a scalar `16` is the one-element list `[16]`). Lists become tuples. Text that is
    not YAML, or a key that is not a config field, stays as parsed (or as the text).
    """
    import yaml

    from sepconc.config import FIELD_SECTION, field_kind
    from sepconc.yamlio import load_yaml

    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text
    if name in FIELD_SECTION:
        kind = field_kind(name)
        if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif kind == "int list" and not isinstance(value, (list, tuple)):
            value = [value]
    return _hashable(value)


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    return value


def varying_params(trials: list[Trial]) -> list[str]:
    """The parameters that vary across `trials`, sorted by name (the rule: module docstring).

    Trials that logged no parameter at all (a run created but not yet filled) are skipped;
    a failed trial counts only with the parameters it logged.
    """
    logged = [t for t in trials if t.params]
    keys = set().union(*(t.params for t in logged)) - BOOKKEEPING if logged else set()

    def values(key: str) -> set:
        return {parse_param(key, t.params[key]) if key in t.params else _ABSENT
                for t in logged if key in t.params or t.status != "failed"}  # fmt: skip

    return sorted(k for k in keys if len(values(k)) > 1)


def mode_for(metric: str) -> str:
    """The direction of a metric with no sweep to say it: 'min' for a loss, else 'max'."""
    return "min" if "loss" in metric.rsplit("/", 1)[-1] else "max"


def score(trial: Trial, metric: str, mode: str = "max") -> float:
    """What trials are ranked by: the trainer's best-so-far `best_<metric>` where it logs one,
    else the best (`mode`) of the fetched `metric` history, else the last value; NaN if none."""
    if f"best_{metric}" in trial.last:
        return trial.last[f"best_{metric}"]
    values = [v for _, v in trial.history.get(metric, []) if not math.isnan(v)]
    if values:
        return max(values) if mode == "max" else min(values)
    return trial.value(metric)


def rank(trials: list[Trial], metric: str, mode: str = "max") -> list[Trial]:
    """`trials` best first by `score`; ties: the better last value, then the name. Trials
    without a value come last; failed trials are ranked like the others (callers filter)."""
    sign = 1.0 if mode == "max" else -1.0

    def key(trial: Trial) -> tuple:
        best, last = score(trial, metric, mode), trial.value(metric)
        return (math.isnan(best), -sign * best if not math.isnan(best) else 0.0,
                -sign * last if not math.isnan(last) else math.inf, trial.name)  # fmt: skip

    return sorted(trials, key=key)


def best_trial(trials: list[Trial], metric: str, mode: str = "max") -> Trial | None:
    """The first non-failed trial of `rank` that has a value (None when no trial has one)."""
    ranked = [t for t in rank(trials, metric, mode) if not t.failed]
    return ranked[0] if ranked and not math.isnan(score(ranked[0], metric, mode)) else None


def check_epoch(trials: list[Trial], metric: str, epoch: int) -> int:
    """How many of `trials` (histories of `metric` fetched) logged `metric` at `epoch`
    (`compare --at-epoch`); a one-line `UserError` when `epoch` < 1 or none reached it."""
    furthest = max((s for t in trials for s, _ in t.history.get(metric, [])), default=0)
    if epoch < 1 or epoch > furthest:
        raise UserError(f"--at-epoch {epoch}: no trial logged {metric} at epoch {epoch} (the "
                        f"furthest any reached is {furthest}); choose 1..{max(furthest, 1)}")  # fmt: skip
    return sum(not math.isnan(t.at(metric, epoch)) for t in trials)
