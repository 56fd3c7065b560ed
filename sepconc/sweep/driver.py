"""Run, resume and locate sweeps: checks, Ray start/join, the Tuner, the MLflow parent run.

Layout (all under the runs folder, default `./runs`, unless `storage:` moves the
heavy parts to a shared path or `s3://`):
- `runs/sweeps/<name>/sweep.yaml`   the sweep file as launched (resume reads it)
- `runs/sweeps/<name>/sweep.json`   where its state and runs live (tracking URI, parent run)
- `runs/sweeps/<name>/driver.log`   everything Ray, Tune and the libraries said (`-v` shows it)
- `<storage>/tune/<name>/`          Ray Tune's experiment state
- `<storage>/train/<name>/trial-<id>/`  each trial's Ray Train run and checkpoints
- `<storage>/trials/<name>/<id>/`   each trial's sepconc run folder (local storage only)
- `runs/mlflow.db`                  the MLflow store (unless tracking.uri is a server)
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepconc.errors import UserError
from sepconc.logs import adopt_library_loggers, attach_log, detach_log, stdout_to_log
from sepconc.sweep.ray_join import check_address, held_stderr, join_cluster  # noqa: F401
from sepconc.sweep.resources import (
    check_resources,
    cluster_totals,
    describe_totals,
    fit_resources,
    local_totals,
    ray_totals,
    resources_line,
)
from sepconc.sweep.spec import SweepSpec, check_name, load_sweep, read_sweep_file, spec_from_raw
from sepconc.sweep.sweep_state import (
    check_storage,
    check_tracking,
    create_state,
    discard_state,
    is_stale,
    parent_run,  # noqa: F401 - part of this module's public API (scripts build sweeps with it)
    trials_problem,
    tune_state_exists,
)
from sepconc.tracking.store import default_tracking_uri, open_client, tracking_client

log = logging.getLogger(__name__)


@dataclass
class SweepPaths:
    runs_dir: Path
    name: str
    storage: str  # absolute local path or a URI such as s3://bucket/prefix

    @property
    def meta_dir(self) -> Path:
        return self.runs_dir / "sweeps" / self.name

    @property
    def local_storage(self) -> bool:
        return "://" not in self.storage

    def under(self, *parts: str) -> str:
        return "/".join([self.storage.rstrip("/"), *parts])


def sweep_paths(spec: SweepSpec, runs_dir: str | Path = "runs") -> SweepPaths:
    runs = Path(runs_dir).resolve()
    storage = spec.storage or str(runs)
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    return SweepPaths(runs, spec.name, storage)


def read_meta(name: str, runs_dir: str | Path = "runs") -> dict[str, Any]:
    """The `sweep.json` of an existing sweep; a one-line error naming the known sweeps if absent."""
    check_name(name)
    meta = Path(runs_dir).resolve() / "sweeps" / name / "sweep.json"
    if not meta.is_file():
        known = sorted(p.parent.name for p in (Path(runs_dir) / "sweeps").glob("*/sweep.json"))
        hint = f"known sweeps: {', '.join(known)}" if known else "no sweep has run in this folder"
        raise UserError(f"no sweep named '{name}' in {Path(runs_dir)}/sweeps ({hint}); "
                        f"check the name or --runs-dir")  # fmt: skip
    return json.loads(meta.read_text())


def start_ray(address: str | None, spec: SweepSpec, paths: SweepPaths) -> None:
    """Embedded local Ray, or join the cluster at `address`; refuse what it cannot run."""
    import ray

    from sepconc.sweep.trial import RAY_ENV

    # Ray's own variables: a value the user exported wins over ours (and reaches the trials).
    env = {"env_vars": {key: os.environ.get(key, value) for key, value in RAY_ENV.items()}}
    if address:
        join_cluster(address, runtime_env=env)
    else:
        os.environ.update(env["env_vars"])
        # address="local": always a new embedded instance. A bare ray.init() would join the
        # cluster named in /tmp/ray/ray_current_cluster (the last `ray start` on this host),
        # and hang for minutes when that cluster has ended. Its start-up lines go to the log.
        with held_stderr() as held:
            ray.init(address="local", runtime_env=env, logging_level=logging.WARNING,
                     log_to_driver=False,
                     include_dashboard=True, dashboard_host="127.0.0.1")  # fmt: skip
            said = held.read()
        if said.strip():
            log.debug("Ray start-up:\n%s", said.rstrip())
    adopt_library_loggers()  # ray.init may install its handlers again
    totals = ray_totals()
    check_resources(spec, address, totals)
    check_storage(paths, int(totals["nodes"]))


def trial_resources(spec: SweepSpec) -> dict[str, float]:
    """What Tune reserves for a trial's own process.

    A multi-worker trial only supervises (its Train workers hold the CPUs/GPUs), so it
    reserves a token amount of memory; a 1-worker trial trains in that process and
    reserves the worker's resources.
    """
    if spec.workers == 1:
        gpus = spec.gpus_per_worker
        return {"CPU": spec.cpus_per_worker, **({"GPU": gpus} if gpus else {})}
    return {"CPU": 0, "memory": 1}


def _quiet_libraries() -> None:
    """Import Ray and MLflow now, then send their own stderr handlers' lines to the log file."""
    import mlflow  # noqa: F401
    import ray  # noqa: F401

    adopt_library_loggers()


