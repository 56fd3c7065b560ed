"""The order-2 scattering tree: our `fft` backend vs Kymatio's `torch`, in one run (CPU).

Three measurements, each interleaved (Kymatio, ours, Kymatio, ours, ...) in this process so
that the machine's drift hits both alike; the ratio is ours / Kymatio's:

1. forward images/s of `ScatteringTree` (float32, no grad) on MNIST (1x28x28, J=3) and
   CIFAR-10 (3x32x32, J=3) batches: the ratio of the total times and of the best times
   ("best-of": on a shared machine the least disturbed run of each), with the relative L2
   error of ours to Kymatio's and the largest per-image one;
2. the CIFAR-10 `scatnet` training step (the seed command: J=3, P=128; random crops/flips
   forbid the cache, so the tree runs every step), with `benchmarks/train_step.py`'s
   `images_per_second` (forward, loss, backward, SGD, Parseval) and `backend` torch vs fft;
3. the MNIST cache build (`sepconc.cache.load_or_build`, the J=3 tree over `--cache-images`
   28x28 images into a temporary folder), seconds and ratio.

    python benchmarks/scattering_tree.py [--threads 2] [--batch 128] [--repeats 3]
        [--cache-images 2000] [--steps 3] [--skip-train] [--skip-cache]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import MODELS, images_per_second  # noqa: E402

from sepconc.cache import load_or_build  # noqa: E402
from sepconc.data.types import TensorImageDataset  # noqa: E402
from sepconc.host_memory import keep_freed_memory  # noqa: E402
from sepconc.scattering import ScatteringTree  # noqa: E402

BACKENDS = ("torch", "fft")  # Kymatio's, ours
SHAPES = {"MNIST 1x28x28 J=3": (1, 28, 3), "CIFAR-10 3x32x32 J=3": (3, 32, 3)}


def forward(batch: int, repeats: int) -> None:
    """Images/s of both backends on each shape, interleaved, and the error of ours."""
    print(f"forward, batch {batch}, float32, no grad, {repeats} interleaved repeats")
    print(f"{'shape':<22} {'kymatio img/s':>14} {'fft img/s':>10} {'ratio':>7} "
          f"{'best-of':>8} {'rel L2':>9} {'max/img':>9}")  # fmt: skip
    for name, (C, n, J) in SHAPES.items():
        x = torch.randn(batch, C, n, n, generator=torch.Generator().manual_seed(0))
        trees = {b: ScatteringTree(J, n, 8, backend=b).eval() for b in BACKENDS}
        times = {b: [] for b in BACKENDS}
        with torch.no_grad():
            out = {b: trees[b](x) for b in BACKENDS}  # warm-up, and the outputs compared
            for _ in range(repeats):
                for b in BACKENDS:
                    started = time.perf_counter()
                    trees[b](x)
                    times[b].append(time.perf_counter() - started)
        rate = {b: batch * repeats / sum(times[b]) for b in BACKENDS}
        best = min(times["torch"]) / min(times["fft"])  # the least disturbed run of each
        diff, ref = (out["fft"] - out["torch"]).flatten(1), out["torch"].flatten(1)
        err = (diff.norm() / ref.norm()).item()
        worst = (diff.norm(dim=1) / ref.norm(dim=1)).max().item()
        print(f"{name:<22} {rate['torch']:>14.1f} {rate['fft']:>10.1f} "
              f"{rate['fft'] / rate['torch']:>6.2f}x {best:>7.2f}x {err:>9.1e} {worst:>9.1e}",
              flush=True)  # fmt: skip


def train_step(batch: int, steps: int, repeats: int) -> None:
    """The CIFAR-10 scatnet training step, backend torch vs fft, interleaved."""
    print(f"\nCIFAR-10 scatnet training step (J=3, P=128), batch {batch}, "
          f"{repeats} x {steps} timed steps per backend, interleaved")  # fmt: skip
    seconds = dict.fromkeys(BACKENDS, 0.0)
    for _ in range(repeats):
        for b in BACKENDS:
            flat = {**MODELS["cifar10-scatnet"], "backend": b}
            _, per_step = images_per_second(flat, "auto", batch, 1, steps)
            seconds[b] += per_step
    rate = {b: batch * repeats / seconds[b] for b in BACKENDS}
    print(f"  torch (Kymatio) {rate['torch']:.1f} img/s, fft {rate['fft']:.1f} img/s: "
          f"{rate['fft'] / rate['torch']:.2f}x", flush=True)  # fmt: skip


def cache_build(images: int, repeats: int) -> None:
    """Seconds to build the MNIST tree cache of `images` images, torch vs fft, interleaved."""
    print(f"\nMNIST cache build (J=3 tree, {images} images 1x28x28, load_or_build), "
          f"{repeats} interleaved repeats")  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    data = TensorImageDataset(torch.randint(0, 256, (images, 1, 28, 28), generator=gen,
                                            dtype=torch.uint8), torch.zeros(images, dtype=torch.long))  # fmt: skip
    seconds = dict.fromkeys(BACKENDS, 0.0)
    device = torch.device("cpu")
    for _ in range(repeats):
        for b in BACKENDS:
            tree = ScatteringTree(3, 28, 8, backend=b)
            with tempfile.TemporaryDirectory(prefix="scat-bench-") as folder:
                started = time.perf_counter()
                result = load_or_build(tree, data, "mnist", "train", folder, device, verbose=False)
                seconds[b] += time.perf_counter() - started
                assert result is not None and result.built
    mean = {b: seconds[b] / repeats for b in BACKENDS}
    print(f"  torch (Kymatio) {mean['torch']:.2f} s, fft {mean['fft']:.2f} s: "
          f"{mean['torch'] / mean['fft']:.2f}x faster", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per repeat")
    parser.add_argument("--cache-images", type=int, default=2000)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-cache", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory()  # as every training process does (sepconc.training.setup)
    print(
        f"CPU, {args.threads} threads; ratio = fft (ours) / torch (Kymatio 0.3); freed host "
        f"memory kept for reuse (sepconc.host_memory): {'yes' if kept else 'no (not glibc)'}"
    )
    forward(args.batch, args.repeats)
    if not args.skip_train:
        train_step(args.batch, args.steps, args.repeats)
    if not args.skip_cache:
        cache_build(args.cache_images, args.repeats)


if __name__ == "__main__":
    main()
