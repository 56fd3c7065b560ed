"""Real search sweeps: `launch.py sweep | validate | best | report` with embedded Ray and sqlite.

Proves, on `synthetic` (1 epoch, tiny frames, one trial at a time):
- a two-objective tpe sweep (`metric: [val_acc1, params]`) with a seed suggests the same
  configurations when run again; every trial run has `params` and `flops` logged once, at
  step 0; no trial breaks the constraint (`params <= 2600` refuses `frame_width: [64]`);
  `best` prints exactly the brute-force Pareto front of the logged metrics, in order of
  the first objective, `best --pick 2 --out` exports that row's config, and `report`
  draws `pareto.png`;
- a random/grid sweep over arch x frame_width x P_proj_size builds 4 distinct models from 8
  configurations (options that do not apply to an arch dropped, identical trials merged)
  and a flops constraint refuses the 2 analysis ones before launch: `validate` says so and
  the sweep runs exactly the 2 remaining trials.
"""

from __future__ import annotations

import pytest
import yaml

from tests.test_search import brute_force_front
from tests.test_sweep_ray import check_ok, client_for, launch, parse_table, sweep_runs

pytestmark = [pytest.mark.slow, pytest.mark.ray]

BASE = {"dataset": "synthetic", "arch": "analysis", "frame_width": [16], "epochs": 1,
        "batch_size": 100, "lr": 0.01, "workers": 0, "seed": 0, "device": "cpu",
        "stats_every": 0}  # fmt: skip
ONE_AT_A_TIME = {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1}


def write(tmp_path, name: str, **spec) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": BASE, "resources": ONE_AT_A_TIME,
                                    **spec}))  # fmt: skip
    return str(path)


def trials_in_order(client, name: str) -> list:
    _, children = sweep_runs(client, name)
    return sorted(children, key=lambda r: r.info.start_time)


def test_tpe_two_objectives_reproducible_front_and_constraint(tmp_path):
    runs = tmp_path / "runs"
    path = write(tmp_path, "tpe", samples=3, metric=["val_acc1", "params"], mode=["max", "min"],
                 search={"frame_width": {"grid": [[8], [16], [64]]},
                         "lr": {"loguniform": [0.0001, 0.1]}},
                 searcher={"type": "tpe", "seed": 5, "startup_trials": 2},
                 constraints={"params": {"max": 2600}})  # fmt: skip
    check_ok(launch("sweep", path, "--runs-dir", str(runs)))
    check_ok(launch("sweep", path, "--name", "tpe-again", "--runs-dir", str(runs)))
    client = client_for(runs)
    first, again = trials_in_order(client, "tpe"), trials_in_order(client, "tpe-again")
    swept = [{k: r.data.params[k] for k in ("frame_width", "lr")} for r in first]
    assert len(first) == 3 and swept == [{k: r.data.params[k] for k in ("frame_width", "lr")}
                                         for r in again]  # fmt: skip
    points = []
    for run in first:
        for key in ("params", "flops"):  # once, before the first epoch
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0]
        assert run.data.metrics["params"] <= 2600 and run.data.params["frame_width"] != "[64]"
        points.append([run.data.metrics["best_val_acc1"], run.data.metrics["params"]])
    expected = {first[i].data.tags["sepconc.trial_id"] for i in brute_force_front(points,
                                                                                  ["max", "min"])}  # fmt: skip
    out = check_ok(launch("best", "tpe", "--runs-dir", str(runs)))
    rows = parse_table(out.split("\n", 1)[1])
    assert {r["trial"] for r in rows} == expected
    accs = [float(r["val_acc1"]) for r in rows]
    assert accs == sorted(accs, reverse=True) and [r["pick"] for r in rows] == [
        str(i) for i in range(1, len(rows) + 1)]  # fmt: skip
    if len(rows) > 1:
        chosen = tmp_path / "pick2.yaml"
        check_ok(
            launch("best", "tpe", "--pick", "2", "--out", str(chosen), "--runs-dir", str(runs))
        )
        picked = next(r for r in first if r.data.tags["sepconc.trial_id"] == rows[1]["trial"])
        assert yaml.safe_load(chosen.read_text())["lr"] == pytest.approx(
            float(picked.data.params["lr"]))  # fmt: skip
    from sepconc.report import sweep_report

    report = sweep_report("tpe", runs, log_artifacts=False)
    assert (report.out / "pareto.png").stat().st_size > 0


def test_grid_drops_merges_and_refuses_before_launch(tmp_path):
    runs = tmp_path / "runs"
    path = write(tmp_path, "grid", constraints={"flops": {"max": 10000}},
                 search={"arch": {"grid": ["analysis", "scatnet"]},
                         "frame_width": {"grid": [[8], [16]]},
                         "P_proj_size": {"grid": [[4], [8]]}})  # fmt: skip
    shown = check_ok(launch("validate", path, "--no-build"))
    assert "8 configurations (grid x samples), 4 merged as identical, 2 refused" in shown
    assert "-> 2 distinct trials" in shown and "sweep grid: 2 distinct trials" in shown
    check_ok(launch("sweep", path, "--runs-dir", str(runs)))
    children = trials_in_order(client_for(runs), "grid")
    assert sorted(r.data.params["P_proj_size"] for r in children) == ["[4]", "[8]"]
    assert {r.data.params["arch"] for r in children} == {"scatnet"}
    assert all(r.data.metrics["flops"] <= 10000 for r in children)
