"""MLflow logging of a single `launch.py train` run: same metric names as sweep trials, no parent.

One training = one MLflow run, across restarts: the run's store and id are recorded in
the run folder (`tracking.json`) as soon as the run is created, so `train --resume DIR`
(into that same folder, even after a SIGKILL left the run RUNNING) reopens it, and logs
only epochs it does not hold yet (no step twice). A resume into a fresh `--out` is a
new training: a new run, tagged `sepconc.resumed_from`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sepconc.config import Config
from sepconc.errors import fit_line
from sepconc.run_folder import read_tracking, run_folder_of, same_folder, write_tracking
from sepconc.tracking.store import (
    TAG_KIND,
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

TAG_RESUMED_FROM = "sepconc.resumed_from"
TAG_RESUME_CHANGES = "sepconc.resume_changes"

log = logging.getLogger(__name__)


@dataclass
class MlflowEpochLogger:
    """Epoch hook: one batched MLflow call per epoch on rank 0 (picklable for local DDP).

    Epochs up to `logged` (already in the run: a reopened run) are not logged again."""

    uri: str
    run_id: str
    logged: int = 0
    _client: object = field(default=None, repr=False, compare=False)

    @property
    def client(self):
        if self._client is None:
            self._client = tracking_client(self.uri)
        return self._client

    def __getstate__(self):
        return {"uri": self.uri, "run_id": self.run_id, "logged": self.logged, "_client": None}

    def __call__(self, report) -> bool:
        if report.rank == 0 and report.epoch > self.logged:
            log_report(self.client, self.run_id, report.metrics, step=report.epoch)
            self.logged = report.epoch
        return False

    def finish(self, run_dir: str | None = None) -> None:
        if run_dir and (Path(run_dir) / "data.json").exists():
            self.client.log_artifact(self.run_id, str(Path(run_dir) / "data.json"))
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, reason: str) -> None:
        self.client.set_tag(self.run_id, "sepconc.failure", fit_line(reason, 500))
        self.client.set_terminated(self.run_id, "FAILED")


def mlflow_train_hooks(config: Config) -> tuple[Config, list[MlflowEpochLogger]]:
    """Open the store; reopen the run folder's run (a resume in its own folder) or create
    one (params = the resolved config) and record it in the folder; returns the hook.
    Call it after `preflight`: it writes the store and `tracking.json`."""
    from sepconc.trainer import resolve_run

    config = resolve_run(config)
    run_dir = Path(config.run.out)
    runs_dir = Path("runs")  # the store shared by every run and sweep started here
    uri = config.tracking.tracking_uri or default_tracking_uri(runs_dir)
    client = open_client(uri)
    hook = _reopen(client, uri, config, run_dir)
    if hook is not None:
        return config, [hook]
    exp = experiment_id(client, config.tracking.experiment or "sepconc-train",
                        runs_dir if is_local_store(uri) else None)  # fmt: skip
    tags = {TAG_KIND: "train"}
    if config.run.resume:
        tags[TAG_RESUMED_FROM] = str(config.run.resume)
    run = client.create_run(exp, run_name=run_dir.name, tags=tags)
    write_tracking(run_dir, {"tracking_uri": uri, "run_id": run.info.run_id})
    log_params(client, run.info.run_id, config.to_flat())
    log.info("MLflow run %s in %s", run.info.run_id, uri)
    return config, [MlflowEpochLogger(uri, run.info.run_id)]


def _reopen(client, uri: str, config: Config, run_dir: Path) -> MlflowEpochLogger | None:
    """The hook of the run recorded in `run_dir` when `config` resumes that folder and the
    run is in this store; None otherwise (a new run is made)."""
    from mlflow.exceptions import MlflowException

    if not config.run.resume or not same_folder(run_folder_of(config.run.resume), run_dir):
        return None
    record = read_tracking(run_dir)
    if record is None or record.get("tracking_uri") != uri:
        return None
    try:
        run = client.get_run(record["run_id"])
    except MlflowException:
        return None
    if run.info.lifecycle_stage != "active":
        return None
    run_id = run.info.run_id
    client.update_run(run_id, status="RUNNING")
    flat = {k: param_text(v)[:6000] for k, v in config.to_flat().items()}
    changed = {k: v for k, v in flat.items() if k in run.data.params and run.data.params[k] != v}
    log_params(client, run_id, {k: v for k, v in flat.items() if k not in run.data.params})
    if changed:  # MLflow refuses to change a param: the resume's own values go to a tag
        client.set_tag(run_id, TAG_RESUME_CHANGES, json.dumps(changed)[:5000])
    logged = last_logged_step(client, run_id)
    log.info("MLflow run %s in %s reopened (epochs logged: %d)", run_id, uri, logged)
    return MlflowEpochLogger(uri, run_id, logged)
