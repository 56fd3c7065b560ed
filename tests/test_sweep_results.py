"""`status | compare | best` read from MLflow (a sqlite store written here, no Ray).

Proves: trials are ranked by the sweep's own metric and mode (a `val_loss` sweep ranks
the lowest loss first, its best value taken from the history), `best --out` exports the
winner's full config including its seed, and `status` shows that metric's columns.
"""

from __future__ import annotations

import json

import yaml

from sepconc.sweep.results import best_trials, export_config, sweep_table
from sepconc.tracking.store import default_tracking_uri, experiment_id, log_params, open_client

BASE = {"dataset": "synthetic", "arch": "analysis", "frame_width": [16], "frame_kernel_size": [4],
        "frame_stride": [4], "epochs": 3, "batch_size": 100, "seed": 5}  # fmt: skip


def fake_sweep(runs, name: str, metric: str, losses: dict[float, list[float]]) -> None:
    """A finished sweep: one child run per lr with a val_loss/val_acc1 history."""
    meta_dir = runs / "sweeps" / name
    meta_dir.mkdir(parents=True)
    spec = {"name": name, "base": BASE, "search": {"lr": {"grid": sorted(losses)}},
            "metric": metric}  # fmt: skip
    (meta_dir / "sweep.yaml").write_text(yaml.safe_dump(spec))
    uri = default_tracking_uri(runs)
    client = open_client(uri)
    exp = experiment_id(client, name, runs)
    parent = client.create_run(exp, tags={"sepconc.kind": "sweep"}).info.run_id
    for i, (lr, history) in enumerate(losses.items()):
        run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "sepconc.kind": "trial",
                                           "sepconc.trial_id": f"t{i}",
                                           "sepconc.status": "completed"}).info.run_id  # fmt: skip
        log_params(client, run, {**BASE, "lr": lr, "num_workers": 2})
        for step, loss in enumerate(history, 1):
            client.log_metric(run, "val_loss", loss, step=step)
            client.log_metric(run, "val_acc1", 100 * lr, step=step)  # best acc: largest lr
            client.log_metric(run, "epoch", step, step=step)
        client.set_terminated(run)
    meta = {"name": name, "tracking_uri": uri, "experiment_id": exp, "parent_run_id": parent,
            "storage": str(runs), "overrides": [], "address": None}  # fmt: skip
    (meta_dir / "sweep.json").write_text(json.dumps(meta))


def test_rank_by_the_sweeps_metric_and_mode(tmp_path, capsys):
    runs = tmp_path / "runs"
    # lr 0.1 ends worst but had the lowest loss on the way; lr 0.3 has the best accuracy
    fake_sweep(runs, "loss", "val_loss", {0.1: [0.5, 0.05, 0.9], 0.2: [0.4, 0.2, 0.1],
                                           0.3: [0.6, 0.5, 0.4]})  # fmt: skip
    rows = sweep_table("loss", runs)
    assert [r["lr"] for r in rows] == ["0.1", "0.2", "0.3"]
    assert [r["best_val_loss"] for r in rows] == [0.05, 0.1, 0.4]
    assert [r["final_val_loss"] for r in rows] == [0.9, 0.1, 0.4]
    assert "num_workers" not in rows[0]  # internal settings are not "varying params"
    assert [r["lr"] for r in sweep_table("loss", runs, "val_acc1", "max")] == ["0.3", "0.2", "0.1"]
    best = best_trials("loss", 1, runs)[0]
    out = tmp_path / "best.yaml"
    config = export_config("loss", best["run_id"], out, runs)
    assert config.optim.lr == 0.1 and config.run.seed == 5
    exported = yaml.safe_load(out.read_text())
    assert exported["frame_width"] == [16] and exported["num_workers"] == 2  # logged by the trial

    from sepconc.cli import main

    assert main(["status", "loss", "--runs-dir", str(runs)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["trial", "status", "epoch", "rung", "final_val_loss", "best_val_loss",
                      "run_id"]  # fmt: skip
