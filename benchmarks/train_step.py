"""Training throughput (images/s) of the real training step on CPU, for the paper's models.

One step is `sepconc.loop.train_epoch`'s: forward, cross-entropy, backward, SGD (momentum,
weight decay groups), Parseval step on every frame and projection. Inputs are random
tensors of the data set's shape (no data loading is measured). Models (the seed README's
command lines):

    mnist-analysis        analysis, frame 2048 atoms 14x14 / stride 7, relu
    mnist-scatnet         scatnet J=3, P=128
    cifar10-scatnet       scatnet J=3, P=128
    cifar10-scatnetblock  scatnetblock, 4 blocks, P 64 128 256 512
    cifar10-sba-relu      scatnetblockanalysis, 4 blocks, P 64..512, widths 1024..8192, relu

    python benchmarks/train_step.py [--batch 128] [--threads 2] [--warmup 2] [--steps 5]
        [--phase-method auto|fourier|conv | --compare] [--kernels auto|fused|reference]
        [--only NAME ...] [--compare-kernels [--rounds 3]]

`--compare` times every model with phase scattering twice, `fourier` then `auto`, and
prints the speed-up of `auto` (the other models have no phase scattering and run once).
`--kernels` (default auto) is the model's `kernels` setting for every run
(`sepconc.kernels.choose`): `--kernels reference` times the stock-PyTorch path.

`--compare-kernels [--rounds R]` builds each model twice, `--kernels reference` (stock
PyTorch: the frame as convolutions, i.e. every k > 1 frame as it ran before the patch
kernels) and `auto`, and times them in turn in one process (R rounds of `--steps` steps
each, alternating), printing both rates over all rounds, `auto/reference`, and the median,
min and max of the rounds' own ratios (each from two adjacent slices of steps, so the least
moved by the machine's load drifting), and the ratio of each setting's fastest slice (the
least disturbed by other processes). Default models: mnist-analysis,
cifar10-scatnetblock, cifar10-sba-relu.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
from sepconc.config import Config
from sepconc.host_memory import keep_freed_memory
from sepconc.loop import build_optimizer, train_epoch
from sepconc.model import build_model

MODELS = {
    "mnist-analysis": {
        "dataset": "mnist",
        "arch": "analysis",
        "frame_kernel_size": [14],
        "frame_width": [2048],
        "frame_stride": [7],
        "non_linearity": "relu",
    },
    "mnist-scatnet": {
        "dataset": "mnist",
        "arch": "scatnet",
        "scattering_J": 3,
        "P_proj_size": [128],
    },
    "cifar10-scatnet": {
        "dataset": "cifar10",
        "arch": "scatnet",
        "scattering_J": 3,
        "P_proj_size": [128],
    },
    "cifar10-scatnetblock": {
        "dataset": "cifar10",
        "arch": "scatnetblock",
        "n_blocks": 4,
        "P_proj_size": [64, 128, 256, 512],
    },
    "cifar10-sba-relu": {
        "dataset": "cifar10",
        "arch": "scatnetblockanalysis",
        "n_blocks": 4,
        "P_proj_size": [64, 128, 256, 512],
        "non_linearity": "relu",
        "frame_width": [1024, 2048, 4096, 8192],
    },
}
PHASE_ARCHS = ("scatnetblock", "scatnetblockanalysis")
#: `--compare-kernels`' default models: the ones the fused kernels change.
KERNEL_MODELS = ("mnist-analysis", "cifar10-scatnetblock", "cifar10-sba-relu")


class Stepper:
    """One model's training steps on random batches (built once, timed in slices)."""

    def __init__(self, flat: dict, phase_method: str, batch: int, kernels: str = "auto"):
        options = {"phase_method": phase_method, "batch_size": batch}
        if kernels != "auto":  # the setting exists from this version on; auto is the old default
            options["kernels"] = kernels
        self.config = Config.from_flat({**flat, **options})
        torch.manual_seed(0)
        self.net = build_model(self.config)
        shape, classes = self.net.plans[0], self.net.classifier
        self.image_shape = (shape.in_channels, shape.in_size, shape.in_size)
        self.n_classes = classes.head.out_features
        self.optimizer = build_optimizer(self.net, 0.01, 0.9, 1e-4)
        self.gen = torch.Generator().manual_seed(0)
        self.batch, self.epoch = batch, 0

    def seconds(self, steps: int) -> float:
        """Run `steps` training steps (batches drawn first, untimed); their wall seconds."""
        data = [(torch.randn(self.batch, *self.image_shape, generator=self.gen),
                 torch.randint(0, self.n_classes, (self.batch,), generator=self.gen))
                for _ in range(steps)]  # fmt: skip
        beta, cpu = self.config.optim.pars_beta, torch.device("cpu")
        started = time.perf_counter()
        train_epoch(self.net, self.net, self.optimizer, data, beta, self.epoch, cpu,
                    print_freq=10**9)  # fmt: skip
        self.epoch += 1
        return time.perf_counter() - started


