"""The bad-input catalogue: every mistake a user can make on the command line, one case each.

Each case runs `python launch.py ...` in a fresh, empty working folder (`cwd`), after
writing the inputs it needs there, and checks what the user sees and what is left:

- exit status 2;
- stderr is exactly one non-empty line, starting with `error:`, naming the problem
  (a substring or pattern per case), with no `Traceback`;
- nothing was created in the working folder besides the case's own inputs (no `runs/`,
  no MLflow store, no run folder).

None of these cases may start Ray: the sweep cases fail before `ray.init` (the
unreachable `--address` is refused by a plain socket check). Cases run three at a time
(each subprocess imports torch), once per module; the parametrized test reports each.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fakedata import write_cifar10, write_imagefolder

LAUNCH = str(Path(__file__).resolve().parent.parent / "launch.py")

# A sweep file that validates: one phase-scattering block on 1x16x16 synthetic images
# (33 channels after the front end), 2 trials, no file read.
GOOD_SWEEP = {
    "name": "s",
    "base": {"dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 1,
             "epochs": 2, "batch_size": 100, "P_proj_size": 8, "frame_width": 16,
             "workers": 0, "stats_every": 0},
    "search": {"lr": {"grid": [0.01, 0.1]}},
    "scheduler": {"type": "fifo"},
    "resources": {"workers_per_trial": 1},
}  # fmt: skip
SYN = "train --dataset synthetic -j 0 -a analysis --frame-width 16"  # needs no data file


def sweep_text(**changes) -> str:
    """GOOD_SWEEP with top-level or `base.key` changes (value None deletes), as YAML."""
    import copy

    import yaml

    raw = copy.deepcopy(GOOD_SWEEP)
    for key, value in changes.items():
        target, name = (raw["base"], key[5:]) if key.startswith("base_") else (raw, key)
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
    return yaml.safe_dump(raw, sort_keys=False)


@dataclass
class Case:
    argv: str  # after `launch.py`; {tmp} is the working folder
    expect: str  # regular expression the error line must match
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text
    setup: str | None = None  # name of a data writer to run first (see SETUPS)


def _imagenet(tmp: Path) -> None:
    write_imagefolder(tmp / "imnet", n_classes=3, n_per_class=1, size=8)


def _cifar(tmp: Path) -> None:
    write_cifar10(tmp / "data", n_per_batch=1, n_test=1)


SETUPS = {"imagenet": _imagenet, "cifar": _cifar}

CASES: dict[str, Case] = {
    # ------------------------------------------------------------ sweep files (validate)
    "yaml_syntax_error": Case(
        "validate s.yaml", r"s\.yaml: YAML syntax error at line 4, column 7: .*; fix the file",
        {"s.yaml": "name: s\nbase:\n  dataset: [synthetic\n  arch: analysis\n"},
    ),
    "unknown_key_suggests": Case(
        "validate s.yaml", r"unknown key 'schedular' \(did you mean 'scheduler'\?\)",
        {"s.yaml": sweep_text(scheduler=None, schedular={"type": "fifo"})},
    ),
    "wrong_type": Case(
        "validate s.yaml", r"samples must be int, got 'two'",
        {"s.yaml": sweep_text(samples="two")},
    ),
    "empty_grid": Case(
        "validate s.yaml", r"search\.lr\.grid needs a non-empty list",
        {"s.yaml": sweep_text(search={"lr": {"grid": []}})},
    ),
    "per_block_list_too_long": Case(
        "validate s.yaml", r"frame_width has 2 values but scatnetblockanalysis builds 1 block",
        {"s.yaml": sweep_text(base_frame_width=[16, 32])},
    ),
    "projection_too_large_validate": Case(
        "validate s.yaml", r"P_proj_size 64 is larger than its input's 33 channels; use at most 33",
        {"s.yaml": sweep_text(search={"P_proj_size": {"grid": [8, 64]}})},
    ),
    "unknown_arch_sweep": Case(
        "validate s.yaml", r"arch 'resnet' is not one of analysis, scatnet",
        {"s.yaml": sweep_text(base_arch="resnet")},
    ),
    "unknown_non_linearity_sweep": Case(
        "validate s.yaml", r"non_linearity 'tanh' is not one of absolute, softshrink, relu",
        {"s.yaml": sweep_text(search={"non_linearity": {"grid": ["relu", "tanh"]}})},
    ),
    "unknown_dataset_sweep": Case(
        "validate s.yaml", r"dataset 'svhn' is not one of mnist, cifar10",
        {"s.yaml": sweep_text(base_dataset="svhn")},
    ),
    "workers_per_trial_zero": Case(
        "validate s.yaml", r"resources\.workers_per_trial must be > 0, got 0",
        {"s.yaml": sweep_text(resources={"workers_per_trial": 0})},
    ),
    "name_with_dotdot_in_file": Case(
        "validate s.yaml", r"sweep name '\.\./x' is not allowed",
        {"s.yaml": sweep_text(name="../x")},
    ),
    "missing_sweep_file": Case("validate nosuch.yaml", r"sweep file nosuch\.yaml does not exist"),
    # ------------------------------------------------------------ sweep / resume / results
    "name_with_dotdot_flag": Case(
        "sweep s.yaml --name ../x", r"sweep name '\.\./x' is not allowed",
        {"s.yaml": sweep_text()},
    ),
    "unreachable_tracking_uri": Case(
        "sweep s.yaml --tracking-uri http://127.0.0.1:1",
        r"tracking server http://127\.0\.0\.1:1 is unreachable .*mlflow-server",
        {"s.yaml": sweep_text()},
    ),
    "unreachable_ray_address": Case(
        "sweep s.yaml --address 127.0.0.1:1",
        r"cannot reach Ray cluster at 127\.0\.0\.1:1 .*drop --address",
        {"s.yaml": sweep_text()},
    ),
    "resume_unknown_sweep": Case("resume nosuch", r"no sweep named 'nosuch' in runs/sweeps"),
    "status_unknown_sweep": Case("status nosuch", r"no sweep named 'nosuch'"),
    "best_unknown_sweep": Case("best nosuch", r"no sweep named 'nosuch'"),
    "compare_unknown_sweep": Case("compare nosuch --csv", r"no sweep named 'nosuch'"),
    # ------------------------------------------------------------ train
    "projection_too_large_dry_run": Case(
        f"{SYN} -a scatnetblock --n-blocks 1 --P-proj-size 64 --dry-run",
        r"P_proj_size 64 is larger than its input's 33 channels",
    ),
    "frame_does_not_tile": Case(
        f"{SYN} -a analysis --frame-width 16 --frame-kernel-size 5 --frame-stride 2",
        r"frame_kernel_size 5 with frame_stride 2 does not tile the 16x16 input",
    ),
    "unknown_arch_train": Case(f"{SYN} -a resnet", r"argument -a/--arch: invalid choice: 'resnet'"),
    "unknown_non_linearity_train": Case(
        f"{SYN} --non-linearity tanh", r"argument --non-linearity: invalid choice: 'tanh'"
    ),
    "unknown_dataset_train": Case(
        "train --dataset svhn", r"argument --dataset: invalid choice: 'svhn'"
    ),
    "missing_dataset_folder": Case(
        "train --dataset mnist --data /nonexistent/mnist -a analysis --frame-width 16",
        r"MNIST not found .* in /nonexistent/mnist/MNIST/raw.*--data DIR holding MNIST/raw/",
    ),
    "mislaid_cifar_folder": Case(
        "train --dataset cifar10 --data {tmp}/data/cifar-10-batches-py -a analysis "
        "--frame-width 16 --frame-kernel-size 8 --frame-stride 4",
        r"cifar10 not found in .*is the cifar-10-batches-py folder itself: pass its parent",
        setup="cifar",
    ),
    "class_indices_out_of_range": Case(
        "train --dataset imagenet --data {tmp}/imnet --nb-classes 2 --class-indices idx.txt "
        "-a scatnet --P-proj-size 16",
        r"--class-indices idx\.txt has indices out of range 0\.\.2 .*: 7",
        {"idx.txt": "0 7\n"}, setup="imagenet",
    ),
    "class_indices_duplicates": Case(
        "train --dataset imagenet --data {tmp}/imnet --nb-classes 2 --class-indices idx.txt "
        "-a scatnet --P-proj-size 16",
        r"--class-indices idx\.txt repeats indices 1; list each once",
        {"idx.txt": "1\n1\n"}, setup="imagenet",
    ),
    "negative_epochs": Case(f"{SYN} --epochs -1", r"epochs must be > 0, got -1"),
    "negative_lr": Case(f"{SYN} --lr=-0.1", r"lr must be > 0, got -0\.1"),
    "resume_missing_file": Case(
        f"{SYN} --resume {{tmp}}/missing.pt", r"--resume .*missing\.pt: no checkpoint there"
    ),
    "config_file_missing": Case(
        f"{SYN} --config nosuch.yaml", r"config file nosuch\.yaml does not exist"
    ),
    "evaluate_without_resume": Case(f"{SYN} --evaluate", r"evaluate needs a checkpoint: add --resume"),
    "batch_not_divisible": Case(
        f"{SYN} --batch-size 100 --num-workers 3",
        r"batch_size 100 is not divisible by num_workers 3; choose a multiple",
    ),
    "frame_width_zero": Case(f"{SYN} --frame-width 0", r"every frame_width must be > 0, got \[0\]"),
    "P_kernel_size_even": Case(
        f"{SYN} -a scatnetblock --n-blocks 1 --P-proj-size 8 --P-kernel-size 2",
        r"P_kernel_size 2 must be odd",
    ),
    "unknown_flag": Case(
        f"{SYN} --frobnicate 3", r"unrecognized arguments: --frobnicate 3 \(see --help\)"
    ),
}  # fmt: skip


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _run_case(
    name: str, tmp: Path
) -> tuple[subprocess.CompletedProcess, set[str], set[str], float]:
    case = CASES[name]
    tmp.mkdir(parents=True)
    for rel, text in case.files.items():
        (tmp / rel).write_text(text)
    if case.setup:
        SETUPS[case.setup](tmp)
    before = _listing(tmp)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RAY_ADDRESS", "MLFLOW_TRACKING_URI")}  # fmt: skip
    env["OMP_NUM_THREADS"] = "1"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, LAUNCH, *shlex.split(case.argv.format(tmp=tmp))],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return proc, before, _listing(tmp), time.perf_counter() - started


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    with ThreadPoolExecutor(3) as pool:
        done = pool.map(lambda name: _run_case(name, root / name), CASES)
        return dict(zip(CASES, done))


def test_catalogue_is_complete():
    assert len(CASES) >= 22


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_leaves_nothing(results, name):
    proc, before, after, seconds = results[name]
    stderr = proc.stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    assert proc.returncode == 2, (proc.returncode, stderr[-3000:])
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip() and lines[0].startswith("error:"), stderr[-3000:]
    assert re.search(CASES[name].expect, lines[0]), lines[0]
    assert after == before, f"created: {sorted(after - before)}"
    assert seconds < 110, f"{name} took {seconds:.0f} s"  # generous: a loaded machine
