"""The README holds: its sweep files validate and its commands can be pasted as they are."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang: str) -> list[str]:
    """The README's fenced code blocks in `lang`, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```$", README.read_text(), flags=re.M | re.S)


@pytest.mark.parametrize("index", range(2))
def test_readme_sweep_files_validate(index, tmp_path, capsys):
    from sepconc.cli import main

    sweeps = [b for b in blocks("yaml") if b.startswith("name:")]
    assert len(sweeps) == 2  # the GPU study and the laptop one
    path = tmp_path / "sweep.yaml"
    path.write_text(sweeps[index])
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "8 trials" in out
    if index == 1:  # the laptop sweep asks for no GPU
        assert "+ 0 GPU" in out


def test_readme_commands_have_no_placeholder_brackets():
    commands = [line for b in blocks("bash") for line in b.splitlines()
                if "launch.py" in line and not line.lstrip().startswith("#")]  # fmt: skip
    assert len(commands) > 10
    for line in commands:
        code = line.split("#", 1)[0]
        assert not re.search(r"\[-|<[A-Z]", code), f"optional/placeholder syntax in: {line}"
