"""`train(config)`: the one training entry point of the command line, the tests and Ray trials.

One run reads as an outline: set up (`sepconc.training.setup`: folder and seed,
pre-flight, device, data, model, optimizer, batches, resume) -> run files
(`sepconc.training.run_files`) -> replay of a resumed run's recorded epochs -> epochs
(`sepconc.training.epoch`: train, evaluate, read-outs; then checkpoint, `metrics.jsonl`,
the caller's hooks and the tracker: `sepconc.training.hooks`) -> finish (`result.json`,
the tracker closed). It runs in one process, in `run.num_workers` local DDP processes
(started here), or inside a process group someone else initialized (Ray Train): the
code path is the same.

Tracking: the tracker is built here from `config.tracking`
(`sepconc.tracking.tracker`), so `sepconc.train(config)` logs exactly what
`launch.py train` logs; sweep trials run with tracking off (the sweep driver records
them). A new run is refused in a folder that holds another run; resuming continues its
own folder's lineage (`sepconc.run_folder`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sepconc.config import Config
from sepconc.cost import model_cost
from sepconc.distributed import World, current_world, launch_local
from sepconc.errors import UserError, clean_reason
from sepconc.loop import TrainingDiverged
from sepconc.probes import probe_set
from sepconc.progress import EpochProgress
from sepconc.run_folder import check_out_folder, is_unused, take_back
from sepconc.tracking.tracker import NoTracker, Tracker, tracker_for
from sepconc.training.epoch import run_epoch, summary, validate
from sepconc.training.hooks import EpochHook, EpochReport, TrainResult, notify, replay
from sepconc.training.run_files import (
    append_metrics,
    latest_checkpoint,
    save_epoch_checkpoint,
    write_result,
    write_run_files,
)
from sepconc.training.setup import (
    apply_checkpoint,
    choose_device,
    on_main,
    preflight,
    resolve_run,
    set_up,
)

log = logging.getLogger(__name__)


def train(config: Config, hooks: Sequence[EpochHook] = ()) -> TrainResult:
    """Train (or evaluate) as `config` says, tracked as `config.tracking` says; returns the
    final metrics (rank 0's, on every rank).

    With `run.num_workers > 1` and no process group yet, starts that many local
    processes (gloo on CPU, NCCL on CUDA); `hooks` are then pickled to every rank and run
    there (each sees `report.rank`), so they must be picklable. With tracking on, bad
    input is refused (`preflight`) before the store or the run is opened; any error after
    that closes the run FAILED with the reason and is raised. Raises `UserError` for bad
    input and `TrainingDiverged` for a non-finite loss.
    """
    config = resolve_run(config)
    world = current_world()
    tracker = tracker_for(config) if world.is_main else NoTracker()
    if tracker.active:
        preflight(config)
    # bad input found once training started (a damaged image file) leaves nothing written
    unused = bool(
        world.is_main and config.run.out and not config.run.resume and is_unused(config.run.out)
    )
    tracker.start(config)
    try:
        result = _start(config, hooks, tracker, world)
    except TrainingDiverged as exc:
        tracker.fail(str(exc))
        raise
    except BaseException as exc:  # a bad checkpoint, a crash, Ctrl-C: never left RUNNING
        tracker.fail(clean_reason(exc, limit=500))
        if unused and isinstance(exc, UserError):
            take_back(config.run.out)
        raise
    tracker.finish(result)
    return result


def _start(config: Config, hooks: Sequence[EpochHook], tracker: Tracker, world: World):
    """Run here, or in `run.num_workers` local processes when there is no process group."""
    if config.run.num_workers > 1 and world.size == 1:
        check_out_folder(config.run.out, config.run.resume)  # before starting processes
        device = choose_device(config.run.device, 0)
        # rank 0's result, handed back by launch_local (also for `--evaluate`, which
        # writes no result.json)
        result = launch_local(_run, config.run.num_workers, device.type, config, list(hooks),
                              tracker, reraise=(UserError, TrainingDiverged))  # fmt: skip
        return TrainResult(**result)
    return _run(config, hooks, tracker)


def _run(config: Config, hooks: Sequence[EpochHook], tracker: Tracker) -> TrainResult:
    """One training process: set up -> (resume) -> epochs -> finish."""
    world = current_world()
    s = set_up(config, world)
    run_dir = Path(config.run.out)
    if world.is_main:
        write_run_files(run_dir, config, s.data.identity, s.start_epoch, bool(config.run.resume),
                        s.row)  # fmt: skip
    if config.run.evaluate:
        metrics = {f"val_{k}": v for k, v in validate(s, config.model.precision, done=True).items()}
        log.info("evaluation: %s", summary(metrics))
        return TrainResult(str(run_dir), s.start_epoch, False, metrics["val_acc1"], metrics)
    if config.run.resume:
        replay(run_dir, s.start_epoch, world, hooks, tracker)

    probe = probe_set(s.data.val, config.run.stats_probe_size) if config.run.stats_every else None
    progress = EpochProgress(enabled=world.is_main)
    best, metrics, done, stopped = s.best, {}, s.start_epoch, False
    cost = model_cost(config)  # params, flops: result keys of every report (sweep objectives)
    for epoch in range(s.start_epoch, config.optim.epochs):
        metrics = {**run_epoch(s, config, epoch, progress, probe), **cost}
        done, best = epoch + 1, max(best, metrics["val_acc1"])
        metrics["best_val_acc1"] = best
        checkpoint = None
        if world.is_main:
            if done % config.run.checkpoint_every == 0 or done == config.optim.epochs:
                checkpoint = save_epoch_checkpoint(run_dir, s.net, s.optimizer, done, best,
                                                   config, metrics)  # fmt: skip
            append_metrics(run_dir, metrics)
            log.info("epoch %d/%d %s", done, config.optim.epochs, summary(metrics))
        report = EpochReport(done, metrics, checkpoint, run_dir, world.rank)
        if notify(report, hooks, tracker, world):
            stopped = True
            break

    result = TrainResult(str(run_dir), done, stopped, best if metrics else float("nan"), metrics)
    if world.is_main:
        write_result(run_dir, result)
    return result


__all__ = ["EpochHook", "EpochReport", "TrainResult", "World", "apply_checkpoint",
           "choose_device", "latest_checkpoint", "on_main", "resolve_run", "train"]  # fmt: skip
