"""Set up a run: its folder and seed, the pre-flight checks, and everything an epoch uses.

`resolve_run` fixes what every process must share (folder, seed); `preflight` refuses
bad input before anything is written; `set_up` builds, in each training process, the
device, the data, the model (DDP-wrapped when there are several processes), the
optimizer, the batches (front-end features cached when fixed) and, with `run.resume`,
restores the newest readable checkpoint.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from sepconc.batches import check_not_empty, rank_batches
from sepconc.cache import CachedSplits, cached_splits
from sepconc.checkpoint import check_loadable, load_checkpoint, load_latest_good, resolve_resume
from sepconc.config import Config
from sepconc.data import DataBundle, build_datasets, check_data, dataset_spec
from sepconc.distributed import World, broadcast_object
from sepconc.errors import UserError, clean_reason
from sepconc.host_memory import keep_freed_memory
from sepconc.loop import build_optimizer
from sepconc.model import SepConcNet, build_model, plan_model
from sepconc.precision import set_precision
from sepconc.run_folder import check_out_folder, run_folder_of
from sepconc.yamlio import load_yaml

log = logging.getLogger(__name__)


def resolve_run(config: Config) -> Config:
    """Fix what must be identical in every process: the run folder and the seed.

    Training on from `--resume` of a run folder (one with `config.yaml`) without `--out` /
    `--seed` continues that run: in its folder, with its seed (the data order depends on
    it). Otherwise the folder is a fresh `runs/train/<arch>-<time>` and the seed drawn."""
    changes = {}
    previous = _resumed_run(config)
    if config.run.out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        fresh = str(Path("runs") / "train" / f"{config.model.arch}-{stamp}")
        changes["out"] = fresh if previous is None or config.run.evaluate else previous[0]
    if config.run.seed is None:
        seed = previous[1].get("seed") if previous else None
        changes["seed"] = seed if isinstance(seed, int) else random.SystemRandom().randrange(2**31)
    return config.replace(**changes) if changes else config


def _resumed_run(config: Config) -> tuple[str, dict] | None:
    """(folder, saved flat config) of the run folder `--resume` points into, if it is one."""
    if not config.run.resume:
        return None
    folder = run_folder_of(config.run.resume)
    try:
        saved = load_yaml((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return (str(folder), saved) if isinstance(saved, dict) else None


def preflight(config: Config) -> None:
    """Refuse now (`UserError`), before anything is written (tracking store, MLflow run, run
    folder), what training would refuse later: an architecture that does not fit the data
    set's images, a missing or mis-laid data folder, a bad class-indices file, an ImageNet
    class folder without images or an unreadable image header, an `--out` folder holding
    another run, a `--resume` without a readable checkpoint that fits the model, or whose
    checkpoints hold objects the safe loader refuses. Reads no pixels; loads the
    checkpoint `--resume` would continue from (on the CPU)."""
    d = config.data
    plan_model(config.model, dataset_spec(d.dataset, d.nb_classes)[0])
    check_data(d.dataset, d.data, download=d.download, nb_classes=d.nb_classes,
               class_indices=d.class_indices, seed=config.run.seed or 0,
               compact_head=d.compact_head)  # fmt: skip
    check_out_folder(config.run.out, config.run.resume)
    if config.run.resume:
        candidates = resolve_resume(config.run.resume)
        check_loadable(candidates)
        path, state = load_latest_good(candidates, warn=False)
        net = build_model(config)
        o = config.optim
        apply_checkpoint(path, state, net, build_optimizer(net, o.lr, o.momentum, o.weight_decay))


def choose_device(requested: str, local_rank: int) -> torch.device:
    """The device of this process, chosen once: `cuda:<local rank>` or `cpu`."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device cuda asked but no CUDA GPU is visible; use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def on_main(world: World, fn, *args):
    """`fn(*args)` on rank 0 only; its result, or its `UserError` raised, on every rank
    (so no rank waits in a collective for a rank that failed)."""
    outcome = None
    if world.is_main:
        try:
            outcome = (fn(*args), None)
        except UserError as exc:
            outcome = (None, exc)
    value, error = broadcast_object(outcome)
    if error is not None:
        raise error from None
    return value


