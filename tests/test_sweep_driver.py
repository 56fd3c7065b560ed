"""Starting, refusing and changing a sweep, without Ray (the Ray parts are stubbed or not reached).

Proves:
- resource problems name the key, what is asked, what exists and the fix; `resources: auto`
  fits the machine and `validate` prints it (`--fix-resources` prints a line to paste);
- a sweep refused by a check writes nothing; one that fails after its state was written
  (Ray does not start) removes it: no sweep.json, the parent run deleted, the name free;
  a sweep.json left by a start that never reached Tune does not block the name;
- `resume --set/--file` change a sweep in place when its trials include the old ones;
- the terminal shows sepconc's lines only (libraries and warnings go to the log file), and
  the loss check raises no autograd warning.
"""

from __future__ import annotations

import json
import logging
import warnings

import pytest
import torch
import yaml

from sepconc.errors import UserError
from sepconc.sweep import driver
from sepconc.sweep.resources import fit_resources, resource_problems
from sepconc.sweep.spec import load_sweep
from sepconc.sweep.sweep_state import create_state, is_stale, trials_problem

BASE = {"dataset": "synthetic", "arch": "analysis", "frame_width": [16], "frame_kernel_size": [4],
        "frame_stride": [4], "epochs": 2, "batch_size": 100, "seed": 0, "device": "cpu"}  # fmt: skip
SMALL = {"CPU": 2.0, "GPU": 0.0, "memory": 8 * 1024**3, "nodes": 1, "node_cpu": 2.0,
         "node_gpu": 0.0}  # fmt: skip


def write_sweep(tmp_path, resources, lrs=(0.01,), name="s", file="sweep.yaml"):
    spec = {"name": name, "base": BASE, "search": {"lr": {"grid": list(lrs)}},
            "resources": resources}  # fmt: skip
    path = tmp_path / file
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_resource_problems_name_key_ask_exists_and_fix(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, {"workers_per_trial": 2, "gpus_per_worker": 1,
                                             "cpus_per_worker": 4}))  # fmt: skip
    problems = resource_problems(spec, totals=SMALL)
    assert len(problems) == 2
    cpu, gpu = problems
    assert "cpus_per_worker 4 = 8 CPUs" in cpu and "this machine has 2 CPUs" in cpu
    assert "lower resources.cpus_per_worker to 1" in cpu and "resources: auto" in cpu
    assert "gpus_per_worker 1 = 2 GPUs" in gpu and "gpus_per_worker: 0" in gpu
    fits = load_sweep(write_sweep(tmp_path, {"workers_per_trial": 2, "cpus_per_worker": 1}))
    assert resource_problems(fits, totals=SMALL) == []
    # the local machine is read when no totals are given: CPUs this process may use
    assert resource_problems(fits) == [] or "this machine" in resource_problems(fits)[0]


def test_fit_resources_fills_the_machine():
    assert fit_resources(128, SMALL) == {"workers_per_trial": 2, "cpus_per_worker": 1,
                                         "gpus_per_worker": 0, "max_concurrent_trials": 1}  # fmt: skip
    eight = {"CPU": 16.0, "GPU": 8.0, "nodes": 1, "node_cpu": 16.0, "node_gpu": 8.0}
    assert fit_resources(256, eight) == {"workers_per_trial": 8, "cpus_per_worker": 2,
                                         "gpus_per_worker": 1, "max_concurrent_trials": 1}  # fmt: skip
    assert fit_resources(99, {**SMALL, "CPU": 6.0})["workers_per_trial"] == 1  # 99 is odd


