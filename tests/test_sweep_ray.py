"""Real sweeps: `launch.py sweep | resume | compare | best` with embedded Ray and MLflow sqlite.

Each test runs `launch.py` in a subprocess from the repository root (so its embedded
Ray goes away with the process) on the `synthetic` set (1x16x16, 10 classes) with
2-worker gloo DDP trials, and reads the record back from the MLflow store.

Proves:
- an ASHA sweep makes one parent run and one child run per trial, each with a per-epoch
  history at steps 1..k (no step twice); trials that learn slower (smaller `lr`, later in
  the grid) are stopped at a rung below `max_t`, and with `max_concurrent_trials: 1`
  every later trial still ran (a stopped trial frees its workers); the table printed at
  the end is `compare --csv`; `best --out` writes a config that `train --config` runs;
- a driver SIGKILLed mid-sweep leaves no Ray process of its own behind, and `resume`
  finishes the sweep: the completed trial keeps its run id and metric history (not rerun),
  one child run per trial (no duplicates), none left RUNNING;
- a sweep whose resources the machine cannot meet is refused in one line (exit 2) with
  nothing written (no runs/ folder, no MLflow run), and the same name starts once fixed;
- `best --out` of a 2-worker DDP trial retrained with `train --config` (2 local DDP
  processes) gives the trial's numbers at every epoch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests import helpers
from tests.helpers import start, sweep_file
from tests.proctree import alive, descendants, kill_all

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
PARENT = "mlflow.parentRunId"

# Learning rates in decreasing order: with the grid run in order, each later trial is
# worse at epoch 1 than those before it (measured, epoch 2 val_acc1: 100, 92, 11, 5),
# so ASHA (grace 1, rf 2) stops it at rung 1.
LRS = [0.01, 0.001, 0.0001, 0.00001]

BASE = {
    "dataset": "synthetic",
    "arch": "analysis",
    "frame_width": [16],
    "frame_kernel_size": [4],
    "frame_stride": [4],
    "epochs": 3,
    "batch_size": 100,
    "lr": 0.01,
    "learning_rate_adjust_frequency": 2,
    "workers": 0,
    "seed": 0,
    "device": "cpu",
    "stats_every": 1,
    "stats_probe_size": 100,
}


def env() -> dict[str, str]:
    return helpers.launch_env(keep_pythonpath=True)


def launch(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return helpers.launch(*args, timeout=timeout, env=env())


def check_ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, (
        f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return proc.stdout


def client_for(runs: Path):
    """A client on the sweep's store, through the store lock: polled while the driver may
    still be creating the schema (a bare MlflowClient would race its migrations)."""
    from sepconc.tracking.store import tracking_client

    return tracking_client(f"sqlite:///{runs / 'mlflow.db'}")


def sweep_runs(client, name: str) -> tuple[list, list]:
    """(parent runs, child runs) of sweep `name`."""
    exp = client.get_experiment_by_name(name)
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`sepconc.kind` = 'sweep'")
    children = client.search_runs(
        [exp.experiment_id], filter_string="tags.`sepconc.kind` = 'trial'"
    )
    return parents, children


def history(client, run_id: str, key: str = "val_acc1") -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))


def assert_steps(client, run) -> int:
    """Steps of the per-epoch history are exactly 1..k; returns k."""
    for key in ("val_acc1", "train_loss", "epoch", "block1/fisher_k16"):
        steps = [s for s, _, _ in history(client, run.info.run_id, key)]
        assert steps == list(range(1, len(steps) + 1)), f"{key} steps {steps}"
    epochs = history(client, run.info.run_id, "epoch")
    assert [v for _, v, _ in epochs] == [float(s) for s, _, _ in epochs]
    return len(epochs)


def parse_table(text: str) -> list[dict[str, str]]:
    """The fixed-width table `print_table` writes (columns start where the header's do)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0]
    names, starts, at = header.split(), [], 0
    for n in names:
        at = header.index(n, at)
        starts.append(at)
        at += len(n)
    rows = []
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None])]
        rows.append(dict(zip(names, cells)))
    return rows


def fmt(value: str) -> str:
    """A CSV cell as the printed table shows it: decimal numbers at 4 significant digits,
    whole numbers and numbers from 1000 on to the unit (a count such as flops, 21504),
    anything else as is (Python's float() would also read a trial id such as 05576_00000)."""
    if value == "nan":
        return value
    if not re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", value):
        return value
    number = float(value)
    if (
        math.isfinite(number)
        and (number.is_integer() or abs(number) >= 1000)
        and abs(number) < 1e15
    ):
        return f"{number:.0f}"
    return f"{number:.4g}"


