"""Reading a `--class-indices` file: which ImageNet class folders to train on.

A class index `i` names the `i`-th class folder of `root/train` in sorted order. The
file holds `k` distinct indices in one of these formats, recognised by content (not by
name, except `.npy`):

- the authors' own: a `torch.save`d list, tuple or 1-D integer tensor (their `main.py`
  reads `--class-indices` with `torch.load` and writes `classes_indices_selected` so);
  loaded with `weights_only=True`, so nothing in the file can run code;
- a NumPy `.npy` integer array (`np.load(..., allow_pickle=False)`);
- text: UTF-8 (with or without a BOM), or UTF-16/UTF-32 with a BOM (what Windows
  PowerShell 5.1's `echo 1 3 > file` writes); integers separated by whitespace,
  commas or newlines (LF or CRLF); `#` starts a comment to the end of the line.

Anything else is a `UserError` naming the file and the formats accepted.
"""

from __future__ import annotations

import codecs
import os
import re
import zipfile
from collections import Counter

import numpy as np

from sepconc.errors import UserError, clean_reason

FORMATS = (
    "a torch.save'd list or 1-D integer tensor, a .npy integer array, or text "
    "(UTF-8 with or without BOM, or UTF-16 with BOM) of integers separated by spaces, "
    "commas or newlines, with # comments"
)

# Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_PICKLE_PROTOCOL_2 = b"\x80\x02"  # torch.save's legacy (non-zip) format starts so


def read_class_indices(path: str, nb_classes: int, num_folders: int) -> list[int]:
    """Read and check a class-indices file; returns the indices sorted.

    `num_folders` is the number of class folders in `root/train` (valid indices are
    `0 .. num_folders-1`). Raises `UserError` (naming `path` and the bad values) when
    the file is missing, in none of the accepted formats (`FORMATS`), holds a
    non-integer, an index out of range, a duplicate, or a count other than `nb_classes`.
    """
    if not os.path.isfile(path):
        raise UserError(f"--class-indices file {path} does not exist; pass a file of class indices")
    values = _read_values(path)
    out_of_range = sorted({v for v in values if not 0 <= v < num_folders})
    if out_of_range:
        raise UserError(
            f"--class-indices {path} has indices out of range 0..{num_folders - 1} "
            f"(the class folders found): {show(out_of_range)}; fix the file"
        )
    dups = sorted(v for v, count in Counter(values).items() if count > 1)
    if dups:
        raise UserError(f"--class-indices {path} repeats indices {show(dups)}; list each once")
    if len(values) != nb_classes:
        raise UserError(
            f"--class-indices {path} lists {len(values)} classes but --nb-classes is "
            f"{nb_classes}; pass --nb-classes {len(values)} or fix the file"
        )
    return sorted(values)


def _read_values(path: str) -> list[int]:
    """The integers the file lists, in file order, whatever its format."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if path.endswith(".npy") or raw.startswith(b"\x93NUMPY"):
        return _from_npy(path)
    if zipfile.is_zipfile(path) or raw.startswith(_PICKLE_PROTOCOL_2):
        return _from_torch(path)
    return _from_text(path, raw)


def _from_npy(path: str) -> list[int]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(
            f"--class-indices {path} is not a readable .npy integer array "
            f"({clean_reason(exc)}); accepted formats: {FORMATS}"
        ) from None
    if arr.dtype.kind not in "iu":
        raise UserError(
            f"--class-indices {path} holds {arr.dtype} values, not integers; save an int array"
        )
    return [int(v) for v in arr.reshape(-1)]


def _from_torch(path: str) -> list[int]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign content
        raise UserError(
            f"--class-indices {path} looks like a torch.save file but does not load safely "
            f"({type(exc).__name__}); accepted formats: {FORMATS}"
        ) from None
    if isinstance(obj, torch.Tensor) and obj.ndim <= 1 and not obj.is_floating_point():
        return [int(v) for v in obj.reshape(-1).tolist()]
    if isinstance(obj, (list, tuple)) and all(_is_integer(v) for v in obj):
        return [int(v) for v in obj]
    raise UserError(
        f"--class-indices {path} holds a torch.save'd {_describe(obj)}, not a list or 1-D "
        f"tensor of integers; accepted formats: {FORMATS}"
    )


def _from_text(path: str, raw: bytes) -> list[int]:
    encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        raise UserError(
            f"--class-indices {path} is neither {encoding} text nor a torch or .npy file; "
            f"accepted formats: {FORMATS}"
        ) from None
    text = text.lstrip("\ufeff")
    tokens = []
    for line in text.splitlines():
        tokens += line.split("#", 1)[0].replace(",", " ").split()
    bad = [t for t in tokens if not _is_int_text(t)]
    if bad:
        hint = " (NUL characters: UTF-16 text without a BOM?)" if "\x00" in text else ""
        raise UserError(
            f"--class-indices {path} has non-integer entries {show([repr(t) for t in bad])}"
            f"{hint}; accepted formats: {FORMATS}"
        )
    return [int(t) for t in tokens]


def _is_int_text(token: str) -> bool:
    return re.fullmatch(r"[+-]?[0-9]+", token) is not None


def _is_integer(value) -> bool:
    import torch

    if isinstance(value, bool):
        return False
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.is_floating_point() and value.dtype != torch.bool
    return isinstance(value, int)


def _describe(obj) -> str:
    if isinstance(obj, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in obj})
        return f"{type(obj).__name__} of {', '.join(kinds) or 'nothing'}"
    import torch

    if isinstance(obj, torch.Tensor):
        return f"{obj.dtype} tensor of shape {tuple(obj.shape)}"
    return type(obj).__name__


def show(values: list, limit: int = 10) -> str:
    """The first `limit` values, comma-separated, with the total when some are left out."""
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")
