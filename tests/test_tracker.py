"""The tracker is built inside `train(config)` from `config.tracking` (real sqlite store).

- `sepconc.train(config)` with tracking on writes the same MLflow run as `launch.py train`
  with the same flags (here `sepconc.cli.main`, what launch.py calls, in this process): the
  same param keys and values (but the run folder), metric keys and steps, tags, artifacts.
- With tracking off nothing is written outside the run folder (no store, no tracking.json).
- An error during training closes the run FAILED with the reason (Python API too).
- 2 local DDP processes (slow): the tracker, pickled to the ranks, logs each epoch once.
- A sweep trial trains untracked (its sweep's callback records it): never logged twice.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.tracking._tracking_service.utils as tracking_utils
import pytest
from mlflow.tracking import MlflowClient

import sepconc
from sepconc.cli import main
from sepconc.loop import TrainingDiverged
from sepconc.run_folder import read_tracking
from tests.test_checkpoint_faults import FLAGS, config


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    return tmp_path


def only_run(uri: str):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sepconc-train").experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def recorded(client, run_dir: Path) -> dict:
    """Everything the run of `run_dir` holds that a reader sees, the run folder aside."""
    run = client.get_run(read_tracking(run_dir)["run_id"])
    run_id = run.info.run_id
    steps = {key: sorted(m.step for m in client.get_metric_history(run_id, key))
             for key in run.data.metrics}  # fmt: skip
    params = {k: v for k, v in run.data.params.items() if k != "out"}
    return {"status": run.info.status, "name": run.info.run_name, "params": params,
            "steps": steps, "tags": run.data.tags,
            "artifacts": sorted(a.path for a in client.list_artifacts(run_id))}  # fmt: skip


def test_python_api_logs_the_same_run_as_the_command_line(workdir):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    api_dir, cli_dir = workdir / "api" / "run", workdir / "cli" / "run"
    result = sepconc.train(config(out=api_dir, tracking=True, tracking_uri=uri))
    assert main(["train", *FLAGS, "--epochs", "2", "--checkpoint-keep", "3", "--out",
                 str(cli_dir), "--tracking-uri", uri]) == 0  # fmt: skip
    client = MlflowClient(uri)
    api, cli = recorded(client, api_dir), recorded(client, cli_dir)
    assert {k: v for k, v in api["params"].items() if cli["params"].get(k) != v} == {}
    assert api == cli
    assert api["status"] == "FINISHED" and api["name"] == "run"
    assert api["steps"]["val_acc1"] == [1, 2] and result.epochs_done == 2
    assert api["tags"]["sepconc.kind"] == "train"
    # the tags the README lists for every run: a train run's status and its node(s)
    assert api["tags"]["sepconc.status"] == "completed"
    assert api["tags"]["sepconc.nodes"] and "," not in api["tags"]["sepconc.nodes"]  # 1 worker
    assert api["artifacts"] == ["config.yaml", "data.json"]
    assert api["params"]["seed"] == "3" and api["params"]["tracking_uri"] == uri


def test_tracking_off_writes_nothing_outside_the_run_folder(workdir):
    sepconc.train(config(out=workdir / "run", epochs=1))
    assert sorted(p.name for p in workdir.iterdir()) == ["run"]
    assert not (workdir / "run" / "tracking.json").exists()


def test_python_api_error_closes_the_run_failed(workdir):
    with pytest.raises(TrainingDiverged):
        sepconc.train(config(out=workdir / "run", lr=1e6, tracking=True))
    client, run = only_run(f"sqlite:///{workdir / 'runs' / 'mlflow.db'}")
    assert run.info.status == "FAILED"
    assert run.data.tags["sepconc.failure"].startswith("loss became nan at epoch 1")
    assert run.data.tags["sepconc.status"] == "failed"


@pytest.mark.slow
def test_local_ddp_logs_each_epoch_once(workdir):
    result = sepconc.train(config(out=workdir / "run", tracking=True, num_workers=2))
    client, run = only_run(f"sqlite:///{workdir / 'runs' / 'mlflow.db'}")
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc1"))
    assert (run.info.status, steps, result.epochs_done) == ("FINISHED", [1, 2], 2)


def test_a_sweep_trial_trains_untracked_even_if_its_base_says_otherwise(tmp_path):
    """The sweep driver's callback records each trial as a child run: the trial's own
    `train` must not log it again (no second run per trial)."""
    from sepconc.config import Config
    from sepconc.sweep.trial import trial_flat
    from sepconc.tracking.tracker import NoTracker, tracker_for

    sweep = {"base": {"dataset": "synthetic", "tracking": True, "tracking_uri": "sqlite:///x"},
             "workers": 1, "gpus_per_worker": 0, "checkpoint_every": 1, "checkpoint_keep": 2,
             "trials_dir": str(tmp_path)}  # fmt: skip
    flat = trial_flat({"params": {"lr": 0.1}}, sweep, "t1")
    assert isinstance(tracker_for(Config.from_flat(flat)), NoTracker)
