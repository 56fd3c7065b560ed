"""Run folders and resume lineage, on real `train` runs (synthetic data, tiny model, no Ray).

- Retention keeps the newest `keep` checkpoints of the run's own lineage: never the
  file just written, never files of later epochs (an abandoned continuation).
- A new run is refused (one line naming `--resume DIR` and a fresh `--out`) in a folder
  that holds a run, and so is a resume of run A into run B's folder; nothing there changes.
  `train --config DIR/config.yaml` reruns in a fresh folder (the file's `out`/`resume`
  are not reused); `train --resume DIR` without `--out`/`--seed` continues in DIR with
  its seed.
- Resuming a folder from an older checkpoint moves the later ones to
  `checkpoints/abandoned-*/`; the run then completes with each epoch once. In 2-process
  DDP every rank loads the checkpoint rank 0 chose and replays the same recorded epochs.
- A process SIGKILLed while it writes a checkpoint leaves the previous checkpoint and a
  temporary file; the resume removes the temporary file and completes the run.
- `train --resume DIR` continues the SAME MLflow run (its id is in `DIR/tracking.json`):
  after a real SIGKILL (slow), and after a kill between a checkpoint and its MLflow log
  (the epoch is logged from `metrics.jsonl` on resume): one run, FINISHED, steps once.
- A bad `--resume` (missing, empty, garbage, truncated, a model it does not fit) is refused
  before anything is written: no `runs/`, no store, no MLflow run, no run folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow.tracking._tracking_service.utils as tracking_utils
import pytest
import torch

from sepconc.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from sepconc.errors import UserError
from sepconc.trainer import train
from tests import helpers
from tests.helpers import LAUNCH, ROOT
from tests.test_checkpoint_faults import FLAGS, Reports, config, epochs_logged


def names(folder: Path) -> list[str]:
    return [p.name for p in list_checkpoints(folder)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    """A finished 2-epoch run (keep 3): checkpoints epoch_0001.pt and epoch_0002.pt."""
    out = tmp_path_factory.mktemp("lineage") / "run"
    train(config(out=out))
    return out


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """`launch.py ...` in-process from an empty working folder; returns (status, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)

    def run(*argv: str) -> int:
        return helpers.cli("train", *FLAGS, *argv)

    return run


def mlflow_runs(workdir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sepconc-train")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    steps = {
        r.info.run_id: sorted(m.step for m in client.get_metric_history(r.info.run_id, "val_acc1"))
        for r in runs
    }
    return runs, steps


# ------------------------------------------------------------------ retention


def test_retention_never_deletes_the_file_just_written(tmp_path):
    folder = tmp_path / "checkpoints"
    for epoch in (1, 3, 4):  # 3 and 4: a killed attempt's later epochs
        save_checkpoint({"model": {}, "epoch": epoch}, folder / f"epoch_{epoch:04d}.pt")
    save_checkpoint({"model": {}, "epoch": 2}, folder / "epoch_0002.pt", keep=2)
    assert names(folder) == ["epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt", "epoch_0004.pt"]
    save_checkpoint({"model": {}, "epoch": 2}, folder / "epoch_0002.pt", keep=1)
    assert names(folder) == ["epoch_0002.pt", "epoch_0003.pt", "epoch_0004.pt"]
    assert load_checkpoint(folder / "epoch_0002.pt")["epoch"] == 2


# ------------------------------------------------------------------ one run per folder


def test_new_run_in_a_folder_that_holds_a_run_is_refused(two_epochs, tmp_path):
    before = snapshot(two_epochs)
    with pytest.raises(UserError) as exc:
        train(config(out=two_epochs, epochs=1, lr=0.0001))
    message = str(exc.value)
    assert message == (
        f"--out {two_epochs} already holds a run (checkpoints up to epoch 2); continue it "
        f"with --resume {two_epochs}, or choose a fresh --out"
    )
    other = tmp_path / "other"
    train(config(out=other, epochs=1))
    with pytest.raises(UserError, match=rf"--out {two_epochs} holds a run \(checkpoints up to "
                       rf"epoch 2\) other than the one --resume {other} continues; choose a "
                       rf"fresh --out, or --resume {two_epochs} to continue the run there$"):  # fmt: skip
        train(config(out=two_epochs, epochs=3, resume=other))
    assert snapshot(two_epochs) == before  # nothing written, nothing deleted


