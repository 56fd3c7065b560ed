"""Parameter importance (`sepconc.report.importance`) on a synthetic set of trials (no MLflow).

Proves: the key that drives an objective gets most of its importance and the key that
drives another objective most of that one's; trials are rung-matched (read at the last
epoch all finished trials reached, so a trial ASHA stopped early is compared at its epoch,
not against others' later epochs); static objectives (`params`, logged at step 0) are read
as logged; failed trials are left out; too few trials give a note, not an error. (The
figure is drawn by the report tests, tests/test_report*.py.)
"""

from __future__ import annotations

import random

from sepconc.report.importance import format_lines, importances
from sepconc.tracking.read import Trial


def make_trials(n: int = 24) -> list[Trial]:
    """val_acc1 driven by lr (its value at epoch 1; later epochs are driven by `width`,
    which rung-matching must ignore), params driven by `width` alone."""
    rng = random.Random(0)
    trials = []
    for i in range(n):
        lr, width, act = 10 ** rng.uniform(-3, -1), rng.choice([16, 32, 64]), rng.choice("ab")
        acc1 = 90 - 20 * abs(lr - 0.01) / 0.1 + rng.gauss(0, 0.05)
        stopped = i % 2 == 1  # ASHA stopped every other trial at epoch 1
        history = {"val_acc1": [(1, acc1)] + ([] if stopped else [(2, width * 1.0)]),
                   "params": [(0, width * 100.0)]}  # fmt: skip
        trials.append(Trial(run_id=f"r{i}", name=f"t{i}",
                            status="early_stopped" if stopped else "completed",
                            params={"lr": repr(lr), "frame_width": str(width),
                                    "non_linearity": act},
                            last={"val_acc1": history["val_acc1"][-1][1],
                                  "params": width * 100.0},
                            history=history))  # fmt: skip
    trials.append(Trial("rf", "failed", "failed", {"lr": "0.5", "frame_width": "8",
                                                   "non_linearity": "a"}, {}))  # fmt: skip
    return trials


def test_importance_rung_matched_per_objective():
    keys = ["frame_width", "lr", "non_linearity"]
    result = importances(make_trials(), keys, ["val_acc1", "params"])
    assert result.epoch == 1 and result.trials == 24  # the failed one is out
    acc = result.table
    assert acc["lr"]["val_acc1"] > 0.6 > acc["frame_width"]["val_acc1"], acc
    assert acc["frame_width"]["params"] > 0.9, acc
    assert abs(sum(row["params"] for row in acc.values()) - 1) < 1e-6
    lines = format_lines(result)
    assert "24 finished trials compared at epoch 1" in lines[0]
    assert lines[1].split() == ["val_acc1", "params"] and lines[2].split()[0] == "lr"


def test_importance_needs_trials():
    result = importances(make_trials(2)[:2], ["lr"], ["val_acc1"])
    assert not result.table and "at least 3 finished trials" in format_lines(result)[0]
