"""A trial's local DDP workers (`sepconc.sweep.local_workers`), with real processes, no Ray.

`run_local_workers` forks the workers from a forkserver and relays rank 0's reports; here
the training function is a stand-in (module-level, so the workers import it) that joins
the real gloo group and reports, raises, dies or is stopped:

- a report reaches `report` with its checkpoint folder, which is removed afterwards;
  the workers are named `sepconc-rankN` and have met in one process group;
- a `UserError` / `TrainingDiverged` raised on any rank is raised again as such;
- a worker killed by SIGKILL fails the attempt with `WorkerFailed` naming the rank and the
  signal, and its peer (blocked in a collective) is ended;
- `report` raising `SystemExit` (Tune stopping the trial) ends every worker;
- which path a trial takes: local when its workers fit on the largest node, Ray Train
  otherwise or when forced (`SEPCONC_TRIAL_LAUNCHER`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from sepconc.errors import UserError
from sepconc.sweep.local_workers import (
    WorkerFailed,
    choose_launcher,
    run_local_workers,
    trial_resources_for,
)

SWEEP = {"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0}


class Folder:
    def __init__(self, path):
        self.path = path

    @classmethod
    def from_directory(cls, path):
        return cls(path)


def _meet() -> int:
    """Every rank meets the others (a real gloo all-reduce); returns the world size seen."""
    import torch
    import torch.distributed as dist

    total = torch.ones(1)
    dist.all_reduce(total)
    return int(total.item())


def reporting(flat, trial_id, checkpoint, report, checkpoint_cls, reports_dir, nodes):
    size = _meet()
    folder = Path(reports_dir) / "report-0001"
    if os.environ["LOCAL_RANK"] == "0":
        folder.mkdir()
        (folder / "epoch_0001.pt").write_text("weights")
    comm = Path("/proc/self/comm").read_text().strip()
    report({"epoch": 1, "size": size, "comm": comm, "nodes": nodes, "flat": flat},
           checkpoint=checkpoint_cls.from_directory(str(folder)))  # fmt: skip


def raising(flat, trial_id, checkpoint, report, checkpoint_cls, reports_dir, nodes):
    _meet()
    if os.environ["LOCAL_RANK"] == "1":
        raise UserError("--lr -1 is negative; give a positive learning rate")
    _meet()  # rank 0 waits for rank 1, which never comes


def diverging(flat, trial_id, checkpoint, report, checkpoint_cls, reports_dir, nodes):
    from sepconc.loop import TrainingDiverged

    raise TrainingDiverged("loss became nan at epoch 1")


def dying(flat, trial_id, checkpoint, report, checkpoint_cls, reports_dir, nodes):
    _meet()
    if os.environ["LOCAL_RANK"] == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    _meet()


def reporting_forever(flat, trial_id, checkpoint, report, checkpoint_cls, reports_dir, nodes):
    _meet()
    report({"epoch": 1, "pid": os.getpid()})
    while True:
        time.sleep(0.1)


def run(train_fn, report=lambda metrics, checkpoint=None: None):
    run_local_workers(train_fn, {"lr": 0.1}, "t0", SWEEP, None, report, Folder, "ip,ip")


@pytest.mark.slow
def test_reports_are_relayed_with_their_checkpoint():
    got = []

    def report(metrics, checkpoint=None):
        files = sorted(os.listdir(checkpoint.path)) if checkpoint else None
        got.append((metrics, files, checkpoint.path if checkpoint else None))

    run(reporting, report)
    assert len(got) == 1, got  # rank 0's only
    metrics, files, folder = got[0]
    assert metrics["size"] == 2 and metrics["comm"] == "sepconc-rank0", metrics
    assert metrics["nodes"] == "ip,ip" and metrics["flat"] == {"lr": 0.1}
    assert files == ["epoch_0001.pt"] and not os.path.exists(folder)  # removed once reported


@pytest.mark.slow
def test_a_workers_error_fails_the_trial_as_itself():
    with pytest.raises(UserError, match="--lr -1 is negative"):
        run(raising)
    from sepconc.loop import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 1"):
        run(diverging)


@pytest.mark.slow
def test_a_killed_worker_fails_the_attempt_and_ends_its_peer():
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match=r"rank 1 died \(signal SIGKILL\)"):
        run(dying)
    assert time.monotonic() - started < 60  # not gloo's 30-minute timeout


@pytest.mark.slow
def test_a_stopped_trial_ends_its_workers():
    pids = []

    def report(metrics, checkpoint=None):
        pids.append(metrics["pid"])
        raise SystemExit(0)  # what ray.tune.report does when Tune stops the trial

    with pytest.raises(SystemExit):
        run(reporting_forever, report)
    assert pids and not any(Path(f"/proc/{pid}").exists() for pid in pids)  # killed, reaped


def test_one_node_trials_run_local_workers_the_others_ray_train(monkeypatch):
    monkeypatch.delenv("SEPCONC_TRIAL_LAUNCHER", raising=False)
    node = {"CPU": 8, "GPU": 2, "node_cpu": 4, "node_gpu": 1}  # two nodes of 4 CPUs, 1 GPU
    assert choose_launcher(2, 2, 0, node) == "local"
    assert choose_launcher(2, 1, 0.5, node) == "local"
    assert choose_launcher(4, 2, 0, node) == "ray_train"  # 8 CPUs: no node has them
    assert choose_launcher(2, 1, 1, node) == "ray_train"  # 2 GPUs: no node has them
    monkeypatch.setenv("SEPCONC_TRIAL_LAUNCHER", "ray_train")
    assert choose_launcher(2, 1, 0, node) == "ray_train"
    monkeypatch.setenv("SEPCONC_TRIAL_LAUNCHER", "local")
    with pytest.raises(UserError, match="do not fit on one node"):
        choose_launcher(4, 2, 0, node)
    monkeypatch.setenv("SEPCONC_TRIAL_LAUNCHER", "ray")
    with pytest.raises(UserError, match="SEPCONC_TRIAL_LAUNCHER='ray' is not one of"):
        choose_launcher(2, 1, 0, node)


def test_a_local_trial_reserves_all_its_workers():
    class Spec:
        workers, cpus_per_worker, gpus_per_worker = 2, 1.5, 0.5

    assert trial_resources_for(Spec, "local") == {"CPU": 3.0, "GPU": 1.0}
    assert trial_resources_for(Spec, "ray_train") == {"CPU": 0, "memory": 1}
