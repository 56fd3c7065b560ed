"""The Ray Tune side of a sweep: what a trial reserves, the scheduler, the callbacks, the Tuner.

`build_tuner` makes the `tune.Tuner` of a parsed sweep (or restores it from its Tune state);
the driver (`sepconc.sweep.driver`) starts Ray, calls it and fits.
"""

from __future__ import annotations

from sepconc.sweep.paths import SweepPaths
from sepconc.sweep.spec import SweepSpec


def build_tuner(spec: SweepSpec, paths: SweepPaths, meta: dict, resume: str | None):
    """The Tuner of a sweep: restored from its Tune state when `resume` (`"unfinished"`,
    `"retry"` or `"restart"`: errored trials continued or started over), else new.
    Needs a started Ray (`driver.start_ray`)."""
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
        return tune.Tuner.restore(paths.under("tune", spec.name), trainable,
                                  resume_errored=resume == "retry",
                                  restart_errored=resume == "restart")  # fmt: skip
    return _new_tuner(spec, paths, meta, trainable, fixed)


def trial_resources(spec: SweepSpec, launcher: str | None = None) -> dict[str, float]:
    """What Tune reserves for a trial's own process (`local_workers.trial_resources_for`;
    `launcher` default: `local_workers.trial_launcher(spec)`)."""
    from sepconc.sweep.local_workers import trial_launcher, trial_resources_for

    return trial_resources_for(spec, launcher or trial_launcher(spec))


def _new_tuner(spec: SweepSpec, paths: SweepPaths, meta: dict, trainable, fixed: dict):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from sepconc.sweep.callbacks import MlflowSweepCallback, ProgressCallback
    from sepconc.sweep.report_latency import report_latency_callbacks
    from sepconc.sweep.space import trial_count, tune_param_space

    sched = spec.scheduler
    scheduler = FIFOScheduler()
    if sched["type"] == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=sched["max_t"],
                                  grace_period=sched["grace_period"],
                                  reduction_factor=sched["reduction_factor"])  # fmt: skip
    concurrent = spec.resources.get("max_concurrent_trials")
    # Ray Train retries its trials' workers itself; Tune retries the others (trial.py).
    in_process_retries = spec.max_retries if fixed["launcher"] != "ray_train" else 0
    callbacks = [
        MlflowSweepCallback(meta["tracking_uri"], meta["experiment_id"], meta["parent_run_id"],
                            spec.name, spec.base, spec.epochs, sched, spec.workers,
                            spec.gpus_per_worker, fixed),
        ProgressCallback(spec.metric, trial_count(spec), spec.epochs, sched),
        *report_latency_callbacks(),  # SEPCONC_REPORT_LOG (benchmarks)
    ]  # fmt: skip
    return tune.Tuner(
        trainable,
        param_space=tune_param_space(spec),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler,
                                    num_samples=spec.samples, max_concurrent_trials=concurrent,
                                    # a finished trial's process (and its warm forkserver:
                                    # local_workers) starts the next trial: no start-up. Not
                                    # with Ray Train: its fit() ignores Tune's stop (a reset
                                    # would wait on a stopped trial's workers forever)
                                    reuse_actors=fixed["launcher"] != "ray_train",
                                    trial_dirname_creator=lambda t: t.trial_id),
        run_config=tune.RunConfig(name=spec.name, storage_path=paths.under("tune"),
                                  callbacks=callbacks, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=in_process_retries),
                                  # 1-worker trials' checkpoints in Tune's storage: newest N too
                                  checkpoint_config=tune.CheckpointConfig(
                                      num_to_keep=spec.checkpoint["keep"])),
    )  # fmt: skip
