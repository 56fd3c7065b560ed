"""A trial whose failure is a configuration error is not retried; other failures are.

The decision (`sepconc.sweep.final_failures.is_final`) is unit-tested; one small real
sweep (Ray, slow) shows a trial that refuses its data folder failing once, with retries
allowed, where Tune used to start it `max_retries + 1` times. The retry of a real fault
(a killed worker restarts from its checkpoint) is tests/test_faults_ray.py's.
"""

from __future__ import annotations

import pytest

from sepconc.errors import UserError
from sepconc.loop import TrainingDiverged
from sepconc.sweep.final_failures import is_final


def test_a_configuration_error_is_final_and_a_fault_is_not():
    from ray.exceptions import RayTaskError

    refused = UserError("batch_size 57 is not divisible by num_workers 2; choose a multiple of 2")
    assert is_final(refused)
    wrapped = RayTaskError("train", "Traceback ...", refused)  # as Tune gets a trial's error
    assert is_final(wrapped) and is_final(wrapped.as_instanceof_cause())
    for fault in (RuntimeError("worker killed"), TrainingDiverged("loss became nan at epoch 1"),
                  RayTaskError("train", "Traceback ...", OSError("node lost")), None):  # fmt: skip
        assert not is_final(fault)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_trial_refusing_its_config_is_not_retried(tmp_path):
    """`max_retries: 2`, one trial whose data folder does not exist (the trial's own
    pre-flight refuses it: `UserError`): it fails once, not 3 times; sweep rc 1."""
    from tests.helpers import sweep_file
    from tests.test_faults_ray import FAST
    from tests.test_sweep_ray import client_for, launch, sweep_runs

    base = {**FAST, "dataset": "mnist", "data": str(tmp_path / "no-mnist-here"), "epochs": 1}
    path = sweep_file(tmp_path, "refused", base, retries=2, workers=1)
    runs = tmp_path / "runs"
    proc = launch("sweep", str(path), "--runs-dir", str(runs))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    (error_file,) = runs.rglob("error.txt")  # Tune's: one "Failure # N" block per attempt
    text = error_file.read_text()
    assert text.count("Failure #") == 1, text[-3000:]
    assert "no-mnist-here" in text
    _, children = sweep_runs(client_for(runs), "refused")
    (child,) = children
    assert child.info.status == "FAILED" and child.data.tags["sepconc.status"] == "failed"
    assert "no-mnist-here" in child.data.tags["sepconc.failure"], child.data.tags
