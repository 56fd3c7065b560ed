"""Reliability with real processes: a killed DDP worker, a NaN loss, a tracking-server outage.

Each test runs `launch.py sweep` (embedded Ray, 2-worker gloo DDP trials on CPU, the
`synthetic` set) as a subprocess in its own process group, remembers every process
below it, and ends only those. The README's "What survives a failure" promises:

- **a DDP worker dies**: one DDP worker of a running trial (a local worker process,
  `/proc/PID/comm` `sepconc-rankN`: the trial fits on this machine) is SIGKILLed mid-epoch
  (after epoch 1 reached MLflow, before the last epoch); the trial fails that attempt and
  Tune retries it from the last checkpoint with new workers, the trial keeps its one MLflow
  run with `val_acc1` at steps 1..E exactly once, and its final metrics equal an
  uninterrupted `launch.py train` with the same config and seed (see
  `test_killed_worker_...` for the tolerance);
- **the loss becomes NaN**: in a grid over lr with an absurd lr (1e8, NaN within epoch 1)
  that trial is marked `failed` with `loss became nan at epoch 1`, the next trial still
  runs, the driver exits 1 and its summary counts the error;
- **the tracking server goes away**: a real MLflow server is stopped for 30 s after the
  first epoch is logged and restarted on the same port and store (3 trials); every trial ends with
  every epoch logged exactly once, the right statuses, and metrics measured during the
  outage carry the time they were reported (they were buffered, not re-measured).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import start, sweep_file
from tests.proctree import alive, descendants, kill_all
from tests.test_sweep_ray import assert_steps, client_for, env, history, launch, sweep_runs

pytestmark = pytest.mark.ray

# ~3 s per epoch with 2 gloo workers on 2 cores (scattering recomputed every batch: no
# front-end cache), so a worker can be killed mid-epoch.
SLOW = {
    "dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 1, "scat_angles": 8,
    "frame_width": 1024, "P_proj_size": 32, "epochs": 4, "batch_size": 100, "lr": 0.01,
    "learning_rate_adjust_frequency": 2, "workers": 0, "seed": 0, "device": "cpu",
    "cache": False, "stats_every": 1, "stats_probe_size": 100,
}  # fmt: skip
# ~0.3 s per epoch.
FAST = {
    "dataset": "synthetic", "arch": "analysis", "frame_width": [16], "frame_kernel_size": [4],
    "frame_stride": [4], "epochs": 2, "batch_size": 100, "lr": 0.01,
    "learning_rate_adjust_frequency": 2, "workers": 0, "seed": 0, "device": "cpu",
    "stats_every": 1, "stats_probe_size": 100,
}  # fmt: skip


class Driver:
    """`launch.py sweep ...` in its own process group, output in `log`; `procs` collects
    every process below it (polled), so `stop` ends exactly what it started."""

    def __init__(self, tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None):
        self.log = tmp_path / "driver.log"
        with open(self.log, "w") as out:
            self.proc = start("sweep", *args, env={**env(), **(extra_env or {})}, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.procs: dict[int, str] = {}
        self.workers: dict[int, str] = {}  # every DDP worker seen alive: pid -> kind

    def poll(self) -> int | None:
        self.procs.update(descendants(self.proc.pid))
        self.workers.update(train_workers(self.procs))
        return self.proc.poll()

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            assert time.monotonic() < deadline, f"sweep not done in {timeout} s\n{self.tail()}"
            time.sleep(0.5)
        return self.proc.returncode

    def tail(self) -> str:
        return self.output()[-6000:]

    def stop(self) -> dict[int, str]:
        """End the driver's group if still running and whatever it started; return leftovers."""
        if self.proc.poll() is None:
            self.procs.update(descendants(self.proc.pid))
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        deadline = time.monotonic() + 30
        while alive(self.procs) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = alive(self.procs)
        kill_all(self.procs)
        return left


def train_workers(procs: dict[int, str]) -> dict[int, str]:
    """{pid: kind} of the live DDP workers among `procs`: Ray Train's actors
    (`RayTrainWorker`) or a trial's local workers (their name, `sepconc-rankN`)."""
    found = {}
    for pid, cmd in alive(procs).items():
        name = comm(pid)
        if "RayTrainWorker" in cmd or name.startswith("sepconc-rank"):
            found[pid] = "RayTrainWorker" if "RayTrainWorker" in cmd else name
    return found


