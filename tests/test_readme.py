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
def test_readme_sweep_files_validate(index, tmp_path, capsys, monkeypatch):
    from sepconc.cli import main

    # Resources are checked against the machine: the GPU study against a GPU node, the laptop
    # one against a 2-core laptop without a GPU (whatever machine runs the test).
    gib = 1024**3
    machine = [{"CPU": 32.0, "GPU": 4.0, "memory": 256 * gib, "nodes": 1, "node_cpu": 32.0,
                "node_gpu": 4.0},
               {"CPU": 2.0, "GPU": 0.0, "memory": 8 * gib, "nodes": 1, "node_cpu": 2.0,
                "node_gpu": 0.0}][index]  # fmt: skip
    monkeypatch.setattr("sepconc.sweep.resources.local_totals", lambda: machine)
    sweeps = [b for b in blocks("yaml") if b.startswith("name:")]
    assert len(sweeps) == 2  # the GPU study and the laptop one
    path = tmp_path / "sweep.yaml"
    path.write_text(sweeps[index])
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "8 distinct trials" in out
    if index == 1:  # the laptop sweep asks for no GPU
        assert "+ 0 GPU" in out


def test_readme_commands_have_no_placeholder_brackets():
    commands = [line for b in blocks("bash") for line in b.splitlines()
                if "launch.py" in line and not line.lstrip().startswith("#")]  # fmt: skip
    assert len(commands) > 10
    for line in commands:
        code = line.split("#", 1)[0]
        assert not re.search(r"\[-|<[A-Z]", code), f"optional/placeholder syntax in: {line}"
