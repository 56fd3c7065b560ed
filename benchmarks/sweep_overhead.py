"""Sweep time outside training, trial start-up and report latency: local workers vs Ray Train.

Runs a sweep file (default: the quickstart, 8 trials of 2 DDP workers) through `launch.py
sweep` in a fresh runs folder, twice in one run: with Ray Train worker groups
(`SEPCONC_TRIAL_LAUNCHER=ray_train`, the "before") and with the default one-node path (the
trial's workers as local processes of a reused trial process, `sepconc.sweep.local_workers`:
the "after"). From MLflow it reads, per sweep:

- **outside training per trial**: (wall time - the sum of every trial's `epoch_seconds`) /
  trials: Ray start, trial and worker start-up, report latency, logging;
- **start-up** per trial: from the moment the previous trial ended (the sweep runs one trial
  at a time; the first trial: from its MLflow run's creation) to its first training step
  (its epoch-1 report time minus `epoch_seconds` of epoch 1, minus that report's latency);
- **report latency** per epoch: rank 0's epoch end to the result reaching the driver
  (`SEPCONC_REPORT_LOG`, `sepconc.sweep.report_latency`).

Prints both and the ratios. With `--compare-fifo` the default path runs again with
`scheduler.type=fifo` (every trial to the end): trial-epochs and best accuracy of both.

    python benchmarks/sweep_overhead.py [--file sweeps/quickstart.yaml] [--rounds N]
                                        [--only local|ray_train] [--compare-fifo]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = {"ray_train": "Ray Train worker groups (before)", "local": "local workers (after)"}


def run_sweep(file: str, runs: Path, extra: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "launch.py"), "sweep", file, "--runs-dir", str(runs), *extra]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})})  # fmt: skip
    return time.perf_counter() - started


def measure(name: str, runs: Path, latency_file: Path | None = None) -> dict:
    """Trials, trial-epochs, seconds inside epochs, best accuracy, start-ups and latencies."""
    sys.path.insert(0, str(ROOT))
    from sepconc.tracking.read import fetch_history, sweep_trials

    _, client, trials = sweep_trials(name, runs)
    latency = {}
    if latency_file is not None and latency_file.exists():
        for line in latency_file.read_text().splitlines():
            row = json.loads(line)
            latency[(row["trial"], row["epoch"])] = row["latency_s"]
    train_s, epochs, best, starts = 0.0, 0, 0.0, []
    for trial in trials:
        seconds = fetch_history(client, trial.run_id, "epoch_seconds")
        train_s += sum(v for _, v in seconds)
        epochs += len(seconds)
        best = max(best, trial.last.get("best_val_acc1", 0.0))
        run = client.get_run(trial.run_id)
        first = [m for m in client.get_metric_history(trial.run_id, "val_acc1") if m.step == 1]
        if first and seconds:
            trial_id = run.data.tags.get("sepconc.trial_id")
            step = first[0].timestamp / 1000 - seconds[0][1] - latency.get((trial_id, 1), 0.0)
            starts.append((run.info.start_time / 1000, run.info.end_time / 1000, step))
    starts.sort()
    startup = [starts[0][2] - starts[0][0]] if starts else []
    startup += [cur[2] - prev[1] for prev, cur in zip(starts, starts[1:])]
    return {"trials": len(trials), "trial_epochs": epochs, "train_s": train_s, "best": best,
            "startup": startup, "latency": list(latency.values())}  # fmt: skip


def run_path(path: str, file: str, runs: Path, name: str, tag: str) -> dict:
    """One sweep of `file` with trials run by `path`; its figures and wall time."""
    latency_file = runs.parent / f"latency-{tag}.jsonl"
    env = {"SEPCONC_TRIAL_LAUNCHER": path, "SEPCONC_REPORT_LOG": str(latency_file)}
    wall = run_sweep(file, runs, ["--name", f"{name}-{tag}"], env=env)
    figures = measure(f"{name}-{tag}", runs, latency_file)
    figures["wall"] = wall
    figures["outside_per_trial"] = (wall - figures["train_s"]) / max(figures["trials"], 1)
    return figures


def describe(path: str, f: dict) -> str:
    su, lat = f["startup"], f["latency"]
    return (
        f"{PATHS[path]}: {f['trials']} trials, {f['trial_epochs']} trial-epochs, wall "
        f"{f['wall']:.1f} s, inside epochs {f['train_s']:.1f} s, outside "
        f"{f['outside_per_trial']:.1f} s per trial\n"
        f"    start-up to first step: median {statistics.median(su):.1f} s, first trial "
        f"{su[0]:.1f} s, max {max(su):.1f} s\n"
        f"    report latency per epoch: median {statistics.median(lat):.3f} s, max "
        f"{max(lat):.3f} s over {len(lat)} reports"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default="sweeps/quickstart.yaml")
    parser.add_argument("--rounds", type=int, default=1,
                        help="before/after pairs, alternating order (drift on a shared machine)")  # fmt: skip
    parser.add_argument("--only", choices=sorted(PATHS), help="run one path only")
    parser.add_argument("--compare-fifo", action="store_true")
    args = parser.parse_args()
    from sepconc.yamlio import load_yaml

    name = load_yaml((ROOT / args.file).read_text())["name"]
    order = [args.only] if args.only else ["ray_train", "local"]
    results: dict[str, list[dict]] = {p: [] for p in order}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        for round_ in range(args.rounds):
            for path in order if round_ % 2 == 0 else order[::-1]:
                figures = run_path(path, args.file, runs, name, f"{path}-{round_}")
                results[path].append(figures)
                print(f"[round {round_ + 1}] {describe(path, figures)}", flush=True)
        if len(order) == 2:
            before = sum(f["outside_per_trial"] for f in results["ray_train"])
            after = sum(f["outside_per_trial"] for f in results["local"])
            su_b = statistics.median([s for f in results["ray_train"] for s in f["startup"]])
            su_a = statistics.median([s for f in results["local"] for s in f["startup"]])
            lat_b = statistics.median([s for f in results["ray_train"] for s in f["latency"]])
            lat_a = statistics.median([s for f in results["local"] for s in f["latency"]])
            n = args.rounds
            print(f"sweep {name}: outside training per trial {before / n:.1f} s (Ray Train) -> "
                  f"{after / n:.1f} s (local workers): {before / max(after, 1e-9):.2f}x less; "
                  f"start-up median {su_b:.1f} -> {su_a:.1f} s ({su_b / max(su_a, 1e-9):.1f}x); "
                  f"report latency median {lat_b:.3f} -> {lat_a:.3f} s per epoch")  # fmt: skip
        if args.compare_fifo:
            asha = results[order[-1]][0]
            wall_f = run_sweep(args.file, runs, ["--set", "scheduler.type=fifo", "--name",
                                                 f"{name}-fifo"])  # fmt: skip
            fifo = measure(f"{name}-fifo", runs)
            print(f"full grid (fifo): {fifo['trial_epochs']} trial-epochs, wall {wall_f:.1f} s, "
                  f"best val_acc1 {fifo['best']:.2f} %")  # fmt: skip
            print(f"ASHA: {asha['trial_epochs']} trial-epochs, wall {asha['wall']:.1f} s, best "
                  f"val_acc1 {asha['best']:.2f} %  -> "
                  f"{fifo['trial_epochs'] / max(asha['trial_epochs'], 1):.2f}x fewer trial-epochs, "
                  f"{wall_f / asha['wall']:.2f}x less wall time")  # fmt: skip


if __name__ == "__main__":
    main()
