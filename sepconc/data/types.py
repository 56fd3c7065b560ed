"""The data layer's types and its one way to read a split's images and labels.

Builders (`offline`, `torchvision_sets`, `imagenet`) import from here; the registry
(`sepconc.data.registry`) imports the builders through a table. Nothing here imports a
builder or the registry, so the data layer has no import cycle.

Two kinds of split exist:

- in memory: a `TensorImageDataset` (mnist, cifar, digits, synthetic, cached front-end
  features): `images_of(ds)` is its stored `(N, C, H, W)` tensor, before the transform;
- file-backed: an ImageFolder-like dataset (imagenet) that decodes per item:
  `images_of(ds)` is None.

`labels_of(ds)` gives the `(N,)` int64 labels of either kind, in item order. Code outside
the data layer reads a split through these functions, never through attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

# Per-channel statistics used to normalize (docs/models.md, "Training recipe" -> Data).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class DataBundle:
    """A train/val pair with what the model and the run record need to know.

    `image_shape` is `(C, H, W)` of the transformed images. `train_transform_is_random`
    is False when the train transform is deterministic (then a sample's tensor is
    the same every epoch). `identity` is JSON-serializable and recorded with the run.
    """

    train: Dataset
    val: Dataset
    num_classes: int
    image_shape: tuple[int, int, int]
    train_transform_is_random: bool
    identity: dict = field(default_factory=dict)


class TensorImageDataset(Dataset):
    """Images held in memory as one tensor, with an optional per-item tensor transform.

    `images` is `(N, C, H, W)` (uint8 or float), `labels` is `(N,)` int64.
    Item `i` is `(transform(images[i]), int(labels[i]))`, or `images[i]` as a
    float tensor when `transform` is None. No PIL round trip.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"images (N,C,H,W) and labels (N,) must match, got {tuple(images.shape)} "
                f"and {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.to(torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index]
        x = self.transform(x) if self.transform is not None else x.float()
        return x, int(self.labels[index])


def images_of(dataset: Dataset) -> torch.Tensor | None:
    """The stored images `(N, C, H, W)` (uint8 or float, before the split's transform) of an
    in-memory split, or None for a split that decodes its items (file-backed)."""
    return dataset.images if isinstance(dataset, TensorImageDataset) else None


def plain_images_of(dataset: Dataset) -> torch.Tensor | None:
    """`images_of(dataset)` when its items are exactly those images as float (no transform),
    so batches may be sliced straight from the tensor; otherwise None."""
    images = images_of(dataset)
    return images if images is not None and dataset.transform is None else None


def labels_of(dataset: Dataset) -> torch.Tensor:
    """The `(N,)` int64 labels of a split, in item order.

    In-memory splits give their stored labels; file-backed (ImageFolder-like) splits their
    `targets` list; any other dataset is read item by item (`dataset[i][1]`, slow)."""
    if isinstance(dataset, TensorImageDataset):
        return dataset.labels
    targets = getattr(dataset, "targets", None)  # torchvision's ImageFolder/MNIST convention
    if targets is not None:
        return torch.as_tensor(list(targets), dtype=torch.int64)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)


def files_of(dataset: Dataset) -> list[tuple[str, int]] | None:
    """`(path, label)` per item of a file-backed split (ImageFolder's `samples`), or None for
    an in-memory split."""
    if isinstance(dataset, TensorImageDataset):
        return None
    return getattr(dataset, "samples", None)
