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

import importlib
import logging
from collections.abc import Callable

from sepconc.data.types import (  # noqa: F401  (re-exported: the data layer's public names)
    IMAGENET_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
    DataBundle,
    TensorImageDataset,
)
from sepconc.errors import UserError

log = logging.getLogger(__name__)

DATASETS = ("mnist", "cifar10", "cifar100", "imagenet", "digits", "synthetic")

_SPECS: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "imagenet": ((3, 224, 224), IMAGENET_CLASSES),
    "digits": ((1, 28, 28), 10),
    "synthetic": ((1, 16, 16), 10),
}


# Builders by dataset name: (module, function), imported when first used (torchvision,
# PIL and scikit-learn stay out of `--help`, `--dry-run` and `validate`). The builder
# modules import the types from `sepconc.data.types`, never this module: no cycle.
_BUILDERS = {
    "mnist": ("sepconc.data.torchvision_sets", "build_mnist"),
    "cifar10": ("sepconc.data.torchvision_sets", "build_cifar"),
    "cifar100": ("sepconc.data.torchvision_sets", "build_cifar"),
    "imagenet": ("sepconc.data.imagenet", "build_imagenet"),
    "digits": ("sepconc.data.offline", "build_digits"),
    "synthetic": ("sepconc.data.offline", "build_synthetic"),
}
_CHECKS = {
    "mnist": ("sepconc.data.torchvision_sets", "check_mnist"),
    "cifar10": ("sepconc.data.torchvision_sets", "check_cifar"),
    "cifar100": ("sepconc.data.torchvision_sets", "check_cifar"),
    "imagenet": ("sepconc.data.imagenet", "check_imagenet"),
}


def _function(table: dict[str, tuple[str, str]], dataset: str) -> Callable:
    module, name = table[dataset]
    return getattr(importlib.import_module(module), name)


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
    build = _function(_BUILDERS, dataset)
    if dataset in ("digits", "synthetic"):
        return build()
    if dataset == "imagenet":
        return build(root, nb_classes=nb_classes, class_indices=class_indices, seed=seed,
                     compact_head=compact_head)  # fmt: skip
    if dataset == "mnist":
        return build(root, download=download)
    return build(root, hundred=dataset == "cifar100", download=download)


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
    check = _function(_CHECKS, dataset)
    if dataset == "imagenet":
        check(root, nb_classes, class_indices, seed, compact_head)
    elif dataset == "mnist":
        check(root)
    else:
        check(root, hundred=dataset == "cifar100")


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
