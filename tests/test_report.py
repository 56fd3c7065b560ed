"""`launch.py report` on a real (small) sweep record, built without Ray.

Four trials are trained for real (`sepconc.trainer.train` on `synthetic`, a 2-block
`scatnetblockanalysis` with 8 channels and 16-atom frames, statistics every epoch) and
logged to a fresh MLflow sqlite store the way the sweep callback does: child runs under a
parent run (`mlflow.parentRunId`), `sepconc.sweep` / `sepconc.trial_id` / `sepconc.status`
/ `sepconc.asha_rung` tags, parameters with `log_params`, one `log_report` per epoch at
`step=epoch`. Two trials are stopped after epoch 1 by their epoch hook, as ASHA would.
A `sweep.json` as `sepconc.sweep.driver` writes it makes the sweep findable by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sepconc.config import Config
from sepconc.report.collect import ordered_values
from sepconc.tracking.store import (
    PARENT,
    TAG_KIND,
    TAG_RUNG,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL,
    experiment_id,
    log_params,
    log_report,
    open_client,
)
from sepconc.trainer import train
from tests.helpers import launch

ROOT = Path(__file__).resolve().parents[1]
NAME = "tiny"
EPOCHS = 2
BASE = {"dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 2,
        "scat_angles": [2, 2], "P_proj_size": [8, 8], "epochs": EPOCHS, "batch_size": 200,
        "lr": 0.05, "seed": 0, "device": "cpu", "stats_every": 1, "stats_probe_size": 200,
        "tracking": False, "checkpoint_keep": 1}  # fmt: skip
# (trial id, swept params, epoch at which the "scheduler" stops it or None)
TRIALS = [("t_00000", {"non_linearity": "relu", "frame_width": [16, 16]}, None),
          ("t_00001", {"non_linearity": "softshrink", "frame_width": [16, 16]}, None),
          ("t_00002", {"non_linearity": "relu", "frame_width": [32, 32]}, 1),
          ("t_00003", {"non_linearity": "softshrink", "frame_width": [32, 32]}, 1)]  # fmt: skip
SWEEP_PNGS = ["metric_vs_params", "learning_curves", "layer_stats", "parallel_coordinates",
              "importance"]  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict:
    """The runs folder of a 4-trial sweep record; returns its paths, ids and best trial.

    Best: highest best-so-far val_acc1, ties broken by the final val_acc1 (as `best_trial`).
    """
    runs = tmp_path_factory.mktemp("report") / "runs"
    uri = f"sqlite:///{runs.resolve() / 'mlflow.db'}"
    client = open_client(uri)
    exp = experiment_id(client, NAME, runs)
    parent = client.create_run(exp, run_name=NAME, tags={TAG_KIND: "sweep", TAG_SWEEP: NAME})
    parent_id = parent.info.run_id
    best, run_ids, acc = {}, {}, {}
    for trial_id, params, stop_at in TRIALS:
        tags = {PARENT: parent_id, TAG_KIND: "trial", TAG_SWEEP: NAME, TAG_TRIAL: trial_id,
                TAG_STATUS: "running"}  # fmt: skip
        run_id = client.create_run(exp, run_name=trial_id, tags=tags).info.run_id
        log_params(client, run_id, {**BASE, **params})

        def hook(report, run_id=run_id, stop_at=stop_at, trial_id=trial_id):
            log_report(client, run_id, report.metrics, step=report.epoch)
            acc.setdefault(trial_id, {})[report.epoch] = report.metrics["val_acc1"]
            return stop_at is not None and report.epoch >= stop_at

        flat = {**BASE, **params, "out": str(runs / "trials" / NAME / trial_id)}
        result = train(Config.from_flat(flat), hooks=[hook])
        if stop_at is None:
            client.set_tag(run_id, TAG_STATUS, "completed")
        else:
            client.set_tag(run_id, TAG_STATUS, "early_stopped")
            client.set_tag(run_id, TAG_RUNG, str(stop_at))
        client.set_terminated(run_id, "FINISHED")
        best[trial_id] = (result.best_val_acc1, result.metrics["val_acc1"])
        run_ids[trial_id] = run_id
    meta_dir = runs / "sweeps" / NAME
    meta_dir.mkdir(parents=True)
    meta = {"name": NAME, "tracking_uri": uri, "experiment_id": exp, "parent_run_id": parent_id,
            "storage": str(runs.resolve()), "overrides": [], "address": None}  # fmt: skip
    (meta_dir / "sweep.json").write_text(json.dumps(meta, indent=1))
    return {"runs": runs, "uri": uri, "parent": parent_id, "run_ids": run_ids,
            "best": max(best, key=best.get), "acc": acc}  # fmt: skip


def check_png(path: Path) -> None:
    import matplotlib.image

    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert 400 <= width <= 2500 and 300 <= height <= 2000, (path, image.shape)
    assert image.std() > 0.01, f"{path} looks blank"


def test_sweep_report(sweep):
    done = launch("report", NAME, "--runs-dir", str(sweep["runs"]))
    assert done.returncode == 0, done.stderr
    out = sweep["runs"] / "sweeps" / NAME / "report"
    for name in SWEEP_PNGS:
        check_png(out / f"{name}.png")
    summary = (out / "summary.txt").read_text()
    assert f"best trial: {sweep['best']} " in summary
    assert "2 completed, 2 early-stopped, 0 failed" in summary
    assert "non_linearity: spread" in summary and "frame_width: spread" in summary
    assert summary.strip() in done.stdout  # printed too
    # Stopped (epoch 1) and completed (epoch 2) trials are compared at epoch 1 only, then
    # the completed ones at epoch 2; never one's epoch 1 averaged with another's epoch 2.
    at1 = summary[summary.index("  at epoch 1 ") : summary.index("  at epoch 2 ")]
    assert "at epoch 1 (the last epoch all 4 trials reached)" in at1
    assert "at epoch 2 (only the 2 trials that reached it" in summary
    for nonlin, ids in (("relu", ("t_00000", "t_00002")), ("softshrink", ("t_00001", "t_00003"))):
        mean = sum(sweep["acc"][t][1] for t in ids) / 2
        assert f"{nonlin}: {mean:.2f}% (n=2)" in at1, (nonlin, mean, at1)

    from mlflow.tracking import MlflowClient

    logged = {Path(a.path).name for a in MlflowClient(sweep["uri"]).list_artifacts(
        sweep["parent"], "report")}  # fmt: skip
    assert logged == {f"{name}.png" for name in SWEEP_PNGS} | {"summary.txt"}


def test_run_report(sweep, tmp_path):
    run_id = sweep["run_ids"]["t_00001"]
    done = launch("report", "--run", run_id, "--tracking-uri", sweep["uri"], "--out",
                  str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    check_png(tmp_path / "learning_curves.png")
    check_png(tmp_path / "layer_stats.png")
    summary = (tmp_path / "summary.txt").read_text()
    assert f"{EPOCHS} epochs" in summary
    assert all(f"  {layer}: fisher_k16" in summary for layer in ("input", "block1", "block2"))
    assert summary.count("change of fisher_k16 from the layer before") == 2  # block1, block2

    from mlflow.tracking import MlflowClient

    ncm = MlflowClient(sweep["uri"]).get_run(run_id).data.metrics["block2/ncm_acc"]
    assert 1.0 < ncm <= 100.0  # percent, like val_acc1 (10 classes: a fraction would be <= 1)
    assert f"ncm_acc {ncm:.2f}%" in summary


@pytest.mark.parametrize("args", [("report", "no_such_sweep"), ("report", "x", "--run", "abc")])
def test_bad_report_requests_exit_2_with_one_line(args, tmp_path):
    done = launch(*args, "--runs-dir", str(tmp_path))
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr


def test_parameter_values_order_naturally():
    assert ordered_values(["1024", "256", "256"]) == ["256", "1024"]
    assert ordered_values(["[64, 128]", "[32]", "[16, 256]"]) == ["[32]", "[16, 256]", "[64, 128]"]
    assert ordered_values(["softshrink", "relu"]) == ["relu", "softshrink"]