def comm(pid: int) -> str:
    """The process's name (`/proc/PID/comm`), '' once it has gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def steps_of(client, run_id: str) -> list[int]:
    return [s for s, _, _ in history(client, run_id)]


@pytest.mark.timeout(300)
def test_killed_worker_restarts_from_checkpoint_in_the_same_run(tmp_path):
    runs, name = tmp_path / "runs", "worker-kill"
    path = sweep_file(tmp_path, name, SLOW, [0.01], retries=1)
    driver = Driver(tmp_path, str(path), "--runs-dir", str(runs))
    try:
        deadline = time.monotonic() + 200
        while True:  # until epoch 1 (and its checkpoint) reached MLflow
            assert driver.poll() is None, driver.tail()
            assert time.monotonic() < deadline, "epoch 1 not logged in 200 s\n" + driver.tail()
            time.sleep(0.5)
            if not (runs / "sweeps" / name / "sweep.json").exists():
                continue  # the driver is creating the store: do not race its schema creation
            try:
                _, children = sweep_runs(client_for(runs), name)
                steps = steps_of(client_for(runs), children[0].info.run_id) if children else []
            except Exception:  # the store or the experiment is being created
                continue
            if steps:
                break
        before = train_workers(driver.procs)
        assert steps == [1] and len(before) == 2, (steps, before)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)  # mid-epoch 2 (an epoch lasts ~3 s)
        killed_at = time.time()
        rc = driver.wait(240)
        left = driver.stop()
    finally:
        driver.stop()
    assert rc == 0, driver.tail()
    assert not left, f"processes of the sweep still running: {left}"
    restarted = set(driver.workers) - set(before)
    assert len(restarted) == 2, f"the worker group was not restarted: {driver.workers}"

    client = client_for(runs)
    parents, children = sweep_runs(client, name)
    assert len(parents) == 1 and len(children) == 1, "one run per trial: no duplicate"
    run = children[0]
    assert run.info.status == "FINISHED" and run.data.tags["sepconc.status"] == "completed"
    assert assert_steps(client, run) == SLOW["epochs"]  # val_acc1 etc. at steps 1..4, once each
    later = [s for s, _, t in history(client, run.info.run_id) if t / 1000 > killed_at]
    assert later == [2, 3, 4], later  # epoch 2 was redone after the kill
    trial_dir = runs / "trials" / name / run.data.tags["sepconc.trial_id"]
    assert [r["epoch"] for r in jsonl(trial_dir / "metrics.jsonl")] == [1, 2, 3, 4]

    # The uninterrupted reference: same config and seed, 2 local DDP processes.
    ref = tmp_path / "reference"
    flags = ["--dataset", "synthetic", "-a", "scatnetblockanalysis", "--n-blocks", "1",
             "--scat-angles", "8", "--frame-width", "1024", "--P-proj-size", "32",
             "--epochs", "4", "-b", "100", "--lr", "0.01",
             "--learning-rate-adjust-frequency", "2", "-j", "0", "--seed", "0",
             "--device", "cpu", "--no-cache", "--stats-every", "1", "--no-tracking",
             "--num-workers", "2", "--out", str(ref)]  # fmt: skip
    done = launch("train", *flags, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = jsonl(ref / "metrics.jsonl")
    # The restart restores weights, momentum, RNG state and the sampler's epoch, and the
    # gloo sums run in the same order for the same world size: the runs are the same
    # computation up to float32 summation order (Ray's and torch.multiprocessing's gloo
    # groups, thread scheduling). Tolerance, every epoch: losses within 1e-4 relative
    # (measured: ~1e-6), accuracy within one validation image (0.2 % of 500).
    gaps = {}
    for key in ("val_loss", "train_loss", "val_acc1"):
        got = [v for _, v, _ in history(client, run.info.run_id, key)]
        want = [r[key] for r in expected]
        close = pytest.approx(want, abs=0.2) if key == "val_acc1" else pytest.approx(want, rel=1e-4)
        assert got == close, (key, got, want)
        gaps[key] = (
            got[-1],
            want[-1],
            max(abs(g - w) / max(abs(w), 1e-12) for g, w in zip(got, want)),
        )
    print(
        f"\nworker kill: killed pid {victim} of {sorted(before)}, new workers "
        f"{sorted(restarted)}, steps {steps_of(client, run.info.run_id)}, redone after the "
        f"kill {later}; final (killed, reference, max relative diff over epochs): {gaps}"
    )


@pytest.mark.timeout(240)
def test_nan_loss_fails_its_trial_and_the_sweep_goes_on(tmp_path):
    runs, name = tmp_path / "runs", "nan-loss"
    lrs = [1e8, 0.01]  # lr 1e8: the loss is NaN within epoch 1 (step 20 of 20)
    path = sweep_file(tmp_path, name, FAST, lrs, retries=0)
    driver = Driver(tmp_path, str(path), "--runs-dir", str(runs))
    try:
        rc = driver.wait(200)
    finally:
        left = driver.stop()
    out = driver.output()
    assert rc == 1, out[-6000:]  # errors > 0
    assert "2 trials in" in out and "errors: 1" in out, out[-3000:]
    assert not left, f"processes of the sweep still running: {left}"

    client = client_for(runs)
    parents, children = sweep_runs(client, name)
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert len(children) == 2
    by_lr = {float(c.data.params["lr"]): c for c in children}
    bad = by_lr[1e8]
    assert bad.data.tags["sepconc.status"] == "failed" and bad.info.status == "FAILED"
    assert "loss became nan at epoch 1" in bad.data.tags["sepconc.failure"], bad.data.tags
    assert steps_of(client, bad.info.run_id) == []  # nothing from the diverged epoch
    good = by_lr[0.01]
    assert good.data.tags["sepconc.status"] == "completed" and good.info.status == "FINISHED"
    assert assert_steps(client, good) == FAST["epochs"]
    # The sweep went on: the next trial (grid order) started after the failed one ended.
    assert good.info.start_time >= bad.info.end_time
    print(f"\nnan: rc {rc}, failure tag {bad.data.tags['sepconc.failure']!r}")


@pytest.mark.timeout(300)
def test_tracking_server_outage_loses_no_metric(tmp_path):
    from mlflow.tracking import MlflowClient

    from sepconc.tracking.server import ServerOptions, start_server, stop_server
    from tests.test_cluster_two_node import free_port

    name, outage_s = "outage", 30.0
    # 3 trials of 20 epochs (1-3 s each, by machine load; a trial starts in ~1 s on local
    # workers): the outage starts after trial 1's first epoch and the server is back after
    # ~35 s while a trial still trains (60-180 s in all), so the buffer drains mid-sweep
    # (Tune steps), not only in the end-of-sweep flush. (With 10 epochs each, CI once
    # finished all three trials before the server came back.)
    base = {**SLOW, "epochs": 20}
    lrs = [0.01, 0.001, 0.003]
    path = sweep_file(tmp_path, name, base, lrs, retries=0)
    opts = ServerOptions(port=free_port(), runs_dir=tmp_path / "mlflow")
    uri = f"http://127.0.0.1:{opts.port}"
    server = start_server(opts)
    driver = None
    try:
        client = MlflowClient(uri)
        driver = Driver(tmp_path, str(path), "--tracking-uri", uri, "--runs-dir",
                        str(tmp_path / "runs"))  # fmt: skip
        deadline = time.monotonic() + 200
        while True:  # until the first epoch is logged
            assert driver.poll() is None, driver.tail()
            assert time.monotonic() < deadline, "epoch 1 not logged in 200 s\n" + driver.tail()
            time.sleep(0.5)
            exp = client.get_experiment_by_name(name)
            children = client.search_runs([exp.experiment_id],
                                          "tags.`sepconc.kind` = 'trial'") if exp else []  # fmt: skip
            if children and steps_of(client, children[0].info.run_id):
                break
        stop_server(server)
        down_at = time.time()
        end = time.monotonic() + outage_s
        while time.monotonic() < end:
            driver.poll()
            time.sleep(0.5)
        server = start_server(opts)  # same port, same store
        up_at = time.time()
        rc = driver.wait(240)
        out = driver.output()
        assert rc == 0, out[-6000:]
        assert "tracking store unreachable" in out and "tracking store back after" in out, out[
            -3000:
        ]

        exp = client.get_experiment_by_name(name)
        parents = client.search_runs([exp.experiment_id], "tags.`sepconc.kind` = 'sweep'")
        children = client.search_runs([exp.experiment_id], "tags.`sepconc.kind` = 'trial'")
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == len(lrs), "one run per trial"
        during = []
        for run in children:
            assert run.data.tags["sepconc.status"] == "completed" and run.info.status == "FINISHED"
            assert assert_steps(client, run) == base["epochs"]  # every epoch, exactly once
            during += [
                s for s, _, t in history(client, run.info.run_id) if down_at < t / 1000 < up_at
            ]
        # Epochs measured while the server was down were buffered with their own time.
        assert during, "no epoch was reported during the outage"
        lines = out.splitlines()
        back = next(i for i, line in enumerate(lines) if "tracking store back after" in line)
        assert any("finished" in line for line in lines[back:]), "drained only after the sweep"
        print(f"\noutage: steps {[steps_of(client, c.info.run_id) for c in children]}, "
              f"{len(during)} epoch(s) reported during the outage, server back "
              f"{up_at - down_at:.0f} s after it stopped; driver log: {lines[back].strip()!r}; "
              f"trials finished after the buffer drained: "
              f"{sum('finished' in line for line in lines[back:])}")  # fmt: skip
    finally:
        left = driver.stop() if driver else {}
        stop_server(server)
    assert not left, f"processes of the sweep still running: {left}"
