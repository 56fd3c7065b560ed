"""The read side (`sepconc.tracking.read`): one rule for "varying params", one ranking.

A sweep record is written to a real sqlite MLflow store the way the sweep callback writes
it (a parent run; one child run per trial with `mlflow.parentRunId`, the trial tags, its
resolved config from `resolved_trial_config` and one `log_report` per epoch), no Ray.

The record is built so that the two rules `compare` and `report` used before disagreed:
`lr` and `frame_width` are spelled differently (`1e-3` / `0.001`, `16` / `[16]`) but equal,
and only the failed trial has another `batch_size`. The old `compare` listed batch_size,
frame_width, lr and non_linearity; the old `report` frame_width, lr and non_linearity.
Both now list batch_size and non_linearity.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
import yaml

from sepconc.sweep.reproduce import resolved_trial_config
from sepconc.tracking.read import (
    Trial,
    best_trial,
    parse_param,
    rank,
    score,
    sweep_trials,
    varying_params,
)
from sepconc.tracking.store import (
    PARENT,
    TAG_KIND,
    TAG_REASON,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL,
    default_tracking_uri,
    experiment_id,
    log_params,
    log_report,
    open_client,
)

NAME = "rules"
BASE = {"dataset": "synthetic", "arch": "analysis", "frame_kernel_size": [4],
        "frame_stride": [4], "epochs": 2, "batch_size": 100}  # fmt: skip
# trial id -> (swept params, lr as logged, val_acc1 per epoch, status)
TRIALS = {"t0": ({"non_linearity": "relu", "frame_width": [16]}, "0.001", [50.0, 60.0],
                 "completed"),
          "t1": ({"non_linearity": "softshrink", "frame_width": 16}, "1e-3", [55.0, 65.0],
                 "completed"),
          "t2": ({"non_linearity": "relu", "frame_width": [16], "batch_size": 50}, "1.0e-03",
                 [20.0], "failed")}  # fmt: skip
VARYING = ["batch_size", "non_linearity"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs folder of the `TRIALS` sweep (sweep.json, sweep.yaml, mlflow.db)."""
    runs = tmp_path_factory.mktemp("read") / "runs"
    uri = default_tracking_uri(runs)
    client = open_client(uri)
    exp = experiment_id(client, NAME, runs)
    parent = client.create_run(exp, run_name=NAME, tags={TAG_KIND: "sweep", TAG_SWEEP: NAME})
    for trial_id, (params, lr, accs, status) in TRIALS.items():
        tags = {PARENT: parent.info.run_id, TAG_KIND: "trial", TAG_SWEEP: NAME,
                TAG_TRIAL: trial_id, TAG_STATUS: "running"}  # fmt: skip
        run = client.create_run(exp, run_name=trial_id, tags=tags).info.run_id
        config = resolved_trial_config(BASE, params, workers=1, gpus_per_worker=0)
        config["out"] = str(runs / "trials" / trial_id)  # per-trial bookkeeping differs
        log_params(client, run, {k: v for k, v in config.items() if k != "lr"})
        client.log_param(run, "lr", lr)  # as an older writer spelled it
        for epoch, acc in enumerate(accs, 1):
            log_report(client, run, {"val_acc1": acc, "best_val_acc1": max(accs[:epoch]),
                                     "epoch": epoch}, step=epoch)  # fmt: skip
        client.set_tag(run, TAG_STATUS, status)
        if status == "failed":
            client.set_tag(run, TAG_REASON, "loss became nan at epoch 2")
        client.set_terminated(run, "FAILED" if status == "failed" else "FINISHED")
    folder = runs / "sweeps" / NAME
    folder.mkdir(parents=True)
    spec = {"name": NAME, "base": BASE, "search": {"non_linearity": {"grid": ["relu"]}},
            "metric": "val_acc1", "mode": "max"}  # fmt: skip
    (folder / "sweep.yaml").write_text(yaml.safe_dump(spec))
    meta = {"name": NAME, "tracking_uri": uri, "experiment_id": exp,
            "parent_run_id": parent.info.run_id, "storage": str(runs), "overrides": [],
            "address": None}  # fmt: skip
    (folder / "sweep.json").write_text(json.dumps(meta))
    return runs


