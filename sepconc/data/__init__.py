"""Datasets for training: torchvision sets, ImageNet folders, and two offline sets.

`build_datasets(name, root, ...)` -> `DataBundle(train, val, num_classes, image_shape,
train_transform_is_random, identity)`; `dataset_spec(name)` -> `((C, H, W), classes)`
without reading files. See `sepconc.data.registry` for the table of datasets.
A split's images and labels are read with `images_of`, `plain_images_of`, `labels_of`
and `files_of` (`sepconc.data.types`), never through its attributes.
"""

from sepconc.data.registry import DATASETS, build_datasets, check_data, dataset_spec
from sepconc.data.types import (
    DataBundle,
    TensorImageDataset,
    files_of,
    images_of,
    labels_of,
    plain_images_of,
)

__all__ = [
    "DATASETS",
    "DataBundle",
    "TensorImageDataset",
    "build_datasets",
    "check_data",
    "dataset_spec",
    "files_of",
    "images_of",
    "labels_of",
    "plain_images_of",
]
