"""Command-line flags generated from the config dataclasses: one source for names, types,
defaults, choices and help (`sepconc.config`: the fields, their docstrings, `FLAG_NAMES`,
`NO_FLAG`, `FREE_TEXT_FLAGS`, `field_choices`)."""

from __future__ import annotations

import argparse
import ast
import inspect
from functools import cache

from sepconc import config as config_module
from sepconc.config import (
    FIELD_SECTION,
    FLAG_NAMES,
    FREE_TEXT_FLAGS,
    NO_FLAG,
    SECTIONS,
    Config,
    field_choices,
    field_kind,
)

TYPES = {"int": int, "float": float, "str": str, "int list": int}


@cache
def field_docs() -> dict[str, str]:
    """`{field: its docstring on one line}` for every config field, read from the source of
    `sepconc.config` (the string right after each field)."""
    classes = {cls.__name__ for cls in SECTIONS.values()}
    docs = {}
    for node in ast.parse(inspect.getsource(config_module)).body:
        if not (isinstance(node, ast.ClassDef) and node.name in classes):
            continue
        for item, doc in zip(node.body, node.body[1:]):
            if (isinstance(item, ast.AnnAssign) and isinstance(doc, ast.Expr)
                    and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):  # fmt: skip
                docs[item.target.id] = " ".join(doc.value.value.split())
    return docs


def flag_names(name: str) -> tuple[str, ...]:
    """The flags of field `name`: `FLAG_NAMES[name]`, else `--name-with-dashes`; () for a
    field without a flag."""
    if name in NO_FLAG:
        return ()
    return FLAG_NAMES.get(name, ("--" + name.replace("_", "-"),))


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per config field (but `NO_FLAG`), its dest the flat field name: ints and
    floats typed, per-block lists `nargs="+"`, text with a fixed set of values restricted
    to it (but `FREE_TEXT_FLAGS`), booleans a switch (`--no-X` for one on by default)."""
    docs, choices, defaults = field_docs(), field_choices(), Config().to_flat()
    for name in FIELD_SECTION:
        names = flag_names(name)
        if not names:
            continue
        kind, default, text = field_kind(name), defaults[name], docs[name]
        options: dict = {"dest": name}
        if kind == "bool":
            options["action"] = "store_false" if default else "store_true"
            if default:  # `--no-X`: the help says what the flag switches off, not the field
                text = f"switch off (on by default): {text[0].lower()}{text[1:]}"
        else:
            options["type"] = TYPES[kind]
            if kind == "int list":
                options["nargs"] = "+"
            if name in choices and name not in FREE_TEXT_FLAGS:
                options["choices"] = choices[name]
            text += _default_text(default, text)
        parser.add_argument(*names, help=text.replace("%", "%%"), **options)


def _default_text(default, text: str) -> str:
    if default is None or "(default" in text:
        return ""
    shown = " ".join(map(str, default)) if isinstance(default, list) else default
    return f" (default: {shown})"
