"""Search without Ray: Pareto front, model cost, planned trials, the Optuna searcher.

Proves: the Pareto front equals a brute-force front (every pair compared) on random
numbers with ties and missing values, ordered by the first objective; `params` and
`flops` from the plan equal the built model's parameter count and torch's FLOP counter;
`planned_trials` drops options that do not apply to a trial's model, merges the trials
that become identical and refuses constraint violators (and `validate` counts them); a
seeded tpe searcher suggests the same configurations twice, never suggests one that
breaks a constraint (Optuna is told it is infeasible) and starts from previous results.
"""

from __future__ import annotations

import math
import random

import pytest

from sepconc.sweep.pareto import pareto_front
from sepconc.sweep.space import plan_trials, trial_count
from sepconc.sweep.spec import parse_sweep

BASE = {"dataset": "synthetic", "arch": "analysis", "frame_width": [16], "epochs": 2,
        "batch_size": 100, "workers": 0}  # fmt: skip


def brute_force_front(points, modes) -> set[int]:
    """Indices no other point beats: >= on every objective (after flipping min) and > on one."""

    def better_or_equal(a, b):
        return all((x >= y) if m == "max" else (x <= y) for x, y, m in zip(a, b, modes))

    ok = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    return {i for i in ok if not any(better_or_equal(points[j], points[i]) and points[j] != points[i]
                                     for j in ok)}  # fmt: skip


@pytest.mark.parametrize("modes", [["max", "min"], ["min", "min"], ["max", "min", "max"]])
def test_pareto_front_is_the_brute_force_front(modes):
    rng = random.Random(len(modes) + (modes[0] == "max"))
    for _ in range(40):
        points = [[float(rng.randint(0, 6)) for _ in modes] for _ in range(rng.randint(1, 25))]
        points[0][-1] = math.nan  # a trial without a value is never on the front
        front = pareto_front(points, modes)
        assert set(front) == brute_force_front(points, modes)
        firsts = [points[i][0] * (1 if modes[0] == "min" else -1) for i in front]
        assert firsts == sorted(firsts)  # in order of the first objective, best first


def test_cost_is_the_built_models_parameters_and_counted_flops():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sepconc.config import Config
    from sepconc.cost import model_cost
    from sepconc.model import build_model

    for flat in ({**BASE, "frame_width": [64]},
                 {"dataset": "synthetic", "arch": "scatnetblock", "n_blocks": 1, "P_proj_size": [16],
                  "classifier_type": "mlp", "nb_hidden_units": 16}):  # fmt: skip
        config = Config.from_flat(flat)
        net = build_model(config).eval()
        plan = net.plans[0]
        cost = model_cost(config)
        assert cost["params"] == sum(p.numel() for p in net.parameters() if p.requires_grad)
        with net.frontend_skipped(plan.frontend != "identity"), FlopCounterMode(display=False) as m:
            net(torch.randn(1, plan.frontend_channels, plan.frontend_size, plan.frontend_size))
        assert cost["flops"] == m.get_total_flops() > 0


def grid_sweep(**changes):
    raw = {"name": "t", "base": dict(BASE), "search": {
        "arch": {"grid": ["analysis", "scatnet"]},
        "frame_width": {"grid": [[8], [16]]},
        "P_proj_size": {"grid": [[4], [8]]}}}  # fmt: skip
    raw.update(changes)
    return parse_sweep(raw)


def test_planned_trials_drop_merge_and_refuse():
    from sepconc.sweep.validate import search_lines

    plan = plan_trials(grid_sweep())
    # analysis has no projection, scatnet no frame: 8 configurations build 4 models
    assert plan.drawn == 8 and plan.merged == 4 and not plan.refused
    assert plan.dropped == {"P_proj_size": 4, "frame_width": 4}
    assert plan.trials == [
        {"arch": "analysis", "frame_width": [8]}, {"arch": "analysis", "frame_width": [16]},
        {"arch": "scatnet", "P_proj_size": [4]}, {"arch": "scatnet", "P_proj_size": [8]}]  # fmt: skip
    limited = grid_sweep(constraints={"flops": {"max": 10000}})  # analysis: 13,312 and 21,504
    plan = plan_trials(limited)
    assert [t["arch"] for t in plan.trials] == ["scatnet", "scatnet"]
    assert len(plan.refused) == 2 and all("> max 10000" in b[0] for _, b in plan.refused)
    assert trial_count(limited) == 2
    lines = "\n".join(search_lines(limited))
    assert "8 configurations (grid x samples), 4 merged as identical, 2 refused" in lines
    assert (
        "-> 2 distinct trials" in lines
        and "refused: arch=analysis frame_width=[8]: flops 13,312 > max 10000" in lines
    )


def tpe_sweep(seed=3, **changes):
    raw = {"name": "t", "base": dict(BASE), "samples": 8,
           "search": {"frame_width": {"grid": [[8], [16], [64]]}, "lr": {"loguniform": [1e-3, 0.1]}},
           "metric": ["val_acc1", "params"], "mode": ["max", "min"],
           "searcher": {"type": "tpe", "seed": seed, "startup_trials": 2}}  # fmt: skip
    raw.update(changes)
    return parse_sweep(raw)