@dataclass
class Setup:
    """What the epochs of one training process use. `net` is the bare `SepConcNet`,
    `model` the module trained (`net` itself, or its DDP wrapper); `start_epoch` the
    epochs already done (a resumed checkpoint's), `best` their best val_acc1 (-inf when
    none) and `row` the resumed checkpoint's own metrics row."""

    world: World
    device: torch.device
    data: DataBundle
    net: SepConcNet
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    splits: CachedSplits
    train_batches: object
    val_batches: object
    start_epoch: int
    best: float = float("-inf")
    row: dict | None = None


def set_up(config: Config, world: World) -> Setup:
    """Build this process's `Setup` (see the module docstring): raises `UserError` for a
    folder holding another run, data that cannot be read, or a checkpoint that does not
    fit; writes nothing."""
    keep_freed_memory()  # CPU tensors of a batch reuse the last batch's freed memory
    device = choose_device(config.run.device, world.local_rank)
    set_precision(config.model.precision, device)  # TF32 flags, cudnn.benchmark on CUDA
    on_main(world, check_out_folder, config.run.out, config.run.resume)
    seed = config.run.seed
    torch.manual_seed(seed)
    d = config.data
    plan_model(config.model, dataset_spec(d.dataset, d.nb_classes)[0])
    data = build_datasets(d.dataset, d.data, download=d.download, nb_classes=d.nb_classes,
                          class_indices=d.class_indices, seed=seed,
                          compact_head=d.compact_head)  # fmt: skip
    check_not_empty(data.train, data.val, f"{d.dataset} data in {d.data}")
    net = SepConcNet(config.model, data.image_shape, data.num_classes).to(device)
    o = config.optim
    optimizer = build_optimizer(net, o.lr, o.momentum, o.weight_decay)
    start_epoch, best, row = o.start_epoch, float("-inf"), None
    if config.run.resume:
        start_epoch, best, row = restore(config.run.resume, net, optimizer, device, world)
    model = net
    if world.size > 1:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)  # fmt: skip
    per_rank = o.batch_size // world.size
    common = dict(world=world.size, rank=world.rank, seed=seed, workers=d.workers,
                  pin_memory=device.type == "cuda")  # fmt: skip
    splits = cached_splits(net, data, config, device, verbose=world.is_main)  # first front-end
    return Setup(world, device, data, net, model, optimizer, splits,
                 rank_batches(splits.train, per_rank, shuffle=True, **common),
                 rank_batches(splits.val, per_rank, shuffle=False, **common),
                 start_epoch, best, row)  # fmt: skip


def restore(target: str, net, optimizer, device, world: World) -> tuple[int, float, dict | None]:
    """Load the newest readable checkpoint of `target` (chosen on rank 0: every rank loads the
    same file) into `net` and `optimizer`, and the random state; returns its epoch, best
    val_acc1 and metrics row."""
    loaded = {}

    def choose() -> Path:
        path, loaded["state"] = load_latest_good(resolve_resume(target), map_location=device)
        return path

    path = on_main(world, choose)
    state = loaded.get("state") or load_checkpoint(path, map_location=device)
    apply_checkpoint(path, state, net, optimizer)
    torch.set_rng_state(state["rng_cpu"].cpu())
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
    log.info("resumed from %s (epoch %d)", path, state["epoch"])
    return int(state["epoch"]), float(state["best_val_acc1"]), state.get("metrics")


def apply_checkpoint(path: Path, state: dict, net, optimizer) -> None:
    """Load a checkpoint's model and optimizer state; a `UserError` if they do not fit."""
    try:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(
            f"checkpoint {path} does not match this model ({clean_reason(exc, whole=True)}); "
            f"resume with the config it was written with"
        ) from None