def test_compare_and_report_list_the_same_varying_params(runs, capsys):
    from sepconc.cli import main
    from sepconc.report.collect import collect_sweep
    from sepconc.report.summary import format_summary

    _, _, trials = sweep_trials(NAME, runs)
    assert varying_params(trials) == VARYING

    assert main(["compare", NAME, "--runs-dir", str(runs), "--csv"]) == 0
    header = next(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert header[header.index("rung") + 1 : header.index("val_acc1_at_epoch2")] == VARYING

    record = collect_sweep(NAME, str(runs))
    assert record.varying == VARYING
    config_line = next(line for line in format_summary(record).splitlines()
                       if line.startswith("  config: "))  # fmt: skip
    assert [kv.split("=")[0] for kv in config_line[10:].split(", ")] == VARYING


def test_best_status_and_report_rank_alike(runs, capsys):
    from sepconc.cli import main
    from sepconc.report.collect import collect_sweep
    from sepconc.sweep.results import best_trials, sweep_table

    assert [r["trial"] for r in sweep_table(NAME, runs)] == ["t1", "t0", "t2"]
    assert best_trials(NAME, 1, runs)[0]["trial"] == "t1"
    assert collect_sweep(NAME, str(runs)).best("val_acc1").name == "t1"
    assert main(["best", NAME, "--runs-dir", str(runs)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("t1 ")


def test_params_compare_as_the_config_types():
    assert parse_param("lr", "1e-3") == parse_param("lr", "0.001") == parse_param("lr", "1.0e-03")
    assert parse_param("lr", "1") == parse_param("lr", "1.0") == 1.0
    assert parse_param("frame_width", "16") == parse_param("frame_width", "[16]") == (16,)
    assert parse_param("frame_width", "[16, 32]") != parse_param("frame_width", "[16]")
    assert parse_param("non_linearity", "'1e-3'") == "1e-3"  # quoted text stays text
    assert parse_param("not_a_field", "[1, 2]") == (1, 2)


def _trial(name, params, status="completed", last=None, history=None):
    return Trial(name, name, status, params, last or {}, history=history or {})


def test_varying_rule():
    a = _trial("a", {"lr": "0.1", "seed": "0", "out": "runs/a", "num_workers": "1"})
    b = _trial("b", {"lr": "1e-1", "seed": "1", "out": "runs/b", "num_workers": "2"})
    assert varying_params([a, b]) == ["seed"]  # a swept seed varies; bookkeeping never does
    c = _trial("c", {"lr": "0.1", "seed": "0", "extra": "x"})
    assert varying_params([a, c]) == ["extra"]  # absent differs from any value
    assert varying_params([a, _trial("d", {})]) == []  # a run without params is skipped
    failed = _trial("e", {"lr": "0.2", "seed": "0"}, status="failed")
    assert varying_params([a, failed]) == ["lr"]  # failed trials count
    # a trial that failed before its config resolved logged only what it was given: what it
    # lacks is unknown, not a different value (it made every field vary)
    full = {"lr": "0.1", "seed": "0", "frame_width": "[16]", "non_linearity": "relu"}
    partial = _trial("f", {"lr": "0.2", "seed": "0"}, status="failed")
    assert varying_params([_trial("g", full), _trial("h", {**full, "lr": "0.3"}), partial]) == [
        "lr"
    ]
    assert varying_params([_trial("g", full), _trial("h", {**full, "seed": "1"}), partial]) == [
        "lr", "seed"]  # fmt: skip


def test_ranking_follows_the_mode_and_breaks_ties():
    low = _trial("low", {}, last={"val_loss": 0.3}, history={"val_loss": [(1, 0.1), (2, 0.3)]})
    high = _trial("high", {}, last={"val_loss": 0.2}, history={"val_loss": [(1, 0.2)]})
    assert score(low, "val_loss", "min") == 0.1 and score(low, "val_loss", "max") == 0.3
    assert [t.name for t in rank([high, low], "val_loss", "min")] == ["low", "high"]
    tie_a = _trial("a", {}, last={"val_acc1": 50.0, "best_val_acc1": 70.0})
    tie_b = _trial("b", {}, last={"val_acc1": 60.0, "best_val_acc1": 70.0})
    none = _trial("c", {}, last={})
    assert [t.name for t in rank([none, tie_a, tie_b], "val_acc1")] == ["b", "a", "c"]
    tie_b.status = "failed"
    assert best_trial([tie_b, tie_a, none], "val_acc1").name == "a"
    assert best_trial([none], "val_acc1") is None
