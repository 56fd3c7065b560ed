"""Checkpoint and training faults, on real `train` runs (synthetic data, tiny model, no Ray).

- A write that fails mid-checkpoint (a real OS failure: the file-size limit hit while
  torch.save writes, and a simulated full disk) raises `CheckpointError` naming the file
  and the OS's reason; the previous checkpoint stays loadable, no partial or temporary
  file is left, and a resume from it finishes the run.
- A damaged newest checkpoint (truncated, empty, garbage, not a sepconc checkpoint): the
  resume falls back to the previous one with a warning naming the bad file, and continues.
- A lone damaged checkpoint is a `CheckpointError` naming it; `launch.py train --resume` on
  it exits 2 with one `error:` line naming it.
- An error after the MLflow run opened (e.g. a disk that fills up) ends the run FAILED.
- A NaN loss raises `TrainingDiverged` naming the epoch; `launch.py train` exits 1 with one
  `error: training diverged: ...` line and its MLflow run (the default sqlite store in the
  working folder) is FAILED with the reason in the `sepconc.failure` tag.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sepconc.checkpoint import CheckpointError, load_checkpoint
from sepconc.config import Config
from sepconc.loop import TrainingDiverged
from sepconc.trainer import train
from tests.helpers import ROOT, launch_train

BASE = {
    "dataset": "synthetic",
    "arch": "analysis",
    "frame_width": [32],
    "frame_kernel_size": [4],
    "frame_stride": [4],
    "epochs": 2,
    "batch_size": 250,
    "lr": 0.01,
    "seed": 3,
    "device": "cpu",
    "workers": 0,
    "stats_every": 0,
    "tracking": False,
    "checkpoint_keep": 3,
}
FLAGS = (
    "--dataset synthetic -a analysis --frame-width 32 --frame-kernel-size 4 --frame-stride 4 "
    "-b 250 --seed 3 --device cpu -j 0 --stats-every 0"
).split()


def config(**changes) -> Config:
    flat = dict(BASE, **{k: str(v) if isinstance(v, Path) else v for k, v in changes.items()})
    return Config.from_flat(flat)


def epochs_logged(run_dir: Path) -> list[int]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines]


class Reports:
    """Epoch hook that records the epochs it sees (trained, and `replayed` after a resume);
    `on_epoch` runs an action after a trained one."""

    def __init__(self, on_epoch: dict | None = None):
        self.epochs: list[int] = []
        self.replayed: list[int] = []
        self.on_epoch = on_epoch or {}

    def __call__(self, report) -> None:
        if report.replayed:
            self.replayed.append(report.epoch)
            return
        self.epochs.append(report.epoch)
        if report.epoch in self.on_epoch:
            self.on_epoch[report.epoch]()


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    """A finished 2-epoch run with checkpoints epoch_0001.pt and epoch_0002.pt."""
    out = tmp_path_factory.mktemp("straight") / "run"
    train(config(out=out))
    return out


# ------------------------------------------------------------------ failed writes

CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from sepconc.checkpoint import CheckpointError
    from sepconc.config import Config
    from sepconc.trainer import train

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

    def limit_files(report):  # after epoch 1's checkpoint: no file may grow past 2 KiB
        if report.epoch == 1:
            resource.setrlimit(resource.RLIMIT_FSIZE, (2048, resource.RLIM_INFINITY))

    try:
        train(Config.from_flat(json.loads(sys.argv[1])), [limit_files])
    except CheckpointError as exc:
        print("CheckpointError:", exc)
        sys.exit(3)
    print("no error")
    """
)


def test_real_write_failure_keeps_the_previous_checkpoint(tmp_path):
    """The OS refuses the write (RLIMIT_FSIZE) mid-torch.save: works as root, unlike chmod."""
    out = tmp_path / "run"
    flat = {**config(out=out, epochs=3).to_flat()}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(flat)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 3, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    message = proc.stdout.strip().splitlines()[-1]
    bad = out / "checkpoints" / "epoch_0002.pt"
    assert f"could not write checkpoint {bad}: File too large" in message, message
    assert "previous checkpoint is intact" in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001.pt"]
    assert load_checkpoint(out / "checkpoints" / "epoch_0001.pt")["epoch"] == 1
    assert epochs_logged(out) == [1]


