"""Write tiny datasets in the real on-disk formats, for tests of anything that loads data.

Each `write_*` takes a root folder, writes the layout `sepconc.data` (and torchvision)
expects under it, and returns the root as a `str` ready for `build_datasets(name, root)`:

- `write_mnist`: `root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte` and their
  `.gz` (IDX: big-endian magic `0x0803` / `0x0801`, then int32 dims, then uint8 data).
- `write_cifar10`: `root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`.
- `write_cifar100`: `root/cifar-100-python/{train,test,meta}`.
  CIFAR files are pickled dicts `{"data": uint8 (n, 3072), "labels"|"fine_labels": [...]}`.
  Their md5s differ from the official release: `sepconc.data` reads the format itself and
  only records `md5_verified: False` (torchvision's own `CIFAR10` class would refuse them).
- `write_imagefolder`: `root/{train,val}/<class>/img_<i>.JPEG`, tiny RGB JPEGs.

Labels cycle through every class (`i % num_classes`) so every class is present.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
from PIL import Image


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX (SN3 "Pascal Vincent") encoding of a uint8 array: magic, dims, data."""
    magic = 0x0800 | array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: str | os.PathLike, n_train: int = 20, n_test: int = 10, seed: int = 0) -> str:
    """Tiny MNIST: `n_train` / `n_test` random 28x28 uint8 images, labels `i % 10`."""
    rng = np.random.default_rng(seed)
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx_bytes(arr)
            path = os.path.join(raw, f"{prefix}-{kind}-ubyte")
            with open(path, "wb") as fh:
                fh.write(data)
            with gzip.open(path + ".gz", "wb") as fh:
                fh.write(data)
    return str(root)


def _cifar_batch(rng: np.random.Generator, n: int, num_classes: int, label_key: str) -> dict:
    batch = {
        "batch_label": "fake batch",
        "data": rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8),
        label_key: [int(i % num_classes) for i in range(n)],
        "filenames": [f"img_{i}.png" for i in range(n)],
    }
    if label_key == "fine_labels":
        batch["coarse_labels"] = [int(i % 20) for i in range(n)]
    return batch


def _pickle(path: str, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_cifar10(
    root: str | os.PathLike, n_per_batch: int = 4, n_test: int = 10, seed: int = 0
) -> str:
    """Tiny CIFAR-10: 5 train batches of `n_per_batch` images, a test batch, and the meta."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    for b in range(1, 6):
        _pickle(
            os.path.join(folder, f"data_batch_{b}"), _cifar_batch(rng, n_per_batch, 10, "labels")
        )
    _pickle(os.path.join(folder, "test_batch"), _cifar_batch(rng, n_test, 10, "labels"))
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    _pickle(
        os.path.join(folder, "batches.meta"),
        {"num_cases_per_batch": n_per_batch, "label_names": names, "num_vis": 3072},
    )
    return str(root)


def write_cifar100(
    root: str | os.PathLike, n_train: int = 20, n_test: int = 10, seed: int = 0
) -> str:
    """Tiny CIFAR-100: `train`, `test` (fine and coarse labels) and `meta`."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    _pickle(os.path.join(folder, "train"), _cifar_batch(rng, n_train, 100, "fine_labels"))
    _pickle(os.path.join(folder, "test"), _cifar_batch(rng, n_test, 100, "fine_labels"))
    meta = {
        "fine_label_names": [f"fine_{i}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i}" for i in range(20)],
    }
    _pickle(os.path.join(folder, "meta"), meta)
    return str(root)


def imagefolder_class_names(n_classes: int) -> list[str]:
    """The class folder names `write_imagefolder` uses (WordNet-id-like, sorted)."""
    return [f"n{i:08d}" for i in range(n_classes)]


def write_imagefolder(
    root: str | os.PathLike,
    n_classes: int = 5,
    n_per_class: int = 3,
    size: int = 32,
    seed: int = 0,
    splits: tuple[str, ...] = ("train", "val"),
) -> str:
    """Tiny ImageNet layout: `root/<split>/<class>/img_<i>.JPEG`, random RGB `size`x`size`."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for name in imagefolder_class_names(n_classes):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(n_per_class):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"img_{i}.JPEG"), quality=90)
    return str(root)
