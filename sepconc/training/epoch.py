"""One epoch's body and its metrics row; evaluation alone (`--evaluate`).

Cached front-end features (`Setup.splits.*_cached`): the batches then hold the first
block's front-end output, and the model runs inside `net.frontend_skipped(cached)` (its
first front-end swapped for an identity, `sepconc.model`).
"""

from __future__ import annotations

import time

from sepconc.config import Config
from sepconc.distributed import broadcast_object
from sepconc.errors import short_number
from sepconc.loop import evaluate, learning_rate, train_epoch
from sepconc.probes import block_statistics, weight_diagnostics
from sepconc.progress import EpochProgress, track
from sepconc.training.setup import Setup

SUMMARY_KEYS = ("train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5", "images_per_s")


def run_epoch(s: Setup, config: Config, epoch: int, progress: EpochProgress,
              probe: tuple | None) -> dict[str, float]:  # fmt: skip
    """Train epoch `epoch` (0-based) at its step-decayed learning rate, evaluate, and return
    the metrics row (the same on every rank): `epoch_metrics` + rank 0's weight diagnostics
    + class statistics every `run.stats_every` epochs (`probe`: the fixed probe images).
    Raises `TrainingDiverged` (on every rank) when the loss is not finite."""
    o = config.optim
    lr = learning_rate(o.lr, epoch, o.learning_rate_adjust_frequency)
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    s.train_batches.sampler.set_epoch(epoch)
    started = time.perf_counter()
    world = s.world.size  # rank 0 shows its shard's progress scaled to the whole set
    with (
        s.net.frontend_skipped(s.splits.train_cached),
        progress.epoch(epoch + 1, o.epochs, len(s.train_batches.sampler) * world) as advance,
    ):
        train = train_epoch(s.model, s.net, s.optimizer, s.train_batches, o.pars_beta,
                            epoch + 1, s.device, config.run.print_freq,
                            progress=lambda n: advance(n * world),
                            precision=config.model.precision)  # fmt: skip
    train_seconds = time.perf_counter() - started
    val = validate(s, config.model.precision)
    metrics = epoch_metrics(epoch + 1, lr, train, val, train_seconds, started,
                            float(s.net.pop_nonfinite_count()))  # fmt: skip
    if s.world.is_main:
        metrics.update(weight_diagnostics(s.net))
        if probe is not None and (epoch + 1) % config.run.stats_every == 0:
            metrics.update(block_statistics(s.net, *probe, s.data.num_classes))
    return broadcast_object(metrics)


def validate(s: Setup, precision: str = "fp32", done: bool = False) -> dict[str, float]:
    """Loss, acc1, acc5 over the whole validation set (every rank's shard), the forward
    under `precision` (`sepconc.precision`); progress shown on rank 0 (`track`, with a
    closing line when `done`)."""
    world, total = s.world.size, len(s.val_batches.sampler) * s.world.size
    with (
        s.net.frontend_skipped(s.splits.val_cached),
        track("evaluate", total, "images", done=done, enabled=s.world.is_main) as advance,
    ):
        return evaluate(s.model, s.val_batches, s.device, precision,
                        progress=lambda n: advance(n * world))  # fmt: skip


def epoch_metrics(epoch: int, lr: float, train: dict, val: dict, train_seconds: float,
                  started: float, nonfinite: float) -> dict[str, float]:  # fmt: skip
    """The row every epoch writes (`metrics.jsonl`, hooks, tracker): losses and top-1/top-5
    (%), the learning rate, wall seconds of the epoch (train + evaluation), training images
    per second, and the count of non-finite gradients seen."""
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
        "nonfinite_grads": nonfinite,
    }


def summary(metrics: dict[str, float]) -> str:
    """One log line of the main metrics (`train_loss=0.5 ... images_per_s=1e+03`)."""
    return " ".join(f"{k}={short_number(metrics[k])}" for k in SUMMARY_KEYS if k in metrics)
