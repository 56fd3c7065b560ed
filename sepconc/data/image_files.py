"""Image files in class folders: which files are samples, how they decode, and a pre-flight.

- A sample is a non-hidden file (its name does not start with `.`: macOS AppleDouble
  companions `._*`, `.DS_Store`) whose extension is one of torchvision's image
  extensions (`IMG_EXTENSIONS`, case-insensitive). `notes.txt`, `README.txt` are not.
- Every sample decodes to 8-bit RGB: grayscale, palette, CMYK, RGBA (alpha dropped) and
  16-bit images (scaled to 8 bits: `v // 257`) all load.
- A sample that cannot be decoded is a one-line `ImageReadError` naming the file, also
  when it is raised in a DataLoader worker process.

Pre-flight rule (`check_images`): before training, every sample's header is opened and
checked with PIL (`Image.open(path).verify()`, which reads the header, not the pixels)
when the chosen classes hold at most `HEADER_CHECK_LIMIT` files per split; above that,
an evenly spaced sample of `HEADER_CHECK_LIMIT` files is checked (about 0.1 ms a file on
a local disk). Any file the check misses still stops the run at load time with the same
one-line error.
"""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from sepconc.errors import UserError, clean_reason

HEADER_CHECK_LIMIT = 20_000
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageReadError(UserError):
    """An image file PIL cannot decode; the one-line message names the file.

    A DataLoader worker re-raises an error in the main process as
    `ImageReadError("Caught ImageReadError in DataLoader worker ...\\nOriginal Traceback ...")`;
    the constructor keeps only the original one-line message.
    """

    def __init__(self, message: str) -> None:
        if "Original Traceback" in message:
            last = [line for line in message.strip().splitlines() if line.strip()][-1]
            message = re.sub(r"^[\w.]*ImageReadError: ", "", last.strip())
        super().__init__(message)


def is_image_file(path: str) -> bool:
    """True for a non-hidden file with one of torchvision's image extensions."""
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def load_rgb(path: str) -> Image.Image:
    """Decode `path` to an 8-bit RGB image (`ImageFolder`'s `loader`).

    16-bit images are scaled to 8 bits (`v // 257`, clipped); other modes go through
    PIL's `convert("RGB")`. Raises `ImageReadError` naming the file when PIL cannot.
    """
    try:
        with open(path, "rb") as fh, Image.open(fh) as img:
            if img.mode in _SIXTEEN_BIT:
                deep = np.asarray(img, dtype=np.int64)
                img = Image.fromarray(np.clip(deep // 257, 0, 255).astype(np.uint8), "L")
            return img.convert("RGB")
    except _DECODE_ERRORS as exc:
        raise ImageReadError(unreadable_message(path, exc)) from None


def unreadable_message(path: str, exc: BaseException) -> str:
    """One line: the file, PIL's reason, and what to do."""
    if isinstance(exc, Image.UnidentifiedImageError) or "cannot identify" in str(exc):
        reason = "not an image PIL recognises"
    else:
        reason = f"{type(exc).__name__}: {clean_reason(exc)}"
    return (
        f"image file {path} cannot be read ({reason}); delete or replace it "
        f"(files whose name starts with '.' are skipped)"
    )


def check_images(paths: list[str], limit: int = HEADER_CHECK_LIMIT, advance=None) -> int:
    """Open and verify the headers of `paths` (all of them, or `limit` evenly spaced).

    Returns the number of files checked; raises `ImageReadError` naming the first file
    PIL cannot identify or whose header is damaged. `advance(1)` after each file.
    """
    chosen = paths if len(paths) <= limit else [paths[i] for i in _spread(len(paths), limit)]
    for path in chosen:
        if advance is not None:
            advance(1)
        try:
            with open(path, "rb") as fh, Image.open(fh) as img:
                img.verify()
        except _DECODE_ERRORS as exc:
            raise ImageReadError(unreadable_message(path, exc)) from None
    return len(chosen)


def _spread(n: int, k: int) -> list[int]:
    """`k` indices evenly spaced over `0 .. n-1`, first and last included."""
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
