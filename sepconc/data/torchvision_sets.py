"""MNIST and CIFAR-10/100 in torchvision's file layouts, held in memory as uint8 tensors.

Layouts under `root` (what torchvision writes with `download=True`):

- MNIST: `root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte` (uncompressed
  IDX files; torchvision keeps the `.gz` beside them). Read by torchvision's `MNIST`.
- CIFAR-10: `root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`.
- CIFAR-100: `root/cifar-100-python/{train, test, meta}`.

CIFAR batches are Python pickles of `{"data": uint8 (n, 3072), "labels" | "fine_labels": [n]}`
(channel-major rows: 1024 red, 1024 green, 1024 blue values of a 32x32 image). We read
them here rather than through torchvision's `CIFAR10` because that class refuses any
file whose md5 differs from the official release, which rules out tiny test files and
partial copies. We still compute the md5s against torchvision's list and record
`md5_verified` in the run's identity (with a warning when they differ). Downloading
goes through torchvision (`CIFAR10(root, download=True)` checks the archive's md5), under a
file lock in `root` so that DDP ranks building the data at once download it once.

Transforms (docs/models.md), on tensors, per item:

- MNIST: `x / 255` then normalize with mean 0.1307, std 0.3081. No augmentation.
- CIFAR train: zero-pad 4 pixels, random 32x32 crop, horizontal flip with probability
  1/2 (torchvision's `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()`), then
  `x / 255` normalized per channel with ImageNet's mean/std. Val: normalization only.
  Randomness comes from torch's global RNG (seeded by the trainer / DataLoader workers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from torchvision.datasets import CIFAR10, CIFAR100, MNIST
from torchvision.datasets.utils import check_integrity

from sepconc.data.types import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
    DataBundle,
    TensorImageDataset,
)
from sepconc.errors import UserError, clean_reason

log = logging.getLogger(__name__)

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_LOAD_ERRORS = (RuntimeError, OSError, ValueError, KeyError, EOFError, AssertionError)


class Normalize:
    """`(x / 255 - mean) / std` per channel, for a uint8 (or float in 0..255) `(C, H, W)` tensor.

    Computed as `x * a + b` with `a = 1 / (255 std)`, `b = -mean / std` of shape (C, 1, 1).
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.mean, self.std = tuple(mean), tuple(std)
        self.scale = 1.0 / (255.0 * s)
        self.shift = -m / s

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self.scale + self.shift


class RandomCropFlipNormalize:
    """CIFAR train transform: zero-pad `padding`, random `HxW` crop, flip w.p. 1/2, normalize.

    Input `(C, H, W)` uint8, output `(C, H, W)` float. A crop offset `(i, j)` is uniform in
    `{0 .. 2 padding}^2`; the padded pixels are 0 before normalization, as in torchvision.
    """

    def __init__(self, normalize: Normalize, padding: int = 4) -> None:
        self.normalize = normalize
        self.padding = padding

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w = x.shape
        p = self.padding
        n = 2 * p + 1
        # one draw for (flip, i, j): uniform on {0, 1} x {0 .. 2p}^2
        flip, r = divmod(int(torch.randint(0, 2 * n * n, ())), n * n)
        i, j = divmod(r, n)
        out = F.pad(x, (p, p, p, p))[:, i : i + h, j : j + w]
        if flip:
            out = out.flip(-1)
        return self.normalize(out)


def build_mnist(root: str, *, download: bool = False) -> DataBundle:
    """MNIST train (60000) / test (10000) as `(1, 28, 28)` normalized tensors, 10 classes."""
    root = os.path.abspath(os.path.expanduser(root))
    raw = os.path.join(root, "MNIST", "raw")
    try:
        with _download_lock(root, download):
            train = MNIST(root, train=True, download=download)
            test = MNIST(root, train=False, download=download)
    except _LOAD_ERRORS as exc:
        raise UserError(_mnist_message(root, raw, download, exc)) from None
    normalize = Normalize(MNIST_MEAN, MNIST_STD)
    train_set = TensorImageDataset(train.data.unsqueeze(1), train.targets, normalize)
    val_set = TensorImageDataset(test.data.unsqueeze(1), test.targets, normalize)
    identity = {
        "name": "mnist",
        "root": root,
        "sizes": {"train": len(train_set), "val": len(val_set)},
        "classes": [str(c) for c in range(10)],
        "split": "official train / test (test used as val)",
        "transform": f"normalize mean {MNIST_MEAN[0]} std {MNIST_STD[0]}",
    }
    return DataBundle(train_set, val_set, 10, (1, 28, 28), False, identity)


def _mnist_message(root: str, raw: str, download: bool, exc: BaseException) -> str:
    what = clean_reason(exc)
    if download:
        return (
            f"could not download MNIST into {root} ({what}); check the network or place "
            f"{', '.join(MNIST_FILES)} in {raw} and drop --download"
        )
    hint = ""
    if os.path.isfile(os.path.join(root, "raw", MNIST_FILES[0])):
        hint = f" (found raw/ directly under {root}: pass its parent as --data)"
    elif os.path.isfile(os.path.join(raw, MNIST_FILES[0] + ".gz")):
        hint = " (only .gz files found: gunzip them, keeping the names)"
    return (
        f"MNIST not found or unreadable in {raw}{hint}: expected uncompressed "
        f"{', '.join(MNIST_FILES)}; pass --data DIR holding MNIST/raw/ or add --download"
    )