def preflight(spec: SweepSpec, paths: SweepPaths, address: str | None, uri: str) -> None:
    """Every check that can refuse the sweep, before anything is written: resources (fitted
    first for `resources: auto`), storage, the tracking store. `--address`: a short join."""
    totals = cluster_totals(address) if address else local_totals()
    if spec.auto_resources:
        spec.resources = {**spec.resources, **fit_resources(_batch_size(spec), totals)}
        log.info("resources: auto -> %s (%s)", resources_line(spec.resources)[11:],
                 describe_totals(totals, address))  # fmt: skip
    check_resources(spec, address, totals)
    check_storage(paths, int(totals["nodes"]))
    check_tracking(uri)


def _batch_size(spec: SweepSpec) -> int:
    from sepconc.config import Config

    return Config.from_flat(spec.base).optim.batch_size


def launch(spec: SweepSpec, address=None, tracking_uri=None,
           runs_dir: str | Path = "runs") -> dict[str, Any]:  # fmt: skip
    """`launch.py sweep FILE`: check, then run every trial of the parsed `spec`
    (`sepconc.sweep.spec.load_sweep`: a command parses its file once); returns the summary.

    Nothing is written when a check refuses the sweep; a start that fails after the state
    was written (Ray, the cluster) removes it again (`sweep_state.discard_state`).
    """
    _quiet_libraries()
    paths = sweep_paths(spec, runs_dir)
    stale = (paths.meta_dir / "sweep.json").exists() and is_stale(paths.meta_dir)
    if (paths.meta_dir / "sweep.json").exists() and not stale:
        raise UserError(f"sweep '{spec.name}' already exists in {paths.runs_dir}/sweeps; use "
                        f"`resume {spec.name}` (--set KEY=VALUE or --file FILE to change it), "
                        f"or --name NEW to start another")  # fmt: skip
    uri = tracking_uri or spec.tracking.get("uri") or default_tracking_uri(paths.runs_dir)
    preflight(spec, paths, address, uri)
    if stale:  # a start that never reached Tune: its leftovers go, the name is free
        discard_state(paths, json.loads((paths.meta_dir / "sweep.json").read_text()))
    meta = {"name": spec.name, "storage": paths.storage, "overrides": list(spec.overrides),
            "address": address}  # fmt: skip
    handler = attach_log(paths.meta_dir / "driver.log")
    try:
        meta = create_state(spec, paths, uri, meta)
        return _run(spec, paths, meta, address, resume=None, fresh=True)
    finally:
        detach_log(handler)


def resume(name: str, mode: str | None = None, address=None, runs_dir="runs", overrides=(),
           file=None) -> dict[str, Any]:  # fmt: skip
    """`launch.py resume NAME`: continue unfinished trials (`mode`: retry or restart errored).

    `overrides` (`--set`) and `file` (`--file`) change the sweep in place when its trials
    include the old ones (`sweep_state.trials_problem`) and every new trial passes
    `validate_sweep`; the new file is stored. The stored file is read once.
    """
    from sepconc.sweep.validate import validate_sweep

    meta = read_meta(name, runs_dir)
    _quiet_libraries()
    stored = Path(runs_dir).resolve() / "sweeps" / name / "sweep.yaml"
    raw, text = read_sweep_file(stored)
    spec = spec_from_raw(raw, text, meta["overrides"], name, where=str(stored))
    started = tune_state_exists(meta["storage"], name)
    if overrides or file:
        changed = list(overrides) if file else [*meta["overrides"], *overrides]
        if file:
            new = load_sweep(file, changed, name)
        else:
            new = spec_from_raw(raw, text, changed, name, where=str(stored))
        validate_sweep(new, build=False)
        problem = trials_problem(spec, new, started)
        if problem:
            raise UserError(f"cannot resume '{name}' with {file or ' '.join(overrides)}: {problem}")
        spec, meta = new, {**meta, "overrides": changed}
    paths = sweep_paths(spec, runs_dir)
    paths.storage = meta["storage"]
    address = address or meta.get("address")
    preflight(spec, paths, address, meta["tracking_uri"])
    handler = attach_log(paths.meta_dir / "driver.log")
    try:
        if overrides or file:
            log.info("resume %s with %s", name, file or " ".join(overrides))
            (paths.meta_dir / "sweep.yaml").write_text(spec.text)
            (paths.meta_dir / "sweep.json").write_text(json.dumps(meta, indent=1))
        open_client(meta["tracking_uri"]).update_run(meta["parent_run_id"], status="RUNNING")
        return _run(spec, paths, meta, address, resume=(mode or "unfinished") if started else None)
    finally:
        detach_log(handler)


