"""MLflow logging of a single `launch.py train` run: same metric names as sweep trials, no parent."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sepconc.config import Config
from sepconc.errors import fit_line
from sepconc.tracking.store import (
    TAG_KIND,
    default_tracking_uri,
    experiment_id,
    is_local_store,
    log_params,
    log_report,
    open_client,
    tracking_client,
)

log = logging.getLogger(__name__)


@dataclass
class MlflowEpochLogger:
    """Epoch hook: one batched MLflow call per epoch on rank 0 (picklable for local DDP)."""

    uri: str
    run_id: str
    _client: object = field(default=None, repr=False, compare=False)

    @property
    def client(self):
        if self._client is None:
            self._client = tracking_client(self.uri)
        return self._client

    def __getstate__(self):
        return {"uri": self.uri, "run_id": self.run_id, "_client": None}

    def __call__(self, report) -> bool:
        if report.rank == 0:
            log_report(self.client, self.run_id, report.metrics, step=report.epoch)
        return False

    def finish(self, run_dir: str | None = None) -> None:
        if run_dir and (Path(run_dir) / "data.json").exists():
            self.client.log_artifact(self.run_id, str(Path(run_dir) / "data.json"))
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, reason: str) -> None:
        self.client.set_tag(self.run_id, "sepconc.failure", fit_line(reason, 500))
        self.client.set_terminated(self.run_id, "FAILED")


def mlflow_train_hooks(config: Config) -> tuple[Config, list[MlflowEpochLogger]]:
    """Open the store, create the run (params = the resolved config); returns the hook."""
    from sepconc.trainer import resolve_run

    config = resolve_run(config)
    run_dir = Path(config.run.out)
    runs_dir = Path("runs")  # the store shared by every run and sweep started here
    uri = config.tracking.tracking_uri or default_tracking_uri(runs_dir)
    client = open_client(uri)
    exp = experiment_id(client, config.tracking.experiment or "sepconc-train",
                        runs_dir if is_local_store(uri) else None)  # fmt: skip
    run = client.create_run(exp, run_name=run_dir.name, tags={TAG_KIND: "train"})
    log_params(client, run.info.run_id, config.to_flat())
    log.info("MLflow run %s in %s", run.info.run_id, uri)
    return config, [MlflowEpochLogger(uri, run.info.run_id)]
