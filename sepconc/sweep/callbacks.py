"""Driver-side Tune callbacks: MLflow parent/child runs, and the live progress view.

The MLflow callback replaces Ray's stock `MLflowLoggerCallback`, which makes flat
runs, sends one HTTP call per key and opens duplicate runs after a restore:
- one child run per trial under the sweep's parent run (`mlflow.parentRunId`),
  found again by its `sepconc.trial_id` tag after `resume` (no duplicates);
- one batched call per report, `step=epoch`; an epoch already logged (a retried
  trial re-reporting from its checkpoint) is not logged twice;
- tags: sweep, trial id, status (running/completed/early_stopped/failed), the
  ASHA rung where a trial stopped, the nodes its workers ran on;
- the model's cost (`params`, `flops`: `sepconc.cost`) as metrics at step 0, when the
  trial's run is created (before its first epoch; not repeated per epoch);
- the trial's whole resolved config (`trial_config`) as params and `config.yaml`, the
  reproducibility tags and, with local storage, its `data.json` (`sepconc.tracking.record`);
- the final checkpoint's path as tag `sepconc.checkpoint` (`sepconc.tracking.models`);
- only sepconc's documented metrics (`store.is_documented_metric`): Ray's bookkeeping
  keys (pid, timestamp, training_iteration, ...) are dropped.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from collections import deque
from typing import Any

from ray.tune import Callback

from sepconc.cost import COST_KEYS
from sepconc.errors import UserError, clean_reason, counted, fit_line, short_number
from sepconc.sweep.pbt_clone import clone_start_epoch
from sepconc.sweep.space import describe
from sepconc.tracking.models import TAG_CHECKPOINT, final_checkpoint
from sepconc.tracking.record import log_config, log_data_identity, reproducibility_tags
from sepconc.tracking.store import (
    PARENT,
    TAG_KIND,
    TAG_NODES,
    TAG_REASON,
    TAG_RUNG,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL,
    last_logged_step,
    log_report,
    tracking_client,
)

log = logging.getLogger(__name__)


def asha_rungs(scheduler: dict[str, Any]) -> list[int]:
    """ASHA's milestones: `grace_period * reduction_factor^k` below `max_t`."""
    if scheduler.get("type") != "asha":
        return []
    rungs, t = [], scheduler["grace_period"]
    while t < scheduler["max_t"]:
        rungs.append(int(t))
        t *= scheduler["reduction_factor"]
    return rungs


def completion(last: int, target: int, scheduler: dict[str, Any]) -> tuple[str, int | None]:
    """How a trial that ended without error ended: ("completed", None) when it reached
    `target` epochs, else ("early_stopped", the ASHA rung it stopped at)."""
    if last >= target:
        return "completed", None
    rungs = [r for r in asha_rungs(scheduler) if r <= last]
    return "early_stopped", rungs[-1] if rungs else last