def test_cli_new_run_in_a_used_folder_is_one_line(two_epochs, cli, tmp_path, capsys):
    before = snapshot(two_epochs)
    assert cli("--epochs", "1", "--out", str(two_epochs)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out {two_epochs} already holds a run")
    assert f"--resume {two_epochs}" in err[0] and "fresh --out" in err[0]
    assert snapshot(two_epochs) == before
    assert not (tmp_path / "runs").exists()  # refused before the tracking store


def test_config_file_rerun_is_a_new_run_in_a_fresh_folder(two_epochs, cli, tmp_path, capsys):
    """A saved config.yaml names its folder (and a resumed run's `resume`): `--config` alone
    reruns the training in a fresh folder, from scratch, never in (or from) the old one."""
    import yaml

    saved = yaml.safe_load((two_epochs / "config.yaml").read_text())
    saved["resume"] = str(two_epochs)
    (tmp_path / "resumed.yaml").write_text(yaml.safe_dump(saved))
    before = snapshot(two_epochs)
    assert cli("--config", "resumed.yaml", "--epochs", "1", "--no-tracking") == 0
    assert snapshot(two_epochs) == before
    [fresh] = list((tmp_path / "runs" / "train").iterdir())
    assert (
        epochs_logged(fresh) == [1]
        and yaml.safe_load((fresh / "config.yaml").read_text())["resume"] is None
    )


def test_resume_without_out_or_seed_continues_the_run_in_its_folder(two_epochs, cli, tmp_path):
    from sepconc.trainer import resolve_run

    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    resolved = resolve_run(config(resume=run / "checkpoints" / "epoch_0002.pt", seed=None))
    assert (resolved.run.out, resolved.run.seed) == (str(run), 3)  # its folder, its seed
    fresh = resolve_run(config(resume=run, seed=None, evaluate=True))
    assert fresh.run.out != str(run)  # evaluating writes nothing into the run it reads
    assert cli("--epochs", "3", "--resume", str(run), "--no-tracking") == 0
    assert epochs_logged(run) == [1, 2, 3] and not (tmp_path / "runs").exists()


def test_resume_from_an_older_file_sets_the_later_ones_aside(two_epochs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    hook = Reports()
    result = train(config(out=run, epochs=3, resume=run / "checkpoints" / "epoch_0001.pt"), [hook])
    assert (hook.replayed, hook.epochs, result.epochs_done) == ([1], [2, 3], 3)
    assert names(run / "checkpoints") == ["epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt"]
    aside = list(run.glob("checkpoints/abandoned-*/epoch_0002.pt"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == (two_epochs / "checkpoints" / "epoch_0002.pt").read_bytes()
    assert epochs_logged(run) == [1, 2, 3]


class RankLog:
    """Picklable hook for DDP children: appends (epoch, replayed) to a file per rank."""

    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self, report) -> None:
        with open(Path(self.folder) / f"rank{report.rank}.jsonl", "a") as handle:
            handle.write(json.dumps([report.epoch, report.replayed]) + "\n")


@pytest.mark.slow  # two DDP processes (gloo), ~17 s: the tier of tests/test_distributed.py
def test_ddp_resume_picks_one_checkpoint_and_replays_on_every_rank(two_epochs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    (run / "checkpoints" / "epoch_0002.pt").write_bytes(b"damaged")  # every rank: epoch 1
    train(config(out=run, epochs=3, resume=run, num_workers=2), [RankLog(str(tmp_path))])
    for rank in (0, 1):
        seen = [
            json.loads(line) for line in (tmp_path / f"rank{rank}.jsonl").read_text().splitlines()
        ]
        assert seen == [[1, True], [2, False], [3, False]], (rank, seen)
    assert epochs_logged(run) == [1, 2, 3]


# ------------------------------------------------------------------ killed mid-write

SLOW_WRITER = textwrap.dedent(
    """
    import json, sys, time
    import sepconc.checkpoint as ckpt
    from sepconc.config import Config
    from sepconc.trainer import train

    real_save = ckpt.torch.save

    def stalled_save(obj, handle):  # epoch 2: half the bytes reach the file, then it hangs
        if obj["epoch"] == 2:
            handle.write(b"PK\\x03\\x04 the first bytes of a zip archive")
            handle.flush()
            print("writing", flush=True)
            time.sleep(600)
        real_save(obj, handle)

    ckpt.torch.save = stalled_save
    train(Config.from_flat(json.loads(sys.argv[1])))
    """
)


def test_sigkill_during_checkpoint_write_then_resume(tmp_path):
    out = tmp_path / "run"
    flat = config(out=out, epochs=3).to_flat()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, json.dumps(flat)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    partial = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert len(partial) == 1 and partial[0].startswith(".epoch_0002.pt.tmp-"), partial
    assert names(out / "checkpoints") == ["epoch_0001.pt"]

    hook = Reports()
    result = train(config(out=out, epochs=3, resume=out), [hook])
    assert (hook.replayed, hook.epochs, result.epochs_done) == ([1], [2, 3], 3)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt"
    ]  # fmt: skip
    assert epochs_logged(out) == [1, 2, 3]


# ------------------------------------------------------------------ one MLflow run per training


def test_resume_logs_the_epoch_a_killed_attempt_had_not(cli, tmp_path, capsys):
    """Stopped after epoch 2's checkpoint and row, before its MLflow log (the hooks run
    before the tracker): the run is FAILED; the resume reopens it (from `tracking.json`),
    drops the failure tag and logs epoch 2 from the row, then 3."""
    out = tmp_path / "runs" / "train" / "a"

    def killed(report):
        if report.epoch == 2:
            raise SystemExit("killed")  # before the tracker logs epoch 2

    with pytest.raises(SystemExit):
        train(config(out=out, epochs=3, tracking=True), [killed])
    runs, steps = mlflow_runs(tmp_path)
    assert [r.info.status for r in runs] == ["FAILED"] and list(steps.values()) == [[1]]
    assert runs[0].data.tags["sepconc.failure"] == "killed"
    assert json.loads((out / "tracking.json").read_text())["run_id"] == runs[0].info.run_id

    assert cli("--epochs", "3", "--resume", str(out), "--out", str(out)) == 0
    runs, steps = mlflow_runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert steps[runs[0].info.run_id] == [1, 2, 3]
    assert "sepconc.failure" not in runs[0].data.tags
    changes = json.loads(runs[0].data.tags["sepconc.resume_changes"])
    assert changes["resume"] == str(out)  # MLflow keeps the first value of a param


@pytest.mark.slow
def test_sigkill_then_train_resume_continues_the_same_mlflow_run(tmp_path):
    """Killed after its second checkpoint (the run is long, so the kill always lands
    mid-run: a 4-epoch run of this tiny model could finish between two polls), then
    resumed to two epochs past its last checkpoint K: one MLflow run, steps 1..K+2."""
    out = tmp_path / "runs" / "train" / "k"
    args = [sys.executable, LAUNCH, "train", *FLAGS, "--out", str(out)]
    env = helpers.launch_env()
    proc = subprocess.Popen([*args, "--epochs", "500"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while len(list_checkpoints(out / "checkpoints")) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    total = int(list_checkpoints(out / "checkpoints")[-1].stem.split("_")[-1]) + 2
    done = helpers.launch(*args[2:], "--epochs", str(total), "--resume", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs, steps = mlflow_runs(tmp_path)
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]
    expected = list(range(1, total + 1))
    assert runs[0].info.status == "FINISHED" and steps[runs[0].info.run_id] == expected
    assert epochs_logged(out) == expected


# ------------------------------------------------------------------ bad --resume writes nothing


def _bad_resume(kind: str, good: Path, folder: Path) -> Path:
    path = folder / ("missing.pt" if kind == "missing" else "epoch_0002.pt")
    data = good.read_bytes()
    contents = {"empty": b"", "garbage": os.urandom(3000), "truncated": data[: len(data) // 2]}
    if kind in contents:
        path.write_bytes(contents[kind])
    elif kind == "other_model":
        state = load_checkpoint(good)
        state["model"] = {k: torch.zeros(1) for k in state["model"]}
        torch.save(state, path)
    return path


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "truncated", "other_model"])
def test_bad_resume_writes_nothing(two_epochs, cli, tmp_path, capsys, kind):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    bad = _bad_resume(kind, two_epochs / "checkpoints" / "epoch_0002.pt", inputs)
    before = snapshot(tmp_path)
    assert cli("--epochs", "3", "--resume", str(bad), "--out", "runs/train/x") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(bad) in err[0], err
    assert snapshot(tmp_path) == before  # no runs/, no mlflow.db, no run folder
