"""A sweep driver killed mid-trial, then `launch.py resume`: real embedded Ray, real SIGKILL.

Each test runs `launch.py sweep` (1-worker trials on the `synthetic` set, checkpoint every
epoch, keep 2, no retries: a trial that fails stays failed) as a subprocess in its own
process group, kills it, ends whatever it started, then runs `launch.py resume`:

- **driver killed while a trial is mid-training** (its MLflow run holds epochs 1-3 of 5:
  Tune has pruned the checkpoint of epoch 1, which its last saved experiment state,
  written after epoch 2, still lists): only the driver is SIGKILLed; its trial goes on
  for 5 s (it trains the epoch Tune last asked for, writing a checkpoint Tune never hears
  of, then waits for a driver that is gone), then everything the driver started is ended.
  The resume continues that trial from the newest checkpoint of its folder, in its
  EXISTING MLflow run: every trial completed, one run per trial,
  `val_acc1` at steps 1..5 once each, `metrics.jsonl` epochs 1..5, the newest 2
  checkpoints kept, in the trial folder and in Tune's (`checkpoint_000004/` holds
  `epoch_0004.pt` only, `checkpoint_000005/` `epoch_0005.pt`), and nothing at ERROR
  in the sweep's driver.log (`sepconc.sweep.tune_checkpoints`).
- **trial finished alone**: the driver is SIGKILLed once epoch 3 of 4 is logged; the trial
  trains epoch 4 (Tune had asked for it), so Tune's folder holds 3 checkpoints (2, 3, 4)
  and the trial's own folder its last epoch. The resumed trial has nothing left to train
  and reports no checkpoint; when it ends, Tune's folder is pruned to the newest 2 (the
  CI failure of 2026-11-30: `checkpoint_000003/` stayed beside 4 and 5).
- **killed during a checkpoint write**: a `sitecustomize` on the trials' PYTHONPATH stalls
  the first write of `epoch_0002.pt` half-way (once: a marker file); the whole process
  tree is SIGKILLed then, leaving `epoch_0001.pt` and a partial temporary file. The resume
  removes the partial file, continues from epoch 1 and completes, as above.
"""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import sweep_file
from tests.proctree import alive, kill_all
from tests.test_faults_ray import FAST, SLOW, Driver, steps_of
from tests.test_sweep_ray import assert_steps, check_ok, client_for, launch, sweep_runs

pytestmark = pytest.mark.ray

STALL = textwrap.dedent(
    """
    # Test-only: stall the first write of epoch_0002.pt half-way (see test_resume_ray.py).
    import importlib.machinery, os, sys, time

    MARKER = os.environ.get("SEPCONC_TEST_STALL")

    def _patch(module):
        real = module._WriteRecorder.write

        def write(self, data):
            written = real(self, data)
            name = getattr(self.handle, "name", "")
            if ".epoch_0002.pt.tmp-" in name and not os.path.exists(MARKER):
                self.handle.flush()
                with open(MARKER, "w") as handle:
                    handle.write(name)
                time.sleep(600)
            return written

        module._WriteRecorder.write = write

    class _Finder:
        def find_spec(self, name, path, target=None):
            if name != "sepconc.checkpoint":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _patch(module)

            spec.loader.exec_module = exec_module
            return spec

    if MARKER:
        sys.meta_path.insert(0, _Finder())
    """
)


def children_now(runs: Path, name: str) -> list:
    """The sweep's trial runs, [] while the driver is still creating the store."""
    if not (runs / "sweeps" / name / "sweep.json").exists():
        return []
    try:
        return sweep_runs(client_for(runs), name)[1]
    except Exception:  # the store or the experiment is being created
        return []


def first_trial_at(driver: Driver, runs: Path, name: str, epoch: int):
    """The sweep's first trial run, once it has logged epochs 1 to `epoch` (300 s at most,
    the driver still running)."""
    deadline = time.monotonic() + 300
    while True:
        assert driver.poll() is None, driver.tail()
        assert time.monotonic() < deadline, f"epoch {epoch} not logged in 300 s\n" + driver.tail()
        time.sleep(0.5)
        children = children_now(runs, name)
        if children and len(steps_of(client_for(runs), children[0].info.run_id)) >= epoch:
            return children[0]


