"""Mini-batches for one rank: a seeded shard of the data set, in memory or through a DataLoader.

Every rank draws the same permutation (seed + epoch), pads it to a multiple of
the world size (repeating it from its start, as often as needed: even one sample
over four ranks) and takes every `world`-th index from its rank on. With a
per-rank batch of `B / world`, the union of the ranks' i-th batches is the
single-process run's i-th batch of size `B`: a DDP run sees the same global
batches as a one-process run, and every rank has the same number of training
batches (each step's gradient all-reduce is entered by every rank). The padding
copies come last in a rank's shard; `own_count()` says how many come before them,
so epoch metrics count each sample once. Validation shards are not padded (no
sample counted twice); a rank's may be empty (the evaluation joins its
collectives all the same, see `sepconc.loop.evaluate`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sepconc.data.types import labels_of, plain_images_of
from sepconc.errors import UserError


class ShardSampler(Sampler[int]):
    """Indices of rank `rank` of `world`; shuffled by `seed + epoch` when `shuffle`."""

    def __init__(self, size: int, world: int, rank: int, shuffle: bool, seed: int = 0):
        self.size, self.world, self.rank = size, world, rank
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=gen)
            padded = -(-self.size // self.world) * self.world
            if self.size:
                order = order.repeat(-(-padded // self.size))[:padded]
        else:
            order = torch.arange(self.size)
        return order[self.rank :: self.world]

    def own_count(self) -> int:
        """How many of `indices()` are this rank's own samples (the rest, last, are padding):
        positions `rank, rank + world, ...` of the padded order that fall below `size`."""
        return max(0, -(-(self.size - self.rank) // self.world))

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return len(self.indices())


class TensorBatches:
    """Batches sliced straight from an in-memory `(images, labels)` pair (no per-item collate).

    `pin_memory` (training on CUDA): each batch is gathered into page-locked memory, so
    the training loop's `.to(device, non_blocking=True)` copies overlap the GPU's work."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sampler, batch_size: int,
                 pin_memory: bool = False):  # fmt: skip
        self.images, self.labels = images, labels
        self.sampler, self.batch_size, self.pin_memory = sampler, batch_size, pin_memory

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index = self.sampler.indices()
        for start in range(0, len(index), self.batch_size):
            chunk = index[start : start + self.batch_size]
            images, labels = self.images[chunk].float(), self.labels[chunk]
            if self.pin_memory:
                images, labels = images.pin_memory(), labels.pin_memory()
            yield images, labels

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)


def check_not_empty(train: Dataset, val: Dataset, where: str) -> None:
    """Refuse (`UserError`, one line naming `where`) a training or validation split with no
    sample: no gradient step, or no validation metric, could be computed."""
    if len(train) == 0 or len(val) == 0:
        raise UserError(
            f"{where} has {len(train)} training and {len(val)} validation images; both splits "
            "need at least one: check the data folder's files"
        )


def own_count(batches) -> int | None:
    """`own_count()` of the `ShardSampler` behind `batches` (`TensorBatches` or a
    `DataLoader`), or None when `batches` is a plain iterable (every row counts)."""
    sampler = getattr(batches, "sampler", None)
    return sampler.own_count() if isinstance(sampler, ShardSampler) else None


def rank_batches(
    dataset: Dataset,
    batch_size: int,
    world: int,
    rank: int,
    shuffle: bool,
    seed: int,
    workers: int,
    pin_memory: bool = False,
):
    """An iterable of `(images, labels)` batches for this rank, with `.sampler.set_epoch`;
    in page-locked memory with `pin_memory` (set when training on CUDA)."""
    sampler = ShardSampler(len(dataset), world, rank, shuffle, seed)
    images = plain_images_of(dataset)
    if images is not None:
        return TensorBatches(images, labels_of(dataset), sampler, batch_size, pin_memory)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        pin_memory=pin_memory, persistent_workers=workers > 0)  # fmt: skip
    return loader
