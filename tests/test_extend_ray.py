"""`launch.py sweep FILE --extend` with embedded Ray and a real MLflow sqlite store.

Proves: extending a finished sweep with a file that adds a grid value runs only the new
configuration, as a child of the same MLflow parent run (the finished trials keep their
runs, none is rerun, and the command lists them as reused); its trials run in their own
Tune experiment (`tune/<name>-ext1`, named in `sweep.json`), and `resume` continues that
one; extending again with the same file runs nothing; `compare` shows old and new trials.
The study's budget: the first sweep's `budget: {trials: 2}` is spent by its 2 trials, so an
extension under it is refused in one line (exit 2, the sweep unchanged), and the file's
raised `budget: {trials: 3}` is the one the extension runs under (`budget.json`).
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.helpers import launch as run_launch
from tests.helpers import launch_env, sweep_file

pytestmark = [pytest.mark.slow, pytest.mark.ray]

NAME = "grow"
BASE = {"dataset": "synthetic", "arch": "analysis", "frame_width": [16],
        "frame_kernel_size": [4], "frame_stride": [4], "epochs": 1, "batch_size": 100,
        "workers": 0, "seed": 0, "device": "cpu", "stats_every": 0}  # fmt: skip


def launch(*args, timeout: float = 300):
    proc = run_launch(*args, timeout=timeout, env=launch_env(keep_pythonpath=True))
    assert proc.returncode == 0, (
        f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return proc


def children(runs) -> dict[str, tuple[float, str]]:
    """run id -> (lr, status tag) of every child run of the sweep's parent."""
    from sepconc.tracking.read import sweep_trials

    _, _, trials = sweep_trials(NAME, runs)
    return {t.run_id: (float(t.params["lr"]), t.status) for t in trials}


def test_extend_adds_new_configurations_to_the_same_parent(tmp_path):
    runs = tmp_path / "runs"
    first = sweep_file(tmp_path, NAME, BASE, lrs=[0.01, 0.001], workers=1)
    spec = yaml.safe_load(first.read_text())
    first.write_text(yaml.safe_dump({**spec, "budget": {"trials": 2}}))
    launch("sweep", first, "--runs-dir", runs)
    before = children(runs)
    assert sorted(lr for lr, _ in before.values()) == [0.001, 0.01]
    parent = json.loads((runs / "sweeps" / NAME / "sweep.json").read_text())["parent_run_id"]

    grown = yaml.safe_load(first.read_text())
    grown["search"]["lr"]["grid"] = [0.01, 0.001, 0.1]
    second = tmp_path / "grown.yaml"
    second.write_text(yaml.safe_dump(grown))
    state = {n: (runs / "sweeps" / NAME / n).read_text() for n in ("sweep.json", "budget.json")}
    refused = run_launch("sweep", second, "--extend", "--runs-dir", runs, timeout=300,
                         env=launch_env(keep_pythonpath=True))  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: --extend: sweep '{NAME}' has spent its budget 2 trials ("), line
    assert line.endswith("raise budget.trials in the sweep file to add trials"), line
    assert "Traceback" not in refused.stderr, refused.stderr
    assert state == {n: (runs / "sweeps" / NAME / n).read_text() for n in state}  # unchanged
    grown["budget"] = {"trials": 3}
    second.write_text(yaml.safe_dump(grown))
    out = launch("sweep", second, "--extend", "--runs-dir", runs).stdout
    assert "1 trials in" in out and "reused 2 finished trial(s)" in out, out
    assert "lr=0.01: val_acc1" in out and "lr=0.001: val_acc1" in out, out
    after = children(runs)
    assert set(before) < set(after) and len(after) == 3  # old runs kept, one new
    assert sorted(lr for lr, _ in after.values()) == [0.001, 0.01, 0.1]  # none twice
    assert all(status == "completed" for _, status in after.values())
    meta = json.loads((runs / "sweeps" / NAME / "sweep.json").read_text())
    assert meta["parent_run_id"] == parent and meta["tune_name"] == f"{NAME}-ext1"
    assert (runs / "tune" / f"{NAME}-ext1").is_dir() and (runs / "tune" / NAME).is_dir()
    budget = json.loads((runs / "sweeps" / NAME / "budget.json").read_text())
    assert budget["budget"]["trials"] == 3 and len(budget["spent"]["started"]) == 3, budget

    again = launch("sweep", second, "--extend", "--runs-dir", runs).stdout
    assert "0 trials in" in again and "reused 3 finished trial(s)" in again, again
    launch("resume", NAME, "--runs-dir", runs)  # restores tune/grow-ext1: nothing left to run
    assert children(runs) == after
    table = launch("compare", NAME, "--runs-dir", runs, "--csv").stdout
    assert len(table.strip().splitlines()) == 4  # header + old and new trials