def end_all(driver: Driver) -> None:
    """SIGKILL the driver's process group and every process seen below it; wait until gone.
    (Whether a killed driver leaves Ray processes behind is test_sweep_ray's concern.)"""
    driver.poll()
    try:
        os.killpg(driver.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    kill_all(driver.procs)
    deadline = time.monotonic() + 30
    while alive(driver.procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    driver.stop()


def resume_and_check(tmp_path: Path, runs: Path, name: str, trials: int, epochs: int) -> list:
    """`launch.py resume`, then: every trial completed in one run, every epoch logged once."""
    out = check_ok(launch("resume", name, "--runs-dir", str(runs), timeout=400))
    assert f"{trials} trials" in out and "errors: 0" in out, out[-3000:]
    client = client_for(runs)
    parents, children = sweep_runs(client, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    ids = [c.data.tags["sepconc.trial_id"] for c in children]
    assert len(children) == trials and len(set(ids)) == trials, ids  # one run per trial
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags
        assert run.data.tags["sepconc.status"] == "completed", run.data.tags
        assert assert_steps(client, run) == epochs  # steps 1..epochs, once each
        folder = runs / "trials" / name / run.data.tags["sepconc.trial_id"]
        rows = [line for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
        assert [json.loads(r)["epoch"] for r in rows] == list(range(1, epochs + 1))
        names = sorted(p.name for p in (folder / "checkpoints").iterdir() if p.is_file())
        assert names == [f"epoch_{e:04d}.pt" for e in (epochs - 1, epochs)], names
        tune = runs / "tune" / name / run.data.tags["sepconc.trial_id"]
        held = {p.name: sorted(f.name for f in p.iterdir()) for p in tune.glob("checkpoint_*")}
        assert held == {f"checkpoint_{e:06d}": [f"epoch_{e:04d}.pt"]
                        for e in (epochs - 1, epochs)}, held  # fmt: skip
    log = (runs / "sweeps" / name / "driver.log").read_text().splitlines()
    errors = [line for line in log if re.match(r"\S+ \S+ (ERROR|CRITICAL) ", line)]
    assert not errors, "\n".join(errors)
    return children


@pytest.mark.timeout(600)
def test_driver_killed_mid_trial_resumes_in_the_same_run(tmp_path):
    runs, name, epochs = tmp_path / "runs", "mid-trial", 5
    path = sweep_file(tmp_path, name, {**SLOW, "epochs": epochs}, [0.01, 0.003], workers=1)
    driver = Driver(tmp_path, str(path), "--runs-dir", str(runs))
    try:
        victim = first_trial_at(driver, runs, name, epoch=3)  # of 5
        time.sleep(1)  # Tune registers epoch 3's checkpoint, pruning epoch 1's (~3 s an epoch)
        os.kill(driver.proc.pid, signal.SIGKILL)  # the driver only; its trial goes on a while
        for _ in range(10):
            driver.poll()
            time.sleep(0.5)
    finally:
        end_all(driver)  # what the killed driver left running (the case's `kill`)
    killed_at = sorted(steps_of(client_for(runs), victim.info.run_id))
    assert 3 <= len(killed_at) < epochs, killed_at

    children = resume_and_check(tmp_path, runs, name, trials=2, epochs=epochs)
    assert victim.info.run_id in {c.info.run_id for c in children}  # its EXISTING run
    print(f"\nmid-trial kill: steps logged when killed {killed_at}; after resume every trial "
          f"has steps 1..{epochs} once in its one run")  # fmt: skip


@pytest.mark.timeout(600)
def test_trial_finished_alone_after_the_driver_was_killed(tmp_path):
    runs, name, epochs = tmp_path / "runs", "finished-alone", 4
    path = sweep_file(tmp_path, name, {**SLOW, "epochs": epochs}, [0.01], workers=1)
    driver = Driver(tmp_path, str(path), "--runs-dir", str(runs))
    try:
        victim = first_trial_at(driver, runs, name, epoch=3)  # of 4
        os.kill(driver.proc.pid, signal.SIGKILL)  # the driver only; its trial trains epoch 4
        tune = runs / "tune" / name / victim.data.tags["sepconc.trial_id"]
        last = tune / f"checkpoint_{epochs:06d}" / f"epoch_{epochs:04d}.pt"
        deadline = time.monotonic() + 120
        while not last.exists():  # Tune asked for epoch 4: the trial trains it, no driver
            assert time.monotonic() < deadline, f"{last} not written in 120 s\n" + driver.tail()
            driver.poll()
            time.sleep(0.5)
        time.sleep(2)  # Tune copies the file in: let the copy end before the kill
    finally:
        end_all(driver)
    killed_at = sorted(steps_of(client_for(runs), victim.info.run_id))
    assert len(killed_at) < epochs, killed_at
    written = sorted(p.name for p in tune.glob("checkpoint_*"))
    assert len(written) > 2, written  # beyond keep 2: the dead driver pruned nothing late
    resume_and_check(tmp_path, runs, name, trials=1, epochs=epochs)
    print(f"\nfinished alone: steps logged when killed {killed_at}, Tune folders {written}; "
          "after resume the newest 2 kept")  # fmt: skip


@pytest.mark.timeout(600)
def test_driver_killed_during_checkpoint_write_resumes(tmp_path):
    runs, name, epochs = tmp_path / "runs", "mid-write", 3
    stall = tmp_path / "stall"
    stall.mkdir()
    (stall / "sitecustomize.py").write_text(STALL)
    marker = tmp_path / "stalled"
    path = sweep_file(tmp_path, name, {**FAST, "epochs": epochs}, [0.01, 0.003], workers=1)
    pythonpath = os.pathsep.join(p for p in (str(stall), os.environ.get("PYTHONPATH")) if p)
    driver = Driver(tmp_path, str(path), "--runs-dir", str(runs),
                    extra_env={"SEPCONC_TEST_STALL": str(marker), "PYTHONPATH": pythonpath})  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert driver.poll() is None, driver.tail()
            assert time.monotonic() < deadline, "no stalled write in 300 s\n" + driver.tail()
            time.sleep(0.5)
        driver.poll()
    finally:
        left = driver.stop()  # SIGKILL: the driver, Ray, and the trial mid-write
    assert not left, f"processes of the sweep still running: {left}"
    partial = Path(marker.read_text())
    assert partial.exists() and partial.stat().st_size > 0, partial
    folder = partial.parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(["epoch_0001.pt", partial.name])

    resume_and_check(tmp_path, runs, name, trials=2, epochs=epochs)
    assert not partial.exists() and not list(folder.glob(".*tmp*"))
    print(f"\nkill during write: partial {partial.name} removed; every trial completed")
