"""GPU figures for `--precision`: training images/s per seed model, fp32 vs tf32 vs bf16, and
the validation accuracy after one digits epoch, fp32 vs bf16 (`benchmarks/gpu.sh` runs it).

Throughput: `benchmarks/train_step.py`'s models (the seed README's command lines) on random
inputs of their data set's shape, the full training step (`sepconc.loop.train_epoch`:
forward under the precision's autocast, float32 loss, backward, SGD, Parseval steps), after
warm-up steps (cuDNN autotuning: `cudnn.benchmark`), timed between two CUDA synchronizations.
Accuracy: `sepconc.trainer.train` on `digits` for one epoch, same seeds in both precisions
(one epoch on 1437 images is noisy: the seeds' spread is printed with the means).

    python benchmarks/gpu_bench.py --out DIR [--dry] [--only NAME ...] [--seeds 3]

`--dry` (CPU, for checking the script without a GPU): batch 8, 1 timed step, two models,
one seed of a tiny `analysis`. Writes DIR/gpu_bench.json and DIR/gpu_bench.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
from benchmarks.train_step import MODELS
from sepconc.config import Config
from sepconc.loop import build_optimizer, train_epoch
from sepconc.model import build_model
from sepconc.precision import set_precision
from sepconc.trainer import train

PRECISIONS = ("fp32", "tf32", "bf16")
#: digits models of the accuracy check (one epoch, lr 0.05, batch 64)
ACCURACY_MODELS = {
    "analysis": {"arch": "analysis", "frame_width": [256], "frame_kernel_size": [7],
                 "frame_stride": [7]},
    "scatnetblockanalysis": {"arch": "scatnetblockanalysis", "n_blocks": 2, "P_proj_size": [16, 64],
                             "scat_angles": [4], "frame_width": [128, 128]},
}  # fmt: skip
DRY_ACCURACY = {"analysis": {"arch": "analysis", "frame_width": [32], "frame_kernel_size": [4],
                             "frame_stride": [4]}}  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(flat: dict, precision: str, device: torch.device, batch: int,
                      warmup: int, steps: int) -> float:  # fmt: skip
    """Training images/s of model `flat` under `precision` on `device` (random inputs)."""
    config = Config.from_flat({**flat, "precision": precision, "batch_size": batch})
    set_precision(precision, device)
    torch.manual_seed(0)
    net = build_model(config).to(device)
    plan = net.plans[0]
    shape = (plan.in_channels, plan.in_size, plan.in_size)
    classes = net.classifier.head.out_features
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(batch, *shape, generator=gen).to(device),
             torch.randint(0, classes, (batch,), generator=gen).to(device))
            for _ in range(max(warmup, steps))]  # fmt: skip
    optimizer = build_optimizer(net, 0.01, 0.9, 1e-4)
    beta = config.optim.pars_beta
    train_epoch(net, net, optimizer, data[:warmup], beta, 0, device, 10**9, precision=precision)
    _sync(device)
    started = time.perf_counter()
    train_epoch(net, net, optimizer, data[:steps], beta, 1, device, 10**9, precision=precision)
    _sync(device)
    return batch * steps / (time.perf_counter() - started)


def digits_accuracy(flat: dict, precision: str, seed: int, device: torch.device, tmp: Path) -> dict:
    """val_acc1 / losses after one digits epoch (`train`, no tracking, no statistics)."""
    out = tmp / f"{flat['arch']}-{precision}-{seed}"
    config = Config.from_flat({**flat, "dataset": "digits", "epochs": 1, "batch_size": 64,
                               "lr": 0.05, "seed": seed, "device": device.type,
                               "precision": precision, "stats_every": 0, "tracking": False,
                               "cache_dir": str(tmp / "cache"), "out": str(out)})  # fmt: skip
    m = train(config).metrics
    return {k: m[k] for k in ("val_acc1", "train_loss", "val_loss", "images_per_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry", action="store_true", help="CPU, tiny: check the script")
    parser.add_argument("--only", nargs="+", choices=list(MODELS), help="throughput models")
    parser.add_argument("--seeds", type=int, default=3, help="accuracy seeds (default 3)")
    args = parser.parse_args()
    device = torch.device("cpu" if args.dry else "cuda")
    batch, warmup, steps = (8, 1, 1) if args.dry else (128, 3, 10)
    names = args.only or (["mnist-analysis", "mnist-scatnet"] if args.dry else list(MODELS))
    seeds = 1 if args.dry else args.seeds
    args.out.mkdir(parents=True, exist_ok=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    report = {"device": where, "torch": torch.__version__, "batch": batch, "steps": steps,
              "throughput": {}, "accuracy": {}}  # fmt: skip
    lines = [f"# GPU benchmark: {where}, torch {torch.__version__}", "",
             f"## Training images/s (batch {batch}, {warmup} warm-up + {steps} timed steps)", "",
             "| model | " + " | ".join(PRECISIONS) + " | bf16/fp32 |",
             "| --- |" + " ---: |" * (len(PRECISIONS) + 1)]  # fmt: skip
    for name in names:
        rates = {}
        for precision in PRECISIONS:
            try:
                rates[precision] = images_per_second(MODELS[name], precision, device, batch,
                                                     warmup, steps)  # fmt: skip
            except torch.OutOfMemoryError as exc:
                rates[precision] = float("nan")
                print(f"{name} {precision}: out of memory ({exc})".splitlines()[0], flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        report["throughput"][name] = rates
        ratio = rates["bf16"] / rates["fp32"]
        lines.append(f"| {name} | " + " | ".join(f"{rates[p]:.1f}" for p in PRECISIONS)
                     + f" | {ratio:.2f}x |")  # fmt: skip
        _progress(args.out, lines)
    set_precision("fp32", device)
    lines += ["", f"## digits, one epoch: val_acc1 (%), seeds 1..{seeds}", "",
              "| model | fp32 mean | bf16 mean | bf16 - fp32 | per seed fp32 / bf16 |",
              "| --- | ---: | ---: | ---: | --- |"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sepconc-gpu-bench-") as tmp:
        for name, flat in (DRY_ACCURACY if args.dry else ACCURACY_MODELS).items():
            runs = {p: [digits_accuracy(flat, p, s, device, Path(tmp)) for s in range(1, seeds + 1)]
                    for p in ("fp32", "bf16")}  # fmt: skip
            report["accuracy"][name] = runs
            acc = {p: [r["val_acc1"] for r in rs] for p, rs in runs.items()}
            mean = {p: sum(v) / len(v) for p, v in acc.items()}
            finite = all(r["train_loss"] == r["train_loss"] for rs in runs.values() for r in rs)
            per_seed = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(acc["fp32"], acc["bf16"]))
            lines.append(f"| {name} | {mean['fp32']:.2f} | {mean['bf16']:.2f} | "
                         f"{mean['bf16'] - mean['fp32']:+.2f} | {per_seed}"
                         f"{'' if finite else ' (NON-FINITE LOSS)'} |")  # fmt: skip
            _progress(args.out, lines)
    (args.out / "gpu_bench.json").write_text(json.dumps(report, indent=1))


def _progress(out: Path, lines: list[str]) -> None:
    """Print the newest line; rewrite gpu_bench.md (a timed-out run keeps what it measured)."""
    print(lines[-1], flush=True)
    (out / "gpu_bench.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