def _run(spec: SweepSpec, paths: SweepPaths, meta: dict, address, resume: str | None,
         fresh: bool = False):  # fmt: skip
    """Start Ray, build or restore the Tuner and fit. `fresh`: a start that fails before
    `fit` removes the sweep's state (its name stays free)."""
    import ray
    from ray import tune

    from sepconc.sweep.space import trial_count
    from sepconc.sweep.trial import run_trial

    started = time.perf_counter()
    fitting = False
    try:
        start_ray(address, spec, paths)
        fixed = {"base": spec.base, "workers": spec.workers, "cpus_per_worker": spec.cpus_per_worker,
                 "gpus_per_worker": spec.gpus_per_worker, "max_retries": spec.max_retries,
                 "checkpoint_every": spec.checkpoint["every"],
                 "checkpoint_keep": spec.checkpoint["keep"],
                 "train_storage": paths.under("train", spec.name),
                 "trials_dir": paths.under("trials", spec.name) if paths.local_storage else None,
                 "cache_dir": paths.under("cache"),
                 "restart_errored": resume == "restart"}  # fmt: skip
        trainable = tune.with_parameters(run_trial, sweep=fixed)
        trainable = tune.with_resources(trainable, trial_resources(spec))
        experiment = paths.under("tune", spec.name)
        if resume:
            tuner = tune.Tuner.restore(experiment, trainable,
                                       resume_errored=resume == "retry",
                                       restart_errored=resume == "restart")  # fmt: skip
        else:
            tuner = _new_tuner(spec, paths, meta, trainable)
        fitting = True
        with stdout_to_log("ray.tune.output"):  # Tune prints its banner and hints: to the log
            results = tuner.fit()
    except BaseException:
        if fresh and not fitting:
            discard_state(paths, meta)
        else:  # resumable: `resume NAME` continues it; not left RUNNING meanwhile
            _finish_parent(meta, None)
        raise
    finally:
        if ray.is_initialized():
            ray.shutdown()
    summary = {"name": spec.name, "trials": trial_count(spec), "seconds": time.perf_counter() - started,
               "errors": sum(1 for r in results if r.error),
               "tracking_uri": meta["tracking_uri"]}  # fmt: skip
    _finish_parent(meta, summary)
    return summary


def _new_tuner(spec: SweepSpec, paths: SweepPaths, meta: dict, trainable):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from sepconc.sweep.callbacks import MlflowSweepCallback, ProgressCallback
    from sepconc.sweep.space import trial_count, tune_param_space

    sched = spec.scheduler
    scheduler = FIFOScheduler()
    if sched["type"] == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=sched["max_t"],
                                  grace_period=sched["grace_period"],
                                  reduction_factor=sched["reduction_factor"])  # fmt: skip
    concurrent = spec.resources.get("max_concurrent_trials")
    # Train retries multi-worker trials itself; a 1-worker trial runs in Tune's process: Tune retries.
    in_process_retries = spec.max_retries if spec.workers == 1 else 0
    callbacks = [
        MlflowSweepCallback(meta["tracking_uri"], meta["experiment_id"], meta["parent_run_id"],
                            spec.name, spec.base, spec.epochs, sched, spec.workers,
                            spec.gpus_per_worker),
        ProgressCallback(spec.metric, trial_count(spec), spec.epochs, sched),
    ]  # fmt: skip
    return tune.Tuner(
        trainable,
        param_space=tune_param_space(spec),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler,
                                    num_samples=spec.samples, max_concurrent_trials=concurrent,
                                    trial_dirname_creator=lambda t: t.trial_id),
        run_config=tune.RunConfig(name=spec.name, storage_path=paths.under("tune"),
                                  callbacks=callbacks, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=in_process_retries),
                                  # 1-worker trials' checkpoints in Tune's storage: newest N too
                                  checkpoint_config=tune.CheckpointConfig(
                                      num_to_keep=spec.checkpoint["keep"])),
    )  # fmt: skip


def _finish_parent(meta: dict, summary: dict | None) -> None:
    """End the parent run: FINISHED, or FAILED when trials failed or the sweep broke off."""
    try:
        client = tracking_client(meta["tracking_uri"])
        if summary is not None:
            client.log_metric(meta["parent_run_id"], "sweep_seconds", summary["seconds"])
        failed = summary is None or summary["errors"]
        client.set_terminated(meta["parent_run_id"], "FAILED" if failed else "FINISHED")
    except Exception as exc:  # never hide the sweep's own outcome behind this
        log.warning("could not close parent run %s: %s", meta["parent_run_id"], exc)
