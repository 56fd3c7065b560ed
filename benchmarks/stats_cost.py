"""Cost of the per-epoch scientific read-outs against the cost of a training epoch.

Model: the seed's CIFAR-10 `scatnetblockanalysis` (4 blocks, P 64 128 256 512, frame
widths 1024 2048 4096 8192, relu). Read-outs, as `sepconc.trainer` runs them each epoch on
rank 0 (`sepconc.probes`): the probe set (512 validation images) through the model,
`separation_statistics` of the input and of every block's output, and the frame/projection
diagnostics (`weight_diagnostics`). Epoch: 50 000 images, estimated from the mean time of
`--steps` training steps of batch 128 on random CIFAR-shaped inputs (after one warm-up
step), times ceil(50000 / 128). Prints each part's time (the probe forward timed after one untimed warm-up pass, as in
training, where it follows an epoch) and the ratio (target <= 2 %).

    python benchmarks/stats_cost.py [--threads 2] [--steps 3] [--probe 512] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
from sepconc.config import Config
from sepconc.loop import build_optimizer, train_epoch
from sepconc.metrics import separation_statistics
from sepconc.model import build_model
from sepconc.probes import weight_diagnostics

MODEL = {"dataset": "cifar10", "arch": "scatnetblockanalysis", "n_blocks": 4,
         "P_proj_size": [64, 128, 256, 512], "frame_width": [1024, 2048, 4096, 8192],
         "non_linearity": "relu"}  # fmt: skip
EPOCH_IMAGES, BATCH, CLASSES, SHAPE = 50_000, 128, 10, (3, 32, 32)


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - started


def step_seconds(net, steps: int, device: torch.device, beta: float) -> float:
    """Mean seconds of one training step (forward, loss, backward, SGD, Parseval)."""
    optimizer = build_optimizer(net, 0.01, 0.9, 1e-4)
    gen = torch.Generator().manual_seed(0)

    def batches(count):
        return [(torch.randn(BATCH, *SHAPE, generator=gen),
                 torch.randint(0, CLASSES, (BATCH,), generator=gen)) for _ in range(count)]  # fmt: skip

    train_epoch(net, net, optimizer, batches(1), beta, 0, device, print_freq=10**9)
    data = batches(steps)
    _, seconds = timed(lambda: train_epoch(net, net, optimizer, data, beta, 1, device,
                                           print_freq=10**9), device)  # fmt: skip
    return seconds / steps


@torch.no_grad()
def probe_parts(net, probe: int, device: torch.device) -> dict[str, float]:
    """Seconds of each read-out: features, class statistics per layer, diagnostics."""
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(probe, *SHAPE, generator=gen)
    labels = torch.arange(probe) % CLASSES
    net.eval()

    def features():
        outs = {"input": images.flatten(1).to(device)}
        chunks: dict[str, list] = {}
        for start in range(0, probe, 256):
            for i, f in enumerate(net.features(images[start : start + 256].to(device)), 1):
                chunks.setdefault(f"block{i}", []).append(f.flatten(1))
        outs.update({k: torch.cat(v) for k, v in chunks.items()})
        return outs

    features()  # warm-up: in training the probe runs after an epoch of the same model
    outs, parts = timed(features, device)
    times = {"probe forward": parts}
    for name, feats in outs.items():
        _, seconds = timed(lambda f=feats: separation_statistics(f, labels.to(f.device), CLASSES),
                           device)  # fmt: skip
        times[f"separation_statistics {name} (D={feats.shape[1]})"] = seconds
    _, times["frame + P diagnostics"] = timed(lambda: weight_diagnostics(net), device)
    net.train()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (default 3)")
    parser.add_argument("--probe", type=int, default=512, help="probe images (default 512)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = Config.from_flat({**MODEL, "batch_size": BATCH})
    torch.manual_seed(0)
    net = build_model(config).to(device)
    print(f"model: CIFAR-10 scatnetblockanalysis 4 blocks, {args.probe} probe images, "
          f"{args.device}, {args.threads} threads")  # fmt: skip
    parts = probe_parts(net, args.probe, device)
    step = step_seconds(net, args.steps, device, config.optim.pars_beta)
    epoch = step * math.ceil(EPOCH_IMAGES / BATCH)
    total = sum(parts.values())
    for name, seconds in parts.items():
        print(f"  {name:<42} {seconds:8.2f} s")
    print(f"  {'read-outs total':<42} {total:8.2f} s")
    print(f"training step (batch {BATCH}): {step:.2f} s -> epoch of {EPOCH_IMAGES} images "
          f"~ {epoch:.0f} s")  # fmt: skip
    print(f"ratio read-outs / epoch: {100 * total / epoch:.2f} % (target <= 2 %)")


if __name__ == "__main__":
    main()
