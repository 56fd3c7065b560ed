"""Shared test helpers: `launch.py` as a user runs it, and sweep files.

- `launch(*args)`: `python launch.py ARGS` as a subprocess (default: from the repository
  root), with an environment that cannot leak the caller's set-up into it.
- `start(*args)`: the same command started in the background (`subprocess.Popen`).
- `launch_train(args)`: `launch("train", *args)`, args a list or one shell-like string.
- `cli(*args)`: the same command line in-process (`sepconc.cli.main`), for the fast tier:
  returns the exit status (argparse's `SystemExit` is caught and turned into its code).
- `sweep_file(tmp_path, name, base=...)`: a sweep YAML file written for a test.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = str(ROOT / "launch.py")

# Variables a developer's shell may hold that would change what `launch.py` does.
_DROPPED = ("PYTHONPATH", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")


def launch_env(keep_pythonpath: bool = False, **extra: str) -> dict[str, str]:
    """The environment of a `launch.py` subprocess: the caller's, without PYTHONPATH (the
    script's folder comes first on sys.path, so the checkout under test is imported; Ray
    tests keep it with `keep_pythonpath=True`: their workers import the project too),
    MLFLOW_TRACKING_URI and RAY_ADDRESS; one thread per process (several run at once on a
    small shared machine); unbuffered output; a generous Ray Train worker start timeout."""
    dropped = _DROPPED[1:] if keep_pythonpath else _DROPPED
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="180")  # fmt: skip
    env.update(extra)
    return env


def launch(
    *args: str,
    cwd: Path | str = ROOT,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`python launch.py ARGS` in `cwd`; output captured as text; never raises on exit status.

    `env` defaults to `launch_env()`. Raises `subprocess.TimeoutExpired` after `timeout` s."""
    return subprocess.run(
        [sys.executable, LAUNCH, *map(str, args)],
        cwd=cwd,
        env=launch_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(
    *args: str, cwd: Path | str = ROOT, env: dict[str, str] | None = None, **popen
) -> subprocess.Popen:
    """`python launch.py ARGS` started in the background (a driver to kill, a server);
    `popen` goes to `subprocess.Popen` (stdout, stderr, start_new_session, ...)."""
    return subprocess.Popen([sys.executable, LAUNCH, *map(str, args)], cwd=cwd,
                            env=launch_env() if env is None else env, **popen)  # fmt: skip


def launch_train(args: str | list[str], **kwargs) -> subprocess.CompletedProcess:
    """`launch("train", *args)`; `args` a list or one string split like a shell line."""
    argv = shlex.split(args) if isinstance(args, str) else list(args)
    return launch("train", *argv, **kwargs)


def cli(*args: str) -> int:
    """`launch.py ARGS` in this process: the exit status `sepconc.cli.main` returns, or the
    code of the `SystemExit` it raises (argparse refusing a flag)."""
    from sepconc.cli import main

    try:
        return main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def sweep_file(
    tmp_path: Path,
    name: str,
    base: dict,
    lrs: list[float] = (0.01,),
    scheduler: dict | None = None,
    retries: int = 0,
    workers: int = 2,
) -> Path:
    """`tmp_path/NAME.yaml`: a grid over `lr` on `base`, one trial at a time with `workers`
    Ray Train workers of one CPU each, `retries` retries, a checkpoint every epoch (keep 2)."""
    spec = {
        "name": name,
        "base": base,
        "search": {"lr": {"grid": list(lrs)}},
        "scheduler": scheduler or {"type": "fifo"},
        "resources": {
            "workers_per_trial": workers,
            "cpus_per_worker": 1,
            "max_concurrent_trials": 1,
        },  # fmt: skip
        "failure": {"max_retries": retries},
        "checkpoint": {"every": 1, "keep": 2},
    }
    path = Path(tmp_path) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def loss_parity_generator():
    """`tests/data/generate_loss_parity.py` as a module: the seeded run (`run(folder,
    kernels=...)`), its `CONFIG`, the stored `REFERENCE` and `KERNELS_LOSS_RTOL`."""
    import importlib.util

    path = Path(__file__).parent / "data" / "generate_loss_parity.py"
    spec = importlib.util.spec_from_file_location("generate_loss_parity", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
