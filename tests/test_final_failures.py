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


def test_the_latest_failure_is_read_from_tunes_text_record(tmp_path):
    """`last_failure` reads Tune's `error.txt` (never its pickled copy): the latest
    failure's last exception line names the class; a sepconc `UserError` (or subclass) is
    final, anything else is not."""
    from types import SimpleNamespace

    from sepconc.sweep.final_failures import last_failure

    def record(*tracebacks: str):
        path = tmp_path / "error.txt"
        path.write_text("".join(f"Failure # {k} (occurred at 2026-11-30_13-00-00)\n{t}\n"
                                for k, t in enumerate(tracebacks, 1)))  # fmt: skip
        return SimpleNamespace(error_file=str(path))

    head = 'ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)\n  File "x.py", line 1, in f\n'
    refused = head + "sepconc.errors.UserError: batch_size 57 is not divisible by num_workers 2"
    found = last_failure(record(refused))
    assert is_final(found) and str(found) == "batch_size 57 is not divisible by num_workers 2"
    image = head + "sepconc.data.image_files.ImageReadError: image file a.JPEG cannot be read"
    assert is_final(last_failure(record(image)))  # a subclass of UserError
    assert last_failure(record(head + "RuntimeError: worker killed")) is None
    assert last_failure(record(head + "sepconc.loop.TrainingDiverged: loss became nan")) is None
    assert last_failure(record(refused, head + "OSError: node lost")) is None  # the latest
    assert last_failure(SimpleNamespace(error_file=str(tmp_path / "none.txt"))) is None


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
