"""Reading a config file (a saved `config.yaml`, a `best --out` export) and naming the
values YAML read as another type than the text an option takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sepconc.errors import UserError
from sepconc.yamlio import load_yaml


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a saved or exported config (flat YAML mapping) with sepconc's YAML loader.
    Raises `UserError` for a missing file, a YAML syntax error (with its line) or a
    document that is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass a config.yaml written by a run")
    try:
        values = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: YAML syntax error{line}; fix the file") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    return values


def yaml_type_problem(name: str, value: Any) -> str:
    """The message for a text option that YAML read as another type (bool, number, date)."""
    if isinstance(value, bool):
        words = "on/yes/true" if value else "off/no/false"
        text = "on" if value else "off"
        return (f"{name}: got the boolean {str(value).lower()}: YAML reads unquoted {words} "
                f"as booleans; quote it: {name}: '{text}'")  # fmt: skip
    kind = "number" if isinstance(value, (int, float)) else type(value).__name__
    return (f"{name}: got the {kind} {value}: YAML reads an unquoted {value} as a {kind}, "
            f"not text; quote it: {name}: '{value}'")  # fmt: skip
