"""Search quality at a fixed trial budget: random vs TPE, and ASHA vs HyperBand, over seeds.

The objective is real and cheap: `sepconc.train` on the `synthetic` set (2000 16x16 images,
10 classes, batches of 500), one `scatnetblockanalysis` block (L=4, 17 channels), 1 or 2
epochs per trial, over learning rate (0.01-10, log; above ~5 training diverges) x frame
width (16-128) x projection size (4-16). Everything is Ray Tune's own: a
function trainable calling `sepconc.train` in its process (1 worker, checkpoints reported
so HyperBand can pause and resume a trial), `OptunaSearch` with Optuna's `RandomSampler`
or `TPESampler` (the same code path, only the sampler differs), `ASHAScheduler` and
`HyperBandScheduler`. No sweep file is involved.

- searchers: per seed, `--trials` trials of 1 epoch, one at a time (TPE sees every result
  before it suggests the next), random then TPE;
- schedulers: per seed, `--trials` trials of the same random configurations (the same
  sampler seed), up to 2 epochs, ASHA then HyperBand (grace 1 epoch, reduction factor 2).

Printed: the best validation loss and top-1 reached, and the trial-epochs spent, per seed
and as ratios (TPE / random, HyperBand / ASHA) of their means over the seeds. The metric
optimised is `val_loss` (min): top-1 saturates at 100 % on this set after one good epoch,
while the loss still ranks configurations (0.04 to 2.2 at 1 epoch; ~1e3-1e8 diverged).
Absolute times on a loaded machine mean little; the ratios come from one run.

    flock /tmp/sepconc-ray.lock python benchmarks/search_quality.py [--seeds 3] [--trials 8]
        [--part searchers|schedulers|both]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = {"dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 1,
        "scat_angles": 4, "batch_size": 500, "learning_rate_adjust_frequency": 30,
        "workers": 0, "stats_every": 0, "seed": 0, "tracking": False,
        "checkpoint_every": 1, "checkpoint_keep": 1}  # fmt: skip
METRIC, MODE = "val_loss", "min"
DIVERGED = 1e12  # the val_loss reported for a trial whose loss became non-finite


def space():
    """lr x frame width x projection size, in Tune's terms (OptunaSearch converts them)."""
    from ray import tune

    return {"lr": tune.loguniform(0.01, 10.0), "frame_width": tune.choice([16, 32, 64, 128]),
            "P_proj_size": tune.choice([4, 8, 16])}  # fmt: skip


