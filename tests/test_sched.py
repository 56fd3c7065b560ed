"""Schedulers and budgets without Ray running: `build_scheduler` for every type, PBT's
mutations and clone hand-over in a trial folder, the ASHA grace-period warning, budget
units and the budget scheduler's decisions on a fake Tune controller.

The real sweeps (PBT clone with its new value in MLflow, a budget that stops a sweep and
a resume under what is left) are in tests/test_sched_ray.py.
"""

from __future__ import annotations

import torch

from sepconc.checkpoint import checkpoint_epoch, list_checkpoints
from sepconc.sweep.budget import check_budget, exhausted, parse_duration
from sepconc.sweep.pbt_clone import adopt_clone, cloned_from
from sepconc.sweep.schedulers import (
    build_scheduler,
    clip_to_ranges,
    scheduler_warnings,
    with_mutations,
)
from sepconc.sweep.spec import parse_sweep

BASE = {"dataset": "synthetic", "arch": "analysis", "frame_width": [16], "frame_kernel_size": [4],
        "frame_stride": [4], "epochs": 6, "batch_size": 100, "learning_rate_adjust_frequency": 3}  # fmt: skip


def spec_with(scheduler: dict, **changes):
    raw = {"name": "t", "base": dict(BASE), "search": {"lr": {"grid": [0.1, 0.01]}},
           "scheduler": scheduler, **changes}  # fmt: skip
    return parse_sweep(raw)


def test_build_scheduler_every_type():
    from ray.tune.schedulers import (
        AsyncHyperBandScheduler,
        FIFOScheduler,
        HyperBandScheduler,
        MedianStoppingRule,
        PopulationBasedTraining,
    )

    made = {kind: build_scheduler(spec_with(options)) for kind, options in {
        "fifo": {"type": "fifo"},
        "asha": {"type": "asha", "grace_period": 2},
        "hyperband": {"type": "hyperband", "reduction_factor": 2},
        "median": {"type": "median", "grace_period": 2, "min_samples_required": 2},
        "pbt": {"type": "pbt", "mutations": {"lr": {"loguniform": [0.001, 0.1]},
                                             "pars_beta": [1e-4, 5e-4]}},
    }.items()}  # fmt: skip
    assert type(made["fifo"]) is FIFOScheduler
    assert isinstance(made["asha"], AsyncHyperBandScheduler)
    assert isinstance(made["hyperband"], HyperBandScheduler)
    assert isinstance(made["median"], MedianStoppingRule)
    assert isinstance(made["pbt"], PopulationBasedTraining)
    for kind in ("asha", "hyperband", "median", "pbt"):  # epochs, the sweep's metric
        assert made[kind]._time_attr == "epoch", kind
        assert made[kind]._metric == "val_acc1", kind
    assert made["asha"]._max_t == 6 and made["hyperband"]._max_t_attr == 6
    assert made["median"]._grace_period == 2
    assert made["pbt"]._perturbation_interval == 1
    assert set(made["pbt"]._hyperparam_mutations["params"]) == {"lr", "pars_beta"}


def test_pbt_space_starts_each_mutated_key_and_clips_perturbations():
    spec = spec_with({"type": "pbt", "mutations": {"pars_beta": {"uniform": [1e-4, 1e-3]}}})
    space = with_mutations(spec, {"params": {"lr": "from search"}})
    assert space["params"]["lr"] == "from search" and "pars_beta" in space["params"]
    config = {"params": {"pars_beta": 2e-3, "lr": 0.1}}
    assert clip_to_ranges(config, {"pars_beta": (1e-4, 1e-3)})["params"] == {
        "pars_beta": 1e-3, "lr": 0.1}  # fmt: skip


def test_asha_warns_when_a_rung_precedes_the_first_lr_decay():
    early = spec_with({"type": "asha", "grace_period": 1})  # rungs 1, 2, 4; decay after 3
    assert "rung(s) at epoch 1, 2 come before the first learning-rate decay" in (
        scheduler_warnings(early)[0])  # fmt: skip
    assert scheduler_warnings(spec_with({"type": "asha", "grace_period": 4})) == []
    same_lr = spec_with(
        {"type": "asha", "grace_period": 1}, search={"frame_width": {"grid": [8, 16]}}
    )
    assert scheduler_warnings(same_lr) == []  # lr the same in every trial: a fair comparison


