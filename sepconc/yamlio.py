"""The one YAML reader and writer of sepconc: safe, with YAML 1.2's numbers.

PyYAML follows YAML 1.1, where `1e-3`, `5E-4`, `1e+2` and `+.5` are strings (a float
needs a dot and a signed exponent). Users write numbers the 1.2 way, so every file,
`--set` value and MLflow parameter sepconc reads goes through `load_yaml`, whose
loader (a `yaml.SafeLoader` subclass: no Python objects, ever) resolves those as
floats, and integers by YAML 1.2's rule too (`10`, `-3`, `0x1f`, `0o17`): YAML 1.1's
`1_000` digit separators and base-60 `12:30` would turn a trial id such as
`67182_00000` or a time into a number, so they stay text. `dump_yaml` and
`dump_inline` write with the same resolver, so a string that would read back as a
number or a boolean (`'1e-3'`, `'off'`) is quoted: what sepconc writes reads back
with the same type and value.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

FLOAT_TAG = "tag:yaml.org,2002:float"
INT_TAG = "tag:yaml.org,2002:int"

# YAML 1.2 (core schema) floats. An integer (no dot, no exponent) is not matched here.
FLOAT = re.compile(
    r"""^(?:[-+]?[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9]+[eE][-+]?[0-9]+
    |[-+]?\.[0-9]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
# YAML 1.2 (core schema) integers: decimal, 0o octal, 0x hexadecimal.
INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")


def _with_number_resolvers(cls: type) -> type:
    """Replace YAML 1.1's float and int resolvers of `cls` (a Loader or Dumper) by
    `FLOAT` and `INT`."""
    cls.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (FLOAT_TAG, INT_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    cls.add_implicit_resolver(FLOAT_TAG, FLOAT, list("-+0123456789."))
    cls.add_implicit_resolver(INT_TAG, INT, list("-+0123456789"))
    return cls


@_with_number_resolvers
class Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` with YAML 1.2 numbers: floats `1e-3`, `.5`, `+.5`, `1E+2`, `-1e5`;
    ints `10`, `017` (decimal 17, not YAML 1.1's octal), `0o17`, `0x1f`."""

    def construct_yaml_int(self, node) -> int:
        text = self.construct_scalar(node)
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)


Loader.add_constructor(INT_TAG, Loader.construct_yaml_int)


@_with_number_resolvers
class Dumper(yaml.SafeDumper):
    """`yaml.SafeDumper` that quotes every string `Loader` would read as another type."""


def load_yaml(text: str) -> Any:
    """Parse YAML text with `Loader`; raises `yaml.YAMLError` on a syntax error."""
    loader = Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def dump_yaml(obj: Any, sort_keys: bool = False) -> str:
    """Block-style YAML text of `obj` that `load_yaml` reads back equal (same types)."""
    return yaml.dump(obj, Dumper=Dumper, sort_keys=sort_keys, allow_unicode=True)


def dump_inline(value: Any) -> str:
    """One line of flow-style YAML for `value` (`relu`, `'1e-3'`, `1.0e-05`, `[64, 128]`,
    `null`) that `load_yaml` reads back equal: MLflow parameters and `--set` values."""
    text = yaml.dump(value, Dumper=Dumper, default_flow_style=True, width=2**31 - 1,
                     allow_unicode=True)  # fmt: skip
    text = text.rstrip("\n")
    if text.endswith("\n..."):  # a plain top-level scalar ends its document explicitly
        text = text[: -len("\n...")]
    return text
