"""Run, resume and locate sweeps: Ray start/join, the Tuner, the MLflow parent run.

Layout (all under the runs folder, default `./runs`, unless `storage:` moves the
heavy parts to a shared path or `s3://`):
- `runs/sweeps/<name>/sweep.yaml`   the sweep file as launched (resume reads it)
- `runs/sweeps/<name>/sweep.json`   where its state and runs live (tracking URI, parent run)
- `<storage>/tune/<name>/`          Ray Tune's experiment state
- `<storage>/train/<name>/trial-<id>/`  each trial's Ray Train run and checkpoints
- `<storage>/trials/<name>/<id>/`   each trial's sepconc run folder (local storage only)
- `runs/mlflow.db`                  the MLflow store (unless tracking.uri is a server)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sepconc.errors import UserError
from sepconc.sweep.spec import SweepSpec, check_name, load_sweep
from sepconc.tracking.store import (
    TAG_KIND,
    TAG_SWEEP,
    TAG_SWEEP_HASH,
    default_tracking_uri,
    experiment_id,
    is_local_store,
    open_client,
)

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
        known = sorted(p.name for p in (Path(runs_dir) / "sweeps").glob("*") if p.is_dir())
        hint = f"known sweeps: {', '.join(known)}" if known else "no sweep has run in this folder"
        raise UserError(f"no sweep named '{name}' in {Path(runs_dir)}/sweeps ({hint}); "
                        f"check the name or --runs-dir")  # fmt: skip
    return json.loads(meta.read_text())


def start_ray(address: str | None, spec: SweepSpec, paths: SweepPaths) -> None:
    """Embedded local Ray, or join the cluster at `address`; refuse impossible resources."""
    import ray

    from sepconc.sweep.trial import RAY_ENV

    # Ray's own variables: a value the user exported wins over ours (and reaches the trials).
    env = {"env_vars": {key: os.environ.get(key, value) for key, value in RAY_ENV.items()}}
    if address:
        check_address(address)  # Ray's own connect retries for long and prints many lines
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # a token-auth cluster needs it set
        from ray.exceptions import AuthenticationError

        refused = (f"Ray cluster at {address} refused this machine's auth token (none here, or "
                   f"not the cluster's); copy the head's ~/.ray/auth_token here or point "
                   f"RAY_AUTH_TOKEN_PATH at it (RAY_AUTH_MODE=disabled for a cluster without "
                   f"auth)")  # fmt: skip
        # A refused join retries for ~20 s, one C++ warning a second on fd 2: held back,
        # read for the cause, and replayed only when the join succeeds.
        with held_stderr() as held:
            try:
                ray.init(address=address, runtime_env=env, logging_level=logging.WARNING,
                         log_to_driver=False)  # fmt: skip
            except AuthenticationError:
                raise UserError(refused) from None
            except (ConnectionError, RuntimeError, ValueError) as exc:
                if "InvalidAuthToken" in held.read():
                    raise UserError(refused) from None
                raise UserError(f"cannot join Ray cluster at {address} ({str(exc).splitlines()[0]}); "
                                f"check the address (ray status), the auth token and that this "
                                f"Ray is the cluster's version, or drop --address") from None  # fmt: skip
            replay = held.read()
        sys.stderr.write(replay)  # fd 2 is back
    else:
        os.environ.update(env["env_vars"])
        # address="local": always a new embedded instance. A bare ray.init() would join the
        # cluster named in /tmp/ray/ray_current_cluster (the last `ray start` on this host),
        # and hang for minutes when that cluster has ended.
        ray.init(address="local", runtime_env=env, logging_level=logging.WARNING,
                 log_to_driver=False,
                 include_dashboard=True, dashboard_host="127.0.0.1")  # fmt: skip
    check_resources(spec, ray.cluster_resources(), len(ray.nodes()), paths)


class HeldStderr:
    """File descriptor 2 (C++ logs included) sent to a temporary file; `read()` its text."""

    def __init__(self, file):
        self.file = file

    def read(self) -> str:
        sys.stderr.flush()
        self.file.seek(0)
        return self.file.read().decode(errors="replace")


@contextlib.contextmanager
def held_stderr():
    """Hold back everything written to fd 2 while the block runs (the file is then deleted)."""
    with tempfile.TemporaryFile() as file:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(file.fileno(), 2)
        try:
            yield HeldStderr(file)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when nothing listens at a Ray `--address`, before `ray.init`.

    A plain TCP connect to `HOST:PORT` (or `ray://HOST:PORT`); `auto` and `local` are
    left to Ray. Nothing is sent, nothing is started.
    """
    if address in ("auto", "local"):
        return
    try:
        parts = urlsplit("//" + address.split("://", 1)[-1])
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise UserError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379 or "
                        f"ray://10.0.0.5:10001); fix it or drop --address")  # fmt: skip
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise UserError(f"cannot reach Ray cluster at {address} ({exc.strerror or exc}); start it "
                        f"(`ray up cluster.yaml` or `ray start --head`), check the address with "
                        f"`ray status`, or drop --address") from None  # fmt: skip


