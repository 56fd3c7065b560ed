"""`BudgetScheduler`: a sweep's Tune scheduler inside its `budget:` (see `sepconc.sweep.budget`)."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from sepconc.sweep.budget import FILE, exhausted, read_spent, write_state
from sepconc.sweep.final_failures import end_if_final, is_final, last_failure

log = logging.getLogger(__name__)


class BudgetScheduler(TrialScheduler):
    """The sweep's own scheduler (`inner`), inside a budget.

    It reads the budget and what was spent from `meta_dir/budget.json` (written by the
    driver before each `sweep`/`resume`: a restored Tuner keeps the pickled scheduler, the
    file carries the new limits), counts wall time, GPU-hours and trials started, and
    saves them after each event. Once a budget is reached: a running trial's next result
    (the end of its current epoch) pauses it, no trial starts, and when none runs any more
    the experiment ends the way Ctrl+C ends it (Tune saves its state; `resume` continues).
    A trial Tune requeues to retry a configuration error is ended instead, failed, with no
    retry (`sepconc.sweep.final_failures`).
    """

    def __init__(self, inner: TrialScheduler | None, meta_dir: str, gpus_per_trial: float):
        super().__init__()
        self.inner = inner or FIFOScheduler()
        self.meta_dir, self.gpus_per_trial = str(meta_dir), gpus_per_trial
        self._reset()

    def _reset(self) -> None:
        self._loaded = False
        self.budget: dict[str, Any] = {}
        self.spent: dict[str, Any] = {}
        self._clock = 0.0
        self._running: set[str] = set()
        self._ended = False
        self._final: dict[str, BaseException] = {}  # requeued for a retry it cannot survive

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_loaded", "budget", "spent", "_clock", "_running", "_ended", "_final"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    # -- accounting --
    def _load(self) -> None:
        if self._loaded:
            return
        try:
            self.budget = json.loads((Path(self.meta_dir) / FILE).read_text()).get("budget", {})
        except (OSError, ValueError):
            self.budget = {}
        self.spent = {**read_spent(Path(self.meta_dir)), "ended": None}
        self._clock = time.monotonic()
        self._loaded = True

    def _tick(self) -> None:
        self._load()
        now = time.monotonic()
        elapsed, self._clock = now - self._clock, now
        self.spent["seconds"] += elapsed
        self.spent["gpu_hours"] += elapsed / 3600 * self.gpus_per_trial * len(self._running)

    def _save(self) -> None:
        try:
            write_state(Path(self.meta_dir), self.budget, self.spent)
        except OSError as exc:
            log.warning("could not write the budget spent to %s: %s", self.meta_dir, exc)

    def reached(self) -> str | None:
        """The budget that stops the sweep, or None (also counts the time since the last event)."""
        self._tick()
        return exhausted(self.budget, self.spent)

    # -- Tune's scheduler interface, delegated to `inner` --
    @property
    def metric(self):
        return self.inner.metric

    @property
    def supports_buffered_results(self):
        return self.inner.supports_buffered_results

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if self.inner.metric:  # built with the sweep's first metric (schedulers.build_scheduler)
            return True
        return self.inner.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller, trial: Trial):
        self.inner.on_trial_add(tune_controller, trial)
        exc = self._final.pop(trial.trial_id, None)
        if exc is not None:  # Tune requeued it to retry a configuration error: end it
            end_if_final(tune_controller, trial, exc)

    def on_trial_error(self, tune_controller, trial: Trial):
        self._tick()
        self._running.discard(trial.trial_id)
        self.inner.on_trial_error(tune_controller, trial)
        self._save()
        if trial.status == Trial.ERROR:  # Tune stopped it to retry it (`_try_recover`)
            exc = last_failure(trial)
            if is_final(exc):  # a retry can only repeat it (sepconc.sweep.final_failures)
                self._final[trial.trial_id] = exc

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        self._load()
        if trial.trial_id not in self.spent["started"]:  # it ran: it counts
            self.spent["started"].append(trial.trial_id)
        decision = self.inner.on_trial_result(tune_controller, trial, result)
        ended = self.reached()
        if ended and decision == TrialScheduler.CONTINUE:
            if not self.spent.get("ended"):
                log.warning("budget %s reached: running trials stop after this epoch", ended)
            self.spent["ended"] = ended
            decision = TrialScheduler.PAUSE
        if decision != TrialScheduler.CONTINUE:
            self._running.discard(trial.trial_id)
        self._save()
        return decision

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict):
        self._tick()
        self._running.discard(trial.trial_id)
        self.inner.on_trial_complete(tune_controller, trial, result)
        self._save()

    def on_trial_remove(self, tune_controller, trial: Trial):
        self._tick()
        self._running.discard(trial.trial_id)
        self.inner.on_trial_remove(tune_controller, trial)

    def _full(self) -> bool:
        return "trials" in self.budget and len(self.spent["started"]) >= self.budget["trials"]

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        """The inner scheduler's choice within the budget. Tune also starts every PENDING
        trial it has room for, whatever this returns, so each trial the budget does not let
        start is held back here (paused before its first epoch: it starts on `resume`)."""
        trials = tune_controller.get_trials()
        ended = self.reached()
        started = self.spent["started"]
        for t in trials:
            new = t.trial_id not in started
            if t.status == Trial.RUNNING and new and not ended and not self._full():
                started.append(t.trial_id)  # Tune started it: it counts
            elif (
                t.status == Trial.PENDING
                and (ended or new and self._full())
                or (t.status == Trial.RUNNING and new)
            ):
                tune_controller.pause_trial(t, should_checkpoint=False)
        self._running = {t.trial_id for t in trials if t.status == Trial.RUNNING}
        if ended:
            return self._end(trials, ended)
        trial = self.inner.choose_trial_to_run(tune_controller)
        if trial is not None and trial.trial_id not in started and self._full():
            trial = None  # the trial budget: only trials already started may go on
        if trial is None and self._full():
            trial = next((t for t in trials if t.trial_id in started
                          and t.status in (Trial.PENDING, Trial.PAUSED)), None)  # fmt: skip
            if trial is None:
                return self._end(trials, f"{self.budget['trials']} trials")
        self._save()
        return trial

    def _end(self, trials: list[Trial], ended: str) -> None:
        """No trial may start: once none runs, end the experiment resumably."""
        self.spent["ended"] = ended
        self._save()
        if self._running or self._ended:
            return None
        waiting = [t for t in trials if t.status in (Trial.PENDING, Trial.PAUSED)]
        if not waiting:
            return None  # nothing left to run: Tune ends the sweep on its own
        self._ended = True
        log.warning("budget %s reached: %d trial(s) not run to the end; the sweep stops "
                    "(resume continues them under a larger budget)", ended, len(waiting))  # fmt: skip
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune's graceful stop: state saved, resumable
        else:
            raise BudgetReached(ended)
        return None

    def debug_string(self) -> str:
        return self.inner.debug_string()

    def save(self, checkpoint_path: str):
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str):
        self.inner.restore(checkpoint_path)


class BudgetReached(Exception):
    """The budget ended a sweep run outside the main thread (no graceful signal there)."""
