"""A one-node trial's DDP workers as processes of the trial itself: no Ray Train worker group.

Ray Train spends most of a short trial starting its worker group (Ray actors, each
importing torch; ~15 s a trial here). When a trial's workers fit on one node, the Tune
trial process reserves all their CPUs/GPUs (`trial_resources`) and runs them here:

- **start-up**: the workers are forked from a multiprocessing *forkserver* that imported
  torch and sepconc's trainer once (per trial process, ~1-3 s; started while Tune's
  checkpoint is fetched) and join one process group (gloo on CPU, NCCL on CUDA) through
  a file store in the trial's scratch folder. Rank r uses `cpus_per_worker` threads and
  `cuda:r` of the GPUs Ray gave the trial.
- **reports**: rank 0 sends each epoch's metrics (and the checkpoint it linked into the
  scratch folder) through a pipe; the trial process hands them to `ray.tune.report` as
  they arrive. Rank 0 never waits for Tune, and a report reaches Tune milliseconds after
  the epoch ends (Ray Train's path polls every `RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`).
- **failure**: a worker that raises, is killed or exits without finishing ends the others
  at once and fails the attempt with that reason (a `UserError` or `TrainingDiverged`
  raised again as such); Tune retries the trial (`max_retries`) from its last checkpoint,
  with the same trial id, hence the same run folder and MLflow run.
- **stop** (ASHA, the end of the sweep): `ray.tune.report` raises `SystemExit` in the
  trial process, whose `finally` kills the workers. Each worker also dies with the
  forkserver (`PR_SET_PDEATHSIG`), which exits with the trial process: a killed trial
  process leaves no worker behind.

`SEPCONC_TRIAL_LAUNCHER=ray_train` (in the driver's environment) forces Ray Train for
multi-worker trials; trials whose workers do not fit on one node always use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import traceback
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from sepconc.errors import UserError

log = logging.getLogger(__name__)

LAUNCHER_ENV = "SEPCONC_TRIAL_LAUNCHER"
LAUNCHERS = ("local", "ray_train")
# Imported once by the forkserver: every forked worker starts with them loaded. Besides
# the trainer, what a run imports lazily (data sets, scattering; torch._dynamo, which
# the optimizer pulls in): ~8 s of imports per worker on a loaded 2-core machine.
PRELOAD = ["torch", "torch._dynamo", "sklearn.datasets", "sklearn.model_selection",
           "sepconc.trainer", "sepconc.data.offline", "sepconc.scattering", "sepconc.sweep.trial",
           "sepconc.sweep.local_workers"]  # fmt: skip


def choose_launcher(workers: int, cpus_per_worker: float, gpus_per_worker: float,
                    totals: dict[str, float]) -> str:  # fmt: skip
    """How a multi-worker trial runs: `"local"` (this module) when its workers fit on the
    largest node of `totals` (`sepconc.sweep.resources.ray_totals`), else `"ray_train"`;
    `SEPCONC_TRIAL_LAUNCHER` forces one. Raises `UserError` for another value, or for
    `local` when the workers do not fit on one node."""
    forced = os.environ.get(LAUNCHER_ENV, "").strip()
    if forced and forced not in LAUNCHERS:
        raise UserError(f"{LAUNCHER_ENV}={forced!r} is not one of {', '.join(LAUNCHERS)}; "
                        f"unset it to choose by the trial's size")  # fmt: skip
    node_cpu = totals.get("node_cpu", totals.get("CPU", 0.0))
    node_gpu = totals.get("node_gpu", totals.get("GPU", 0.0))
    fits = workers * cpus_per_worker <= node_cpu and workers * gpus_per_worker <= node_gpu
    if forced == "local" and not fits:
        raise UserError(f"{LAUNCHER_ENV}=local but a trial's {workers} workers do not fit on "
                        f"one node ({node_cpu:g} CPUs, {node_gpu:g} GPUs at most); unset it")  # fmt: skip
    if forced:
        return forced
    return "local" if fits else "ray_train"


def trial_launcher(spec) -> str:
    """How `spec`'s trials run: `"process"` (1 worker: in the trial process), `"local"` or
    `"ray_train"` (`choose_launcher` on the totals of the Ray instance this process is
    connected to, else of this machine)."""
    import ray

    from sepconc.sweep.resources import local_totals, ray_totals

    if spec.workers == 1:
        return "process"
    totals = ray_totals() if ray.is_initialized() else local_totals()
    return choose_launcher(spec.workers, spec.cpus_per_worker, spec.gpus_per_worker, totals)


def trial_resources_for(spec, launcher: str) -> dict[str, float]:
    """What Tune reserves for a trial's own process. A 1-worker trial trains in it and a
    `local` trial runs its workers from it: they reserve every worker's CPUs/GPUs (one
    bundle, hence one node). A Ray Train trial only supervises (its Train workers hold
    the resources): a token amount of memory."""
    if launcher == "ray_train":
        return {"CPU": 0, "memory": 1}
    gpus = spec.workers * spec.gpus_per_worker
    return {"CPU": spec.workers * spec.cpus_per_worker, **({"GPU": gpus} if gpus else {})}


def run_local_workers(train_fn, flat: dict, trial_id: str, sweep: dict[str, Any], checkpoint,
                      report, checkpoint_cls, nodes: str) -> None:  # fmt: skip
    """Train trial `trial_id` (`flat`: its training config) in `sweep["workers"]` local DDP
    processes, resuming from Tune's `checkpoint` (or None); rank 0's epochs go to
    `report(metrics, checkpoint=checkpoint_cls.from_directory(...))` (Tune's).

    Each worker calls `train_fn(flat, trial_id, checkpoint, report, checkpoint_cls,
    reports_dir=, nodes=)` (`sepconc.sweep.trial.train_with_reporter`: a module-level
    function, sent by reference); `nodes` is the trial's node list as rank 0 reports it.

    Raises the workers' `UserError`/`TrainingDiverged`, or `WorkerFailed` for any other
    failure; `SystemExit` from `report` (Tune stopping the trial) kills the workers."""
    ctx = _forkserver()
    scratch = Path(tempfile.mkdtemp(prefix="sepconc-trial-"))
    procs, readers = [], []
    try:
        restored = None
        if checkpoint is not None:  # while the forkserver imports torch
            restored = scratch / "restored"
            checkpoint.to_directory(str(restored))
        workers = sweep["workers"]
        cuda = flat.get("device") == "cuda"  # resolved (`run_settings`): GPUs Ray gave the trial
        job = {"size": workers, "device_type": "cuda" if cuda else "cpu",
               "init": f"file://{scratch}/store", "threads": max(1, int(sweep["cpus_per_worker"])),
               "flat": flat, "trial_id": trial_id, "restored": str(restored) if restored else None,
               "origin": getattr(checkpoint, "path", None),
               "reports": str(scratch), "verbose": log.isEnabledFor(logging.DEBUG),
               "train_fn": train_fn, "nodes": nodes}  # fmt: skip
        for rank in range(workers):
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=worker_main, args=(rank, job, writer),
                               name=f"sepconc-{trial_id}-rank{rank}")  # fmt: skip
            _start(proc)
            writer.close()
            procs.append(proc)
            readers.append(reader)
        _relay(procs, readers, report, checkpoint_cls)
    finally:
        _end(procs)
        for reader in readers:
            reader.close()
        shutil.rmtree(scratch, ignore_errors=True)


# A worker's exception that is the trial's failure itself, raised again as that type.
CAUSES = ("UserError", "TrainingDiverged")


class WorkerFailed(RuntimeError):
    """A local DDP worker of a trial failed (killed, crashed, or raised)."""


def _forkserver():
    """The multiprocessing context whose forkserver has the trainer imported (started on
    first use in this process, kept for the next trial of a reused trial process)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _start(proc) -> None:
    """`proc.start()` without this process's `__main__` run again in the worker: in a trial
    that is Ray's worker script, which would import Ray there (~1 s a worker, for nothing)."""
    from multiprocessing import spawn

    real = spawn.get_preparation_data

    def without_main(name):
        data = real(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    spawn.get_preparation_data = without_main
    try:
        proc.start()
    finally:
        spawn.get_preparation_data = real


def _relay(procs, readers, report, checkpoint_cls) -> None:
    """Forward the workers' messages until every worker finished; at the first failure
    (an error message, or a worker gone without finishing) end them all and raise."""
    live = dict(enumerate(readers))
    finished, errors = set(), {}
    while live or any(p.exitcode is None for p in procs):
        sentinels = [p.sentinel for p in procs if p.exitcode is None]
        for ready in wait([*live.values(), *sentinels]):
            rank = next((r for r, c in live.items() if c is ready), None)
            if rank is None:
                continue  # an exit: judged below, once its pipe is drained
            try:
                message = ready.recv()
            except EOFError:
                del live[rank]
                continue
            if message[0] == "report":
                _report(message[1], message[2], report, checkpoint_cls)
            elif message[0] == "error":
                errors[rank] = message[1:]
            else:  # "finished"
                finished.add(rank)
        gone = [r for r, p in enumerate(procs) if r not in live and p.exitcode is not None]
        if errors or any(r not in finished for r in gone):
            _raise(errors, finished, procs)
    crashed = [r for r, p in enumerate(procs) if p.exitcode]
    if crashed:  # every rank had finished: a crash while leaving the group (gloo)
        log.warning("DDP worker rank %d exited with code %s after the trial had finished",
                    crashed[0], procs[crashed[0]].exitcode)  # fmt: skip


def _report(metrics: dict, folder: str | None, report, checkpoint_cls) -> None:
    """Rank 0's epoch to Tune (its checkpoint folder is removed once Tune copied it)."""
    try:
        if folder is None:
            report(metrics)
        else:
            report(metrics, checkpoint=checkpoint_cls.from_directory(folder))
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _raise(errors: dict, finished: set, procs) -> None:
    """End every worker, then raise the failure that explains the others: a worker's
    `UserError`/`TrainingDiverged`, else a worker killed by a signal or gone without an
    error (its peers then fail in a collective), else the first worker's error."""
    from sepconc.loop import TrainingDiverged

    if errors and not any(kind in CAUSES for kind, _, _ in errors.values()):
        # A peer's error ("Connection closed by peer") can arrive before the exit of the
        # rank that caused it (the forkserver reports exits): give that a moment.
        others = [p.sentinel for r, p in enumerate(procs) if r not in errors and p.exitcode is None]
        if others:
            wait(others, timeout=2.0)
    codes = [p.exitcode for p in procs]  # before ours: _end kills the rest
    _end(procs)
    for kind, message, _ in (errors[r] for r in sorted(errors)):
        if kind in CAUSES:
            raise (UserError if kind == "UserError" else TrainingDiverged)(message)
    for rank, code in enumerate(codes):
        if code is not None and rank not in errors and rank not in finished:
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            raise WorkerFailed(f"DDP worker rank {rank} died ({how}) before the trial finished")
    rank = min(errors)
    kind, message, trace = errors[rank]
    log.error("DDP worker rank %d failed:\n%s", rank, trace)
    raise WorkerFailed(f"DDP worker rank {rank} failed: {kind}: {message}")


def _end(procs) -> None:
    """SIGKILL the workers still running and reap them."""
    for proc in procs:
        if proc.exitcode is None:
            with contextlib.suppress(OSError):
                proc.kill()
    for proc in procs:
        proc.join(10)


def worker_main(rank: int, job: dict[str, Any], conn) -> None:
    """One worker (forked from the forkserver): join the group, train, tell the trial how
    it ended through `conn` (`("report", metrics, folder)`, `("error", kind, message,
    traceback)`, `("finished",)`)."""
    _die_with_parent()
    _name_process(f"sepconc-rank{rank}")
    from sepconc.distributed import barrier, join_group, leave_group

    join_group(rank, job["size"], job["device_type"], job["init"], job["threads"],
               job["verbose"])  # fmt: skip
    finished = False
    try:
        restored = job["restored"]
        checkpoint = LocalCheckpoint(restored, job["origin"]) if restored else None
        send = PipeReport(conn) if rank == 0 else _ignore
        job["train_fn"](dict(job["flat"]), job["trial_id"], checkpoint, send, ReportFolder,
                        reports_dir=Path(job["reports"]), nodes=job["nodes"])  # fmt: skip
        barrier()  # leave together (a rank tearing gloo down early can abort a peer)
        finished = True
    except BaseException as exc:
        conn.send(("error", type(exc).__name__, str(exc), traceback.format_exc()))
        raise
    finally:
        if finished:
            conn.send(("finished",))
        conn.close()
        leave_group()


class PipeReport:
    """Rank 0's `report(metrics, checkpoint=None)`: sent to the trial process, not awaited."""

    def __init__(self, conn):
        self.conn = conn

    def __call__(self, metrics: dict, checkpoint=None) -> None:
        self.conn.send(("report", metrics, checkpoint.path if checkpoint else None))


def _ignore(metrics: dict, checkpoint=None) -> None:
    """Ranks > 0 report nothing: rank 0's metrics are the trial's."""


class ReportFolder:
    """`checkpoint_cls` of the workers: a folder handed to the trial process as it is."""

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def from_directory(cls, path: str) -> ReportFolder:
        return cls(path)


class LocalCheckpoint:
    """Tune's checkpoint as the trial process fetched it: `to_directory` copies that local
    copy; `path` is Tune's own (whose folder names the trial it came from: PBT)."""

    def __init__(self, copy: str, path: str | None = None):
        self.copy, self.path = copy, path or copy

    def to_directory(self, path: str) -> str:
        shutil.copytree(self.copy, path)
        return path


def _die_with_parent() -> None:
    """SIGKILL this process when its parent (the forkserver) exits; exit now if it already
    has. Linux only (elsewhere the trial process's `finally` is what ends the workers)."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _name_process(name: str) -> None:
    """`/proc/PID/comm` (what `ps`/`top` show): which process is which rank."""
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(name[:15])
