"""The data layer's public face: the dataset names, their shapes, and one builder.

`build_datasets(name, root, ...)` returns a `DataBundle` whose `train` and `val`
datasets yield `(image, label)` with `image` a float tensor of shape
`(C, H, W)` (already transformed and normalized) and `label` an int in
`0 .. num_classes - 1`. `dataset_spec(name)` gives `((C, H, W), num_classes)`
without reading any file (for `--dry-run` and config validation).

Datasets and what they become:

============  ===========  =======  ======================================
name          (C, H, W)    classes  source
============  ===========  =======  ======================================
mnist         (1, 28, 28)  10       torchvision MNIST under `root`
cifar10       (3, 32, 32)  10       `root/cifar-10-batches-py/`
cifar100      (3, 32, 32)  100      `root/cifar-100-python/`
imagenet      (3, 224, 224) 1000 [1] `root/train/<class>/`, `root/val/<class>/`
digits        (1, 28, 28)  10       scikit-learn's bundled 8x8 digits
synthetic     (1, 16, 16)  10       seeded Gaussian mixture (no file)
============  ===========  =======  ======================================

[1] ImageNet keeps the paper's 1000-way head on a class subset; `k` with `compact_head`.

The in-memory sets (mnist, cifar, digits, synthetic) are tensors indexed
directly, with tensor transforms; only ImageNet decodes images per item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from sepconc.errors import UserError

log = logging.getLogger(__name__)

DATASETS = ("mnist", "cifar10", "cifar100", "imagenet", "digits", "synthetic")

# Per-channel statistics used to normalize (docs/models.md, "Training recipe" -> Data).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

IMAGENET_CLASSES = 1000

_SPECS: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "imagenet": ((3, 224, 224), IMAGENET_CLASSES),
    "digits": ((1, 28, 28), 10),
    "synthetic": ((1, 16, 16), 10),
}


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


def dataset_spec(
    dataset: str, nb_classes: int = IMAGENET_CLASSES, compact_head: bool = False
) -> tuple[tuple[int, int, int], int]:
    """`((C, H, W), num_classes)` of `dataset` after its transform, reading no file.

    `num_classes` is the classifier's output count. For ImageNet it is 1000 (the
    paper's head, original labels, whatever `nb_classes`), or with `compact_head`
    `nb_classes` (at most 1000; lower when `root/train` holds fewer class folders).
    """
    _check_name(dataset)
    shape, n = _SPECS[dataset]
    if dataset == "imagenet":
        if nb_classes < 1:
            raise UserError(f"--nb-classes must be >= 1, got {nb_classes}")
        n = min(nb_classes, IMAGENET_CLASSES) if compact_head else IMAGENET_CLASSES
    return shape, n


def build_datasets(
    dataset: str,
    root: str | None,
    *,
    download: bool = False,
    nb_classes: int = IMAGENET_CLASSES,
    class_indices: str | None = None,
    seed: int = 0,
    compact_head: bool = False,
) -> DataBundle:
    """Build the train and val datasets of `dataset`.

    `root` is the data folder (required for mnist, cifar10, cifar100, imagenet;
    ignored by digits and synthetic). `download=True` lets torchvision fetch
    MNIST/CIFAR into `root`. `nb_classes`, `class_indices` and `seed` choose the
    ImageNet class subset and `compact_head` its labels and head size (see
    `sepconc.data.imagenet`); `class_indices` is an error for other datasets, and a
    non-default `nb_classes` is ignored there.
    """
    _check_arguments(dataset, root, download, class_indices)
    if dataset != "imagenet" and nb_classes not in (IMAGENET_CLASSES, _SPECS[dataset][1]):
        log.warning(
            "nb_classes=%d ignored: %s always has %d classes",
            nb_classes,
            dataset,
            _SPECS[dataset][1],
        )
    if dataset in ("digits", "synthetic"):
        from sepconc.data import offline

        return offline.build_digits() if dataset == "digits" else offline.build_synthetic()
    if dataset == "imagenet":
        from sepconc.data import imagenet

        return imagenet.build_imagenet(root, nb_classes=nb_classes, class_indices=class_indices,
                                       seed=seed, compact_head=compact_head)  # fmt: skip
    from sepconc.data import torchvision_sets

    if dataset == "mnist":
        return torchvision_sets.build_mnist(root, download=download)
    return torchvision_sets.build_cifar(root, hundred=dataset == "cifar100", download=download)


def check_data(
    dataset: str,
    root: str | None,
    *,
    download: bool = False,
    nb_classes: int = IMAGENET_CLASSES,
    class_indices: str | None = None,
    seed: int = 0,
    compact_head: bool = False,
) -> None:
    """Raise now the `UserError` that `build_datasets` would raise for a missing or mis-laid
    folder or a bad class-indices file (`train`'s pre-flight, run before anything is
    written). Reads no image data, except ImageNet's image headers (a class folder with
    no image, an unreadable image: `sepconc.data.image_files` states the rule). Downloads
    are not checked."""
    _check_arguments(dataset, root, download, class_indices)
    if dataset in ("digits", "synthetic") or download:
        return
    if dataset == "imagenet":
        from sepconc.data import imagenet

        imagenet.check_imagenet(root, nb_classes, class_indices, seed, compact_head)
        return
    from sepconc.data import torchvision_sets

    if dataset == "mnist":
        torchvision_sets.check_mnist(root)
    else:
        torchvision_sets.check_cifar(root, hundred=dataset == "cifar100")


def _check_arguments(dataset: str, root: str | None, download: bool, class_indices) -> None:
    _check_name(dataset)
    if class_indices is not None and dataset != "imagenet":
        raise UserError(
            f"--class-indices {class_indices} only applies to imagenet, not {dataset}; drop it"
        )
    if dataset in ("digits", "synthetic"):
        return
    if root is None:
        raise UserError(f"dataset {dataset} needs a data folder: pass --data DIR")
    if dataset == "imagenet" and download:
        raise UserError("imagenet cannot be downloaded: put train/ and val/ under --data DIR")


def _check_name(dataset: str) -> None:
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
