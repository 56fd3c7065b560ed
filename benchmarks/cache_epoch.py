"""One `scatnet` training epoch (MNIST shapes, J=3, P=128) with the front-end cache vs without.

Times, in one run: the one-time cache build (Kymatio's order-2 scattering of the whole
train split into `sepconc.cache`), one epoch recomputing the scattering every batch
(`--no-cache`), one epoch on the memory-mapped cached features (inside `net.frontend_skipped()`),
their ratio, and checks that both epochs give the same losses and weights (same seed,
same batches). Data: scikit-learn `digits` at 28x28 (1437 train images), or with
`--images N` N random MNIST-shaped 1x28x28 images.

    python benchmarks/cache_epoch.py [--threads 2] [--batch 128] [--images N]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
from sepconc.batches import rank_batches
from sepconc.cache import dataset_labels, features_tensor, load_or_build
from sepconc.config import Config
from sepconc.data import build_datasets
from sepconc.data.registry import TensorImageDataset
from sepconc.loop import build_optimizer, train_epoch
from sepconc.model import SepConcNet

FLAT = {"dataset": "digits", "arch": "scatnet", "scattering_J": 3, "P_proj_size": [128],
        "scat_angles": [8], "lr": 0.01}  # fmt: skip


def one_epoch(net, dataset, batch: int, skip_frontend: bool) -> tuple[float, dict]:
    """Seconds of one shuffled epoch (seed 0) of `sepconc.loop.train_epoch`, and its sums."""
    optimizer = build_optimizer(net, 0.01, 0.9, 1e-4)
    batches = rank_batches(dataset, batch, 1, 0, shuffle=True, seed=0, workers=0)
    batches.sampler.set_epoch(0)
    torch.manual_seed(0)
    started = time.perf_counter()
    with net.frontend_skipped(skip_frontend):
        sums = train_epoch(net, net, optimizer, batches, 5e-4, 1, torch.device("cpu"), 10**9)
    return time.perf_counter() - started, sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--images", type=int, default=0,
                        help="random MNIST-shaped images instead of digits (e.g. 6000)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.images:
        gen = torch.Generator().manual_seed(0)
        train = TensorImageDataset(torch.randn(args.images, 1, 28, 28, generator=gen),
                                   torch.randint(0, 10, (args.images,), generator=gen))  # fmt: skip
        name = f"random MNIST-shaped x{args.images}"
    else:
        train = build_datasets("digits", None).train
        name = f"digits train ({len(train)} images, 1x28x28)"
    config = Config.from_flat(FLAT)
    torch.manual_seed(0)
    net = SepConcNet(config.model, (1, 28, 28), 10)
    start_state = copy.deepcopy(net.state_dict())
    print(f"scatnet J=3 L=8 P=128 on {name}; CPU, {args.threads} threads, batch {args.batch}")

    with tempfile.TemporaryDirectory(prefix="sepconc-cache-bench-") as folder:
        cpu = torch.device("cpu")
        built = load_or_build(net.blocks[0].frontend, train, name, "train", folder, cpu)
        reused = load_or_build(net.blocks[0].frontend, train, name, "train", folder, cpu)
        assert built.built and not reused.built
        features = features_tensor(reused.features)  # memory-mapped, as the trainer uses it
        cached = TensorImageDataset(features, dataset_labels(train))
        size_mib = features.numel() * 4 / 2**20
        print(f"cache build (one time): {built.seconds:8.2f} s   {tuple(features.shape)} "
              f"float32 = {size_mib:.1f} MiB; reopening it: {reused.seconds * 1000:.1f} ms")  # fmt: skip

        plain_s, plain = one_epoch(net, train, args.batch, skip_frontend=False)
        plain_state = copy.deepcopy(net.state_dict())
        net.load_state_dict(start_state)
        cached_s, fast = one_epoch(net, cached, args.batch, skip_frontend=True)

    n = len(train)
    print(f"epoch without cache:    {plain_s:8.2f} s   {n / plain_s:8.1f} img/s")
    print(f"epoch with cache:       {cached_s:8.2f} s   {n / cached_s:8.1f} img/s")
    print(f"speed-up with cache:    {plain_s / cached_s:8.1f}x  (target >= 5x)")
    print(f"epochs that pay for the build: {built.seconds / (plain_s - cached_s):.2f} "
          f"(build / time saved per epoch; reused by every later run and trial)")  # fmt: skip
    weight_diff = max((net.state_dict()[k].float() - v.float()).abs().max().item()
                      for k, v in plain_state.items())  # fmt: skip
    print(f"train loss without / with cache: {plain['loss']:.8f} / {fast['loss']:.8f} "
          f"(|diff| {abs(plain['loss'] - fast['loss']):.2e}); acc1 {plain['acc1']:.2f} / "
          f"{fast['acc1']:.2f}; max |weight diff| after the epoch {weight_diff:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
