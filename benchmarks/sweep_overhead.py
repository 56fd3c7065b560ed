"""Sweep wall time vs time inside training epochs, and ASHA vs the full grid.

Runs a sweep file (default: the quickstart) through `launch.py sweep` in a fresh runs
folder, then reads MLflow: the sum of every trial's `epoch_seconds` is the time spent
training; the rest of the wall time is orchestration (Ray start, trial and worker
start-up, report latency, logging). With `--compare-fifo` the same sweep runs again
with `scheduler.type=fifo` (every trial to the end) and the trial-epochs and best
accuracy of both are printed.

    python benchmarks/sweep_overhead.py [--file sweeps/quickstart.yaml] [--compare-fifo]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_sweep(file: str, runs: Path, extra: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "launch.py"), "sweep", file, "--runs-dir", str(runs), *extra]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})})  # fmt: skip
    return time.perf_counter() - started


def measure(name: str, runs: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from sepconc.tracking.read import fetch_history, sweep_trials

    _, client, trials = sweep_trials(name, runs)
    train_s, epochs, best = 0.0, 0, 0.0
    for trial in trials:
        history = fetch_history(client, trial.run_id, "epoch_seconds")
        train_s += sum(v for _, v in history)
        epochs += len(history)
        best = max(best, trial.last.get("best_val_acc1", 0.0))
    return {"trials": len(trials), "trial_epochs": epochs, "train_s": train_s, "best": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default="sweeps/quickstart.yaml")
    parser.add_argument("--compare-fifo", action="store_true")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run with Ray's default 2 s report interval and with the 1-worker "
        "in-process trials, to compare orchestration overheads",
    )
    args = parser.parse_args()
    from sepconc.yamlio import load_yaml

    name = load_yaml((ROOT / args.file).read_text())["name"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        wall = run_sweep(args.file, runs, [])
        asha = measure(name, runs)
        out = wall - asha["train_s"]
        print(f"sweep {name}: {asha['trials']} trials, {asha['trial_epochs']} trial-epochs")
        print(
            f"  wall {wall:.1f} s, inside training epochs {asha['train_s']:.1f} s "
            f"({100 * asha['train_s'] / wall:.0f} %), outside {out:.1f} s "
            f"({out / max(asha['trials'], 1):.1f} s per trial)"
        )
        if args.baseline:
            slow = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2"}
            wall_b = run_sweep(args.file, runs, ["--name", f"{name}-ray-default"], env=slow)
            base = measure(f"{name}-ray-default", runs)
            out_b = wall_b - base["train_s"]
            print(
                f"baseline (Ray's default 2 s health-check interval): wall {wall_b:.1f} s, "
                f"outside training {out_b:.1f} s ({out_b / max(base['trials'], 1):.1f} s per trial)"
                f" -> ours is {out_b / max(out, 1e-9):.2f}x less overhead"
            )
            wall_1 = run_sweep(
                args.file,
                runs,
                ["--name", f"{name}-1worker", "--set", "resources.workers_per_trial=1"],
            )
            one = measure(f"{name}-1worker", runs)
            out_1 = wall_1 - one["train_s"]
            print(
                f"1-worker trials (trained in the Tune trial process): wall {wall_1:.1f} s, "
                f"outside training {out_1:.1f} s ({out_1 / max(one['trials'], 1):.1f} s per trial)"
            )
        if args.compare_fifo:
            wall_f = run_sweep(
                args.file, runs, ["--set", "scheduler.type=fifo", "--name", f"{name}-fifo"]
            )
            fifo = measure(f"{name}-fifo", runs)
            print(
                f"full grid (fifo): {fifo['trial_epochs']} trial-epochs, wall {wall_f:.1f} s, "
                f"best val_acc1 {fifo['best']:.2f} %"
            )
            print(
                f"ASHA: {asha['trial_epochs']} trial-epochs, wall {wall:.1f} s, best val_acc1 "
                f"{asha['best']:.2f} %  -> {fifo['trial_epochs'] / max(asha['trial_epochs'], 1):.2f}x "
                f"fewer trial-epochs, {wall_f / wall:.2f}x less wall time"
            )


if __name__ == "__main__":
    main()