def test_asha_sweep_records_compares_and_exports(tmp_path):
    runs = tmp_path / "runs"
    name = "asha-e2e"
    asha = {"type": "asha", "grace_period": 1, "reduction_factor": 2, "max_t": 3}
    path = sweep_file(tmp_path, name, BASE, LRS, scheduler=asha, retries=1)
    out = check_ok(launch("sweep", str(path), "--runs-dir", str(runs)))

    client = client_for(runs)
    parents, children = sweep_runs(client, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == len(LRS)
    assert {c.data.tags[PARENT] for c in children} == {parents[0].info.run_id}
    by_lr = {float(c.data.params["lr"]): c for c in children}
    assert sorted(by_lr) == sorted(LRS)
    epochs = {lr: assert_steps(client, run) for lr, run in by_lr.items()}
    statuses = {lr: run.data.tags["sepconc.status"] for lr, run in by_lr.items()}
    # Every trial ran (max_concurrent_trials 1: a stopped trial must free its workers).
    assert all(k >= 1 for k in epochs.values()), epochs
    assert statuses[LRS[0]] == "completed" and epochs[LRS[0]] == 3
    stopped = [lr for lr, s in statuses.items() if s == "early_stopped"]
    assert stopped, statuses
    for lr in stopped:
        rung = int(by_lr[lr].data.tags["sepconc.asha_rung"])
        assert rung < 3 and epochs[lr] < 3, (lr, rung, epochs[lr])
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["sepconc.nodes"].count(",") == 1  # two DDP workers

    # The final table is `compare --csv`, row for row.
    lines = out.splitlines()
    first = lines.index(f"sweep {name}") + 1
    last = next(i for i, line in enumerate(lines) if " trials in " in line)
    printed = parse_table("\n".join(lines[first:last]))
    listed = list(csv.DictReader(io.StringIO(check_ok(
        launch("compare", name, "--csv", "--runs-dir", str(runs))))))  # fmt: skip
    assert len(printed) == len(listed) == len(LRS)
    for shown, row in zip(printed, listed):
        assert set(shown) == set(row)
        assert {k: fmt(v) for k, v in row.items()} == shown

    # best --out retrains with train --config.
    best = tmp_path / "best.yaml"
    check_ok(launch("best", name, "--out", str(best), "--runs-dir", str(runs)))
    exported = yaml.safe_load(best.read_text())
    assert exported["lr"] == LRS[0] and exported["dataset"] == "synthetic"
    retrain = tmp_path / "retrain"
    check_ok(launch("train", "--config", str(best), "--epochs", "1", "--no-tracking",
                    "--out", str(retrain), timeout=120))  # fmt: skip
    rows = (retrain / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1


def test_killed_driver_resumes_without_rerun_or_duplicates(tmp_path):
    runs = tmp_path / "runs"
    name = "kill-resume"
    lrs = LRS[:3]
    path = sweep_file(tmp_path, name, BASE, lrs, retries=1)
    log = open(tmp_path / "driver.log", "w")
    driver = start("sweep", path, "--runs-dir", runs, env=env(), stdout=log, stderr=log,
                   start_new_session=True)  # fmt: skip
    ours: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 300
        completed = None
        while completed is None:
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no trial completed within 300 s"
            time.sleep(1)
            ours.update(descendants(driver.pid))
            if not (runs / "mlflow.db").exists() or not (runs / "sweeps" / name).exists():
                continue
            try:
                _, children = sweep_runs(client_for(runs), name)
            except Exception:  # the store is being created
                continue
            done = [c for c in children if c.data.tags.get("sepconc.status") == "completed"]
            completed = done[0] if done else None
        ours.update(descendants(driver.pid))
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
        deadline = time.monotonic() + 30
        while alive(ours) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = alive(ours)
        assert not left, f"Ray processes of the killed driver still running: {left}"
    finally:
        log.close()
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        kill_all(ours)  # never leave our own processes behind

    client = client_for(runs)
    kept_id = completed.info.run_id
    kept = {k: history(client, kept_id, k) for k in ("val_acc1", "epoch", "train_loss")}
    assert [s for s, _, _ in kept["epoch"]] == [1, 2, 3]

    out = check_ok(launch("resume", name, "--runs-dir", str(runs)))
    assert "3 trials" in out
    parents, children = sweep_runs(client, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == len(lrs), [c.data.tags.get("sepconc.trial_id") for c in children]
    assert len({c.data.tags["sepconc.trial_id"] for c in children}) == len(lrs)
    assert kept_id in {c.info.run_id for c in children}
    assert {k: history(client, kept_id, k) for k in kept} == kept  # not rerun
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags
        assert run.data.tags["sepconc.status"] == "completed"
        assert assert_steps(client, run) == 3


# ---------------------------------------------------------------- refused start, retrain (16)

DIGITS = {"dataset": "digits", "arch": "analysis", "frame_width": [16], "frame_kernel_size": [4],
          "frame_stride": [4], "epochs": 2, "batch_size": 100, "lr": 0.05, "workers": 0,
          "seed": 3, "device": "cpu", "stats_every": 1, "stats_probe_size": 100}  # fmt: skip


def digits_sweep(tmp_path: Path, name: str, resources: dict, file: str = "sweep.yaml") -> Path:
    spec = {"name": name, "base": DIGITS, "search": {"lr": {"grid": [0.05]}},
            "scheduler": {"type": "fifo"}, "resources": resources}  # fmt: skip
    path = tmp_path / file
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.slow
def test_refused_sweep_writes_nothing_and_the_fixed_file_starts(tmp_path):
    """Resources this machine cannot meet: exit 2, one line, nothing under runs/, no MLflow
    run; the same name then starts once the file is fixed."""
    runs = tmp_path / "runs"
    name = "refused"
    path = digits_sweep(tmp_path, name, {"workers_per_trial": 2, "cpus_per_worker": 512,
                                         "gpus_per_worker": 1})  # fmt: skip
    proc = launch("sweep", str(path), "--runs-dir", str(runs), timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: resources:"), proc.stderr
    assert "cpus_per_worker 512" in lines[0] and "resources: auto" in lines[0]
    assert not runs.exists(), sorted(str(p) for p in runs.rglob("*"))
    assert proc.stdout == ""

    digits_sweep(tmp_path, name, {"workers_per_trial": 2, "cpus_per_worker": 1})
    proc = launch("sweep", str(path), "--runs-dir", str(runs))
    out = check_ok(proc)
    assert "1 trials" in out
    # Quiet terminal: sepconc's lines only; Ray's and Tune's go to the sweep's log file.
    for noise in ("Token authentication", "TensorBoard", "Configuration for experiment",
                  "WARNING", "requires_grad"):  # fmt: skip
        assert noise not in proc.stdout + proc.stderr, noise
    assert all(" sepconc." in line for line in proc.stderr.splitlines()), proc.stderr
    assert "TensorBoard" in (runs / "sweeps" / name / "driver.log").read_text()
    parents, children = sweep_runs(client_for(runs), name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 1 and children[0].data.tags["sepconc.status"] == "completed"


@pytest.mark.slow
def test_best_export_retrains_the_trial_epoch_for_epoch(tmp_path):
    """A 2-worker DDP trial (Ray Train) -> `best --out` -> `train --config` (2 local DDP
    processes): the same numbers at every epoch, not merely close."""
    runs = tmp_path / "runs"
    name = "retrain"
    path = digits_sweep(tmp_path, name, {"workers_per_trial": 2, "cpus_per_worker": 1})
    check_ok(launch("sweep", str(path), "--runs-dir", str(runs)))
    client = client_for(runs)
    _, children = sweep_runs(client, name)
    (trial,) = children
    params = trial.data.params
    assert (params["num_workers"], params["seed"], params["device"]) == ("2", "3", "cpu")
    assert {"cache", "phase_method", "batch_size"} <= set(params)

    best = tmp_path / "best.yaml"
    check_ok(launch("best", name, "--out", str(best), "--runs-dir", str(runs)))
    exported = yaml.safe_load(best.read_text())
    assert (exported["num_workers"], exported["seed"], exported["device"]) == (2, 3, "cpu")
    retrain = tmp_path / "retrain"
    check_ok(launch("train", "--config", str(best), "--no-tracking", "--out", str(retrain),
                    timeout=240))  # fmt: skip
    rows = [json.loads(line) for line in (retrain / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "train_acc1", "val_loss", "val_acc1", "block1/fisher_k16"):
        trial_values = [v for _, v, _ in history(client, trial.info.run_id, key)]
        retrain_values = [r[key] for r in rows]
        print(key, "trial", trial_values, "retrain", retrain_values)
        assert retrain_values == pytest.approx(trial_values, rel=1e-6, abs=1e-6), key
