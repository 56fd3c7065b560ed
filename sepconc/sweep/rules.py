"""Per-block rules: a per-block option's candidates written as a rule instead of a list.

```yaml
search:
  frame_width: {grid: {scale: [0.5, 1, 2], of: [1024, 2048, 4096, 8192]}}
  P_proj_size: {start: [128, 256], factor: 2}      # a bare rule is a grid
```
- `{scale: [s...], of: [v...]}`: each factor times the base list, one candidate per factor
  (`[[512, 1024, 2048, 4096], [1024, ...], [2048, ...]]`), expanded when the file is parsed
  (`expand_rule`, called by `spec._search_entry`). A product that is not a whole number is
  refused.
- `{start: [a...], factor: f}` (f a number or a list): one value per block, `a * f**i` for
  block i, as many as that trial builds (its `n_blocks`; 1 for analysis and scatnet). The
  sampled value is the text `"<a>*<f>^block"` (a valid Tune/Optuna categorical, and readable
  in run names); `resolve_per_block` turns it into the list when the trial's config is built
  (`space.trial_flat_config`, `trial.trial_flat`). A block whose width is not whole is
  refused.

Errors are `UserError`s of one line naming the key path, the value and the fix.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

from sepconc.config import PER_BLOCK
from sepconc.errors import UserError

SCALE_KEYS = {"scale", "of"}
START_KEYS = {"start", "factor"}
RULE_KINDS = ("grid", "choice")  # the search kinds whose options a rule may give
_MARK = re.compile(r"^(\d+)\*(\d+(?:\.\d+)?)\^block$")


def is_rule(value: Any) -> bool:
    """A mapping with the keys of a rule (`{scale, of}` or `{start, factor}`)."""
    return isinstance(value, dict) and set(value) in (SCALE_KEYS, START_KEYS)


def search_entry(key: str, value: Any, where: str) -> tuple[Any, str | None]:
    """`(entry, problem)`: a `search.<key>` entry with its rule expanded (`{grid|choice: RULE}`
    or a bare RULE, a grid -> `{grid|choice: [candidates]}`; any other entry unchanged), and
    the one-line problem of a wrong rule or None (`where`: e.g. `s.yaml: search.frame_width`)."""
    try:
        return _search_entry(key, value, where), None
    except UserError as exc:
        return None, str(exc)


def _search_entry(key: str, value: Any, where: str) -> Any:
    if is_rule(value) or (isinstance(value, dict) and set(value) & (SCALE_KEYS | START_KEYS)):
        # a bare rule is a grid; its messages name what the file says (no `.grid`)
        return {"grid": expand_rule(key, value, where)}
    if not isinstance(value, dict) or len(value) != 1:
        return value
    kind, args = next(iter(value.items()))
    if not isinstance(args, dict) or kind not in RULE_KINDS:
        return value
    return {kind: expand_rule(key, args, f"{where}.{kind}")}


def expand_rule(key: str, value: dict, where: str) -> list:
    """The candidates of a rule: per-block lists for `{scale, of}`, `"<a>*<f>^block"` marks
    for `{start, factor}` (resolved per trial by `resolve_per_block`).

    Raises `UserError`: `key` is not a per-block option, the rule's keys or values are
    wrong, or `scale x of` gives a width that is not a whole number.
    """
    if key not in PER_BLOCK:
        raise UserError(f"{where}: a rule ({{scale, of}} or {{start, factor}}) gives per-block "
                        f"lists; {key} is not a per-block option ({', '.join(PER_BLOCK)})")  # fmt: skip
    if not is_rule(value):
        raise UserError(f"{where}: a rule is {{scale: [...], of: [...]}} or {{start: [...], "
                        f"factor: F}}, got keys {sorted(value)}")  # fmt: skip
    if set(value) == SCALE_KEYS:
        scales = _numbers(value["scale"], f"{where}.scale", positive=True)
        base = _numbers(value["of"], f"{where}.of", positive=True, whole=True)
        return [[_whole(s * v, f"{where}: scale {_fmt(s)} x of {_fmt(v)}") for v in base]
                for s in scales]  # fmt: skip
    starts = _numbers(value["start"], f"{where}.start", positive=True, whole=True)
    factors = _numbers(value["factor"], f"{where}.factor", positive=True)
    return [f"{int(a)}*{_fmt(f)}^block" for a, f in itertools.product(starts, factors)]


def resolve_per_block(flat: dict[str, Any]) -> dict[str, Any]:
    """`flat` (a trial's flat config) with every `"<a>*<f>^block"` mark replaced by the list
    `[a, a*f, a*f**2, ...]`, one value per block the trial builds (`n_blocks`, 1 for analysis
    and scatnet). `flat` itself is not changed. Raises `UserError` when a width is not whole."""
    marks = {k: v for k, v in flat.items() if k in PER_BLOCK and isinstance(v, str)}
    if not marks:
        return flat
    flat = dict(flat)
    arch = flat.get("arch", "scatnetblockanalysis")
    n = flat.get("n_blocks", 4)
    blocks = 1 if arch in ("analysis", "scatnet") or not isinstance(n, int) else max(n, 1)
    for key, mark in marks.items():
        match = _MARK.match(mark)
        if not match:
            continue  # not a rule's mark: the config check refuses it with its own message
        start, factor = int(match.group(1)), float(match.group(2))
        flat[key] = [_whole(start * factor**i, f"{key} {{start: {start}, factor: "
                                               f"{_fmt(factor)}}} at block {i + 1} of {blocks}")
                     for i in range(blocks)]  # fmt: skip
    return flat


def _numbers(value: Any, where: str, positive: bool = False, whole: bool = False) -> list:
    items = value if isinstance(value, list) else [value]
    ok = items and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)
    if ok and positive:
        ok = all(v > 0 for v in items)
    if ok and whole:
        ok = all(float(v).is_integer() for v in items)
    if not ok:
        what = "whole numbers > 0" if whole else "numbers > 0" if positive else "numbers"
        raise UserError(f"{where} needs {what} (a number or a list), got {value!r}")
    return items


def _whole(value: float, what: str) -> int:
    if not math.isclose(value, round(value), rel_tol=0, abs_tol=1e-9):
        raise UserError(f"{what} gives the width {value:g}, not a whole number; choose factors "
                        f"that give whole widths")  # fmt: skip
    return int(round(value))


def _fmt(number: float) -> str:
    return f"{number:g}"
