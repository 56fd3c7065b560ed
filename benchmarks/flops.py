"""Achieved FLOP/s of a training step, as a fraction of this machine's dense float32 matmul.

For each model (the seed README's CIFAR-10 architectures and MNIST `analysis`), the FLOPs
of one full training step (forward, cross-entropy, backward, SGD, Parseval step) are
counted with `torch.utils.flop_counter.FlopCounterMode`, which counts matrix products and
convolutions (forward and backward) only: FFTs (Kymatio, the Fourier phase path) and
element-wise work are not counted, so the fraction is a lower bound for the scattering
models. Divided by the measured step time (random inputs, no data loading), it gives the
achieved FLOP/s, compared with a large `torch.mm` (float32, same threads).

    python benchmarks/flops.py [--threads 2] [--batch 128] [--steps 2] [--mm 2048]
        [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
from sepconc.config import Config
from sepconc.loop import build_optimizer, train_epoch
from sepconc.model import build_model

MODELS = {
    "mnist-analysis": {"dataset": "mnist", "arch": "analysis", "frame_kernel_size": [14],
                       "frame_width": [2048], "frame_stride": [7], "non_linearity": "relu"},
    "cifar10-scatnet": {"dataset": "cifar10", "arch": "scatnet", "scattering_J": 3,
                        "P_proj_size": [128]},
    "cifar10-scatnetblock": {"dataset": "cifar10", "arch": "scatnetblock", "n_blocks": 4,
                             "P_proj_size": [64, 128, 256, 512]},
    "cifar10-sba-relu": {"dataset": "cifar10", "arch": "scatnetblockanalysis", "n_blocks": 4,
                         "P_proj_size": [64, 128, 256, 512], "non_linearity": "relu",
                         "frame_width": [1024, 2048, 4096, 8192]},
}  # fmt: skip


def matmul_flops(n: int, reps: int = 5) -> float:
    """Best-of-`reps` FLOP/s of an `n x n` float32 `torch.mm` (`2 n^3` FLOPs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def step_flops(flat: dict, batch: int, steps: int) -> tuple[float, float]:
    """(FLOPs of one training step, measured seconds per step)."""
    config = Config.from_flat({**flat, "batch_size": batch})
    torch.manual_seed(0)
    net = build_model(config)
    plan = net.plans[0]
    shape = (batch, plan.in_channels, plan.in_size, plan.in_size)
    classes = 10
    optimizer = build_optimizer(net, 0.01, 0.9, 1e-4)
    gen = torch.Generator().manual_seed(0)

    def batches(count: int) -> list:
        return [(torch.randn(*shape, generator=gen), torch.randint(0, classes, (batch,), generator=gen))
                for _ in range(count)]  # fmt: skip

    cpu = torch.device("cpu")
    counter = FlopCounterMode(display=False)
    with counter:  # also the warm-up step
        train_epoch(net, net, optimizer, batches(1), 5e-4, 1, cpu, 10**9)
    timed = batches(steps)
    started = time.perf_counter()
    train_epoch(net, net, optimizer, timed, 5e-4, 1, cpu, 10**9)
    return float(counter.get_total_flops()), (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model")
    parser.add_argument("--mm", type=int, default=2048, help="size of the reference matmul")
    parser.add_argument("--only", nargs="+", choices=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_flops(args.mm)
    print(f"CPU, {args.threads} threads, batch {args.batch}, float32; dense torch.mm "
          f"{args.mm}x{args.mm}: {peak / 1e9:.1f} GFLOP/s")  # fmt: skip
    print(f"{'model':<22} {'GFLOP/step':>11} {'s/step':>8} {'GFLOP/s':>8} {'of mm':>7}")
    for name in args.only or list(MODELS):
        flops, seconds = step_flops(MODELS[name], args.batch, args.steps)
        achieved = flops / seconds
        print(f"{name:<22} {flops / 1e9:>11.2f} {seconds:>8.3f} {achieved / 1e9:>8.2f} "
              f"{100 * achieved / peak:>6.1f}%", flush=True)  # fmt: skip
    print(
        "FLOPs: matmuls and convolutions (forward + backward) only; FFTs and element-wise "
        "work are not counted."
    )


if __name__ == "__main__":
    main()
