"""ImageNet from class folders (`root/train/<class>/`, `root/val/<class>/`), with class subsets.

Class index `i` is the `i`-th class folder of `root/train` in sorted order (the usual
ImageNet numbering when the folders are the WordNet ids). With `K` folders and
`nb_classes = k`:

- `class_indices` given: read `k` distinct indices in `0 .. K-1` from that file (formats:
  `sepconc.data.class_indices`);
- else `k < K`: `k` indices drawn without replacement by `numpy.random.default_rng(seed)`;
- else all `K` folders (the default `k = 1000` with fewer folders means "all of them").

Labels and classifier head (`compact_head`):

- default (the paper's): a sample's label is its class folder's index among all `K`
  folders, and the classifier has `max(1000, K)` outputs, as the authors' `main.py`
  keeps its 1000-way classifier on a class subset; paper numbers reproduce;
- `compact_head=True`: the chosen indices, sorted, are relabelled `0 .. k-1` and the
  classifier has `k` outputs.

Top-1/top-5 are computed over the head's outputs either way. The val split uses the
same class folder names. Only the chosen folders are scanned; which files are samples,
how they decode and the pre-flight check of their headers: `sepconc.data.image_files`.
Scanning the class folders and checking the headers show their progress (rate, ETA) on
rank 0 (`sepconc.progress.track`): minutes for the full ImageNet.

Transforms (docs/models.md): train `RandomResizedCrop(224)` + `RandomHorizontalFlip()`; val
`Resize(256)` + `CenterCrop(224)`; both then `ToTensor()` and ImageNet's mean/std.
"""

from __future__ import annotations

import os

import numpy as np
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import make_dataset

from sepconc.data import image_files
from sepconc.data.class_indices import read_class_indices, show
from sepconc.data.image_files import IMG_EXTENSIONS, check_images, is_image_file, load_rgb
from sepconc.data.types import IMAGENET_CLASSES, IMAGENET_MEAN, IMAGENET_STD, DataBundle
from sepconc.errors import UserError
from sepconc.progress import track

LAYOUT = "root/train/<class>/*.JPEG and root/val/<class>/*.JPEG"


class ClassSubsetImageFolder(ImageFolder):
    """An `ImageFolder` over the folders `classes`, class `classes[i]` labelled `labels[i]`.

    Samples are the image files `is_image_file` accepts (hidden and non-image files are
    skipped, and so is everything under a hidden sub-folder such as netatalk's
    `.AppleDouble/`), decoded to RGB by `load_rgb`. A class folder without any sample is
    allowed here; `scan_split` turns it into a `UserError`.
    """

    def __init__(self, root: str, classes: list[str], labels: list[int], transform=None) -> None:
        self._chosen = list(classes)
        self._labels = [int(v) for v in labels]
        super().__init__(root, transform=transform, loader=load_rgb,
                         is_valid_file=is_image_file, allow_empty=True)  # fmt: skip
        hidden = [i for i, (p, _) in enumerate(self.samples) if _under_hidden(root, p)]
        if hidden:
            drop = set(hidden)
            self.samples = [s for i, s in enumerate(self.samples) if i not in drop]
            self.imgs = self.samples
            self.targets = [t for _, t in self.samples]

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return list(self._chosen), dict(zip(self._chosen, self._labels))

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None,
                     allow_empty=False) -> list[tuple[str, int]]:  # fmt: skip
        """torchvision's scan (the same samples, in the same sorted class order), one class
        folder at a time, its progress shown (`sepconc.progress.track`)."""
        samples = []
        label = f"imagenet {os.path.basename(os.path.normpath(directory))}: class folders"
        with track(label, len(class_to_idx), "folders", done=True) as advance:
            for name in sorted(class_to_idx):
                samples += make_dataset(directory, {name: class_to_idx[name]}, extensions,
                                        is_valid_file, allow_empty=allow_empty)  # fmt: skip
                advance(1)
        return samples


def _under_hidden(root: str, path: str) -> bool:
    """True when a folder between `root` and the file `path` is hidden (`.name`)."""
    return any(part.startswith(".") for part in os.path.relpath(path, root).split(os.sep)[:-1])


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
            f"{len(missing)} chosen classes have no folder in {val_dir} (e.g. {show(missing)}); "
            f"train/ and val/ must hold the same class folders ({LAYOUT})"
        )
    return root, folders, indices, how


