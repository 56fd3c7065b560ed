"""Datasets for training: torchvision sets, ImageNet folders, and two offline sets.

`build_datasets(name, root, ...)` -> `DataBundle(train, val, num_classes, image_shape,
train_transform_is_random, identity)`; `dataset_spec(name)` -> `((C, H, W), classes)`
without reading files. See `sepconc.data.registry` for the table of datasets.
"""

from sepconc.data.registry import DATASETS, DataBundle, build_datasets, check_data, dataset_spec

__all__ = ["DATASETS", "DataBundle", "build_datasets", "check_data", "dataset_spec"]
