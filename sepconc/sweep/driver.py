"""Run and resume sweeps: the checks, Ray start or join, the Tuner (`tuner.py`), the parent run.

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
from pathlib import Path
from typing import Any

from sepconc.errors import UserError
from sepconc.logs import adopt_library_loggers, attach_log, detach_log, stdout_to_log
from sepconc.sweep.budget import budget_line, record_outcome, start_state
from sepconc.sweep.paths import SweepPaths, read_meta, sweep_paths  # noqa: F401 - public API
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
from sepconc.sweep.spec import SweepSpec, load_sweep, read_sweep_file, spec_from_raw
from sepconc.sweep.sweep_state import (
    check_storage,
    check_tracking,
    create_state,
    discard_state,
    finish_parent,
    is_stale,
    mark_trials,
    parent_run,  # noqa: F401 - part of this module's public API (scripts build sweeps with it)
    trials_problem,
    tune_state_exists,
)
from sepconc.sweep.tuner import build_tuner, trial_resources  # noqa: F401
from sepconc.tracking.store import default_tracking_uri, open_client

log = logging.getLogger(__name__)


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
        from sepconc.sweep.validate import validate_sweep

        spec.resources = {**spec.resources, **fit_resources(_batch_size(spec), totals)}
        log.info("resources: auto -> %s (%s)", resources_line(spec.resources)[11:],
                 describe_totals(totals, address))  # fmt: skip
        validate_sweep(spec, build=False)  # every trial again, with the fitted workers
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
        start_state(paths.meta_dir, spec.budget, False, spec.name)
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
    started = tune_state_exists(meta["storage"], meta.get("tune_name", name))  # --extend: its own
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
    paths.experiment = meta.get("tune_name", "")  # the latest --extend's Tune experiment
    address = address or meta.get("address")
    preflight(spec, paths, address, meta["tracking_uri"])
    start_state(paths.meta_dir, spec.budget, True, name)  # refuses a spent budget
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
         fresh: bool = False, previous=()):  # fmt: skip
    """Start Ray, build or restore the Tuner and fit. `fresh`: a start that fails before
    `fit` removes the sweep's state (its name stays free). `previous`: `--extend`'s
    finished trials (`sepconc.sweep.extend`)."""
    import ray

    from sepconc.sweep.search import search_summary
    from sepconc.sweep.space import trial_count

    started = time.perf_counter()
    fitting = False
    try:
        start_ray(address, spec, paths)
        tuner = build_tuner(spec, paths, meta, resume, previous)
        fitting = True
        with stdout_to_log("ray.tune.output"):  # Tune prints its banner and hints: to the log
            results = tuner.fit()
    except BaseException:
        if fresh and not fitting:
            discard_state(paths, meta)
        else:  # resumable: `resume NAME` continues it; not left RUNNING meanwhile
            finish_parent(meta, None)
        raise
    finally:
        if ray.is_initialized():
            ray.shutdown()
    summary = {"name": spec.name, "trials": trial_count(spec), "seconds": time.perf_counter() - started,
               "search": search_summary(spec, tuner),  # what never ran (sepconc.sweep.search)
               "errors": sum(1 for r in results if r.error),
               "tracking_uri": meta["tracking_uri"]}  # fmt: skip
    summary.update(budget_outcome(paths.meta_dir, meta, results, summary["trials"]))
    finish_parent(meta, summary)
    return summary


def budget_outcome(meta_dir: Path, meta: dict, results, total: int) -> dict[str, Any]:
    """After `fit`: the trials the budget left `not_started` or paused (stored in the
    sweep's `budget.json`, tagged on their MLflow runs) and the summary's budget line."""
    trials = getattr(getattr(results, "_experiment_analysis", None), "trials", None) or []
    spent = record_outcome(meta_dir, trials, total)
    if spent.get("paused"):
        mark_trials(meta, spent["paused"], "paused")
    if spent.get("held"):  # those Tune had begun to start have a run: not_started
        mark_trials(meta, spent["held"], "not_started")
    line = budget_line(meta_dir)
    return {"budget": line, "not_started": spent.get("not_started", 0)} if line else {}
