"""`train(config)`: the one training entry point of the command line, the tests and Ray trials.

One run = data, model, optimizer, optional resume, then per epoch: train,
evaluate, diagnostics, class statistics, checkpoint, `metrics.jsonl`, and the
caller's epoch hooks (which can stop the run). It runs in one process, in
`run.num_workers` local DDP processes (started here), or inside a process group
someone else initialized (Ray Train): the code path is the same.

Run folder: `config.yaml` (resolved, rerunnable with `train --config`),
`data.json` (the data set's identity, e.g. ImageNet classes chosen),
`metrics.jsonl` (one JSON object per epoch), `checkpoints/epoch_NNNN.pt`,
`result.json` (written at the end). A new run is refused in a folder that holds
another run; resuming continues its own folder's lineage (`sepconc.run_folder`) and
first replays the epochs already recorded there to the hooks (`EpochReport.replayed`),
so a tracker that missed them when the previous attempt was killed catches up.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from sepconc.batches import check_not_empty, rank_batches
from sepconc.cache import cached_splits
from sepconc.checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    load_latest_good,
    resolve_resume,
    save_checkpoint,
)
from sepconc.config import Config
from sepconc.data import build_datasets, dataset_spec
from sepconc.distributed import World, broadcast_object, current_world, launch_local
from sepconc.errors import UserError, clean_reason
from sepconc.loop import TrainingDiverged, build_optimizer, evaluate, learning_rate, train_epoch
from sepconc.model import SepConcNet, plan_model
from sepconc.probes import block_statistics, probe_set, weight_diagnostics
from sepconc.progress import EpochProgress
from sepconc.run_folder import check_out_folder, metrics_rows, prepare_run_folder, run_folder_of
from sepconc.yamlio import load_yaml

log = logging.getLogger(__name__)


@dataclass
class EpochReport:
    """What an epoch hook receives. `checkpoint` is set on rank 0 when one was written.

    `replayed`: an epoch of the resumed lineage recorded before this process started
    (its `metrics.jsonl` row; no checkpoint), sent before the first new epoch so that a
    hook can log what an earlier, killed attempt could not; hooks skip epochs they have
    already handled. Its return value is ignored."""

    epoch: int  # epochs completed (1-based)
    metrics: dict[str, float]
    checkpoint: Path | None
    run_dir: Path
    rank: int
    replayed: bool = False


EpochHook = Callable[[EpochReport], "bool | None"]  # True asks the run to stop


@dataclass
class TrainResult:
    run_dir: str
    epochs_done: int
    stopped_early: bool
    best_val_acc1: float
    metrics: dict[str, float] = field(default_factory=dict)


def resolve_run(config: Config) -> Config:
    """Fix what must be identical in every process: the run folder and the seed.

    Training on from `--resume` of a run folder (one with `config.yaml`) without `--out` /
    `--seed` continues that run: in its folder, with its seed (the data order depends on
    it). Otherwise the folder is a fresh `runs/train/<arch>-<time>` and the seed drawn."""
    changes = {}
    previous = _resumed_run(config)
    if config.run.out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        fresh = str(Path("runs") / "train" / f"{config.model.arch}-{stamp}")
        changes["out"] = fresh if previous is None or config.run.evaluate else previous[0]
    if config.run.seed is None:
        seed = previous[1].get("seed") if previous else None
        changes["seed"] = seed if isinstance(seed, int) else random.SystemRandom().randrange(2**31)
    return config.replace(**changes) if changes else config


def _resumed_run(config: Config) -> tuple[str, dict] | None:
    """(folder, saved flat config) of the run folder `--resume` points into, if it is one."""
    if not config.run.resume:
        return None
    folder = run_folder_of(config.run.resume)
    try:
        saved = load_yaml((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return (str(folder), saved) if isinstance(saved, dict) else None


def train(config: Config, hooks: Sequence[EpochHook] = ()) -> TrainResult:
    """Train (or evaluate) as `config` says; returns the final metrics.

    With `run.num_workers > 1` and no process group yet, starts that many local
    processes (gloo on CPU, NCCL on CUDA); `hooks` are then pickled to every
    rank and run there (each sees `report.rank`), so they must be picklable.
    """
    config = resolve_run(config)
    already_distributed = current_world().size > 1
    if config.run.num_workers > 1 and not already_distributed:
        check_out_folder(config.run.out, config.run.resume)  # before starting processes
        device = choose_device(config.run.device, 0)
        # rank 0's result, handed back by launch_local (also for `--evaluate`, which
        # writes no result.json)
        result = launch_local(_train_worker, config.run.num_workers, device.type, config,
                              list(hooks), reraise=(UserError, TrainingDiverged))  # fmt: skip
        return TrainResult(**result)
    return _train_worker(config, hooks)


def choose_device(requested: str, local_rank: int) -> torch.device:
    """The device of this process, chosen once: `cuda:<local rank>` or `cpu`."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device cuda asked but no CUDA GPU is visible; use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _train_worker(config: Config, hooks: Sequence[EpochHook]) -> TrainResult:
    world = current_world()
    device = choose_device(config.run.device, world.local_rank)
    run_dir = Path(config.run.out)
    on_main(world, check_out_folder, config.run.out, config.run.resume)
    seed = config.run.seed
    torch.manual_seed(seed)
    plan_model(config.model, dataset_spec(config.data.dataset, config.data.nb_classes)[0])
    data = build_datasets(config.data.dataset, config.data.data, download=config.data.download,
                          nb_classes=config.data.nb_classes,
                          class_indices=config.data.class_indices, seed=seed,
                          compact_head=config.data.compact_head)  # fmt: skip
    check_not_empty(data.train, data.val, f"{config.data.dataset} data in {config.data.data}")
    net = SepConcNet(config.model, data.image_shape, data.num_classes).to(device)
    optimizer = build_optimizer(net, config.optim.lr, config.optim.momentum,
                                config.optim.weight_decay)  # fmt: skip
    start_epoch, best, row = config.optim.start_epoch, float("-inf"), None
    if config.run.resume:
        start_epoch, best, row = _restore(config.run.resume, net, optimizer, device, world)
    if world.is_main:
        _write_run_files(run_dir, config, data.identity, start_epoch, bool(config.run.resume), row)
    model = net
    if world.size > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(net, device_ids=ids)
    per_rank = config.optim.batch_size // world.size
    common = dict(world=world.size, rank=world.rank, seed=seed, workers=config.data.workers,
                  pin_memory=device.type == "cuda")  # fmt: skip
    splits = cached_splits(net, data, config, device, verbose=world.is_main)  # first front-end
    train_batches = rank_batches(splits.train, per_rank, shuffle=True, **common)
    val_batches = rank_batches(splits.val, per_rank, shuffle=False, **common)
    if config.run.evaluate:
        with net.frontend_skipped(splits.val_cached):
            val = evaluate(model, val_batches, device)
        metrics = {f"val_{k}": v for k, v in val.items()}
        log.info("evaluation: %s", _summary(metrics))
        return TrainResult(str(run_dir), start_epoch, False, metrics["val_acc1"], metrics)

    if config.run.resume:
        _replay(run_dir, start_epoch, world, hooks)
    probe = probe_set(data.val, config.run.stats_probe_size) if config.run.stats_every else None
    progress = EpochProgress(enabled=world.is_main)
    metrics: dict[str, float] = {}
    stopped = False
    epoch = start_epoch
    for epoch in range(start_epoch, config.optim.epochs):
        lr = learning_rate(config.optim.lr, epoch, config.optim.learning_rate_adjust_frequency)
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_batches.sampler.set_epoch(epoch)
        started = time.perf_counter()
        with progress.epoch(epoch + 1, config.optim.epochs, len(data.train)) as advance:
            with net.frontend_skipped(splits.train_cached):
                train_sums = train_epoch(model, net, optimizer, train_batches,
                                         config.optim.pars_beta, epoch + 1, device,
                                         config.run.print_freq, progress=advance)  # fmt: skip
        train_seconds = time.perf_counter() - started
        with net.frontend_skipped(splits.val_cached):
            val = evaluate(model, val_batches, device)
        metrics = _epoch_metrics(epoch + 1, lr, train_sums, val, train_seconds, started, net)
        if world.is_main:
            metrics.update(weight_diagnostics(net))
            if probe is not None and (epoch + 1) % config.run.stats_every == 0:
                metrics.update(block_statistics(net, *probe, data.num_classes))
        metrics = broadcast_object(metrics)
        best = max(best, metrics["val_acc1"])
        metrics["best_val_acc1"] = best
        ckpt = None
        last = epoch + 1 == config.optim.epochs
        if world.is_main and ((epoch + 1) % config.run.checkpoint_every == 0 or last):
            ckpt = save_checkpoint(_state(net, optimizer, epoch + 1, best, config, metrics),
                                   checkpoint_path(run_dir / "checkpoints", epoch + 1),
                                   keep=config.run.checkpoint_keep)  # fmt: skip
        if world.is_main:
            _append_jsonl(run_dir / "metrics.jsonl", metrics)
            log.info("epoch %d/%d %s", epoch + 1, config.optim.epochs, _summary(metrics))
        report = EpochReport(epoch + 1, metrics, ckpt, run_dir, world.rank)
        wants_stop = any([bool(hook(report)) for hook in hooks])  # every hook on every rank
        if broadcast_object(wants_stop):
            stopped = True
            break
    done = epoch + 1 if metrics else start_epoch
    result = TrainResult(str(run_dir), done, stopped, best if metrics else float("nan"), metrics)
    if world.is_main:
        (run_dir / "result.json").write_text(json.dumps(asdict(result), indent=1))
    return result


