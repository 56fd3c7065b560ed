"""ImageNet from class folders (`root/train/<class>/`, `root/val/<class>/`), with class subsets.

Class index `i` is the `i`-th class folder of `root/train` in sorted order (the usual
ImageNet numbering when the folders are the WordNet ids). With `K` folders and
`nb_classes = k`:

- `class_indices` given: read `k` distinct indices in `0 .. K-1` from that file (text:
  integers separated by whitespace, newlines or commas; or a `.npy` integer array);
- else `k < K`: `k` indices drawn without replacement by `numpy.random.default_rng(seed)`;
- else all `K` folders (the default `k = 1000` with fewer folders means "all of them").

The chosen indices are sorted and relabelled `0 .. k-1` in that order; the val split
uses the same class folder names. Only the chosen folders are scanned.

Transforms (MODELS.md): train `RandomResizedCrop(224)` + `RandomHorizontalFlip()`; val
`Resize(256)` + `CenterCrop(224)`; both then `ToTensor()` and ImageNet's mean/std.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
from torchvision import transforms
from torchvision.datasets import ImageFolder

from sepconc.data.registry import IMAGENET_CLASSES, IMAGENET_MEAN, IMAGENET_STD, DataBundle
from sepconc.errors import UserError

LAYOUT = "root/train/<class>/*.JPEG and root/val/<class>/*.JPEG"


class ClassSubsetImageFolder(ImageFolder):
    """An `ImageFolder` restricted to `classes` (folder names), labelled by their order."""

    def __init__(self, root: str, classes: list[str], transform=None) -> None:
        self._chosen = list(classes)
        super().__init__(root, transform=transform)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return list(self._chosen), {c: i for i, c in enumerate(self._chosen)}


def train_transform() -> transforms.Compose:
    """Random resized crop 224 + horizontal flip, to a normalized `(3, 224, 224)` tensor."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def val_transform() -> transforms.Compose:
    """Resize 256 + center crop 224, to a normalized `(3, 224, 224)` tensor."""
    return transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def list_class_folders(split_dir: str) -> list[str]:
    """Sorted names of the non-hidden sub-folders of `split_dir`."""
    with os.scandir(split_dir) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def read_class_indices(path: str, nb_classes: int, num_folders: int) -> list[int]:
    """Read and check a class-indices file; returns the sorted indices.

    Raises `UserError` (naming `path` and the bad values) when the file is missing or
    unreadable, holds a non-integer, an index outside `0 .. num_folders-1`, a duplicate,
    or a count different from `nb_classes`.
    """
    if not os.path.isfile(path):
        raise UserError(f"--class-indices file {path} does not exist; pass a file of class indices")
    if path.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UserError(
                f"--class-indices {path} is not a readable .npy integer array ({exc}); "
                "save one with numpy.save"
            ) from None
        if arr.dtype.kind not in "iu":
            raise UserError(
                f"--class-indices {path} holds {arr.dtype} values, not integers; save an int array"
            )
        values = [int(v) for v in arr.reshape(-1)]
    else:
        with open(path, encoding="utf-8") as fh:
            tokens = fh.read().replace(",", " ").split()
        bad = [t for t in tokens if not _is_int(t)]
        if bad:
            raise UserError(
                f"--class-indices {path} has non-integer entries {_show(bad)}; "
                "write integers separated by spaces or newlines"
            )
        values = [int(t) for t in tokens]
    out_of_range = sorted({v for v in values if not 0 <= v < num_folders})
    if out_of_range:
        raise UserError(
            f"--class-indices {path} has indices out of range 0..{num_folders - 1} "
            f"(the class folders found): {_show(out_of_range)}; fix the file"
        )
    dups = sorted(v for v, count in Counter(values).items() if count > 1)
    if dups:
        raise UserError(f"--class-indices {path} repeats indices {_show(dups)}; list each once")
    if len(values) != nb_classes:
        raise UserError(
            f"--class-indices {path} lists {len(values)} classes but --nb-classes is "
            f"{nb_classes}; pass --nb-classes {len(values)} or fix the file"
        )
    return sorted(values)


def choose_classes(
    num_folders: int, nb_classes: int, seed: int, class_indices: str | None = None
) -> tuple[list[int], str]:
    """The sorted class indices to use and how they were chosen (recorded with the run)."""
    if nb_classes < 1:
        raise UserError(f"--nb-classes must be >= 1, got {nb_classes}")
    if class_indices is not None:
        return read_class_indices(class_indices, nb_classes, num_folders), f"file {class_indices}"
    if nb_classes >= num_folders:
        if nb_classes > num_folders and nb_classes != IMAGENET_CLASSES:
            raise UserError(
                f"--nb-classes {nb_classes} exceeds the {num_folders} class folders found; "
                f"pass --nb-classes {num_folders} or fewer"
            )
        return list(range(num_folders)), "all"
    rng = np.random.default_rng(seed)
    chosen = rng.choice(num_folders, size=nb_classes, replace=False)
    return sorted(int(i) for i in chosen), f"random, seed {seed}"


def select_classes(
    root: str, nb_classes: int, class_indices: str | None, seed: int
) -> tuple[str, list[str], list[int], str]:
    """Check the layout and choose the classes, reading no image (also `train`'s pre-flight).

    Returns `(absolute root, sorted class folders of root/train, chosen indices, how)`;
    `UserError` for a missing train/ or val/, no class folders, a bad class-indices file,
    or a chosen class without a val/ folder.
    """
    root = os.path.abspath(os.path.expanduser(root))
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    for d in (train_dir, val_dir):
        if not os.path.isdir(d):
            raise UserError(
                f"imagenet folder {d} not found: expected {LAYOUT}; pass --data DIR holding "
                "train/ and val/"
            )
    folders = list_class_folders(train_dir)
    if not folders:
        raise UserError(f"no class folders in {train_dir}: expected {LAYOUT}; check --data DIR")
    indices, how = choose_classes(len(folders), nb_classes, seed, class_indices)
    missing = [folders[i] for i in indices if not os.path.isdir(os.path.join(val_dir, folders[i]))]
    if missing:
        raise UserError(
            f"{len(missing)} chosen classes have no folder in {val_dir} (e.g. {_show(missing)}); "
            f"train/ and val/ must hold the same class folders ({LAYOUT})"
        )
    return root, folders, indices, how


def build_imagenet(
    root: str,
    *,
    nb_classes: int = IMAGENET_CLASSES,
    class_indices: str | None = None,
    seed: int = 0,
) -> DataBundle:
    """Train/val `ImageFolder`s over the chosen classes, images `(3, 224, 224)`."""
    root, folders, indices, how = select_classes(root, nb_classes, class_indices, seed)
    names = [folders[i] for i in indices]
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    try:
        train = ClassSubsetImageFolder(train_dir, names, train_transform())
        val = ClassSubsetImageFolder(val_dir, names, val_transform())
    except FileNotFoundError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no images"
        raise UserError(
            f"imagenet under {root}: {first}; every class folder needs images"
        ) from None
    identity = {
        "name": "imagenet",
        "root": root,
        "sizes": {"train": len(train), "val": len(val)},
        "num_class_folders": len(folders),
        "class_selection": how,
        "class_indices": indices,
        "classes": names,
        "split": "train/ and val/ folders",
        "transform": "train: RandomResizedCrop 224 + hflip; val: Resize 256 + CenterCrop 224",
    }
    return DataBundle(train, val, len(names), (3, 224, 224), True, identity)


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def _show(values: list, limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")