def test_resources_auto_in_validate(tmp_path, capsys):
    from sepconc.cli import main

    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump({"name": "a", "base": BASE, "resources": "auto"}))
    assert load_sweep(path).auto_resources
    assert main(["validate", str(path), "--no-build"]) == 0
    out = capsys.readouterr().out
    assert "resources: auto -> {workers_per_trial:" in out and "this machine has" in out
    big = write_sweep(tmp_path, {"workers_per_trial": 2, "cpus_per_worker": 4096})
    assert main(["validate", str(big), "--no-build"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: resources:") and err[-1].startswith("hint: ")
    assert main(["validate", str(big), "--no-build", "--fix-resources"]) == 2
    assert "  resources: {workers_per_trial: " in capsys.readouterr().out


def test_refused_sweep_writes_nothing(tmp_path):
    runs = tmp_path / "runs"
    path = write_sweep(tmp_path, {"workers_per_trial": 2, "cpus_per_worker": 4096})
    with pytest.raises(UserError, match=r"cpus_per_worker 4096"):
        driver.launch(load_sweep(path), runs_dir=runs)
    assert not runs.exists()


def parents(runs, name="s"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_start_failing_after_state_frees_the_name(tmp_path, monkeypatch):
    """Ray fails to start after sweep.json and the parent run exist: both go away."""
    runs = tmp_path / "runs"
    path = write_sweep(tmp_path, {"workers_per_trial": 1, "cpus_per_worker": 1})

    def no_ray(address, spec, paths):
        assert (paths.meta_dir / "sweep.json").exists() and len(parents(runs)) == 1
        raise UserError("the cluster is too small")

    monkeypatch.setattr(driver, "start_ray", no_ray)
    with pytest.raises(UserError, match="too small"):
        driver.launch(load_sweep(path), runs_dir=runs)
    assert not (runs / "sweeps" / "s" / "sweep.json").exists()
    assert parents(runs) == []  # deleted: not found, not "existing"
    with pytest.raises(UserError, match="too small"):  # the name is free: no "already exists"
        driver.launch(load_sweep(path), runs_dir=runs)


def test_stale_state_does_not_block_the_name(tmp_path, monkeypatch):
    """A driver killed while starting leaves sweep.json but no Tune state and no trial run."""
    runs = tmp_path / "runs"
    path = write_sweep(tmp_path, {"workers_per_trial": 1, "cpus_per_worker": 1})
    spec = load_sweep(path)
    paths = driver.sweep_paths(spec, runs)
    uri = f"sqlite:///{runs / 'mlflow.db'}"
    create_state(spec, paths, uri, {"name": "s", "storage": paths.storage, "overrides": [],
                                    "address": None})  # fmt: skip
    assert is_stale(paths.meta_dir)
    seen = {}
    monkeypatch.setattr(driver, "_run", lambda spec, paths, meta, *a, **k: seen.update(meta))
    driver.launch(load_sweep(path), runs_dir=runs)
    assert [r.info.run_id for r in parents(runs)] == [seen["parent_run_id"]]  # old one deleted


def test_trials_must_include_the_old_ones(tmp_path):
    old = load_sweep(write_sweep(tmp_path, {"workers_per_trial": 2}, lrs=(0.01, 0.1)))
    more = load_sweep(write_sweep(tmp_path, {"workers_per_trial": 1}, lrs=(0.01, 0.1, 1.0)))
    fewer = load_sweep(write_sweep(tmp_path, {"workers_per_trial": 2}, lrs=(0.01,)))
    same = load_sweep(write_sweep(tmp_path, {"workers_per_trial": 1, "cpus_per_worker": 2},
                                  lrs=(0.01, 0.1)))  # fmt: skip
    assert trials_problem(old, same, started=True) is None
    assert trials_problem(old, more, started=False) is None
    assert "already started" in trials_problem(old, more, started=True)
    assert "[0.1] dropped" in trials_problem(old, fewer, started=False)


def test_resume_set_and_file_change_the_stored_sweep(tmp_path, monkeypatch, capsys):
    from sepconc.cli import main

    runs = tmp_path / "runs"
    path = write_sweep(tmp_path, {"workers_per_trial": 1, "cpus_per_worker": 1}, lrs=(0.01, 0.1))
    spec = load_sweep(path)
    paths = driver.sweep_paths(spec, runs)
    create_state(spec, paths, f"sqlite:///{runs / 'mlflow.db'}",
                 {"name": "s", "storage": paths.storage, "overrides": [], "address": None})  # fmt: skip
    seen = {}
    monkeypatch.setattr(driver, "_run", lambda spec, paths, meta, address, resume: seen.update(
        spec=spec, resume=resume) or {"name": "s"})  # fmt: skip
    monkeypatch.setattr("sepconc.cli.sweep_cmd._print_summary", lambda summary, runs_dir: 0)
    args = ["resume", "s", "--runs-dir", str(runs)]
    assert main([*args, "--set", "resources.cpus_per_worker=2"]) == 0
    assert seen["spec"].cpus_per_worker == 2 and seen["resume"] is None  # never started: new
    meta = json.loads((paths.meta_dir / "sweep.json").read_text())
    assert meta["overrides"] == ["resources.cpus_per_worker=2"]
    bigger = write_sweep(tmp_path, {"workers_per_trial": 1}, lrs=(0.01, 0.1, 1.0), file="b.yaml")
    assert main([*args, "--file", str(bigger)]) == 0
    assert seen["spec"].search["lr"]["grid"] == [0.01, 0.1, 1.0]
    assert "1.0" in (paths.meta_dir / "sweep.yaml").read_text()
    smaller = write_sweep(tmp_path, {"workers_per_trial": 1}, lrs=(0.01,), file="c.yaml")
    assert main([*args, "--file", str(smaller)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "cannot resume 's'" in err[0] and "[0.1, 1.0] dropped" in err[0]


def test_terminal_shows_sepconc_lines_libraries_go_to_the_log(tmp_path, capfd):
    from sepconc.logs import attach_log, detach_log, setup_logging

    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    logging.captureWarnings(False)  # an earlier `main()` in this process may have set it
    try:
        setup_logging(verbose=False)
        handler = attach_log(tmp_path / "driver.log")
        logging.getLogger("sepconc.sweep.callbacks").info("trial t1 finished")
        logging.getLogger("ray.tune").info("To visualize your results with TensorBoard")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = logging._showwarning  # what captureWarnings installs
            warnings.warn("some library deprecation", DeprecationWarning, stacklevel=1)
        detach_log(handler)
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
    err = capfd.readouterr().err
    assert "trial t1 finished" in err and "TensorBoard" not in err and "deprecation" not in err
    text = (tmp_path / "driver.log").read_text()
    assert "trial t1 finished" in text and "TensorBoard" in text and "deprecation" in text


def test_loss_check_raises_no_autograd_warning():
    from sepconc.loop import _check_finite

    loss = (torch.ones(3, requires_grad=True) * 2).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_finite(loss, 1, 1)


def test_progress_says_stopped_at_epoch_and_rung_with_short_numbers(caplog):
    from types import SimpleNamespace

    from sepconc.cli.tables import format_table
    from sepconc.sweep.callbacks import ProgressCallback

    asha = {"type": "asha", "grace_period": 1, "reduction_factor": 2, "max_t": 4}
    progress = ProgressCallback("val_acc1", 2, epochs=4, scheduler=asha)
    weak = SimpleNamespace(trial_id="t1", config={"params": {"lr": 0.0031234567890123456}})
    strong = SimpleNamespace(trial_id="t2", config={"params": {"lr": 0.05}})
    with caplog.at_level(logging.INFO, logger="sepconc"):
        progress.on_trial_start(0, [], weak)
        progress.on_trial_result(0, [], weak, {"epoch": 2, "val_acc1": 80.123456})
        progress.on_trial_complete(0, [], weak)
        progress.on_trial_result(0, [], strong, {"epoch": 4, "val_acc1": 95.5})
        progress.on_trial_complete(0, [], strong)
        short = SimpleNamespace(trial_id="t3", config={"params": {"lr": 0.05, "epochs": 1}})
        progress.on_trial_result(0, [], short, {"epoch": 1, "val_acc1": 90.0})
        progress.on_trial_complete(0, [], short)
    text = caplog.text
    assert "trial t3 finished: 1 epoch, val_acc1=90" in text, text
    assert "trial t1 started: lr=0.003123" in text and "0.0031234567" not in text
    assert "trial t1 stopped at epoch 2 (rung 2) by the scheduler: val_acc1=80.12" in text
    assert "trial t2 finished: 4 epochs, val_acc1=95.5" in text
    table = format_table([{"trial": "t1", "lr": "0.0031234567890123456", "run_id": "ab12"}])
    assert "0.003123 " in table and "0.00312345" not in table
    # trial ids are hexadecimal names: all digits, or digits around one `e`, stay as they are
    table = format_table([{"trial": "86459226", "lr": "0.01", "run_id": "12e45678"},
                          {"trial": "12e45678", "lr": "0.1", "run_id": "00000001"}])  # fmt: skip
    assert all(t in table for t in ("86459226", "12e45678", "00000001")), table
    assert "e+" not in table, table
    # counts logged as float metrics (params, flops) are whole numbers, shown in full
    table = format_table([{"trial": "t1", "params": 58030.0, "flops": 1234567890.0,
                           "val_loss": 0.123456, "run_id": "ab12"}])  # fmt: skip
    assert "58030 " in table and "1234567890 " in table and "0.1235 " in table, table
    assert "e+" not in table, table


@pytest.mark.parametrize("change, expect", [
    ({"storage": "{tmp}/blocker/sub"}, r"storage .*blocker/sub: .*blocker is not a folder"),
    ({"tracking": {"uri": "sqlite:///{tmp}/blocker/m.db"}}, r"blocker is not a folder"),
    ({"tracking": {"uri": "http://127.0.0.1:1"}}, r"tracking server http://127.0.0.1:1 is unreachable"),
])  # fmt: skip
def test_storage_and_tracking_refused_before_anything_is_written(tmp_path, change, expect):
    (tmp_path / "blocker").write_text("a file, not a folder")
    path = write_sweep(tmp_path, {"workers_per_trial": 1, "cpus_per_worker": 1})
    raw = yaml.safe_load(path.read_text())
    raw.update(yaml.safe_load(yaml.safe_dump(change).replace("{tmp}", str(tmp_path))))
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=expect):
        driver.launch(load_sweep(path), runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_sweep_building_blocks_stay_importable_from_the_driver():
    """Scripts that write a sweep's record without Ray import these from the driver module."""
    from sepconc.sweep.driver import parent_run, read_meta, sweep_paths

    assert callable(parent_run) and callable(sweep_paths) and callable(read_meta)


def without_mlflow(monkeypatch) -> None:
    """The driver's state without an MLflow store (creating one costs ~5 s): `create_state`
    writes sweep.yaml and sweep.json with made-up ids; the resume's client does nothing."""

    def create_state(spec, paths, uri, meta):
        paths.meta_dir.mkdir(parents=True, exist_ok=True)
        (paths.meta_dir / "sweep.yaml").write_text(spec.text)
        meta = {**meta, "tracking_uri": uri, "experiment_id": "0", "parent_run_id": "p"}
        (paths.meta_dir / "sweep.json").write_text(json.dumps(meta, indent=1))
        return meta

    class Client:
        def update_run(self, *args, **kwargs):
            pass

    monkeypatch.setattr(driver, "create_state", create_state)
    monkeypatch.setattr(driver, "open_client", lambda uri: Client())


def test_sweep_and_resume_read_and_parse_the_file_once(tmp_path, monkeypatch):
    """`sweep FILE` reads FILE once and parses it once (validate and the driver get the same
    `SweepSpec`); `resume NAME --set ...` reads the stored file once."""
    from sepconc.cli import main
    from sepconc.sweep import spec as spec_module

    calls = {"read": 0, "parse": 0}
    real_read, real_parse = spec_module.read_sweep_file, spec_module.parse_sweep

    def read(*args, **kwargs):
        calls["read"] += 1
        return real_read(*args, **kwargs)

    def parse(*args, **kwargs):
        calls["parse"] += 1
        return real_parse(*args, **kwargs)

    monkeypatch.setattr(spec_module, "read_sweep_file", read)
    monkeypatch.setattr(spec_module, "parse_sweep", parse)
    monkeypatch.setattr(driver, "read_sweep_file", read)
    without_mlflow(monkeypatch)
    seen = []
    monkeypatch.setattr(driver, "_run", lambda spec, *a, **k: seen.append(spec) or {"name": "s"})
    monkeypatch.setattr("sepconc.cli.sweep_cmd._print_summary", lambda summary, runs_dir: 0)
    runs = tmp_path / "runs"
    path = write_sweep(tmp_path, {"workers_per_trial": 1, "cpus_per_worker": 1}, lrs=(0.01, 0.1))
    assert main(["sweep", str(path), "--runs-dir", str(runs), "--set", "base.epochs=1"]) == 0
    assert calls == {"read": 1, "parse": 1} and seen[0].overrides == ["base.epochs=1"]
    assert json.loads((runs / "sweeps" / "s" / "sweep.json").read_text())["overrides"] == [
        "base.epochs=1"
    ]
    calls.update(read=0, parse=0)
    assert main(["resume", "s", "--runs-dir", str(runs), "--set", "samples=2"]) == 0
    assert calls["read"] == 1 and seen[1].samples == 2 and seen[1].epochs == 1


def test_resume_refuses_a_change_with_an_impossible_trial(tmp_path, monkeypatch):
    """`resume --set` is checked like `sweep`: a new trial no config allows is refused before
    the stored sweep changes."""
    runs = tmp_path / "runs"
    path = write_sweep(tmp_path, {"workers_per_trial": 1, "cpus_per_worker": 1})
    spec = load_sweep(path)
    paths = driver.sweep_paths(spec, runs)
    without_mlflow(monkeypatch)
    driver.create_state(spec, paths, "sqlite:///unused.db",
                        {"name": "s", "storage": paths.storage, "overrides": [], "address": None})  # fmt: skip
    before = (
        (paths.meta_dir / "sweep.yaml").read_text(),
        (paths.meta_dir / "sweep.json").read_text(),
    )
    monkeypatch.setattr(driver, "_run", lambda *a, **k: pytest.fail("the resume ran"))
    with pytest.raises(UserError, match=r"use randint: \[1, 3\] or grid"):
        driver.resume("s", runs_dir=runs,
                      overrides=["search.learning_rate_adjust_frequency={uniform: [1, 3]}"])  # fmt: skip
    after = (paths.meta_dir / "sweep.yaml").read_text(), (paths.meta_dir / "sweep.json").read_text()
    assert after == before
