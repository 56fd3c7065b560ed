"""The training step and the two epoch loops (train, evaluate).

A step reads as the recipe of docs/models.md: forward, cross-entropy, backward, SGD
step, Parseval step on every frame and projection. Sums (loss, top-1, top-5,
count) stay on the device during an epoch and are reduced across ranks once at
its end, so every rank returns the same numbers: the exact global ones (padding
copies of the training shards are not counted; a rank with no sample adds zeros).

Collectives: every rank enters the same ones, the same number of times, whatever
its shard holds. Training: one gradient all-reduce per step (the shards have equal
batch counts, `sepconc.batches`) and one all-reduce of the sums. Evaluation runs
the bare module, not the DDP wrapper (whose first forward after training broadcasts
buffers: a rank with no validation batch would skip it and hang the others); the
buffers are synchronized from rank 0 first, by every rank, then the sums reduced.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sepconc.batches import own_count
from sepconc.distributed import all_reduce_sum, sync_buffers
from sepconc.frames import parseval_step
from sepconc.metrics.accuracy import topk_correct
from sepconc.precision import autocast

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: training stops instead of going on silently."""


@dataclass
class EpochSums:
    """Per-rank running sums; `reduce()` makes them global."""

    loss: torch.Tensor
    top1: torch.Tensor
    top5: torch.Tensor
    count: torch.Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> EpochSums:
        return cls(*(torch.zeros((), dtype=torch.float64, device=device) for _ in range(4)))

    def add(self, losses: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add `n` samples: per-sample `losses (n,)`, `logits (n, classes)`, `target (n,)`."""
        c1, c5 = topk_correct(logits.detach(), target, (1, 5))
        self.loss += losses.detach().double().sum()
        self.top1 += c1
        self.top5 += c5
        self.count += target.shape[0]

    def reduce(self) -> dict[str, float]:
        """Global means over every rank's samples (one all-reduce, entered by every rank);
        NaN when no rank saw a sample. `images` is the global sample count."""
        sums = all_reduce_sum(torch.stack([self.loss, self.top1, self.top5, self.count]))
        loss, top1, top5, count = sums.tolist()
        if count == 0:
            return {"loss": math.nan, "acc1": math.nan, "acc5": math.nan, "images": 0.0}
        return {"loss": loss / count, "acc1": 100 * top1 / count, "acc5": 100 * top5 / count,
                "images": count}  # fmt: skip


def learning_rate(base_lr: float, epoch: int, adjust_every: int) -> float:
    """Step decay: `lr * 0.1 ** (epoch // adjust_every)`."""
    return base_lr * 0.1 ** (epoch // adjust_every)


def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float):
    """SGD with two groups: frames and projections get no weight decay (docs/models.md)."""
    tight = {id(p) for _, p in model.tight_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) not in tight], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in tight], "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def train_epoch(
    model: nn.Module,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator,
    beta: float,
    epoch: int,
    device: torch.device,
    print_freq: int = 100,
    progress=None,
    precision: str = "fp32",
) -> dict[str, float]:
    """One pass over `batches`. `model` may be DDP-wrapped; `net` is the bare module.

    Every rank must hold the same number of batches (`sepconc.batches.rank_batches`
    pads the training shards so): each step all-reduces the gradients. The metrics
    count each sample once: the shard's padding copies (last, `own_count`) are trained
    on but not counted. Checks the loss, summed over ranks, every `print_freq` steps
    and at the end: a non-finite loss raises `TrainingDiverged` naming the epoch and the
    step, on every rank at once (never one rank alone, leaving the others in a collective).
    """
    model.train()
    sums = EpochSums.zeros(device)
    tight = [p for _, p in net.tight_parameters()]
    own = own_count(batches)
    step = 0
    for step, (images, target) in enumerate(batches, 1):
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with autocast(precision, device):
            logits = model(images)
        losses = F.cross_entropy(logits.float(), target, reduction="none")
        loss = losses.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for weight in tight:
            parseval_step(weight, beta)
        keep = target.shape[0] if own is None else max(0, min(target.shape[0], own))
        if own is not None:
            own -= keep
        sums.add(losses[:keep], logits[:keep], target[:keep])
        if step % print_freq == 0:  # every rank at the same steps: they stop together
            _check_finite(all_reduce_sum(loss.detach().clone()), epoch, step)
            log.debug("epoch %d step %d loss %.4f", epoch, step, loss.detach().item())
        if progress is not None:
            progress(images.shape[0])
    result = sums.reduce()
    if result["images"]:
        _check_finite(result["loss"], epoch, step)
    return result


def _check_finite(loss: torch.Tensor | float, epoch: int, step: int) -> None:
    # Only the number is read: no autograd warning for a tensor that requires grad.
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"loss became {value} at epoch {epoch} (step {step}); lower the learning rate "
            f"or check the input data"
        )


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterator, device: torch.device,
             precision: str = "fp32", progress=None) -> dict[str, float]:  # fmt: skip
    """Loss and top-1/top-5 over every rank's `batches` (the exact global means; NaN with
    no sample at all). `model` may be DDP-wrapped: the bare module is run, with rank 0's
    buffers. Every rank enters the same collectives, whatever its shard holds (even none).
    The forward runs under `precision`'s autocast, the loss in float32. `progress(n)` is
    called after each batch of `n` images (`sepconc.progress`).
    """
    net = model.module if isinstance(model, DistributedDataParallel) else model
    sync_buffers(net)
    net.eval()
    sums = EpochSums.zeros(device)
    for images, target in batches:
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with autocast(precision, device):
            logits = net(images)
        logits = logits.float()
        sums.add(F.cross_entropy(logits, target, reduction="none"), logits, target)
        if progress is not None:
            progress(target.shape[0])
    return sums.reduce()