def test_cloned_from_tells_the_donor_by_its_folder():
    assert cloned_from("/s/tune/sw/t0002/checkpoint_000003", "t0001") == "t0002"
    assert cloned_from("/s/tune/sw/t0001/checkpoint_000003", "t0001") is None
    assert cloned_from("/s/train/sw/trial-t0001/checkpoint_x", "t0001") is None
    assert cloned_from(None, "t0001") is None


def test_adopt_clone_replaces_own_checkpoints_from_that_epoch(tmp_path):
    own, donor = tmp_path / "t1" / "checkpoints", tmp_path / "restored"
    own.mkdir(parents=True)
    donor.mkdir()
    for epoch in (1, 2, 3):
        torch.save({"who": "own"}, own / f"epoch_{epoch:04d}.pt")
    torch.save({"who": "donor"}, donor / "epoch_0002.pt")
    assert adopt_clone(tmp_path / "t1", donor, "t2") == 2
    kept = list_checkpoints(own)
    assert [checkpoint_epoch(p) for p in kept] == [1, 2]
    assert torch.load(kept[-1])["who"] == "donor"
    aside = next(own.glob("cloned-*"))
    assert sorted(p.name for p in aside.iterdir()) == ["epoch_0002.pt", "epoch_0003.pt"]


def test_budget_units():
    assert parse_duration("2h") == 7200 and parse_duration("1h30m") == 5400
    assert parse_duration("1.5h") == 5400 and parse_duration("45s") == 45
    assert parse_duration("2") is None and parse_duration("2 hours") is None
    budget, problems = check_budget({"time": "90m", "gpu_hours": 0.5, "trials": 3}, "s")
    assert problems == [] and budget["time_s"] == 5400
    assert exhausted(budget, {"seconds": 5400, "gpu_hours": 0}) == "time 90m"
    assert exhausted(budget, {"seconds": 10, "gpu_hours": 0.5}) == "0.5 GPU-hours"
    assert exhausted(budget, {"seconds": 10, "gpu_hours": 0.1}) is None


class _Trial:
    def __init__(self, trial_id, status="PENDING"):
        self.trial_id, self.status = trial_id, status


class _Controller:
    def __init__(self, trials):
        self.trials, self.held = trials, []

    def get_trials(self):
        return self.trials

    def pause_trial(self, trial, should_checkpoint=True):
        trial.status = "PAUSED"
        self.held.append(trial.trial_id)


def test_budget_scheduler_trial_budget(tmp_path):
    """`trials: 2` of 3: two start, the third is held back (paused before it starts); with
    none running the sweep ends (off the main thread: `BudgetReached`), and the spent
    record says so."""
    import threading

    from sepconc.sweep.budget import read_spent, start_state
    from sepconc.sweep.budget_scheduler import BudgetReached, BudgetScheduler

    start_state(tmp_path, {"trials": 2}, False, "s")
    trials = [_Trial("a"), _Trial("b"), _Trial("c")]
    sched, controller = BudgetScheduler(None, str(tmp_path), 0), _Controller(trials)
    assert sched.choose_trial_to_run(controller).trial_id == "a"
    trials[0].status = trials[1].status = "RUNNING"  # Tune starts every PENDING trial it can
    assert sched.choose_trial_to_run(controller) is None  # two run: "c" is held back
    assert controller.held == ["c"] and trials[2].status == "PAUSED"
    trials[0].status = trials[1].status = "TERMINATED"
    outcome = {}

    def last_step():
        try:
            sched.choose_trial_to_run(controller)
        except BudgetReached as exc:
            outcome["ended"] = str(exc)

    worker = threading.Thread(target=last_step)
    worker.start()
    worker.join()
    assert outcome == {"ended": "2 trials"}
    spent = read_spent(tmp_path)
    assert spent["started"] == ["a", "b"] and spent["ended"] == "2 trials"
