"""The one exception type that user-facing code turns into a one-line error, and helpers
that make a library exception's text, or a number, fit for such a line."""

import math
import re


class UserError(Exception):
    """A problem the user can fix: bad input, a missing file, an impossible config.

    The message is one line that names what was wrong (with the value) and what
    to do. `launch.py` prints it to stderr and exits with status 2, without a
    traceback.
    """


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def fit_line(text: str, limit: int = 160) -> str:
    """`text` as one line of at most about `limit` characters, fit for a user message.

    Terminal escape codes (`\\x1b[...m`) are removed and line breaks become spaces; a
    longer text is cut at the last space before `limit` and ends with `...` (never
    mid-word).
    """
    text = " ".join(_ANSI.sub("", text).split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > 0 else limit].rstrip(" ,;:") + " ..."


def clean_reason(exc: BaseException, limit: int = 160, whole: bool = False) -> str:
    """A library exception's first non-empty line (all its lines with `whole`), through
    `fit_line`; an exception without a message gives its type name."""
    lines = [line for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return fit_line(" ".join(lines) if whole else lines[0], limit)


def short_number(value: float) -> str:
    """A number for a message or a table cell: 4 significant digits (``0.003123``, ``96.39``),
    from 1000 on to the unit (a count such as ``params`` logged as a float: ``58030``, a
    seed ``1627694678``, a rate ``30931`` images/s; not ``5.803e+04``); ``nan``, ``inf`` and
    magnitudes from 1e15 as ``.4g``."""
    if (
        math.isfinite(value)
        and (float(value).is_integer() or abs(value) >= 1000)
        and abs(value) < 1e15
    ):
        return f"{value:.0f}"
    return f"{value:.4g}"


def counted(n: int, noun: str) -> str:
    """``"1 epoch"``, ``"3 epochs"``: ``n`` and the noun in the number it takes."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
