"""DDP scaling on CPU: 2 gloo processes vs 1 at the same global batch, same seed, same batches.

Each run is started the way `train --num-workers N` starts it (`sepconc.distributed.
launch_local`: spawned processes, a gloo group) and runs `sepconc.loop.train_epoch` on
`--steps` global batches of `--batch` images (each rank takes `batch / N` of every global
batch, `sepconc.batches`), after `--warmup` untimed ones. `--threads` are split between
the processes (2 threads: 1 per process with 2 workers) so both runs use the same cores;
a third run, 1 process with the per-process thread count, separates the scaling from
the cost of multi-threading itself (large on a loaded machine).
Prints the images/s of each, the ratio, and the train / validation loss difference after
the steps (not zero: BatchNorm normalizes with per-rank batch statistics).

    python benchmarks/ddp_scaling.py [--threads 2] [--batch 128] [--steps 20] [--warmup 3]
        [--arch analysis|scatnetblockanalysis]
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
from sepconc.batches import rank_batches
from sepconc.config import Config
from sepconc.data import build_datasets
from sepconc.distributed import barrier, current_world, launch_local
from sepconc.loop import build_optimizer, evaluate, train_epoch
from sepconc.model import SepConcNet

MODELS = {
    "analysis": {"arch": "analysis", "frame_width": [1024], "frame_kernel_size": [14],
                 "frame_stride": [7], "non_linearity": "relu"},
    "scatnetblockanalysis": {"arch": "scatnetblockanalysis", "n_blocks": 2,
                             "P_proj_size": [16, 32], "frame_width": [64, 128],
                             "scat_angles": [4, 4]},
}  # fmt: skip


def _batches(dataset, per_rank: int, world, count: int) -> list:
    """The first `count` batches of this rank, epoch after epoch (seed 0)."""
    loader = rank_batches(dataset, per_rank, world.size, world.rank, True, 0, workers=0)
    out, epoch = [], 0
    while len(out) < count:
        loader.sampler.set_epoch(epoch)
        out.extend(list(loader))
        epoch += 1
    return out[:count]


def run(arch: str, batch: int, steps: int, warmup: int, threads: int, result: str) -> None:
    """One run (`threads` per process): warm-up, timed steps, validation; rank 0 writes JSON."""
    from torch.nn.parallel import DistributedDataParallel

    world = current_world()
    torch.set_num_threads(threads)
    data = build_datasets("digits", None)
    config = Config.from_flat({"dataset": "digits", **MODELS[arch]})
    torch.manual_seed(0)
    net = SepConcNet(config.model, data.image_shape, data.num_classes)
    model = DistributedDataParallel(net) if world.size > 1 else net
    optimizer = build_optimizer(net, 0.01, 0.9, 1e-4)
    per_rank = batch // world.size
    todo = _batches(data.train, per_rank, world, warmup + steps)
    cpu = torch.device("cpu")
    train_epoch(model, net, optimizer, todo[:warmup], 5e-4, 1, cpu, 10**9)
    barrier()
    started = time.perf_counter()
    sums = train_epoch(model, net, optimizer, todo[warmup:], 5e-4, 1, cpu, 10**9)
    seconds = time.perf_counter() - started
    val = evaluate(model, rank_batches(data.val, per_rank, world.size, world.rank, False, 0, 0),
                   cpu)  # fmt: skip
    if world.is_main:
        Path(result).write_text(json.dumps({"seconds": seconds, "images": sums["images"],
                                            "train_loss": sums["loss"], "val_loss": val["loss"],
                                            "val_acc1": val["acc1"]}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--arch", choices=list(MODELS), default="analysis")
    args = parser.parse_args()
    print(f"digits {args.arch} {MODELS[args.arch]}; CPU gloo, {args.threads} threads in all, "
          f"global batch {args.batch}, {args.warmup} warm-up + {args.steps} timed steps")  # fmt: skip
    half = max(1, args.threads // 2)
    runs = [(1, args.threads), (2, half)] + ([(1, half)] if half != args.threads else [])
    out = {}
    with tempfile.TemporaryDirectory(prefix="sepconc-ddp-bench-") as folder:
        for procs, threads in runs:
            path = str(Path(folder) / f"{procs}-{threads}.json")
            launch_local(run, procs, "cpu", args.arch, args.batch, args.steps, args.warmup,
                         threads, path)  # fmt: skip
            out[procs, threads] = json.loads(Path(path).read_text())
    rate = {k: r["images"] / r["seconds"] for k, r in out.items()}
    for (p, t), r in out.items():
        print(f"{p} process(es) x {t} thread(s): {rate[p, t]:8.1f} img/s "
              f"({r['seconds']:.2f} s)  train loss {r['train_loss']:.6f}  val loss "
              f"{r['val_loss']:.6f}  val acc1 {r['val_acc1']:.2f}")  # fmt: skip
    one, two = out[1, args.threads], out[2, half]
    print(f"2 processes / 1 process throughput (same {args.threads} threads in all): "
          f"{rate[2, half] / rate[1, args.threads]:.2f}x")  # fmt: skip
    if (1, half) in rate and half != args.threads:
        print(f"2 processes / 1 process throughput ({half} thread per process): "
              f"{rate[2, half] / rate[1, half]:.2f}x")  # fmt: skip
    print(f"loss difference after {args.warmup + args.steps} steps (2 vs 1 process): train "
          f"{abs(two['train_loss'] - one['train_loss']):.2e}, val "
          f"{abs(two['val_loss'] - one['val_loss']):.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