def check_resources(spec: SweepSpec, total: dict[str, float], nodes: int, paths) -> None:
    need_cpu = spec.workers * spec.cpus_per_worker
    need_gpu = spec.workers * spec.gpus_per_worker
    if need_cpu > total.get("CPU", 0) or need_gpu > total.get("GPU", 0):
        raise UserError(
            f"a trial needs {need_cpu:g} CPU and {need_gpu:g} GPU (workers_per_trial "
            f"{spec.workers} x cpus/gpus_per_worker) but the cluster has {total.get('CPU', 0):g} "
            f"CPU and {total.get('GPU', 0):g} GPU; lower resources or add nodes"
        )
    if nodes > 1 and paths.local_storage and paths.storage.startswith(str(paths.runs_dir)):
        raise UserError(
            f"storage {paths.storage} is a node-local path but the cluster has {nodes} nodes; "
            f"set storage: to a shared path (NFS) or s3://bucket/prefix in the sweep file"
        )


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


def parent_run(client, exp_id: str, spec: SweepSpec, meta_dir: Path) -> str:
    """The sweep's parent run: reused if it exists, else created with the sweep file attached."""
    found = client.search_runs(
        [exp_id],
        filter_string=f"tags.`{TAG_SWEEP}` = '{spec.name}' and tags.`{TAG_KIND}` = 'sweep'",
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(exp_id, run_name=spec.name, tags={
        TAG_KIND: "sweep", TAG_SWEEP: spec.name, TAG_SWEEP_HASH: spec.content_hash,
        "mlflow.note.content": spec.description})  # fmt: skip
    client.log_artifact(run.info.run_id, str(meta_dir / "sweep.yaml"))
    return run.info.run_id


def launch(path: str, overrides=(), name=None, address=None, tracking_uri=None,
           runs_dir: str | Path = "runs") -> dict[str, Any]:  # fmt: skip
    """`launch.py sweep FILE`: validate, then run every trial; returns the summary."""
    spec = load_sweep(path, overrides, name)
    paths = sweep_paths(spec, runs_dir)
    if (paths.meta_dir / "sweep.json").exists():
        raise UserError(f"sweep '{spec.name}' already exists in {paths.runs_dir}/sweeps; use "
                        f"`resume {spec.name}`, or --name NEW to start another")  # fmt: skip
    if address:
        check_address(address)  # before anything is written
    uri = tracking_uri or spec.tracking.get("uri") or default_tracking_uri(paths.runs_dir)
    client = open_client(uri)  # fails fast on an unreachable server, before anything is written
    paths.meta_dir.mkdir(parents=True, exist_ok=True)
    (paths.meta_dir / "sweep.yaml").write_text(spec.text)
    try:
        exp = experiment_id(client, spec.tracking.get("experiment") or spec.name,
                            paths.runs_dir if is_local_store(uri) else None)  # fmt: skip
        parent = parent_run(client, exp, spec, paths.meta_dir)
    except Exception:
        (paths.meta_dir / "sweep.yaml").unlink(missing_ok=True)
        _remove_if_empty(paths.meta_dir)
        raise
    meta = {"name": spec.name, "tracking_uri": uri, "experiment_id": exp, "parent_run_id": parent,
            "storage": paths.storage, "overrides": list(overrides), "address": address}  # fmt: skip
    (paths.meta_dir / "sweep.json").write_text(json.dumps(meta, indent=1))
    return _run(spec, paths, meta, address, resume=None)


def resume(name: str, mode: str | None = None, address=None, runs_dir="runs") -> dict[str, Any]:
    """`launch.py resume NAME`: continue unfinished trials (`mode`: retry or restart errored)."""
    meta = read_meta(name, runs_dir)
    spec = load_sweep(Path(runs_dir).resolve() / "sweeps" / name / "sweep.yaml", meta["overrides"],
                      name)  # fmt: skip
    paths = sweep_paths(spec, runs_dir)
    paths.storage = meta["storage"]
    address = address or meta.get("address")
    if address:
        check_address(address)
    open_client(meta["tracking_uri"])
    return _run(spec, paths, meta, address, resume=mode or "unfinished")


def _run(spec: SweepSpec, paths: SweepPaths, meta: dict, address, resume: str | None):
    import ray
    from ray import tune

    from sepconc.sweep.space import trial_count
    from sepconc.sweep.trial import run_trial

    start_ray(address, spec, paths)
    started = time.perf_counter()
    try:
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
        if resume and tune.Tuner.can_restore(experiment):
            tuner = tune.Tuner.restore(experiment, trainable,
                                       resume_errored=resume == "retry",
                                       restart_errored=resume == "restart")  # fmt: skip
        elif resume:
            raise UserError(f"sweep '{spec.name}' has no Tune state at {experiment} to resume; "
                            f"start it again with `sweep` and --name")  # fmt: skip
        else:
            tuner = _new_tuner(spec, paths, meta, trainable)
        results = tuner.fit()
    finally:
        ray.shutdown()
    summary = {"name": spec.name, "trials": trial_count(spec), "seconds": time.perf_counter() - started,
               "errors": sum(1 for r in results if r.error) if "results" in locals() else None,
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
                            spec.name, spec.base, spec.epochs, sched),
        ProgressCallback(spec.metric, trial_count(spec)),
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


def _finish_parent(meta: dict, summary: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(meta["tracking_uri"])
    client.log_metric(meta["parent_run_id"], "sweep_seconds", summary["seconds"])
    client.set_terminated(meta["parent_run_id"], "FAILED" if summary["errors"] else "FINISHED")


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
