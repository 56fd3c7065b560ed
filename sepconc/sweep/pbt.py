"""Population-based training in a sweep: a cloned trial continues from the other trial's
checkpoint with its new values, and its MLflow run records each change.

When PBT (`scheduler: {type: pbt, ...}`, see `sepconc.sweep.schedulers`) makes a weak
trial clone a strong one, Tune restarts the weak trial with the strong trial's last
checkpoint and the perturbed values in its config. In the trial (`sepconc.sweep.trial`
calls `sepconc.sweep.pbt_clone.adopt_clone`, a module without Ray), that checkpoint replaces the trial's own at that epoch in its run
folder (its own later checkpoints are moved to `checkpoints/cloned-<time>/`), so training
goes on from the clone's weights and optimizer state; the new `lr` takes effect because
the epoch loop sets the optimizer's learning rate from the config every epoch, and
`pars_beta` is read every step. The run's metric history up to the clone is its own;
epochs it trains again after an older checkpoint (asynchronous PBT) are logged again, the
newest value of a step being the clone's (`MlflowSweepCallback`). A trial is never made a
clone at its last epoch, nor handed a checkpoint of it (`SweepPBT`): it would train
nothing more, yet its folder's final checkpoint (its MLflow run's `sepconc.checkpoint`)
would be the other trial's, next to its own metrics.

On the driver, `PbtChangesCallback` logs each mutated value as the metric `pbt/<key>` at
the first epoch trained with it (the initial values at the first epoch) and the tag
`sepconc.pbt_changes` listing every change (`epoch 3: lr 0.05 -> 0.06 (cloned t0001)`).
The values an epoch was trained with are the ones its report carries (`result["config"]`,
the trial process's own config), never `trial.config`: Tune calls the scheduler before
the callbacks, so when PBT exploits the trial whose result completes a perturbation step
(in synch mode the last trial to report), `trial.config` already holds the values of the
*next* epoch while the callback sees the epoch trained with the old ones.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import PopulationBasedTraining

from sepconc.errors import fit_line
from sepconc.sweep.pbt_clone import cloned_from

log = logging.getLogger(__name__)

TAG_PBT = "sepconc.pbt_changes"


class SweepPBT(PopulationBasedTraining):
    """Ray's `PopulationBasedTraining` that does not exploit into a trial whose last result
    was its final epoch (`params.epochs`, else `epochs`: the sweep's), nor hand it a
    checkpoint of that epoch: it would train nothing more. Ray's PBT does not know a
    trial's length; in synch mode every trial's last result is a perturbation step."""

    def __init__(self, *, epochs: int, **kwargs):
        super().__init__(**kwargs)
        self._epochs = int(epochs)

    def _exploit(self, tune_controller, trial, trial_to_clone):
        target = int(trial.config.get("params", {}).get("epochs", self._epochs))
        reached = max(self._trial_state[t].last_train_time for t in (trial, trial_to_clone))
        if reached >= target:  # it, or the checkpoint it would get, is at its last epoch
            log.info("trial %s: not cloned from trial %s at epoch %d of %d: nothing left to train",
                     trial.trial_id, trial_to_clone.trial_id, reached, target)  # fmt: skip
            return
        super()._exploit(tune_controller, trial, trial_to_clone)


class PbtChangesCallback(Callback):
    """Driver side: each PBT change of a trial's values on its MLflow run (module docstring)."""

    def __init__(self, uri: str, experiment_id: str, sweep: str, keys: list[str]):
        """`keys`: the mutated parameters (`scheduler.mutations`)."""
        self.uri, self.experiment_id, self.sweep, self.keys = uri, experiment_id, sweep, list(keys)
        self._reset()

    def _reset(self) -> None:
        self._client = None
        self._runs: dict[str, str] = {}
        self._values: dict[str, dict[str, Any]] = {}  # trial id -> values last logged
        self._clone: dict[str, str] = {}  # trial id -> "cloned tX at epoch E"
        self._changes: dict[str, list[str]] = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_client", "_runs", "_values", "_clone", "_changes"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def _run_id(self, trial_id: str) -> str | None:
        from sepconc.tracking.store import TAG_SWEEP, TAG_TRIAL, tracking_client

        if trial_id not in self._runs:
            if self._client is None:
                self._client = tracking_client(self.uri)
            query = f"tags.`{TAG_TRIAL}` = '{trial_id}' and tags.`{TAG_SWEEP}` = '{self.sweep}'"
            found = self._client.search_runs([self.experiment_id], filter_string=query)
            if not found:
                return None
            run = found[0]
            self._runs[trial_id] = run.info.run_id
            previous = run.data.tags.get(TAG_PBT)
            self._changes[trial_id] = previous.split("; ") if previous else []
            self._values.setdefault(trial_id, {})
            for key, value in run.data.metrics.items():  # after `resume`: the last values
                if key.startswith("pbt/"):
                    self._values[trial_id].setdefault(key[4:], value)
        return self._runs[trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        donor = cloned_from(getattr(trial.checkpoint, "path", None), trial.trial_id)
        if donor:
            self._clone[trial.trial_id] = f"cloned {donor}"
        else:  # restarted from its own checkpoint: an earlier clone is not this start's source
            self._clone.pop(trial.trial_id, None)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        try:
            self._log(trial, result)
        except Exception as exc:  # never the sweep's failure
            log.warning("trial %s: PBT change not logged (%s)", trial.trial_id, exc)

    def _log(self, trial, result: dict) -> None:
        epoch = int(result.get("epoch", 0))
        params = trained_params(trial, result)
        run_id = self._run_id(trial.trial_id)
        if run_id is None:
            return
        before = self._values[trial.trial_id]
        now = {k: params[k] for k in self.keys if isinstance(params.get(k), (int, float))}
        changed = {k: v for k, v in now.items() if before.get(k) != v}
        if not changed:
            return
        stamp = int(time.time() * 1000)
        for key, value in changed.items():
            self._client.log_metric(run_id, f"pbt/{key}", float(value), timestamp=stamp, step=epoch)
        if before:  # not the initial values
            moves = ", ".join(
                f"{k} {before.get(k, float('nan')):.4g} -> {v:.4g}" for k, v in changed.items()
            )
            source = self._clone.pop(trial.trial_id, "cloned another trial")
            self._changes[trial.trial_id].append(f"epoch {epoch}: {moves} ({source})")
            line = "; ".join(self._changes[trial.trial_id])
            self._client.set_tag(run_id, TAG_PBT, fit_line(line, 4900))
            log.info("trial %s: PBT from epoch %d: %s", trial.trial_id, epoch, moves)
        before.update(changed)


def trained_params(trial, result: dict) -> dict[str, Any]:
    """The params the reported epoch was trained with: those of the trial process's config,
    which Tune attaches to each result (`result["config"]`); `trial.config` only when the
    result has none. `trial.config` is the driver's copy, which PBT's exploit replaces
    before the callbacks see the result that triggered it (module docstring)."""
    config = result.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("params"), dict):
        config = trial.config
    return config.get("params", {})
