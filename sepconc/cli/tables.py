"""Tables on the terminal: the rows `sepconc.sweep.results` returns, as text or CSV.

The library returns rows (dicts, one per trial, columns in order); only the command line
prints them, so the same rows serve `status`, `compare`, `best` and the summary after a
sweep.
"""

from __future__ import annotations

import csv
import io
import re

from sepconc.errors import short_number

FLOAT_TEXT = re.compile(r"^-?\d+(\.\d+)?([eE]-?\d+)?$")
#: Columns that hold names, never numbers: a trial id such as `86459226` or `12e45678`
#: (hexadecimal) is shown as it is, not as 8.646e+07 or 1.2e+46.
NAME_COLUMNS = ("trial", "run_id", "status", "name")


def format_table(rows: list[dict], as_csv: bool = False) -> str:
    """Fixed-width columns (header first, `run_id` last), or CSV with every value as is."""
    if not rows:
        return "(no trials yet)"
    columns = [c for c in rows[0] if c != "run_id"] + ["run_id"]
    if as_csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    cells = [[str(r.get(c, "")) if c in NAME_COLUMNS else _fmt(r.get(c, "")) for c in columns]
             for r in rows]  # fmt: skip
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def print_table(rows: list[dict], title: str = "", as_csv: bool = False) -> None:
    """Print `format_table(rows)` on stdout, after `title` when given."""
    if title:
        print(title)
    print(format_table(rows, as_csv=as_csv))


def _fmt(value) -> str:
    """A cell: floats (and float parameters, logged as text) as `short_number` writes them
    (4 significant digits; whole numbers and numbers from 1000 on to the unit)."""
    if isinstance(value, str) and FLOAT_TEXT.match(value):
        value = float(value)  # a sampled lr is logged as 0.003123456789012345
    if isinstance(value, float):
        return short_number(value)
    return str(value)