def check_mnist(root: str) -> None:
    """`build_mnist`'s error for missing files, raised without reading them (pre-flight)."""
    root = os.path.abspath(os.path.expanduser(root))
    raw = os.path.join(root, "MNIST", "raw")
    if not all(os.path.isfile(os.path.join(raw, f)) for f in MNIST_FILES):
        raise UserError(_mnist_message(root, raw, False, FileNotFoundError(raw)))


def check_cifar(root: str, *, hundred: bool = False) -> None:
    """`UserError` naming the missing CIFAR files and the expected layout; reads none of them."""
    root = os.path.abspath(os.path.expanduser(root))
    cls = CIFAR100 if hundred else CIFAR10
    name = "cifar100" if hundred else "cifar10"
    folder = os.path.join(root, cls.base_folder)
    expected = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in expected if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        hint = ""
        if os.path.basename(root.rstrip(os.sep)) == cls.base_folder:
            hint = f" ({root} is the {cls.base_folder} folder itself: pass its parent as --data)"
        raise UserError(
            f"{name} not found in {folder}{hint}: missing {', '.join(missing)} (expected "
            f"{', '.join(expected)}); pass --data DIR holding {cls.base_folder}/ or add --download"
        )


def build_cifar(root: str, *, hundred: bool = False, download: bool = False) -> DataBundle:
    """CIFAR-10 or CIFAR-100 train (50000) / test (10000) as `(3, 32, 32)` tensors."""
    root = os.path.abspath(os.path.expanduser(root))
    cls = CIFAR100 if hundred else CIFAR10
    name = "cifar100" if hundred else "cifar10"
    folder = os.path.join(root, cls.base_folder)
    if download:
        try:
            with _download_lock(root, True):
                cls(root, train=True, download=True)
        except _LOAD_ERRORS as exc:
            raise UserError(
                f"could not download {name} into {root} ({clean_reason(exc)}); check the network "
                f"or place {cls.base_folder}/ there and drop --download"
            ) from None
    check_cifar(root, hundred=hundred)
    x_train, y_train = _read_cifar_batches(folder, [f for f, _ in cls.train_list])
    x_val, y_val = _read_cifar_batches(folder, [f for f, _ in cls.test_list])
    classes = _read_cifar_meta(os.path.join(folder, cls.meta["filename"]), cls.meta["key"])
    n = len(classes)
    for split, y in (("train", y_train), ("test", y_val)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n):
            raise UserError(
                f"{name} {split} labels in {folder} span {int(y.min())}..{int(y.max())}, "
                f"outside 0..{n - 1} of the meta file; re-extract the archive or use --download"
            )
    md5_ok = all(
        check_integrity(os.path.join(folder, f), md5) for f, md5 in cls.train_list + cls.test_list
    ) and check_integrity(os.path.join(folder, cls.meta["filename"]), cls.meta["md5"])
    if not md5_ok:
        log.warning(
            "%s files in %s differ from the official release (md5); using them as they are",
            name,
            folder,
        )
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_set = TensorImageDataset(x_train, y_train, RandomCropFlipNormalize(normalize, 4))
    val_set = TensorImageDataset(x_val, y_val, normalize)
    identity = {
        "name": name,
        "root": root,
        "sizes": {"train": len(train_set), "val": len(val_set)},
        "classes": classes,
        "split": "official train / test (test used as val)",
        "md5_verified": md5_ok,
        "transform": "train: pad 4 + random crop 32 + hflip; all: ImageNet mean/std",
    }
    return DataBundle(train_set, val_set, n, (3, 32, 32), True, identity)


def _read_cifar_batches(folder: str, files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate pickled batches into `(N, 3, 32, 32)` uint8 images and `(N,)` int64 labels."""
    images, labels = [], []
    for f in files:
        path = os.path.join(folder, f)
        entry = _unpickle(path)
        try:
            data = np.asarray(entry["data"], dtype=np.uint8)
            y = entry["labels"] if "labels" in entry else entry["fine_labels"]
            data = data.reshape(-1, 3, 32, 32)
        except (KeyError, ValueError, TypeError) as exc:
            raise UserError(
                f"CIFAR batch {path} is not in the python-pickle CIFAR format ({clean_reason(exc)}); "
                "re-extract the archive or use --download"
            ) from None
        if len(y) != data.shape[0]:
            raise UserError(
                f"CIFAR batch {path} has {data.shape[0]} images but {len(y)} labels; "
                "re-extract the archive or use --download"
            )
        images.append(torch.from_numpy(data.copy()))
        labels.append(torch.as_tensor(np.asarray(y, dtype=np.int64)))
    return torch.cat(images), torch.cat(labels)


def _read_cifar_meta(path: str, key: str) -> list[str]:
    entry = _unpickle(path)
    if key not in entry:
        raise UserError(f"CIFAR meta file {path} has no {key!r} entry; re-extract the archive")
    return [str(c) for c in entry[key]]


def _unpickle(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise UserError(
            f"cannot read CIFAR file {path} ({clean_reason(exc)}); re-extract the archive "
            "or use --download"
        ) from None
    if not isinstance(entry, dict):
        raise UserError(f"CIFAR file {path} holds {type(entry).__name__}, not a dict; re-extract")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


@contextlib.contextmanager
def _download_lock(root: str, download: bool) -> Iterator[None]:
    """Serialize downloads into `root` across processes (DDP ranks all build the datasets):
    the first holder downloads, the others find the files present and skip."""
    if not download:
        yield
        return
    os.makedirs(root, exist_ok=True)
    with FileLock(os.path.join(root, ".sepconc-download.lock")):
        yield
