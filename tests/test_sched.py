"""Schedulers and budgets without Ray running: `build_scheduler` for every type, PBT's
mutations and clone hand-over in a trial folder, the epoch a PBT change is recorded at
(the epoch trained with it), no clone into a finished trial, the ASHA grace-period
warning, budget units and the budget scheduler's decisions on a fake Tune controller.

The real sweeps (PBT clone with its new value in MLflow, a budget that stops a sweep and
a resume under what is left) are in tests/test_sched_ray.py.
"""

from __future__ import annotations

from types import SimpleNamespace

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


class FakeStore:
    """The MLflow client calls `PbtChangesCallback` makes, on one trial run (`run-1`)."""

    def __init__(self):
        self.metrics: dict[str, dict[int, float]] = {}
        self.tags: dict[str, str] = {}

    def search_runs(self, experiment_ids, filter_string):
        data = SimpleNamespace(tags=dict(self.tags), metrics={})
        return [SimpleNamespace(info=SimpleNamespace(run_id="run-1"), data=data)]

    def log_metric(self, run_id, key, value, timestamp=None, step=0):
        self.metrics.setdefault(key, {})[step] = value

    def set_tag(self, run_id, key, value):
        self.tags[key] = value


def pbt_callback():
    from sepconc.sweep.pbt import PbtChangesCallback

    callback = PbtChangesCallback("sqlite:///unused.db", "0", "sw", ["lr"])
    callback._client = store = FakeStore()
    return callback, store


def result_of(epoch: int, lr: float) -> dict:
    """A Tune result: the trial process attaches the config it trained the epoch with."""
    return {"epoch": epoch, "val_acc1": 50.0, "config": {"params": {"lr": lr}}}


def test_pbt_change_is_logged_at_the_first_epoch_trained_with_it():
    # synch PBT exploits the trial whose result completes the step (here t1's epoch 1,
    # trained with 1e-5): Tune calls the scheduler first, so the callbacks see that result
    # with trial.config already holding the clone's values for epoch 2
    callback, store = pbt_callback()
    trial = SimpleNamespace(trial_id="t1", config={"params": {"lr": 0.012}}, checkpoint=None)
    callback.on_trial_result(0, [], trial, result_of(1, 1e-5))
    trial.checkpoint = SimpleNamespace(path="/s/tune/sw/t0/checkpoint_000000")  # t0's, epoch 1
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, result_of(2, 0.012))
    callback.on_trial_result(0, [], trial, result_of(3, 0.012))
    assert store.metrics["pbt/lr"] == {1: 1e-5, 2: 0.012}
    assert store.tags["sepconc.pbt_changes"] == "epoch 2: lr 1e-05 -> 0.012 (cloned t0)"


def test_pbt_change_of_a_paused_trial_and_a_result_without_its_config():
    # the clone exploited while paused (it reported first): its next result is the change's
    callback, store = pbt_callback()
    trial = SimpleNamespace(trial_id="t1", config={"params": {"lr": 0.01}}, checkpoint=None)
    callback.on_trial_result(0, [], trial, result_of(1, 0.01))
    trial.config = {"params": {"lr": 0.008}}
    trial.checkpoint = SimpleNamespace(path="/s/tune/sw/t0/checkpoint_000001")
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, {"epoch": 2, "val_acc1": 50.0})  # trial.config
    trial.checkpoint = SimpleNamespace(path="/s/tune/sw/t1/checkpoint_000002")  # its own
    callback.on_trial_start(0, [], trial)  # a retry: not a clone any more
    trial.config = {"params": {"lr": 0.0096}}
    callback.on_trial_result(0, [], trial, result_of(3, 0.0096))
    assert store.metrics["pbt/lr"] == {1: 0.01, 2: 0.008, 3: 0.0096}
    assert store.tags["sepconc.pbt_changes"] == (
        "epoch 2: lr 0.01 -> 0.008 (cloned t0); epoch 3: lr 0.008 -> 0.0096 (cloned another trial)"
    )


def test_pbt_does_not_clone_into_a_trial_at_its_last_epoch(monkeypatch):
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers.pbt import _PBTTrialState

    calls = []
    monkeypatch.setattr(PopulationBasedTraining, "_exploit", lambda self, c, t, d: calls.append(t))
    pbt = build_scheduler(spec_with({"type": "pbt", "mutations": {"lr": [0.1, 0.01]}}))

    class Trial:  # hashable, as Tune's (PBT keys its state by trial)
        def __init__(self, trial_id: str, params: dict):
            self.trial_id, self.experiment_tag, self.config = trial_id, "", {"params": params}

    donor, short = Trial("t0", {}), Trial("t1", {"epochs": 4})
    pbt._trial_state = {t: _PBTTrialState(t) for t in (donor, short)}
    for trial, epoch, other, at in [(short, 3, donor, 0), (donor, 5, short, 3),
                                    (short, 2, donor, 5), (short, 4, donor, 0),
                                    (donor, 6, short, 3)]:  # fmt: skip
        pbt._trial_state[trial].last_train_time = epoch
        pbt._trial_state[other].last_train_time = at  # the epoch of its checkpoint
        pbt._exploit(None, trial, other)
    # not t1 from t0's epoch-5 checkpoint, nor at its epoch 4 (params.epochs), nor t0 at 6
    assert calls == [short, donor]
