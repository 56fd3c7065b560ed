"""Honest comparisons in `report` and `compare`: trials are read at epochs they all reached.

A hand-made sweep record (a real sqlite MLflow store, no training) where ASHA-style stops
make "final" values misleading: two relu trials and one softshrink trial complete 4 epochs,
one softshrink trial is stopped after epoch 1. Averaging final values would say relu beats
softshrink by 12 points (89 vs 77) although the best trial is softshrink; at epoch 1, the
last epoch all four reached, softshrink leads by 6 points (63.5 vs 57.5).
"""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import yaml

from sepconc.report.collect import best_per_group, collect_sweep
from sepconc.report.figures import _bands
from sepconc.report.summary import best_trial, effect_sizes, format_summary
from sepconc.sweep.results import sweep_table
from sepconc.tracking.epochs import common_epoch, comparison_epochs, value_at
from sepconc.tracking.store import (
    PARENT,
    TAG_KIND,
    TAG_RUNG,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL,
    default_tracking_uri,
    experiment_id,
    log_params,
    log_report,
    open_client,
)

NAME = "honest"
BASE = {"dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 1, "epochs": 4}
# trial id -> (non_linearity, frame_width, val_acc1 per epoch from 1, stopped at a rung?)
TRIALS = {"t0": ("relu", "[16]", [60.0, 70.0, 80.0, 90.0], False),
          "t1": ("relu", "[32]", [55.0, 68.0, 78.0, 88.0], False),
          "t2": ("softshrink", "[16]", [62.0], True),
          "t3": ("softshrink", "[32]", [65.0, 75.0, 85.0, 92.0], False)}  # fmt: skip


def make_sweep(runs, trials: dict = TRIALS) -> None:
    """Write `trials` as a sweep's child runs with per-epoch metrics and layer statistics."""
    uri = default_tracking_uri(runs)
    client = open_client(uri)
    exp = experiment_id(client, NAME, runs)
    parent = client.create_run(exp, tags={TAG_KIND: "sweep", TAG_SWEEP: NAME}).info.run_id
    for trial_id, (nonlin, width, accs, stopped) in trials.items():
        tags = {PARENT: parent, TAG_KIND: "trial", TAG_SWEEP: NAME, TAG_TRIAL: trial_id,
                TAG_STATUS: "early_stopped" if stopped else "completed"}  # fmt: skip
        if stopped:
            tags[TAG_RUNG] = str(len(accs))
        run = client.create_run(exp, run_name=trial_id, tags=tags).info.run_id
        log_params(client, run, {**BASE, "non_linearity": nonlin, "frame_width": width})
        for epoch, acc in enumerate(accs, 1):
            stats = {f"{layer}/{k}": v for layer in ("input", "block1") for k, v in
                     {"within_rel": 0.5, "between_rel": 0.5, "fisher_k16": acc / 10,
                      "ncm_acc": acc, "ncm_acc_se": 1.5, "fisher_k16_se": 0.2}.items()}  # fmt: skip
            log_report(client, run, {"val_acc1": acc, "best_val_acc1": max(accs[:epoch]),
                                     "epoch": epoch, **stats}, step=epoch)  # fmt: skip
        client.set_terminated(run, "FINISHED")
    folder = runs / "sweeps" / NAME
    folder.mkdir(parents=True)
    spec = {"name": NAME, "base": BASE, "search": {"non_linearity": {"grid": ["relu"]}},
            "metric": "val_acc1", "mode": "max"}  # fmt: skip
    (folder / "sweep.yaml").write_text(yaml.safe_dump(spec))
    meta = {"name": NAME, "tracking_uri": uri, "experiment_id": exp, "parent_run_id": parent,
            "storage": str(runs), "overrides": [], "address": None}  # fmt: skip
    (folder / "sweep.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs folder of the `TRIALS` sweep (read only by the tests)."""
    folder = tmp_path_factory.mktemp("honest") / "runs"
    make_sweep(folder)
    return folder


def test_epoch_rules():
    h1, h4, h2 = [(1, 5.0)], [(s, float(s)) for s in (1, 2, 3, 4)], [(2, 1.0), (1, 0.5)]
    assert common_epoch([h1, h4, []]) == 1 and common_epoch([h4, h2]) == 2
    assert common_epoch([[(2, 1.0)], [(1, 1.0)]]) is None
    assert value_at(h2, 1) == 0.5 and value_at(h1, 3) != value_at(h1, 3)  # NaN
    assert comparison_epochs([h1, h4, h4]) == [1, 4]
    assert comparison_epochs([h1, h4]) == [1]  # epoch 4: one trial, nothing to compare
    many = [[(s, 0.0) for s in range(1, k + 1)] for k in (1, 2, 2, 3, 3, 5, 5, 9, 9)]
    assert comparison_epochs(many) == [1, 3, 9] and comparison_epochs(many, 5) == [1, 2, 3, 5, 9]


def test_effects_compare_every_trial_at_the_common_epoch(runs):
    record = collect_sweep(NAME, str(runs))
    assert record.common_epoch("val_acc1") == 1
    assert record.comparison_epochs("val_acc1") == [1, 4]
    effect = {e.param: e for e in effect_sizes(record)}["non_linearity"]
    assert effect.epoch == 1
    assert effect.rows == [("relu", 57.5, 2), ("softshrink", 63.5, 2)]  # not 89 vs 77
    late = {e.param: e for e in effect_sizes(record, epoch=4)}["non_linearity"]
    assert late.rows == [("relu", 89.0, 2), ("softshrink", 92.0, 1)]  # t2 never reached 4
    assert best_trial(record).name == "t3"

    summary = format_summary(record)
    at1 = summary[summary.index("at epoch 1 ") : summary.index("at epoch 4 ")]
    assert "at epoch 1 (the last epoch all 4 trials reached)" in at1
    assert "non_linearity: spread 6.00 points" in at1
    assert "relu: 57.50% (n=2)" in at1 and "softshrink: 63.50% (n=2)" in at1
    assert "89.00%" not in at1 and "77.00%" not in summary
    assert "at epoch 4 (only the 3 trials that reached it" in summary
    assert "ncm_acc 92.00% +- 1.5%" in summary  # percent, like val_acc1, with its SE


def test_best_per_group_reads_one_epoch_all_groups_reached(runs, tmp_path):
    record = collect_sweep(NAME, str(runs))
    epoch, groups = best_per_group(record, metric="val_acc1")
    assert epoch == 4 and {g: t.name for g, t in groups.items()} == {
        "relu": "t0",
        "softshrink": "t3",
    }
    assert groups["relu"].history["block1/fisher_k16"][-1] == (4, 9.0)  # fetched for the figure

    only_early = {k: v for k, v in TRIALS.items() if k != "t3"}
    make_sweep(tmp_path / "early", only_early)
    epoch, groups = best_per_group(collect_sweep(NAME, str(tmp_path / "early")))
    assert epoch == 1 and {g: t.name for g, t in groups.items()} == {
        "relu": "t0",
        "softshrink": "t2",
    }


def test_parallel_coordinates_keep_two_valued_lines_apart(runs):
    record = collect_sweep(NAME, str(runs))
    trials = sorted(record.compared("val_acc1"), key=lambda t: t.at("val_acc1", 1))
    for param in ("non_linearity", "frame_width"):
        heights = _bands(trials, param)
        assert len(set(heights.values())) == len(trials), (param, heights)
    relu = [_bands(trials, "non_linearity")[t.run_id] for t in trials if t.name in ("t0", "t1")]
    assert all(-0.2 < h < 0.2 for h in relu)  # inside relu's band, apart from softshrink's


def test_compare_shows_final_and_common_epoch_metric(runs, capsys):
    rows = {r["trial"]: r for r in sweep_table(NAME, runs)}
    assert rows["t2"]["val_acc1_at_epoch1"] == 62.0 and rows["t2"]["final_val_acc1"] == 62.0
    assert rows["t0"]["val_acc1_at_epoch1"] == 60.0 and rows["t0"]["final_val_acc1"] == 90.0
    assert rows["t0"]["block1_ncm_acc"] == 90.0  # percent, beside the accuracies
    assert rows["t0"]["block1_fisher_k16"] == 9.0 and rows["t0"]["block1_ncm_acc_se"] == 1.5

    from sepconc.cli import main

    assert main(["compare", NAME, "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "val_acc1_at_epoch1: val_acc1 at epoch 1, the last epoch every trial reached" in out
    assert main(["compare", NAME, "--runs-dir", str(runs), "--csv"]) == 0
    listed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(listed) == 4 and "val_acc1_at_epoch1" in listed[0]


def test_compare_at_epoch_shows_every_trial_there(runs, capsys):
    """`compare --at-epoch E` (issue 13.8): every trial's metric at E; nan where it stopped
    before E; an epoch no trial reached is refused in one line."""
    from sepconc.cli import main

    rows = {r["trial"]: r for r in sweep_table(NAME, runs, at_epoch=3)}
    assert rows["t0"]["val_acc1_at_epoch3"] == 80.0 and rows["t3"]["val_acc1_at_epoch3"] == 85.0
    assert math.isnan(rows["t2"]["val_acc1_at_epoch3"])  # ASHA stopped it at epoch 1
    assert main(["compare", NAME, "--runs-dir", str(runs), "--at-epoch", "3"]) == 0
    assert "val_acc1_at_epoch3: val_acc1 at epoch 3 (--at-epoch)" in capsys.readouterr().out
    assert main(["compare", NAME, "--runs-dir", str(runs), "--at-epoch", "9"]) == 2
    assert (
        "--at-epoch 9: no trial logged val_acc1 at epoch 9 (the furthest any reached is 4)"
        in capsys.readouterr().err
    )


def test_report_figures_from_the_record(runs):
    from sepconc.report import sweep_report

    report = sweep_report(NAME, runs, log_artifacts=False)
    assert [p.name for p in report.files] == ["metric_vs_params.png", "learning_curves.png",
                                              "layer_stats.png", "parallel_coordinates.png",
                                              "importance.png", "summary.txt"]  # fmt: skip
    assert all(p.stat().st_size > 10_000 for p in report.files[:-1])


def test_layer_statistics_read_at_one_epoch_every_chosen_trial_logged():
    from sepconc.report.layer_figures import stats_epoch
    from sepconc.tracking.read import Trial

    def trial(stat_epochs):
        history = {"block1/within_rel": [(e, 0.5) for e in stat_epochs]}
        return Trial("r", "t", "completed", {}, {"block1/within_rel": 0.5}, history=history)

    # statistics every 2 epochs in one trial, every epoch in the other; chosen at epoch 3
    assert stats_epoch([trial([2, 4]), trial([1, 2, 3, 4])], 3) == 2
    assert stats_epoch([trial([2, 4]), trial([1, 3])], 4) is None


def test_sampled_values_read_short_and_get_no_per_value_mean():
    from sepconc.report.collect import is_continuous, short_value

    lrs = ["0.09798313502098382", "0.0103570072421", "0.0194667575661", "0.017078959", "0.05"]
    assert [short_value(v) for v in lrs[:2]] == ["0.098", "0.0104"]
    assert short_value("relu") == "relu" and short_value("[16, 32]") == "[16, 32]"
    assert is_continuous(lrs) and not is_continuous(lrs[:4]) and not is_continuous(["a"] * 5)
