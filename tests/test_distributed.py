"""Real DDP runs (spawned gloo processes on loopback, `sepconc.distributed.launch_local`).

- A crash while leaving the process group, after every rank finished, does not fail the
  run; a crash before that does. A rank's `UserError` is the parent's `UserError`; rank 0's
  return value is `launch_local`'s.
- Uneven shards: a rank with no validation image, fewer training images than ranks. The runs
  finish with the exact global metrics; `--evaluate` with N processes returns its metrics.

Real spawned gloo processes on loopback. The teardown crash is made by replacing
`destroy_process_group` in rank 1 with `os.abort()` (the SIGABRT gloo intermittently
raises there); the early crash aborts rank 1 inside the work itself.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sepconc.batches import ShardSampler, TensorBatches, check_not_empty
from sepconc.config import Config
from sepconc.distributed import launch_local
from sepconc.errors import UserError
from sepconc.loop import TrainingDiverged, train_epoch
from sepconc.trainer import train
from tests.fakedata import write_mnist


def _abort_on_leaving(out_dir: str) -> None:
    rank = dist.get_rank()
    with open(os.path.join(out_dir, f"worked-{rank}"), "w"):
        pass
    if rank == 1:
        dist.destroy_process_group = os.abort


def _abort_while_working(out_dir: str) -> None:
    if dist.get_rank() == 1:
        os.abort()
    dist.barrier()


def test_a_crash_while_leaving_after_the_run_is_logged_not_raised(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sepconc.distributed"):
        launch_local(_abort_on_leaving, 2, "cpu", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worked-0", "worked-1"]
    assert "DDP process 1 exited with SIGABRT while leaving its process group" in caplog.text


def test_a_crash_during_the_run_fails_it(tmp_path):
    with pytest.raises(mp.ProcessExitedException, match="SIGABRT"):
        launch_local(_abort_while_working, 2, "cpu", str(tmp_path))


# ------------------------------------------------------------------ uneven shards, real runs
# MNIST in torchvision's raw IDX layout (tests/fakedata.py), an `analysis` net small enough
# for a few seconds per run. Every collective must be entered by every rank: a rank that
# skips one hangs the others, so each test has a timeout well under the suite's.

TINY = {
    "dataset": "mnist",
    "arch": "analysis",
    "frame_width": [8],
    "frame_kernel_size": [14],
    "frame_stride": [7],
    "lr": 0.01,
    "seed": 0,
    "device": "cpu",
    "workers": 0,
    "stats_every": 1,  # the class-statistics probe and diagnostics run every epoch
    "tracking": False,
    "cache": False,
}


def tiny_config(**changes) -> Config:
    return Config.from_flat({**TINY, **{k: str(v) if isinstance(v, Path) else v
                                        for k, v in changes.items()}})  # fmt: skip


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(420)
def test_one_validation_image_over_two_ranks_gives_that_images_metrics(tmp_path):
    """Rank 1's validation shard is empty (1 image, 2 ranks); 5 training images (padded).

    The run finishes; its last val metrics are that one image's (top-1 0 or 100, never an
    average of ranks), equal to a one-process evaluation of the final checkpoint; the
    evaluate-only path gives the same numbers with 1 and with 2 processes.
    """
    data = write_mnist(tmp_path / "m", n_train=5, n_test=1)
    run = tmp_path / "run"
    result = train(tiny_config(data=data, epochs=2, batch_size=4, num_workers=2, out=run))
    assert result.epochs_done == 2
    last = _rows(run)[-1]
    assert [r["epoch"] for r in _rows(run)] == [1, 2]
    assert last["val_acc1"] in (0.0, 100.0) and last["val_acc5"] in (0.0, 100.0)
    assert any(k.startswith("block1/frame/") for k in last)  # the diagnostics ran

    one = train(tiny_config(data=data, batch_size=4, resume=run, evaluate=True,
                            out=tmp_path / "e1"))  # fmt: skip
    two = train(tiny_config(data=data, batch_size=4, resume=run, evaluate=True,
                            num_workers=2, out=tmp_path / "e2"))  # fmt: skip
    for got in (one, two):
        assert got.epochs_done == 2
        assert got.metrics["val_images"] == 1
        assert got.metrics["val_loss"] == pytest.approx(last["val_loss"], rel=1e-6)
        assert got.metrics["val_acc1"] == last["val_acc1"]
        assert got.metrics["val_acc5"] == last["val_acc5"]


@pytest.mark.timeout(420)
def test_fewer_training_images_than_ranks(tmp_path):
    """1 training image over 3 ranks (padding repeats it to every rank) and 2 validation
    images (rank 2's shard empty): every rank steps once per epoch, the run finishes."""
    data = write_mnist(tmp_path / "m", n_train=1, n_test=2)
    result = train(tiny_config(data=data, epochs=2, batch_size=3, num_workers=3,
                               out=tmp_path / "run"))  # fmt: skip
    assert result.epochs_done == 2
    for row in _rows(tmp_path / "run"):
        assert math.isfinite(row["train_loss"]) and row["train_acc1"] in (0.0, 100.0)
        assert row["val_acc1"] in (0.0, 50.0, 100.0)


def _raise_user_error_on_rank_1() -> int:
    if dist.get_rank() == 1:
        raise UserError("bad value 7 for --thing; use 1..5")
    dist.barrier()
    return 0


def test_a_user_error_on_a_rank_is_one_user_error_in_the_parent():
    with pytest.raises(UserError, match=r"^bad value 7 for --thing; use 1..5$"):
        launch_local(_raise_user_error_on_rank_1, 2, "cpu")


def _rank_squared() -> int:
    return dist.get_rank() ** 2 + 41


def test_launch_local_returns_rank_0s_result():
    assert launch_local(_rank_squared, 2, "cpu") == 41


@pytest.mark.parametrize("size,world", [(1, 4), (2, 3), (5, 2), (7, 3), (0, 2)])
def test_training_shards_are_equal_and_count_each_sample_once(size, world):
    """Every rank gets the same number of indices (even with fewer samples than ranks); the
    own (non-padding) ones come first and cover the data set exactly once."""
    shards = []
    for rank in range(world):
        sampler = ShardSampler(size, world, rank, shuffle=True, seed=1)
        sampler.set_epoch(3)
        shards.append((sampler.indices().tolist(), sampler.own_count()))
    assert len({len(index) for index, _ in shards}) == 1
    own = sorted(i for index, count in shards for i in index[:count])
    assert own == list(range(size))


class _Linear(nn.Linear):
    """The smallest model `train_epoch` accepts (no frame, no projection)."""

    def tight_parameters(self):
        return []

    def forward(self, x):
        return super().forward(x)


def test_train_epoch_counts_padding_copies_once():
    """`images` of a rank's epoch is its own samples, not the padded shard's length."""
    torch.manual_seed(0)
    net = _Linear(4, 3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    images, labels = torch.randn(5, 4), torch.arange(5) % 3
    counts = []
    for rank in range(4):
        sampler = ShardSampler(5, 4, rank, shuffle=True)
        batches = TensorBatches(images, labels, sampler, batch_size=1)
        sums = train_epoch(net, net, optimizer, batches, 0.0, 1, torch.device("cpu"))
        counts.append(sums["images"])
    assert counts == [2, 1, 1, 1]  # 8 padded indices, 5 samples


def test_an_empty_split_is_refused_in_one_line():
    """No gradient step or no validation metric could be computed: refused before training."""
    with pytest.raises(UserError, match=r"^imagenet data in D has 4 training and 0 validation"):
        check_not_empty(range(4), range(0), "imagenet data in D")
    check_not_empty(range(1), range(1), "imagenet data in D")


def _diverge_on_rank_1(out_dir: str) -> None:
    """Rank 1's first batch holds a NaN: its loss is NaN at step 1, rank 0's is finite."""
    rank = dist.get_rank()
    torch.manual_seed(0)
    net = _Linear(4, 3)
    model = DistributedDataParallel(net)
    images, labels = torch.randn(8, 4), torch.arange(8) % 3
    if rank == 1:
        images[0, 0] = float("nan")
    batches = [(images[i : i + 2], labels[i : i + 2]) for i in range(0, 8, 2)]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    try:
        train_epoch(model, net, optimizer, batches, 0.0, 1, torch.device("cpu"), print_freq=1)
    except TrainingDiverged as exc:
        Path(out_dir, f"diverged-{rank}").write_text(str(exc))


@pytest.mark.timeout(120)
def test_a_nan_loss_on_one_rank_stops_every_rank_at_that_step(tmp_path):
    launch_local(_diverge_on_rank_1, 2, "cpu", str(tmp_path))
    for rank in range(2):
        message = (tmp_path / f"diverged-{rank}").read_text()
        assert message.startswith("loss became nan at epoch 1 (step 1)")


@pytest.mark.timeout(300)
def test_a_diverged_ddp_run_raises_training_diverged(tmp_path):
    """As in one process (the CLI prints one line and exits 1), not a child's traceback."""
    data = write_mnist(tmp_path / "m", n_train=8, n_test=2)
    with pytest.raises(TrainingDiverged, match=r"^loss became (nan|inf) at epoch \d+ \(step"):
        train(tiny_config(data=data, epochs=3, batch_size=4, lr=1e30, num_workers=2,
                          print_freq=1, out=tmp_path / "run"))  # fmt: skip
