"""What a training records in an experiment tracker, through one interface.

`sepconc.trainer.train(config)` builds its tracker from `config.tracking`
(`tracker_for`), so the command line and the Python API log the same run:
`start` before the first epoch (after the pre-flight checks), `log_epoch` for every
epoch on rank 0 (replayed ones included), then `finish` or `fail`.

- `NoTracker` (`tracking: false`, `--no-tracking`): records nothing. Sweep trials run
  with it: the sweep driver's `MlflowSweepCallback` records each trial as a child run of
  the sweep, from what the trial reports to Tune, so a trial never logs twice.
- `MlflowTracker`: one MLflow run per training, across restarts. The run's store and id
  are recorded in the run folder (`tracking.json`) as soon as the run is created, so
  `train --resume DIR` (into that same folder, even after a SIGKILL left the run
  RUNNING, or an error left it FAILED) reopens it and logs only epochs it does not hold
  yet (no step twice). A resume into a fresh `--out` is a new training: a new run,
  tagged `sepconc.resumed_from`. Params and artifact `config.yaml`: the whole resolved
  config; tag `sepconc.kind=train` and the reproducibility tags; the data set's identity
  (`data.json` artifact, `sepconc.data.*` tags, `sepconc.tracking.record`); on error
  FAILED with `sepconc.failure`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sepconc.config import Config
from sepconc.errors import fit_line
from sepconc.run_folder import read_tracking, run_folder_of, same_folder, write_tracking
from sepconc.tracking.record import (
    log_config,
    log_data_identity,
    reproducibility_tags,
    resolved_device,
)
from sepconc.tracking.store import (
    TAG_KIND,
    TAG_NODES,
    TAG_REASON,
    TAG_STATUS,
    default_tracking_uri,
    experiment_id,
    is_local_store,
    last_logged_step,
    log_params,
    log_report,
    open_client,
    param_text,
    tracking_client,
)

if TYPE_CHECKING:
    from sepconc.training.hooks import EpochReport, TrainResult

TAG_RESUMED_FROM = "sepconc.resumed_from"
TAG_RESUME_CHANGES = "sepconc.resume_changes"
DEFAULT_EXPERIMENT = "sepconc-train"
RUNS_DIR = Path("runs")  # the default store, shared by every run and sweep started here

log = logging.getLogger(__name__)


class Tracker(Protocol):
    """A training's record in a tracker. Picklable once started: `log_epoch` runs in the
    rank-0 training process, which may be another process than the one that started it
    (local DDP)."""

    active: bool  # False: records nothing (the pre-flight checks are then not needed)

    def start(self, config: Config) -> None:
        """Open the record of the run `config` describes (resolved: `run.out`, `run.seed`
        set). Raises `UserError` when the store cannot be used."""

    def log_epoch(self, report: EpochReport) -> None:
        """Record one epoch's metrics at step `report.epoch` (once: an epoch already
        recorded, e.g. replayed after a resume, is skipped)."""

    def finish(self, result: TrainResult) -> None:
        """Close the record as finished (with the run folder's `data.json`)."""

    def fail(self, reason: str) -> None:
        """Close the record as failed, with `reason` (one line)."""


class NoTracker:
    """Records nothing."""

    active = False

    def start(self, config: Config) -> None:
        pass

    def log_epoch(self, report: EpochReport) -> None:
        pass

    def finish(self, result: TrainResult) -> None:
        pass

    def fail(self, reason: str) -> None:
        pass


def tracker_for(config: Config) -> Tracker:
    """The tracker `config.tracking` asks for: MLflow unless `tracking` is off."""
    return MlflowTracker() if config.tracking.tracking else NoTracker()


class MlflowTracker:
    """One MLflow run per training (see the module docstring); one batched call per epoch."""

    active = True

    def __init__(self) -> None:
        self.uri: str | None = None
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self.logged = 0  # epochs the run holds already
        self.data_logged = False  # data.json logged (at the first epoch, else at the end)
        self._client = None

    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            self._client = tracking_client(self.uri)
        return self._client

    def start(self, config: Config) -> None:
        """Open the store; reopen the run folder's run (a resume in its own folder) or
        create one (params = the resolved config) and record it in `tracking.json`."""
        self.run_dir = Path(config.run.out)
        self.uri = config.tracking.tracking_uri or default_tracking_uri(RUNS_DIR)
        self._client = open_client(self.uri)
        if self._reopen(config):
            return
        exp = experiment_id(self._client, config.tracking.experiment or DEFAULT_EXPERIMENT,
                            RUNS_DIR if is_local_store(self.uri) else None)  # fmt: skip
        tags = {TAG_KIND: "train", TAG_STATUS: "running", **_layout_tags(config)}
        if config.run.resume:
            tags[TAG_RESUMED_FROM] = str(config.run.resume)
        run = self._client.create_run(exp, run_name=self.run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        write_tracking(self.run_dir, {"tracking_uri": self.uri, "run_id": self.run_id})
        log_config(self._client, self.run_id, config.to_flat())
        log.info("MLflow run %s in %s", self.run_id, self.uri)

    def _reopen(self, config: Config) -> bool:
        """Reopen the run recorded in the run folder when `config` resumes that folder and
        the run is in this store (its params gain the new keys, changed values go to a
        tag, a failure tag of the previous attempt is removed); False otherwise."""
        from mlflow.exceptions import MlflowException

        resume = config.run.resume
        if not resume or not same_folder(run_folder_of(resume), self.run_dir):
            return False
        record = read_tracking(self.run_dir)
        if record is None or record.get("tracking_uri") != self.uri:
            return False
        client = self._client
        try:
            run = client.get_run(record["run_id"])
        except MlflowException:
            return False
        if run.info.lifecycle_stage != "active":
            return False
        self.run_id = run_id = run.info.run_id
        client.update_run(run_id, status="RUNNING")
        for key, value in {TAG_STATUS: "running", **_layout_tags(config)}.items():
            client.set_tag(run_id, key, value)  # this attempt's code and machine
        if TAG_REASON in run.data.tags:
            client.delete_tag(run_id, TAG_REASON)
        flat = {k: param_text(v)[:6000] for k, v in config.to_flat().items()}
        held = run.data.params
        changed = {k: v for k, v in flat.items() if k in held and held[k] != v}
        log_params(client, run_id, {k: v for k, v in flat.items() if k not in held})
        if changed:  # MLflow refuses to change a param: the resume's own values go to a tag
            client.set_tag(run_id, TAG_RESUME_CHANGES, json.dumps(changed)[:5000])
        self.logged = last_logged_step(client, run_id)
        log.info("MLflow run %s in %s reopened (epochs logged: %d)", run_id, self.uri, self.logged)
        return True

    def log_epoch(self, report: EpochReport) -> None:
        if report.epoch > self.logged:
            log_report(self.client, self.run_id, report.metrics, step=report.epoch)
            self.logged = report.epoch
        if not self.data_logged:
            self.data_logged = log_data_identity(self.client, self.run_id,
                                                 Path(report.run_dir) / "data.json")  # fmt: skip

    def finish(self, result: TrainResult) -> None:
        # Again at the end: the epochs may have been logged in another process (local DDP).
        log_data_identity(self.client, self.run_id, Path(result.run_dir) / "data.json")
        self.client.set_tag(self.run_id, TAG_STATUS, "completed")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, reason: str) -> None:
        if self.run_id is None:  # never started: nothing to close
            return
        self.client.set_tag(self.run_id, TAG_REASON, fit_line(reason, 500))
        self.client.set_tag(self.run_id, TAG_STATUS, "failed")
        self.client.set_terminated(self.run_id, "FAILED")


def _layout_tags(config: Config) -> dict[str, str]:
    """Reproducibility tags of a `train` run: its local DDP processes, one GPU each on cuda,
    and `sepconc.nodes` as a trial's (each worker's node address: here all this host's)."""
    device = resolved_device(config.run.device)
    tags = reproducibility_tags(device, config.run.num_workers, 1 if device == "cuda" else 0)
    return {**tags, TAG_NODES: ",".join([_host_address()] * max(1, config.run.num_workers))}


def _host_address() -> str:
    """This host's address as Ray names a node (its IP), else its name."""
    import socket

    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return socket.gethostname()
