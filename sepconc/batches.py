"""Mini-batches for one rank: a seeded shard of the data set, in memory or through a DataLoader.

Every rank draws the same permutation (seed + epoch), pads it to a multiple of
the world size and takes every `world`-th index from its rank on. With a
per-rank batch of `B / world`, the union of the ranks' i-th batches is the
single-process run's i-th batch of size `B`: a DDP run sees the same global
batches as a one-process run. Validation shards are not padded (no sample
counted twice).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


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
            order = torch.cat([order, order[: padded - self.size]])
        else:
            order = torch.arange(self.size)
        return order[self.rank :: self.world]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return len(self.indices())


class TensorBatches:
    """Batches sliced straight from an in-memory `(images, labels)` pair (no per-item collate)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sampler, batch_size: int):
        self.images, self.labels = images, labels
        self.sampler, self.batch_size = sampler, batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index = self.sampler.indices()
        for start in range(0, len(index), self.batch_size):
            chunk = index[start : start + self.batch_size]
            yield self.images[chunk].float(), self.labels[chunk]

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)


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
    """An iterable of `(images, labels)` batches for this rank, with `.sampler.set_epoch`."""
    sampler = ShardSampler(len(dataset), world, rank, shuffle, seed)
    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor) and getattr(dataset, "transform", None) is None:
        return TensorBatches(images, dataset.labels, sampler, batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        pin_memory=pin_memory, persistent_workers=workers > 0)  # fmt: skip
    return loader