def _epoch_metrics(epoch, lr, train, val, train_seconds, started, net) -> dict[str, float]:
    return {
        "epoch": epoch,
        "train_loss": train["loss"],
        "train_acc1": train["acc1"],
        "train_acc5": train["acc5"],
        "val_loss": val["loss"],
        "val_acc1": val["acc1"],
        "val_acc5": val["acc5"],
        "lr": lr,
        "epoch_seconds": time.perf_counter() - started,
        "images_per_s": train["images"] / max(train_seconds, 1e-9),
        "nonfinite_grads": float(net.pop_nonfinite_count()),
    }


def _summary(metrics: dict[str, float]) -> str:
    keys = ("train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5", "images_per_s")
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)


def _state(net, optimizer, epoch: int, best: float, config: Config, metrics: dict) -> dict:
    row = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
             "best_val_acc1": best, "config": config.to_flat(), "metrics": row,
             "rng_cpu": torch.get_rng_state()}  # fmt: skip
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    return state


def on_main(world: World, fn, *args):
    """`fn(*args)` on rank 0 only; its result, or its `UserError` raised, on every rank
    (so no rank waits in a collective for a rank that failed)."""
    outcome = None
    if world.is_main:
        try:
            outcome = (fn(*args), None)
        except UserError as exc:
            outcome = (None, exc)
    value, error = broadcast_object(outcome)
    if error is not None:
        raise error from None
    return value