def images_per_second(
    flat: dict, phase_method: str, batch: int, warmup: int, steps: int, kernels: str = "auto"
):
    """Build the model, run `warmup` then `steps` training steps; (images/s, seconds/step)."""
    stepper = Stepper(flat, phase_method, batch, kernels)
    stepper.seconds(warmup)
    seconds = stepper.seconds(steps) / steps
    return batch / seconds, seconds


def compare_kernels(flat: dict, batch: int, warmup: int, steps: int, rounds: int):
    """`--kernels reference` and `auto` on the same model, timed interleaved: `rounds` times
    `steps` steps of each in turn, after `warmup` steps of each. Returns (images/s of each
    over all rounds, the `auto/reference` ratio of each round, the ratio of the two fastest
    slices: the least disturbed by other processes on a loaded machine)."""
    steppers = {k: Stepper(flat, "auto", batch, k) for k in ("reference", "auto")}
    for stepper in steppers.values():
        stepper.seconds(warmup)
    times = {kernels: [] for kernels in steppers}
    for _ in range(rounds):
        for kernels, stepper in steppers.items():
            times[kernels].append(stepper.seconds(steps))
    rates = {k: batch * steps * rounds / sum(s) for k, s in times.items()}
    ratios = [r / a for r, a in zip(times["reference"], times["auto"])]
    best = min(times["reference"]) / min(times["auto"])
    return rates, ratios, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--phase-method", choices=("auto", "fourier", "conv"), default="auto")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="time phase-scattering models with fourier and auto; print the ratio",
    )
    parser.add_argument("--kernels", choices=("auto", "fused", "reference"), default="auto",
                        help="the models' kernels setting (default auto)")  # fmt: skip
    parser.add_argument(
        "--compare-kernels",
        action="store_true",
        help="time --kernels reference vs auto interleaved; print the ratio",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="--compare-kernels: interleaved rounds of --steps each (default 3)",
    )
    parser.add_argument("--only", nargs="+", choices=list(MODELS), help="models to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as every training process does (sepconc.training.setup)
    if args.compare_kernels:
        run_kernel_comparison(args)
        return
    names = args.only or list(MODELS)
    print(
        f"CPU, {args.threads} threads, batch {args.batch}, float32, {args.warmup} warm-up + "
        f"{args.steps} timed steps (forward, loss, backward, SGD, Parseval), "
        f"kernels {args.kernels}"
    )
    if args.compare:
        print(f"{'model':<22} {'fourier img/s':>14} {'auto img/s':>11} {'auto/fourier':>13}")
    else:
        print(f"{'model':<22} {'phase':>8} {'img/s':>9} {'s/step':>8}")
    for name in names:
        flat = MODELS[name]
        has_phase = flat["arch"] in PHASE_ARCHS
        if args.compare:
            timed = {}
            for method in ("fourier", "auto") if has_phase else ("auto",):
                timed[method], _ = images_per_second(
                    flat, method, args.batch, args.warmup, args.steps, args.kernels
                )
            if has_phase:
                ratio = timed["auto"] / timed["fourier"]
                print(
                    f"{name:<22} {timed['fourier']:>14.1f} {timed['auto']:>11.1f} {ratio:>12.2f}x"
                )
            else:
                print(f"{name:<22} {'-':>14} {timed['auto']:>11.1f} {'(no phase)':>13}")
        else:
            rate, seconds = images_per_second(
                flat, args.phase_method, args.batch, args.warmup, args.steps, args.kernels
            )
            method = args.phase_method if has_phase else "-"
            print(f"{name:<22} {method:>8} {rate:>9.1f} {seconds:>8.3f}", flush=True)


def run_kernel_comparison(args) -> None:
    """`--compare-kernels`: reference (before) vs auto (after) for each model, one table."""
    names = args.only or list(KERNEL_MODELS)
    print(f"CPU, {args.threads} threads, batch {args.batch}, float32, {args.warmup} warm-up "
          f"steps each, then {args.rounds} rounds of {args.steps} steps of reference, "
          f"{args.steps} of auto (interleaved; full training step)")  # fmt: skip
    print(f"{'model':<22} {'reference img/s':>16} {'auto img/s':>11} {'auto/reference':>15} "
          f"{'per round: median [min, max]':>29} {'fastest/fastest':>15}")  # fmt: skip
    for name in names:
        rates, ratios, best = compare_kernels(MODELS[name], args.batch, args.warmup,
                                              args.steps, args.rounds)  # fmt: skip
        ratio = rates["auto"] / rates["reference"]
        spread = f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}]"
        print(f"{name:<22} {rates['reference']:>16.1f} {rates['auto']:>11.1f} {ratio:>14.2f}x "
              f"{spread:>29} {best:>14.2f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