def trainable(config: dict) -> None:
    """Tune function trainable: `sepconc.train` for `config["epochs"]`, reporting each epoch
    with its checkpoint; a restored trial (HyperBand's pause) resumes from it."""
    from ray import tune

    from sepconc import Config, train
    from sepconc.loop import TrainingDiverged

    scratch = Path(tempfile.mkdtemp(prefix="search-quality-"))
    restored = tune.get_checkpoint()
    resume = restored.to_directory(str(scratch / "restored")) if restored else None
    flat = {**BASE, **config, "out": str(scratch / "run"), "resume": resume,
            "cache_dir": str(scratch / "cache")}  # fmt: skip

    def report(epoch_report) -> None:
        if epoch_report.replayed:
            return
        folder = scratch / f"report-{epoch_report.epoch}"
        folder.mkdir()
        shutil.copy2(epoch_report.checkpoint, folder / epoch_report.checkpoint.name)
        tune.report({k: float(v) for k, v in epoch_report.metrics.items()},
                    checkpoint=tune.Checkpoint.from_directory(str(folder)))  # fmt: skip

    try:
        train(Config.from_flat(flat, where="benchmark"), hooks=[report])
    except TrainingDiverged:  # a non-finite loss: the worst value, not a trial error
        tune.report({METRIC: DIVERGED, "val_acc1": 0.0})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def study(storage: Path, name: str, sampler, trials: int, epochs: int, scheduler=None,
          concurrent: int | None = 1) -> dict:  # fmt: skip
    """One Tune run: best `val_loss` and `val_acc1` reached (any trial, any epoch), and the
    trial-epochs trained."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(sampler=sampler, metric=METRIC, mode=MODE)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={**space(), "epochs": epochs},
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=search,
                                    scheduler=scheduler, num_samples=trials,
                                    max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )  # fmt: skip
    started = time.perf_counter()
    results = tuner.fit()
    losses, accs, epochs_spent = [], [], 0
    for result in results:
        frame = result.metrics_dataframe
        if frame is None or frame.empty:
            continue
        losses.append(frame[METRIC].min())
        accs.append(frame["val_acc1"].max())
        epochs_spent += int(frame["training_iteration"].max())
    return {"loss": min(losses), "acc": max(accs), "epochs": epochs_spent,
            "trials": len(losses), "seconds": time.perf_counter() - started}  # fmt: skip


def compare(rows: dict[str, list[dict]], a: str, b: str) -> list[str]:
    """Per-seed lines and the ratios b / a of the means over seeds."""
    lines = []
    for name in (a, b):
        for seed, r in enumerate(rows[name]):
            lines.append(f"  {name:<9} seed {seed}: best val_loss {r['loss']:.4f}, best top-1 "
                         f"{r['acc']:.1f} %, {r['epochs']} trial-epochs over {r['trials']} "
                         f"trials, {r['seconds']:.0f} s")  # fmt: skip

    def mean(name: str, key: str) -> float:
        return statistics.mean(r[key] for r in rows[name])

    wins = sum(rb["loss"] < ra["loss"] for ra, rb in zip(rows[a], rows[b], strict=True))
    lines.append(f"  {b}/{a}: best val_loss {mean(b, 'loss') / mean(a, 'loss'):.2f} "
                 f"(mean {mean(b, 'loss'):.4f} vs {mean(a, 'loss'):.4f}; lower is better; "
                 f"{b} lower in {wins}/{len(rows[a])} seeds), best top-1 "
                 f"{mean(b, 'acc') / mean(a, 'acc'):.3f}, trial-epochs "
                 f"{mean(b, 'epochs') / mean(a, 'epochs'):.2f}")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8, help="trials per study (the budget)")
    parser.add_argument("--startup", type=int, default=3, help="TPE's random start-up trials")
    parser.add_argument("--part", choices=("searchers", "schedulers", "both"), default="both")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import optuna
    import ray
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # fmt: skip
    storage = Path(tempfile.mkdtemp(prefix="search-quality-"))
    started = time.perf_counter()
    out: list[str] = []
    try:
        if args.part in ("searchers", "both"):
            rows: dict[str, list[dict]] = {"random": [], "tpe": []}
            for seed in range(args.seeds):  # interleaved: load drifts affect both alike
                rows["random"].append(study(storage, f"random{seed}",
                                            optuna.samplers.RandomSampler(seed=seed),
                                            args.trials, 1))  # fmt: skip
                tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=args.startup)
                rows["tpe"].append(study(storage, f"tpe{seed}", tpe, args.trials, 1))
            out += [f"searchers: {args.trials} trials x 1 epoch, one at a time, "
                    f"{args.seeds} seeds (TPE: {args.startup} random start-up trials)",
                    *compare(rows, "random", "tpe")]  # fmt: skip
        if args.part in ("schedulers", "both"):
            rows = {"asha": [], "hyperband": []}
            for seed in range(args.seeds):
                for name, scheduler in (
                    ("asha", ASHAScheduler(max_t=2, grace_period=1, reduction_factor=2)),
                    ("hyperband", HyperBandScheduler(max_t=2, reduction_factor=2)),
                ):
                    rows[name].append(study(storage, f"{name}{seed}",
                                            optuna.samplers.RandomSampler(seed=seed),
                                            args.trials, 2, scheduler, concurrent=None))  # fmt: skip
            out += [f"schedulers: {args.trials} random trials (same configurations for both) "
                    f"x up to 2 epochs, 2 at a time, {args.seeds} seeds",
                    *compare(rows, "asha", "hyperband")]  # fmt: skip
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    print("\n".join(out))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
