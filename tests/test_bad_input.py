"""The bad-input catalogue: every mistake a user can make, one case each, in one place
(the cases: tests/bad_input_cases.py and tests/bad_input_cases_sweep.py).

A case is a `launch.py` command line (and the files it needs, written first into an empty
working folder) and a pattern its error line must match: the line names the problem and
the value and says how to fix it. For every case:

- exit status 2;
- stderr is exactly one non-empty line, starting with `error:`, naming the problem,
  with no `Traceback`;
- nothing was created in the working folder besides the case's own inputs (no `runs/`,
  no MLflow store, no run folder);
- no terminal escape code (`\x1b[`) anywhere in the output, and no text cut mid-word (a
  shortened library message ends with ` ...`; the code has no `[:N]` slice of one).

Every case runs in-process (`sepconc.cli.main`, in the fast tier); the cases in `PROCESS`
also run as the real `python launch.py` subprocess (each imports torch: slow tier), which
covers the parts the in-process run cannot: argparse's exit, the process's own stderr,
start-up imports. None of these cases may start Ray: the sweep cases fail before
`ray.init` (the unreachable `--address` is refused by a plain socket check).
"""

from __future__ import annotations

import re
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.bad_input_cases import CASES as TRAIN_AND_FILE_CASES
from tests.bad_input_cases import PROCESS, SETUPS
from tests.bad_input_cases_sweep import SWEEP_CASES
from tests.helpers import ROOT, cli, launch

CASES = {**TRAIN_AND_FILE_CASES, **SWEEP_CASES}


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _prepare(name: str, tmp: Path) -> tuple[list[str], set[str]]:
    """Write case `name`'s inputs into `tmp`; its argv and the folder's listing."""
    case = CASES[name]
    tmp.mkdir(parents=True, exist_ok=True)
    for rel, content in case.files.items():
        if isinstance(content, bytes):
            (tmp / rel).write_bytes(content)
        else:
            (tmp / rel).write_text(content)
    if case.setup:
        SETUPS[case.setup](tmp)
    return shlex.split(case.argv.format(tmp=tmp)), _listing(tmp)


def check(name: str, status: int, out: str, err: str, created: set[str]) -> None:
    """What every case must show (see the module docstring)."""
    assert "Traceback" not in err, err[-3000:]
    assert status == 2, (status, err[-3000:])
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip() and lines[0].startswith("error:"), err[-3000:]
    assert re.search(CASES[name].expect, lines[0]), lines[0]
    assert not created, f"created: {sorted(created)}"
    assert "\x1b[" not in err + out, err[-3000:]
    line = err.strip()
    assert re.search(r"[\w)\]'\"./]$", line), line  # ends on a whole word or a closing mark
    for match in re.finditer(r"\.\.\.", line):  # a shortened text says so after a space
        assert line[match.start() - 1] in " ([", line  # ([...]: a list written out)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_leaves_nothing(name, tmp_path, monkeypatch, capfd):
    """In-process: `main(argv)` from the case's working folder, with no MLflow or Ray
    address from the environment."""
    import mlflow.tracking._tracking_service.utils as tracking_utils

    argv, before = _prepare(name, tmp_path / "work")
    monkeypatch.chdir(tmp_path / "work")
    for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    capfd.readouterr()
    status = cli(*argv)
    out, err = capfd.readouterr()
    check(name, status, out, err, _listing(tmp_path / "work") - before)


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    """Each case in PROCESS as `python launch.py ...`, three at a time."""
    root = tmp_path_factory.mktemp("bad-input")

    def run(name: str):
        argv, before = _prepare(name, root / name)
        started = time.perf_counter()
        proc = launch(*argv, cwd=root / name, timeout=120)
        return proc, _listing(root / name) - before, time.perf_counter() - started

    with ThreadPoolExecutor(3) as pool:
        return dict(zip(PROCESS, pool.map(run, PROCESS)))


@pytest.mark.slow
@pytest.mark.parametrize("name", PROCESS)
def test_bad_input_as_a_user_runs_it(processes, name):
    proc, created, seconds = processes[name]
    check(name, proc.returncode, proc.stdout, proc.stderr, created)
    assert seconds < 110, f"{name} took {seconds:.0f} s"  # generous: a loaded machine


def test_catalogue_is_complete():
    assert len(CASES) >= 80 and set(PROCESS) <= set(CASES)


def test_code_never_slices_a_message():
    """Messages are shortened by `sepconc.errors.fit_line` (between words), never `[:N]`."""
    sliced = re.compile(
        r"(splitlines\(\)\[0\]|str\(exc\)|\breason|\bline|\bmessage|\bmsg)\)?\[:\s*\d+\s*\]"
        r"|textwrap\.shorten"
    )
    found = [f"{path.relative_to(ROOT)}:{i}: {text.strip()}"
             for path in sorted((ROOT / "sepconc").rglob("*.py"))
             for i, text in enumerate(path.read_text().splitlines(), 1)
             if sliced.search(text)]  # fmt: skip
    assert not found, found