def test_disk_full_mid_write_then_resume_finishes(tmp_path, monkeypatch):
    """ENOSPC after some bytes reached the file: the error names it; the run resumes from 1."""
    out = tmp_path / "run"
    real_save = torch.save

    def disk_full(obj, handle):
        handle.write(b"PK\x03\x04 half a zip archive")
        raise OSError(errno.ENOSPC, "No space left on device")

    def fill_disk():
        monkeypatch.setattr("sepconc.checkpoint.torch.save", disk_full)

    with pytest.raises(CheckpointError) as exc:
        train(config(out=out, epochs=3), [Reports({1: fill_disk})])
    message = str(exc.value)
    assert f"checkpoint {out / 'checkpoints' / 'epoch_0002.pt'}: No space left on device" in message
    assert "\n" not in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001.pt"]
    assert load_checkpoint(out / "checkpoints" / "epoch_0001.pt")["epoch"] == 1

    monkeypatch.setattr("sepconc.checkpoint.torch.save", real_save)  # space freed
    hook = Reports()
    result = train(config(out=out, epochs=3, resume=out), [hook])
    assert hook.epochs == [2, 3] and result.epochs_done == 3
    assert epochs_logged(out) == [1, 2, 3]


# ------------------------------------------------------------------ damaged checkpoints


def _damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(os.urandom(4096))
    elif kind == "not_sepconc":
        torch.save(torch.zeros(3), path)
    else:
        raise ValueError(kind)


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "not_sepconc"])
def test_damaged_newest_checkpoint_falls_back(two_epochs, tmp_path, caplog, kind):
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    bad, good = run / "checkpoints" / "epoch_0002.pt", run / "checkpoints" / "epoch_0001.pt"
    _damage(bad, kind)
    hook = Reports()
    with caplog.at_level(logging.WARNING, logger="sepconc.checkpoint"):
        result = train(config(out=run, epochs=3, resume=run), [hook])
    assert hook.epochs == [2, 3] and result.epochs_done == 3  # resumed from epoch 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(bad) in w and f"falling back to {good}" in w for w in warnings), warnings
    assert epochs_logged(run) == [1, 2, 3]  # epoch 2 of the damaged run was replaced


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_lone_damaged_checkpoint_is_an_error(two_epochs, tmp_path, caplog, kind):
    bad = tmp_path / "epoch_0001.pt"
    shutil.copy(two_epochs / "checkpoints" / "epoch_0001.pt", bad)
    _damage(bad, kind)
    with pytest.raises(CheckpointError, match=rf"checkpoint {bad} is corrupt or truncated") as exc:
        train(config(out=tmp_path / "run", resume=bad))
    assert "\n" not in str(exc.value)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # said once, raised


def test_cli_resume_of_a_corrupt_file_is_one_line(two_epochs, tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes((two_epochs / "checkpoints" / "epoch_0002.pt").read_bytes()[:1000])
    proc = launch_train([*FLAGS, "--epochs", "3", "--resume", str(bad), "--no-tracking",
                   "--out", str(tmp_path / "run")], cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: checkpoint {bad} is corrupt or truncated"), lines[0]


def test_error_after_the_run_opened_marks_it_failed(tmp_path, monkeypatch, capsys):
    """Any error after the MLflow run was opened (here a disk that fills up mid-run) ends it
    FAILED with the reason, not RUNNING. (A bad --resume is refused before: test_run_folder.)"""
    from mlflow.tracking import MlflowClient

    from sepconc.cli import main

    reason = "could not write checkpoint x/epoch_0002.pt: No space left on device"

    def disk_full(*args, **kwargs):
        raise CheckpointError(reason)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sepconc.trainer.save_epoch_checkpoint", disk_full)
    import mlflow.tracking._tracking_service.utils as tracking

    monkeypatch.setattr(tracking, "_tracking_uri", tracking._tracking_uri)  # main() sets it
    assert main(["train", *FLAGS, "--epochs", "3"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {reason}"
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sepconc-train").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["sepconc.failure"] == reason


# ------------------------------------------------------------------ divergence


def test_nan_loss_names_the_epoch(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch 1 \(step \d+\)"):
        train(config(out=tmp_path / "run", lr=1e6))


def test_cli_nan_loss_exits_1_and_marks_the_mlflow_run_failed(tmp_path):
    proc = launch_train([*FLAGS, "--epochs", "2", "--lr", "1e6"], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0] == proc.stderr.strip().splitlines()[-1]
    assert errors[0].startswith("error: training diverged: loss became nan at epoch 1 (step")
    assert "lower the learning rate" in errors[0]

    from mlflow.tracking import MlflowClient

    store = tmp_path / "runs" / "mlflow.db"
    assert store.is_file()
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("sepconc-train")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FAILED"
    assert run.data.tags["sepconc.failure"].startswith("loss became nan at epoch 1")