def _restore(target: str, net, optimizer, device, world: World) -> tuple[int, float, dict | None]:
    """Load the newest readable checkpoint of `target` (chosen on rank 0: every rank loads the
    same file) into `net` and `optimizer`; returns its epoch, best val_acc1 and metrics row."""
    loaded = {}

    def choose() -> Path:
        path, loaded["state"] = load_latest_good(resolve_resume(target), map_location=device)
        return path

    path = on_main(world, choose)
    state = loaded.get("state") or load_checkpoint(path, map_location=device)
    apply_checkpoint(path, state, net, optimizer)
    torch.set_rng_state(state["rng_cpu"].cpu())
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
    log.info("resumed from %s (epoch %d)", path, state["epoch"])
    return int(state["epoch"]), float(state["best_val_acc1"]), state.get("metrics")


def apply_checkpoint(path: Path, state: dict, net, optimizer) -> None:
    """Load a checkpoint's model and optimizer state; a `UserError` if they do not fit."""
    try:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(
            f"checkpoint {path} does not match this model ({clean_reason(exc, whole=True)}); "
            f"resume with the config it was written with"
        ) from None


def _write_run_files(run_dir: Path, config: Config, identity: dict, epoch: int, resumed: bool,
                     row: dict | None) -> None:  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.yaml")
    (run_dir / "data.json").write_text(json.dumps(identity, indent=1, default=str))
    if not config.run.evaluate:  # evaluating a checkpoint leaves its lineage as it is
        prepare_run_folder(run_dir, epoch, resumed, row)


def _replay(run_dir: Path, epoch: int, world: World, hooks: Sequence[EpochHook]) -> None:
    """Send the recorded epochs <= `epoch` of this run folder to the hooks (rank 0's rows,
    the same on every rank), marked `replayed`."""
    rows = broadcast_object(
        [r for r in metrics_rows(run_dir) if 0 < r.get("epoch", 0) <= epoch]
        if world.is_main else None
    )  # fmt: skip
    for row in rows:
        report = EpochReport(int(row["epoch"]), row, None, run_dir, world.rank, replayed=True)
        for hook in hooks:
            hook(report)


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Newest checkpoint of a run folder, or None."""
    found = list_checkpoints(run_dir / "checkpoints")
    return found[-1] if found else None


__all__ = ["EpochHook", "EpochReport", "TrainResult", "World", "train"]
