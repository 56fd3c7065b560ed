"""`python launch.py train` as a user runs it (subprocesses from the repository root).

- `--dry-run` on each of the paper's command lines (the seed README, MNIST / CIFAR-10 /
  ImageNet, every listed non-linearity) prints `parameters: N` with N equal to docs/models.md's
  formulas, written out independently here. The ImageNet lines point `--data` at a
  folder that does not exist: a dry run must not touch data.
- `--config` round trip: a run writes `config.yaml`; `train --config` on it gives the same
  model, an explicit flag overrides the file, and `-e --resume` evaluates the run.
- The seed's short flags (`--dir`, `-j`, `-b`, `--wd`, `-e`, `-p`) are accepted.
- Bad input exits with status 2 and one `error: ...` line on stderr, no traceback.
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.helpers import launch_train as launch

ROOT = Path(__file__).resolve().parent.parent
COMMON = "-j 10 --epochs 300 --batch-size 128 --lr 0.01 --no-tracking"

# ------------------------------------------------------------------ docs/models.md, written out
SHAPES = {
    "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "imagenet": (3, 224, 224),
    "synthetic": (1, 16, 16),
}
CLASSES = {"mnist": 10, "cifar10": 10, "imagenet": 1000, "synthetic": 10}


def models_md_count(
    dataset: str,
    arch: str,
    *,
    J: int = 4,
    L: int = 8,
    P: tuple = (),
    width: tuple = (),
    k: int = 1,
    stride: int = 1,
    avg: int = 1,
) -> int:
    """Parameters by docs/models.md "Parameter counts" (1x1 P, fc classifier, one L for all blocks).

    P: `k_P^2 (C K) P`; F: `k_F^2 C width`; classifier `2C + C n'^2 classes + classes`.
    K: 1 (analysis), `1 + L J + L^2 J (J-1)/2` (scattering tree, n -> n / 2^J),
    `1 + 4L` (phase scattering, n -> n // 2 per block).
    """
    channels, n, _ = SHAPES[dataset]
    total = 0
    if arch == "analysis":
        total += k * k * channels * width[0]
        assert (n - k) % stride == 0
    elif arch == "scatnet":
        K = 1 + L * J + L * L * J * (J - 1) // 2
        total += channels * K * P[0]
        channels, n = P[0], n // 2**J
    else:
        for i, p in enumerate(P):
            total += channels * (1 + 4 * L) * p
            channels, n = p, n // 2
            if arch == "scatnetblockanalysis":
                total += channels * width[i]
    n -= avg - 1
    classes = CLASSES[dataset]
    return total + 2 * channels + channels * n * n * classes + classes


MNIST = "--dataset mnist --learning-rate-adjust-frequency 70"
CIFAR = "--dataset cifar10 --learning-rate-adjust-frequency 70"
IMAGENET = "--dataset imagenet --learning-rate-adjust-frequency 60 --data {missing}"
MNIST_ANALYSIS = "-a analysis --frame-kernel-size 14 --frame-width 2048 --frame-stride 7"
CIFAR_ANALYSIS = "-a analysis --frame-kernel-size 8 --frame-width 8192 --frame-stride 4"
CIFAR_P = "--n-blocks 4 --P-proj-size 64 128 256 512"
CIFAR_WIDTHS = "--frame-width 1024 2048 4096 8192"
IMAGENET_P = "--n-blocks 6 --P-proj-size 64 128 256 512 512 512"
IMAGENET_WIDTHS = "--frame-width 512 1024 1024 2048 2048 2048"
P4, W4 = (64, 128, 256, 512), (1024, 2048, 4096, 8192)
P6, W6 = (64, 128, 256, 512, 512, 512), (512, 1024, 1024, 2048, 2048, 2048)

#: (seed README command line, parameters by docs/models.md's formulas)
SEED_LINES = [
    *[
        (f"{MNIST} {MNIST_ANALYSIS} --non-linearity {nl}",
         models_md_count("mnist", "analysis", width=(2048,), k=14, stride=7))
        for nl in ("relu", "softshrink", "absolute")
    ],
    (f"{MNIST} -a scatnet --scattering-J 3 --P-proj-size 128",
     models_md_count("mnist", "scatnet", J=3, P=(128,))),
    *[
        (f"{CIFAR} {CIFAR_ANALYSIS} --non-linearity {nl}",
         models_md_count("cifar10", "analysis", width=(8192,), k=8, stride=4))
        for nl in ("relu", "softshrink", "absolute")
    ],
    (f"{CIFAR} -a scatnet --scattering-J 3 --P-proj-size 128",
     models_md_count("cifar10", "scatnet", J=3, P=(128,))),
    (f"{CIFAR} -a scatnetblock {CIFAR_P}", models_md_count("cifar10", "scatnetblock", P=P4)),
    *[
        (f"{CIFAR} -a scatnetblockanalysis {CIFAR_P} --non-linearity {nl} {CIFAR_WIDTHS}",
         models_md_count("cifar10", "scatnetblockanalysis", P=P4, width=W4))
        for nl in ("relu", "softshrink")
    ],
    (f"{IMAGENET} -a scatnet --scattering-J 4 --P-proj-size 256 --avg-ker-size 5",
     models_md_count("imagenet", "scatnet", J=4, P=(256,), avg=5)),
    (f"{IMAGENET} -a scatnetblock {IMAGENET_P}", models_md_count("imagenet", "scatnetblock", P=P6)),
    *[
        (f"{IMAGENET} -a scatnetblockanalysis {IMAGENET_P} --non-linearity {nl} {IMAGENET_WIDTHS}",
         models_md_count("imagenet", "scatnetblockanalysis", P=P6, width=W6))
        for nl in ("relu", "softshrink")
    ],
]  # fmt: skip


def test_formula_reproduces_models_md_worked_numbers():
    """The independent formula above agrees with docs/models.md's worked examples."""
    assert models_md_count("mnist", "analysis", width=(2048,), k=14, stride=7) == 409_260
    assert models_md_count("cifar10", "scatnet", J=3, P=(128,)) == 104_074
    assert (
        models_md_count(
            "cifar10", "scatnetblockanalysis", P=(64, 128, 256, 512), width=(1024, 2048, 4096, 8192)
        )
        == 11_275_466
    )


# ------------------------------------------------------------------ running launch.py


def parameters(proc: subprocess.CompletedProcess) -> int:
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.findall(r"^parameters: (\d+)$", proc.stdout, flags=re.MULTILINE)
    assert len(found) == 1, proc.stdout[-2000:]
    return int(found[0])


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """Every seed line's dry run, three at a time (each builds a model of up to 31M params)."""
    missing = tmp_path_factory.mktemp("imagenet") / "does-not-exist"
    lines = [line.format(missing=missing) for line, _ in SEED_LINES]
    with ThreadPoolExecutor(3) as pool:
        procs = list(
            pool.map(
                lambda line: launch(f"{line} {COMMON} --dir {missing}/run --dry-run", timeout=300),
                lines,
            )
        )
    assert not missing.exists()  # nothing was written or read there
    return procs


@pytest.mark.parametrize(
    "index",
    range(len(SEED_LINES)),
    ids=[
        "-".join(re.findall(r"(?:--dataset|-a|--non-linearity) (\S+)", line))
        for line, _ in SEED_LINES
    ],
)
def test_dry_run_parameter_counts(dry_runs, index):
    line, expected = SEED_LINES[index]
    assert parameters(dry_runs[index]) == expected, line


# ------------------------------------------------------------------ config round trip

TINY = (
    "--dataset synthetic -a analysis --frame-width 32 --frame-kernel-size 4 --frame-stride 4 "
    "--epochs 1 -b 100 -j 0 --wd 1e-4 -p 5 --seed 1 --stats-every 0 --no-tracking"
)


def test_config_round_trip_and_seed_flags(tmp_path):
    run = tmp_path / "run"
    proc = launch(f"{TINY} --dir {run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"run folder: {run}" in proc.stdout
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["batch_size"], saved["workers"], saved["weight_decay"], saved["print_freq"]) == (
        100,
        0,
        1e-4,
        5,
    )
    assert saved["out"] == str(run) and saved["seed"] == 1
    assert (run / "metrics.jsonl").read_text().count("\n") == 1
    expected = models_md_count("synthetic", "analysis", width=(32,), k=4, stride=4)
    same = launch(["--config", str(run / "config.yaml"), "--dry-run"])
    assert parameters(same) == expected == 32 * 16 + 2 + 2560 + 10
    wider = launch(["--config", str(run / "config.yaml"), "--frame-width", "64", "--dry-run"])
    assert parameters(wider) == expected + 32 * 16  # the explicit flag wins over the file
    evaluated = launch(
        [
            "--config",
            str(run / "config.yaml"),
            "-e",
            "--resume",
            str(run),
            "--dir",
            str(tmp_path / "eval"),
        ]
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "epochs: 1" in evaluated.stdout


# Bad command lines: cases of the one bad-input catalogue, tests/test_bad_input.py.
