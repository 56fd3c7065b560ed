"""The shared sqlite MLflow store under concurrent first use (real processes, real sqlite).

- Three `launch.py train` runs started at once in an empty folder all exit 0 and log into
  one experiment: the schema is created once, under `<db>.lock`, and the experiment is
  get-or-create.
- Every kind of first user at once (train/sweep writers, `mlflow-server`'s schema upgrade,
  `best`/`status` readers) on a fresh file: all succeed.
- The experiment-creation race: the process that loses it gets the winner's id.
- A file that is not a usable store is one `UserError` line, not a traceback.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sepconc.errors import UserError
from sepconc.tracking.store import ensure_store, experiment_id, tracking_client

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ("train --dataset synthetic -a analysis --frame-kernel-size 4 --frame-stride 4 "
         "--frame-width 8 -b 64 -j 0 --epochs 2 --stats-every 1 --no-cache").split()  # fmt: skip


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_three_train_runs_started_at_once_in_an_empty_folder_all_log(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *TRAIN, "--seed", str(i),
                          "--out", f"runs/train/r{i}"], cwd=tmp_path, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(3)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=540)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-2000:]
    client = tracking_client(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exps = [e for e in client.search_experiments() if e.name == "sepconc-train"]
    assert len(exps) == 1
    runs = client.search_runs([exps[0].experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["r0", "r1", "r2"]
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc1")]
        assert sorted(steps) == [1, 2]


def _first_user(kind: str, uri: str, runs_dir: str, start: float, queue) -> None:
    """One kind of first user of a fresh store, started at wall time `start`."""
    try:
        from sepconc.tracking import server, store

        time.sleep(max(0.0, start - time.time()))
        if kind == "server":
            server.upgrade_schema(uri)
        elif kind == "reader":
            store.tracking_client(uri).search_experiments()
        else:  # a `train` run or a sweep driver: open, get-or-create the experiment, a run
            client = store.open_client(uri)
            exp = store.experiment_id(client, "sepconc-train", Path(runs_dir))
            client.set_terminated(client.create_run(exp).info.run_id, "FINISHED")
        queue.put((kind, "ok"))
    except BaseException as exc:  # reported to the test
        queue.put((kind, f"{type(exc).__name__}: {exc}"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_kind_of_first_user_at_once_on_a_fresh_store(tmp_path):
    runs = tmp_path / "runs"
    uri = f"sqlite:///{runs / 'mlflow.db'}"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    kinds = ["writer", "writer", "server", "reader", "reader"]
    start = time.time() + 8  # after every child has imported MLflow
    procs = [ctx.Process(target=_first_user, args=(k, uri, str(runs), start, queue))
             for k in kinds]  # fmt: skip
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=240) for _ in kinds)
    for p in procs:
        p.join(60)
    assert results == sorted((k, "ok") for k in kinds)
    client = tracking_client(uri)
    exps = [e for e in client.search_experiments() if e.name == "sepconc-train"]
    assert len(exps) == 1
    assert len(client.search_runs([exps[0].experiment_id])) == 2


class _LateClient:
    """A client that, like a process racing another, finds no experiment on its first look."""

    def __init__(self, client):
        self.client, self.looks = client, 0

    def get_experiment_by_name(self, name):
        self.looks += 1
        return None if self.looks == 1 else self.client.get_experiment_by_name(name)

    def create_experiment(self, name, artifact_location=None, tags=None):
        return self.client.create_experiment(name, artifact_location=artifact_location, tags=tags)


def test_the_process_losing_the_experiment_race_gets_the_winners_id(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking_client(uri)
    winner = experiment_id(client, "sepconc-train", tmp_path)
    assert experiment_id(_LateClient(client), "sepconc-train", tmp_path) == winner
    assert [e.name for e in client.search_experiments()].count("sepconc-train") == 1


def test_a_file_that_is_not_a_store_is_one_line(tmp_path):
    bad = tmp_path / "mlflow.db"
    bad.write_text("not a database\n")
    with pytest.raises(UserError, match=r"MLflow store .*mlflow.db cannot be opened") as info:
        ensure_store(f"sqlite:///{bad}")
    assert "\n" not in str(info.value)
