"""The Ray Tune side of a sweep: what a trial reserves, the scheduler, the callbacks, the Tuner.

`build_tuner` makes the `tune.Tuner` of a parsed sweep (or restores it from its Tune state);
the driver (`sepconc.sweep.driver`) starts Ray, calls it and fits.
"""

from __future__ import annotations

from sepconc.sweep.paths import SweepPaths
from sepconc.sweep.spec import SweepSpec


def build_tuner(spec: SweepSpec, paths: SweepPaths, meta: dict, resume: str | None,
                previous=()):  # fmt: skip
    """The Tuner of a sweep: restored from its Tune state when `resume` (`"unfinished"`,
    `"retry"` or `"restart"`: errored trials continued or started over), else new.
    `previous`: finished trials of the sweep being extended (`sepconc.sweep.extend`), not
    run again. Needs a started Ray (`driver.start_ray`)."""
    from ray import tune

    from sepconc.sweep.local_workers import trial_launcher
    from sepconc.sweep.trial import run_trial

    fixed = {"launcher": trial_launcher(spec),  # process | local | ray_train: trial.py
             "base": spec.base, "workers": spec.workers, "cpus_per_worker": spec.cpus_per_worker,
             "gpus_per_worker": spec.gpus_per_worker, "max_retries": spec.max_retries,
             "checkpoint_every": spec.checkpoint["every"],
             "checkpoint_keep": spec.checkpoint["keep"],
             "train_storage": paths.under("train", spec.name),
             "trials_dir": paths.under("trials", spec.name) if paths.local_storage else None,
             "cache_dir": paths.under("cache"),
             "restart_errored": resume == "restart",
             # `tracking: {system_metrics: true}`: each trial samples its node into its run
             "system_metrics": {"uri": meta["tracking_uri"], "experiment_id": meta["experiment_id"],
                                "sweep": spec.name}
             if spec.tracking.get("system_metrics") else None}  # fmt: skip
    trainable = tune.with_parameters(run_trial, sweep=fixed)
    trainable = tune.with_resources(trainable, trial_resources(spec, fixed["launcher"]))
    if resume:
        return tune.Tuner.restore(paths.under("tune", paths.tune_name), trainable,
                                  resume_errored=resume == "retry",
                                  restart_errored=resume == "restart")  # fmt: skip
    return _new_tuner(spec, paths, meta, trainable, fixed, previous)


def trial_resources(spec: SweepSpec, launcher: str | None = None) -> dict[str, float]:
    """What Tune reserves for a trial's own process (`local_workers.trial_resources_for`;
    `launcher` default: `local_workers.trial_launcher(spec)`)."""
    from sepconc.sweep.local_workers import trial_launcher, trial_resources_for

    return trial_resources_for(spec, launcher or trial_launcher(spec))


def _new_tuner(spec: SweepSpec, paths: SweepPaths, meta: dict, trainable, fixed: dict,
               previous=()):  # fmt: skip
    from ray import tune

    from sepconc.sweep.budget_scheduler import BudgetScheduler
    from sepconc.sweep.callbacks import MlflowSweepCallback, ProgressCallback
    from sepconc.sweep.pbt import PbtChangesCallback
    from sepconc.sweep.report_latency import report_latency_callbacks
    from sepconc.sweep.schedulers import build_scheduler, with_mutations
    from sepconc.sweep.search import build_search_alg
    from sepconc.sweep.space import trial_count, tune_num_samples, tune_param_space
    from sepconc.sweep.tune_checkpoints import TuneCheckpointsCallback

    sched = spec.scheduler
    # The sweep's scheduler inside its budget (always wrapped: `resume` may add a budget).
    scheduler = BudgetScheduler(build_scheduler(spec), str(paths.meta_dir),
                                spec.workers * spec.gpus_per_worker)  # fmt: skip
    concurrent = spec.resources.get("max_concurrent_trials")
    # Ray Train retries its trials' workers itself; Tune retries the others (trial.py).
    in_process_retries = spec.max_retries if fixed["launcher"] != "ray_train" else 0
    callbacks = [
        MlflowSweepCallback(meta["tracking_uri"], meta["experiment_id"], meta["parent_run_id"],
                            spec.name, spec.base, spec.epochs, sched, spec.workers,
                            spec.gpus_per_worker, fixed),
        ProgressCallback(spec.metrics[0], trial_count(spec), spec.epochs, sched),
        *report_latency_callbacks(),  # SEPCONC_REPORT_LOG (benchmarks)
        TuneCheckpointsCallback(),  # Tune's checkpoint list matches its folders (a resume)
    ]  # fmt: skip
    if sched["type"] == "pbt":  # each clone's new values on its MLflow run
        callbacks.append(PbtChangesCallback(meta["tracking_uri"], meta["experiment_id"], spec.name,
                                            list(sched["mutations"])))  # fmt: skip
    # PBT clones other trials' checkpoints: keep a few more (Ray warns at <= 2)
    keep = max(spec.checkpoint["keep"], 4) if sched["type"] == "pbt" else spec.checkpoint["keep"]
    search_alg = build_search_alg(spec, previous)  # --extend: seeded with finished trials
    tuner = tune.Tuner(
        trainable,
        param_space=with_mutations(spec, tune_param_space(spec, previous)),  # --extend: new only
        # the scheduler ranks by the first objective; a tpe/nsga2 searcher gets them all
        tune_config=tune.TuneConfig(metric=spec.metrics[0], mode=spec.modes[0],
                                    scheduler=scheduler, search_alg=search_alg,
                                    num_samples=tune_num_samples(spec),
                                    max_concurrent_trials=concurrent,
                                    # a finished trial's process (and its warm forkserver:
                                    # local_workers) starts the next trial: no start-up. Not
                                    # with Ray Train: its fit() ignores Tune's stop (a reset
                                    # would wait on a stopped trial's workers forever)
                                    # (PBT too: a clone's reset process trains with its new
                                    # values; the CI run that seemed to say otherwise was
                                    # the change recorded an epoch early: sweep/pbt.py)
                                    reuse_actors=fixed["launcher"] != "ray_train",
                                    trial_dirname_creator=lambda t: t.trial_id),
        run_config=tune.RunConfig(name=paths.tune_name, storage_path=paths.under("tune"),
                                  callbacks=callbacks, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=in_process_retries),
                                  # 1-worker trials' checkpoints in Tune's storage: newest N too
                                  checkpoint_config=tune.CheckpointConfig(
                                      num_to_keep=keep)),
    )  # fmt: skip
    tuner._sepconc_search = search_alg  # its refusals, for the summary (search.search_summary)
    return tuner
