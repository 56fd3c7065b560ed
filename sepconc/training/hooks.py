"""Epoch hooks and the tracker: what they receive, in which order, and the run's result.

Each epoch, every hook runs on every rank (`report.rank` says which), then the tracker
records the epoch on rank 0; a hook returning True asks the run to stop (after that
epoch is recorded). Resuming first replays the epochs already in the run folder's
`metrics.jsonl` (`EpochReport.replayed`), so a hook or tracker that missed them when
an earlier attempt was killed catches up; both skip epochs they already handled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sepconc.distributed import World, broadcast_object
from sepconc.run_folder import metrics_rows


@dataclass
class EpochReport:
    """What an epoch hook receives. `checkpoint` is set on rank 0 when one was written.

    `replayed`: an epoch of the resumed lineage recorded before this process started
    (its `metrics.jsonl` row; no checkpoint), sent before the first new epoch so that a
    hook can log what an earlier, killed attempt could not; hooks skip epochs they have
    already handled. Its return value is ignored."""

    epoch: int  # epochs completed (1-based)
    metrics: dict[str, float]  # the epoch's row, with the model's `params` and `flops`
    checkpoint: Path | None
    run_dir: Path
    rank: int
    replayed: bool = False


EpochHook = Callable[[EpochReport], "bool | None"]  # True asks the run to stop


@dataclass
class TrainResult:
    """The end of a run: its folder, epochs completed, whether a hook stopped it, the best
    validation top-1 (%) and the last epoch's metrics row (rank 0's, as on every rank)."""

    run_dir: str
    epochs_done: int
    stopped_early: bool
    best_val_acc1: float
    metrics: dict[str, float] = field(default_factory=dict)


def notify(report: EpochReport, hooks: Sequence[EpochHook], tracker, world: World) -> bool:
    """Send a finished epoch to every hook (on every rank), then to the tracker (rank 0);
    True on every rank when any hook on any rank asked to stop."""
    wants_stop = any([bool(hook(report)) for hook in hooks])  # every hook, not just until True
    if world.is_main:
        tracker.log_epoch(report)
    return bool(broadcast_object(wants_stop))


def replay(run_dir: Path, epoch: int, world: World, hooks: Sequence[EpochHook], tracker) -> None:
    """Send the recorded epochs <= `epoch` of this run folder (rank 0's rows, the same on
    every rank) to the hooks and the tracker, marked `replayed`."""
    rows = broadcast_object(
        [r for r in metrics_rows(run_dir) if 0 < r.get("epoch", 0) <= epoch]
        if world.is_main else None
    )  # fmt: skip
    for row in rows:
        report = EpochReport(int(row["epoch"]), row, None, run_dir, world.rank, replayed=True)
        for hook in hooks:
            hook(report)
        if world.is_main:
            tracker.log_epoch(report)