def scan_split(
    root: str, split: str, names: list[str], labels: list[int], transform=None
) -> ClassSubsetImageFolder:
    """The samples of `root/split` for the chosen classes; `UserError` naming the first
    chosen class folder that holds no image file (and what it holds instead)."""
    folder = ClassSubsetImageFolder(os.path.join(root, split), names, labels, transform)
    found = set(folder.targets)
    for name, label in zip(names, labels):
        if label not in found:
            class_dir = os.path.join(root, split, name)
            others = sorted(os.listdir(class_dir))
            visible = [n for n in others if not n.startswith(".")]
            held = f"it holds only {show(visible, 3)}" if visible else "it is empty"
            if others and not visible:
                held = f"it holds only hidden files, e.g. {others[0]}"
            raise UserError(
                f"imagenet class folder {class_dir} ({split} split) has no image ({held}); "
                f"add images ({', '.join(IMG_EXTENSIONS)}) or leave the class out "
                f"with --class-indices"
            )
    return folder


# (root, split, class names) whose image headers this process already checked
_CHECKED: set[tuple[str, str, tuple[str, ...]]] = set()


def check_split_images(root: str, split: str, folder: ClassSubsetImageFolder) -> None:
    """Verify the image headers of `folder` once per process (`image_files.check_images`)."""
    key = (root, split, tuple(folder.classes))
    if key not in _CHECKED:
        paths = [path for path, _ in folder.samples]
        total = min(len(paths), image_files.HEADER_CHECK_LIMIT)
        with track(f"imagenet {split}: image headers", total, "files", done=True) as advance:
            check_images(paths, advance=advance)
        _CHECKED.add(key)


def head_labels(
    folders: list[str], indices: list[int], compact_head: bool
) -> tuple[list[int], int]:
    """The label of each chosen class and the classifier's output count.

    Paper default: the folder's index among all folders, `max(1000, len(folders))`
    outputs; `compact_head`: `0 .. k-1` in index order, `k` outputs.
    """
    if compact_head:
        return list(range(len(indices))), len(indices)
    return list(indices), max(IMAGENET_CLASSES, len(folders))


def check_imagenet(
    root: str, nb_classes: int, class_indices: str | None, seed: int, compact_head: bool = False
) -> None:
    """`build_imagenet`'s checks without transforms: layout, class choice, an image in
    every chosen class folder of both splits, and readable image headers
    (`sepconc.data.image_files` states the rule). `train`'s pre-flight."""
    root, folders, indices, _ = select_classes(root, nb_classes, class_indices, seed)
    names = [folders[i] for i in indices]
    labels, _ = head_labels(folders, indices, compact_head)
    for split in ("train", "val"):
        check_split_images(root, split, scan_split(root, split, names, labels))


def build_imagenet(
    root: str,
    *,
    nb_classes: int = IMAGENET_CLASSES,
    class_indices: str | None = None,
    seed: int = 0,
    compact_head: bool = False,
) -> DataBundle:
    """Train/val `ImageFolder`s over the chosen classes, images `(3, 224, 224)`.

    `num_classes` of the bundle is the classifier's output count (`head_labels`).
    Raises `UserError` for a bad layout or class choice, a chosen class folder without
    images, or an image file whose header PIL cannot read.
    """
    root, folders, indices, how = select_classes(root, nb_classes, class_indices, seed)
    names = [folders[i] for i in indices]
    labels, outputs = head_labels(folders, indices, compact_head)
    train = scan_split(root, "train", names, labels, train_transform())
    val = scan_split(root, "val", names, labels, val_transform())
    for split, folder in (("train", train), ("val", val)):
        check_split_images(root, split, folder)
    identity = {
        "name": "imagenet",
        "root": root,
        "sizes": {"train": len(train), "val": len(val)},
        "num_class_folders": len(folders),
        "class_selection": how,
        "class_indices": indices,
        "classes": names,
        "compact_head": compact_head,
        "head": (
            f"compact: {outputs} outputs, labels 0..{outputs - 1}"
            if compact_head
            else f"paper: {outputs} outputs, labels = class folder indices"
        ),
        "labels": labels,
        "split": "train/ and val/ folders",
        "transform": "train: RandomResizedCrop 224 + hflip; val: Resize 256 + CenterCrop 224",
    }
    return DataBundle(train, val, outputs, (3, 224, 224), True, identity)