def suggestions(spec, count, previous=()):
    from sepconc.sweep.search import build_search_alg

    searcher = build_search_alg(spec, previous)
    out = []
    for i in range(count):
        params = searcher.suggest(f"t{i}")["params"]
        out.append(params)
        cost = 1000 + 100 * len(out)
        searcher.on_trial_complete(f"t{i}", {"val_acc1": 50.0 + params["lr"] * 100, "params": cost})
    return out, searcher


def test_tpe_is_reproducible_with_a_seed_and_respects_constraints():
    first, _ = suggestions(tpe_sweep(), 5)
    again, _ = suggestions(tpe_sweep(), 5)
    assert first == again
    assert suggestions(tpe_sweep(seed=4), 5)[0] != first
    limited = tpe_sweep(constraints={"params": {"max": 2600}})  # frame_width [64]: 2,636
    found, searcher = suggestions(limited, 6)
    assert all(p["frame_width"] != [64] for p in found)
    refused = [t for t in searcher._ot_study.trials if any(v > 0 for v in t.constraints.values())]
    assert searcher.infeasible == len(refused) > 0  # told to Optuna, never suggested
    assert all(t.values[1] == 2636 for t in refused)  # with their real cost
    nsga2 = {"type": "nsga2", "seed": 2, "startup_trials": 4}
    found = suggestions(tpe_sweep(searcher=nsga2, constraints={"params": {"max": 2600}}), 6)[0]
    assert (
        found == suggestions(tpe_sweep(searcher=nsga2, constraints={"params": {"max": 2600}}), 6)[0]
    )
    assert all(p["frame_width"] != [64] for p in found)


def test_searcher_starts_from_previous_results():
    previous = [
        ({"frame_width": [16], "lr": 0.01}, {"val_acc1": 90.0, "params": 2828}),
        ({"frame_width": [8], "lr": 0.02}, {"val_acc1": 80.0, "params": 2700}),
    ]
    _, searcher = suggestions(tpe_sweep(), 1, previous)
    trials = searcher._ot_study.trials
    assert [t.values for t in trials[:2]] == [[90.0, 2828], [80.0, 2700]]
    assert trials[0].params == {"frame_width": "[16]", "lr": 0.01}  # a list option: its text


def suggest_all(searcher, most: int) -> list[dict]:
    """The params of up to `most` suggestions of `searcher`, each completed with the same
    result, until it says FINISHED."""
    found = []
    for i in range(most):
        suggested = searcher.suggest(f"t{i}")
        if suggested == searcher.FINISHED:
            break
        found.append(suggested["params"])
        searcher.on_trial_complete(f"t{i}", {"val_acc1": 50.0, "params": 1000})
    return found


def test_tpe_never_suggests_the_same_trial_twice():
    from sepconc.sweep.search import build_search_alg

    for search, distinct in (({"frame_width": {"grid": [[8], [16]]}}, 2),
                             # scatnet has no frame: both options build one model
                             ({"arch": {"grid": ["scatnet"]}, "frame_width": {"grid": [[8], [16]]}}, 1)):  # fmt: skip
        found = suggest_all(build_search_alg(tpe_sweep(search=search)), 4)
        assert len(found) == distinct and all(found.count(p) == 1 for p in found)


def test_validate_marks_the_configurations_it_merges():
    """`validate`'s list: a configuration that builds the same trial as an earlier one says
    so (the count line says 4 merged; the list shows which)."""
    from sepconc.sweep.validate import summary_lines, validate_sweep

    spec = grid_sweep()
    lines = summary_lines(spec, validate_sweep(spec, build=False))
    merged = [line.strip() for line in lines if line.endswith("(merged)")]
    assert merged == [
        "arch=analysis frame_width=[8] P_proj_size=[8]: the same trial as arch=analysis "
        "frame_width=[8] P_proj_size=[4] (merged)",
        "arch=analysis frame_width=[16] P_proj_size=[8]: the same trial as arch=analysis "
        "frame_width=[16] P_proj_size=[4] (merged)",
        "arch=scatnet frame_width=[16] P_proj_size=[4]: the same trial as arch=scatnet "
        "frame_width=[8] P_proj_size=[4] (merged)",
        "arch=scatnet frame_width=[16] P_proj_size=[8]: the same trial as arch=scatnet "
        "frame_width=[8] P_proj_size=[8] (merged)",
    ], merged


def test_tpe_never_suggests_a_configuration_its_trial_would_refuse():
    """Each key alone works, but kernel 10 with stride 4 or 5 does not tile the 16x16 input
    (16 - 10 = 6): those 2 of the 12 configurations are told to Optuna as infeasible and
    never suggested (before: suggested, and each such trial failed inside Ray)."""
    from sepconc.sweep.drawable import trial_problems
    from sepconc.sweep.search import build_search_alg

    base = {**BASE, "frame_kernel_size": [16], "frame_stride": [4]}
    spec = tpe_sweep(base=base, samples=20, search={"frame_kernel_size": {"choice": [16, 10]},
                                                    "frame_stride": {"randint": [1, 6]}})  # fmt: skip
    searcher = build_search_alg(spec)
    found = suggest_all(searcher, 20)
    assert len(found) == 10 and searcher.infeasible >= 2  # a refused one may be asked again
    assert not any(trial_problems(spec, p) for p in found)
