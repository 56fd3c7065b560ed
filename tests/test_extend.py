"""`--extend` without Ray: which trials an extension plans and which it reuses.

Proves: a finished trial is recognised in the new file's plan by its resolved config (a
per-block value logged padded, `[16]`, is the file's `16`; a float logged as text is the
same float), so it is left out and listed as reused; a trial whose base setting changed
is not the same configuration; the extension's objectives are a list either way.
"""

from __future__ import annotations

from sepconc.sweep.extend import as_options, objectives, remaining_trials, reused_lines
from sepconc.sweep.spec import parse_sweep

BASE = {"dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 1, "epochs": 1,
        "batch_size": 100, "P_proj_size": 8, "workers": 0, "stats_every": 0}  # fmt: skip


def spec(**base):
    return parse_sweep({"name": "t", "base": {**BASE, **base},
                        "search": {"lr": {"grid": [0.01, 0.1]},
                                   "frame_width": {"grid": [16, 32]}}})  # fmt: skip


def test_finished_configurations_are_reused_not_planned():
    previous = [({"lr": 0.01, "frame_width": [16]}, {"val_acc1": 90.0}),
                ({"lr": 0.1, "frame_width": [32]}, {"val_acc1": 80.0})]  # fmt: skip
    planned = remaining_trials(spec(), previous)
    assert sorted((p["lr"], p["frame_width"]) for p in planned) == [(0.01, 32), (0.1, 16)]
    assert reused_lines(spec(), previous) == ["  lr=0.01 frame_width=[16]: val_acc1 90",
                                              "  lr=0.1 frame_width=[32]: val_acc1 80"]  # fmt: skip
    changed = [({"lr": 0.01, "frame_width": [16], "epochs": 1}, {})]
    assert len(remaining_trials(spec(epochs=2), changed)) == 4  # 2 epochs: not the same trial
    assert objectives(spec()) == ["val_acc1"]


def test_logged_values_become_the_files_options():
    """A searcher seeded with finished trials finds their values among its choices."""
    rule = parse_sweep({"name": "t", "base": {**BASE, "n_blocks": 3, "P_proj_size": [8]},
                        "search": {"frame_width": {"start": [8, 16], "factor": 2},
                                   "lr": {"grid": [0.1]}}})  # fmt: skip
    assert as_options(rule, {"frame_width": [16, 32, 64], "lr": 0.1}) == {
        "frame_width": "16*2^block", "lr": 0.1}  # fmt: skip
    assert as_options(spec(), {"frame_width": [32], "lr": 0.1}) == {"frame_width": 32, "lr": 0.1}


def test_extension_budget_is_the_files_and_counts_what_was_spent(tmp_path):
    """`--extend`: the file's budget with the sweep's spending; a spent one refused."""
    import pytest

    from sepconc.errors import UserError
    from sepconc.sweep.budget import extend_state, parse_duration, write_state

    write_state(tmp_path, {"trials": 2}, {"seconds": 30.0, "gpu_hours": 0.0,
                                          "started": ["a", "b"], "ended": "2 trials"})  # fmt: skip
    with pytest.raises(UserError, match=r"^--extend: sweep 't' has spent its budget 2 trials "
                                        r"\(30 s, 0.00 GPU-hours, 2 trials started\); raise "
                                        r"budget.trials in the sweep file to add trials$"):  # fmt: skip
        extend_state(tmp_path, {"trials": 2}, "t")
    state = extend_state(tmp_path, {"trials": 3}, "t")
    assert state["budget"] == {"trials": 3}
    assert state["spent"]["started"] == ["a", "b"] and state["spent"]["ended"] is None
    assert extend_state(tmp_path, {}, "t")["budget"] == {}  # no budget: nothing to refuse
    with pytest.raises(UserError, match=r"budget time 20s .* raise budget.time in"):
        extend_state(tmp_path, {"time": "20s", "time_s": parse_duration("20s")}, "t")