class MlflowSweepCallback(Callback):
    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, sweep: str,
                 base: dict[str, Any], epochs: int, scheduler: dict[str, Any],
                 workers: int = 1, gpus_per_worker: float = 0,
                 fixed: dict[str, Any] | None = None):  # fmt: skip
        """`fixed`: what the trials are given for the whole sweep (`tuner.build_tuner`'s
        dict: checkpoint cadence, trial folders, cache); without it, the defaults."""
        self.workers, self.gpus_per_worker = workers, gpus_per_worker
        self.fixed = fixed
        self.uri, self.experiment_id, self.parent = uri, experiment_id, parent_run_id
        self.sweep, self.base, self.epochs, self.scheduler = sweep, base, epochs, scheduler
        self._client = None
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._logged: dict[str, int] = {}  # run id -> last epoch logged
        self._last_epoch: dict[str, int] = {}
        self._pending: deque = deque()
        self._down_since, self._next_retry = 0.0, 0.0
        self._data_logged: set[str] = set()  # run ids whose data.json is logged

    def __getstate__(self):  # pickled into Tune's experiment state: drop live objects
        state = self.__dict__.copy()
        state.update(_client=None, _runs={}, _logged={}, _last_epoch={}, _pending=deque(),
                     _down_since=0.0, _next_retry=0.0, _data_logged=set())  # fmt: skip
        return state

    @property
    def client(self):
        if self._client is None:
            # Fail fast instead of MLflow's minutes of retries: the FIFO retries for us.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            self._client = tracking_client(self.uri)
        return self._client

    def run_for(self, trial, config: dict[str, Any] | None = None) -> str:
        """The trial's child run: found by tag (after resume) or created with its params
        (`config`: the trial's Tune config when it started; default `trial.config` now)."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_TRIAL}` = '{trial.trial_id}' and "
            f"tags.`{TAG_SWEEP}` = '{self.sweep}'",
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self._logged[run_id] = last_logged_step(self.client, run_id)
        else:
            flat = self.trial_config(trial, config)
            tags = {PARENT: self.parent, TAG_KIND: "trial", TAG_SWEEP: self.sweep,
                    TAG_TRIAL: trial.trial_id, TAG_STATUS: "running",
                    **reproducibility_tags(flat["device"], flat["num_workers"],
                                           getattr(self, "gpus_per_worker", 0))}  # fmt: skip
            run = self.client.create_run(self.experiment_id, run_name=_run_name(trial), tags=tags)
            run_id = run.info.run_id
            # The trial's whole resolved config: `best --out` exports it for a retrain.
            log_config(self.client, run_id, flat)
            self._log_cost(run_id, flat)
            self._logged[run_id] = 0
        self._runs[trial.trial_id] = run_id
        return run_id

    def _log_cost(self, run_id: str, flat: dict[str, Any]) -> None:
        """`params` and `flops` (`sepconc.cost`) at step 0, before the trial's first epoch."""
        from sepconc.config import Config
        from sepconc.cost import model_cost

        try:
            cost = model_cost(Config.from_flat(flat))
        except UserError:  # the trial fails on it too, and says why
            return
        log_report(self.client, run_id, cost, step=0)

    def trial_config(self, trial, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every field of the trial's resolved config (`Config.to_flat()`): the config the
        trial trains with (`trial.trial_flat`: base + its params + the sweep's run settings),
        except that it is tracked (`tracking: true` in this store, as its run shows): the
        `config.yaml` artifact then retrains it as a tracked `train` run. `config`: the
        trial's Tune config to resolve (default `trial.config`)."""
        from sepconc.config import Config
        from sepconc.sweep.trial import trial_flat

        # getattr: a callback restored from the Tune state of an older sepconc lacks them
        workers, gpus = getattr(self, "workers", 1), getattr(self, "gpus_per_worker", 0)
        fixed = getattr(self, "fixed", None) or {
            "base": self.base, "workers": workers, "gpus_per_worker": gpus,
            "checkpoint_every": 1, "checkpoint_keep": 2, "trials_dir": None}  # fmt: skip
        flat = trial_flat(config or trial.config, fixed, trial.trial_id)
        flat.update(tracking=True, tracking_uri=self.uri)
        try:
            return Config.from_flat(flat, where=f"trial {trial.trial_id}").to_flat()
        except UserError:  # the trial fails on it too (and says why): record what it was given
            return flat

    def _trial_folder(self, trial):
        from pathlib import Path

        folder = (getattr(self, "fixed", None) or {}).get("trials_dir")
        return Path(folder) / trial.trial_id if folder else None

    # Every MLflow operation goes through a FIFO: when the tracking server is down, the
    # operations wait in memory, in order, and are sent when it answers again (checked at
    # every Tune step and, at the end, for up to `flush_timeout_s`). No metric is lost as
    # long as the driver lives; the README states this choice.
    flush_timeout_s = 600.0
    retry_every_s = 5.0

    def _submit(self, operation) -> None:
        self._pending.append(operation)
        self._flush()

    def _flush(self) -> bool:
        """Send buffered operations in order; False (and keep them) while the server is down."""
        while self._pending:
            try:
                self._pending[0]()
            except Exception as exc:  # MlflowException, ConnectionError, timeouts
                self._next_retry = time.monotonic() + self.retry_every_s
                if not self._down_since:
                    self._down_since = time.monotonic()
                    log.warning("tracking store unreachable (%s); buffering %d operation(s)",
                                clean_reason(exc, 120), len(self._pending))  # fmt: skip
                return False
            self._pending.popleft()
        if self._down_since:
            log.warning("tracking store back after %.0f s; buffered operations sent",
                        time.monotonic() - self._down_since)  # fmt: skip
            self._down_since = 0.0
        return True

    def on_step_end(self, iteration, trials, **info):
        if self._pending and time.monotonic() >= self._next_retry:
            self._flush()

    def on_experiment_end(self, trials, **info):
        deadline = time.monotonic() + self.flush_timeout_s
        while not self._flush() and time.monotonic() < deadline:
            time.sleep(self.retry_every_s)
        if self._pending:
            log.error("tracking store still unreachable: %d operation(s) not logged",
                      len(self._pending))  # fmt: skip

    def on_trial_start(self, iteration, trials, trial, **info):
        # the config it starts with, now: an operation buffered during a store outage runs
        # later, when PBT may have given the trial new values (`sepconc.sweep.pbt`)
        config = copy.deepcopy(trial.config)
        clone = clone_start_epoch(trial)
        self._submit(lambda: self._log_start(trial, config, clone))

    def _log_start(self, trial, config: dict[str, Any], clone: int | None) -> None:
        """`running`; a PBT clone (`clone`: the epoch of the other trial's checkpoint it
        restarts from) retrains the epochs after it: those are logged again, so the newest
        value of each step is the clone's (asynchronous PBT can hand over an older epoch)."""
        run_id = self.run_for(trial, config)
        self.client.set_tag(run_id, TAG_STATUS, "running")
        if clone is not None and clone < self._logged.get(run_id, 0):
            self._logged[run_id] = clone

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch = int(result.get("epoch", 0))
        self._last_epoch[trial.trial_id] = max(epoch, self._last_epoch.get(trial.trial_id, 0))
        stamp = int(time.time() * 1000)  # the report's time, even if sent after an outage
        self._submit(lambda: self._log_result(trial, dict(result), epoch, stamp))

    def _log_result(self, trial, result: dict, epoch: int, stamp: int | None = None) -> None:
        run_id = self.run_for(trial)
        if epoch <= self._logged.get(run_id, 0):
            return  # re-reported after a retry from an earlier checkpoint: already logged
        tags = {TAG_NODES: result["sepconc_nodes"]} if "sepconc_nodes" in result else None
        result = {k: v for k, v in result.items() if k not in COST_KEYS}  # logged at step 0
        log_report(self.client, run_id, result, step=epoch, tags=tags, timestamp_ms=stamp)
        self._logged[run_id] = epoch
        self._log_data(trial, run_id)

    def _log_data(self, trial, run_id: str) -> None:
        """The trial folder's `data.json` (written before its first report), once per run."""
        folder = self._trial_folder(trial)
        done = self.__dict__.setdefault("_data_logged", set())
        if run_id not in done and folder is not None:
            if log_data_identity(self.client, run_id, folder / "data.json"):
                done.add(run_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = self._last_epoch.get(trial.trial_id)
        self._submit(lambda: self._log_complete(trial, last))

    def _log_complete(self, trial, last: int | None) -> None:
        run_id = self.run_for(trial)
        last = last or last_logged_step(self.client, run_id)
        target = int(trial.config.get("params", {}).get("epochs", self.epochs))
        status, rung = completion(last, target, self.scheduler)
        self.client.set_tag(run_id, TAG_STATUS, status)
        if rung is not None:
            self.client.set_tag(run_id, TAG_RUNG, str(rung))
        checkpoint = final_checkpoint(self._trial_folder(trial), trial)
        if checkpoint:  # the trained model, kept in the sweep's storage
            self.client.set_tag(run_id, TAG_CHECKPOINT, checkpoint)
        self.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = _error_line(trial)
        self._submit(lambda: self._log_error(trial, reason))

    def _log_error(self, trial, reason: str) -> None:
        run_id = self.run_for(trial)
        self.client.set_tag(run_id, TAG_STATUS, "failed")
        self.client.set_tag(run_id, TAG_REASON, reason)
        self.client.set_terminated(run_id, "FAILED")


def _run_name(trial) -> str:
    """The trial's swept values, then its id: `lr=0.01 non_linearity=relu (t00001)`."""
    return f"{describe(trial.config.get('params', {}))} ({trial.trial_id})"[:250]


def _error_line(trial) -> str:
    """The last meaningful line of a trial's error (e.g. 'loss became nan at epoch 3')."""
    text = ""
    path = getattr(trial, "error_file", None) or ""
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        text = str(getattr(trial, "error_msg", "") or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "TrainingDiverged" in line or "Error" in line:
            return fit_line(line, 500)
    return fit_line(lines[-1], 500) if lines else "unknown error"


def _number(value) -> str:
    """A metric as the table shows it: 4 significant digits, '-' when not reported yet."""
    return "-" if value is None else short_number(value)


class ProgressCallback(Callback):
    """A line per trial event (and a live table on a terminal) while the sweep runs."""

    def __init__(self, metric: str, total: int, epochs: int = 0, scheduler=None):
        self.metric, self.total = metric, total
        self.epochs, self.scheduler = epochs, scheduler or {"type": "fifo"}
        self._state: dict[str, dict[str, Any]] = {}
        self._live = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_live"] = None
        return state

    def _update(self, trial, **changes) -> None:
        row = self._state.setdefault(trial.trial_id, {"params": describe(
            trial.config.get("params", {})), "status": "PENDING", "epoch": 0, "metric": None})  # fmt: skip
        row.update(changes)
        if sys.__stdout__ is not None and sys.__stdout__.isatty():  # the terminal, not a redirect
            self._render()

    def _render(self) -> None:
        from rich.live import Live
        from rich.table import Table

        table = Table(title=f"sweep: {len(self._state)}/{self.total} trials started")
        for column in ("trial", "params", "status", "epoch", self.metric):
            table.add_column(column)
        for trial_id, row in sorted(self._state.items()):
            value = "" if row["metric"] is None else _number(row["metric"])
            table.add_row(trial_id, row["params"], row["status"], str(row["epoch"]), value)
        if self._live is None:
            from rich.console import Console

            console = Console(file=sys.__stdout__)  # Tune's own prints are redirected to the log
            self._live = Live(table, refresh_per_second=2, transient=False, console=console)
            self._live.start()
        self._live.update(table)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._update(trial, status="RUNNING")
        log.info("trial %s started: %s", trial.trial_id, describe(trial.config.get("params", {})))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._update(trial, epoch=result.get("epoch"), metric=result.get(self.metric))
        log.info("trial %s epoch %s %s=%s", trial.trial_id, result.get("epoch"), self.metric,
                 _number(result.get(self.metric)))  # fmt: skip

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self._state.get(trial.trial_id, {})
        last = int(row.get("epoch") or 0)
        target = int(trial.config.get("params", {}).get("epochs", self.epochs))
        status, rung = completion(last, target, self.scheduler)
        if status == "completed":
            self._update(trial, status="DONE")
            log.info("trial %s finished: %s, %s=%s", trial.trial_id, counted(last, "epoch"),
                     self.metric, _number(row.get("metric")))  # fmt: skip
        else:
            self._update(trial, status="STOPPED")
            log.info("trial %s stopped at epoch %d (rung %d) by the scheduler: %s=%s",
                     trial.trial_id, last, rung, self.metric, _number(row.get("metric")))  # fmt: skip

    def on_trial_error(self, iteration, trials, trial, **info):
        self._update(trial, status="ERROR")
        log.warning("trial %s failed: %s", trial.trial_id, _error_line(trial))

    def on_experiment_end(self, trials, **info):
        if self._live is not None:
            self._live.stop()
            self._live = None
