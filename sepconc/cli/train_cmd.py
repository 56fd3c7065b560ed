"""`launch.py train`: the seed's `main.py` flags (same names, short forms, defaults) and ours.

Values are merged in this order: the defaults of `sepconc.config`, then a
`--config FILE` (a saved `config.yaml` or a `best --out` export), then the
flags actually given on the command line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sepconc.config import ARCHS, CLASSIFIERS, DEVICES, KERNELS, NON_LINEARITIES, PHASE_METHODS
from sepconc.errors import clean_reason

log = logging.getLogger(__name__)


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """Every flag of the seed's usage, plus sepconc's; dests are the flat config names."""
    from sepconc.data import DATASETS

    p.add_argument("--data", help="path to dataset")
    p.add_argument("--dataset", choices=DATASETS, help="dataset to train on (default: imagenet)")
    p.add_argument("-a", "--arch", choices=ARCHS, help="model architecture")
    p.add_argument("-j", "--workers", type=int, help="data loading workers (default: 4)")
    p.add_argument("--epochs", type=int, help="number of total epochs to run (default: 150)")
    p.add_argument("--start-epoch", type=int, help="manual epoch number (useful on restarts)")
    p.add_argument("-b", "--batch-size", type=int, help="global mini-batch size (default: 128)")
    p.add_argument("--lr", "--learning-rate", type=float, dest="lr", help="initial learning rate")
    p.add_argument("--momentum", type=float, help="momentum (default: 0.9)")
    p.add_argument("--wd", "--weight-decay", type=float, dest="weight_decay", help="weight decay")
    p.add_argument("-p", "--print-freq", type=int, help="print frequency (default: 100)")
    p.add_argument("--resume", help="checkpoint file or run folder to continue from")
    p.add_argument("-e", "--evaluate", action="store_true", help="evaluate on the validation set")
    p.add_argument("--seed", type=int, help="seed for initializing training")
    p.add_argument(
        "--learning-rate-adjust-frequency",
        type=int,
        help="epochs after which the learning rate is divided by 10 (default: 30)",
    )
    p.add_argument(
        "--out",
        "--dir",
        dest="out",
        help="run folder: config, checkpoints, metrics (default: runs/train/...)",
    )
    p.add_argument("--pars-beta", type=float, help="step of the Parseval update (default: 5e-4)")
    p.add_argument("--n-blocks", type=int, help="number of blocks (default: 4)")
    p.add_argument("--scat-angles", type=int, nargs="+", help="orientations per block (default: 8)")
    p.add_argument("--backend", help="scattering backend: torch | torch_skcuda")
    p.add_argument(
        "--scattering-J",
        type=int,
        dest="scattering_J",
        help="maximum scale of the scattering tree, scatnet only (default: 4)",
    )
    p.add_argument(
        "--P-proj-size",
        type=int,
        nargs="+",
        dest="P_proj_size",
        help="output size(s) of the projection(s) P (default: 256)",
    )
    p.add_argument(
        "--P-kernel-size",
        type=int,
        nargs="+",
        dest="P_kernel_size",
        help="kernel size(s) of P (default: 1)",
    )
    p.add_argument("--non-linearity", choices=NON_LINEARITIES, help="frame non-linearity")
    p.add_argument("--zero-bias", action="store_true", help="force zero bias for ReLU")
    p.add_argument("--frame-width", type=int, nargs="+", help="size(s) of tight frame(s)")
    p.add_argument("--frame-kernel-size", type=int, nargs="+", help="kernel size(s) of frame(s)")
    p.add_argument("--frame-stride", type=int, nargs="+", help="stride(s) of frame(s)")
    p.add_argument("--classifier-type", choices=CLASSIFIERS, help="classifier (default: fc)")
    p.add_argument("--avg-ker-size", type=int, help="size of averaging kernel (default: 1)")
    p.add_argument("--nb-hidden-units", type=int, help="hidden units of the mlp (default: 2048)")
    p.add_argument("--dropout-p-mlp", type=float, help="dropout in the mlp (default: 0.3)")
    p.add_argument("--nb-l-mlp", type=int, help="hidden layers of the mlp (default: 2)")
    p.add_argument(
        "--nb-classes", type=int, help="ImageNet only: number of classes (default: 1000)"
    )
    p.add_argument("--class-indices", help="ImageNet only: file of class indices")
    p.add_argument(
        "--compact-head",
        action="store_true",
        help="ImageNet only: k-way classifier, labels 0..k-1 (default: the paper's 1000-way)",
    )
    # sepconc's own
    p.add_argument("--num-workers", type=int, help="DDP processes (default: 1)")
    p.add_argument("--device", choices=DEVICES, help="cpu | cuda | auto (default)")
    p.add_argument("--download", action="store_true", help="allow downloading mnist/cifar")
    p.add_argument("--phase-method", choices=PHASE_METHODS, help="phase scattering path")
    p.add_argument("--kernels", choices=KERNELS,
                   help="block operations: auto (fused where faster) | fused | reference")  # fmt: skip
    p.add_argument("--stats-every", type=int, help="class statistics every N epochs (0: never)")
    p.add_argument("--checkpoint-keep", type=int, help="checkpoints kept (default: 2)")
    p.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="recompute fixed front-ends instead of reusing cached features",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///runs/mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment (default: sepconc-train)")
    p.add_argument("--no-tracking", dest="tracking", action="store_false", help="no MLflow logging")


def register(sub) -> None:
    p = sub.add_parser("train", help="train one model (one process or local DDP)",
                       argument_default=argparse.SUPPRESS,
                       description="Train one model. Accepts every flag of the paper's main.py.")  # fmt: skip
    add_training_flags(p)
    p.add_argument("--config", dest="config_file", help="a saved config.yaml or best.yaml")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="build the model for the dataset's shape, print it and its parameters",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """Merge defaults < --config file < explicit flags into a validated `Config`.

    Per-block lists come back padded to one value per block (logged when padded);
    raises `UserError` listing every problem of the merged values."""
    from sepconc.config import Config, load_config_file

    values = {}
    source = "command line"
    if getattr(args, "config_file", None):
        # A saved config.yaml names its run's folder (and what it resumed): a rerun is a new
        # run, so those come only from this command line, never silently from the file.
        saved = load_config_file(args.config_file)
        values.update({k: v for k, v in saved.items() if k not in ("out", "resume")})
        source = args.config_file
    flags = {k: v for k, v in vars(args).items()
             if k not in ("func", "command", "verbose", "config_file", "dry_run")}  # fmt: skip
    values.update(flags)
    config = Config.from_flat(values, where=source)
    for note in config.notes:  # a per-block list shorter than the blocks, padded
        log.info("%s", note)
    return config


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if getattr(args, "dry_run", False):
        return dry_run(config)
    from sepconc.loop import TrainingDiverged
    from sepconc.trainer import train

    preflight(config)
    hooks = []
    if config.tracking.tracking:
        from sepconc.tracking.train_run import mlflow_train_hooks

        config, hooks = mlflow_train_hooks(config)
    try:
        result = train(config, hooks)
    except TrainingDiverged as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        for hook in hooks:
            hook.fail(str(exc))
        return 1
    except BaseException as exc:  # a bad checkpoint, a crash, Ctrl-C: never leave it RUNNING
        for hook in hooks:
            hook.fail(clean_reason(exc, limit=500))
        raise
    for hook in hooks:
        hook.finish(result.run_dir)
    print(f"run folder: {result.run_dir}")
    print(f"best val_acc1: {result.best_val_acc1:.2f}  epochs: {result.epochs_done}")
    return 0


def preflight(config) -> None:
    """Refuse now, before anything is written (tracking store, MLflow run, run folder), what
    `train` would refuse later: an architecture that does not fit the data set's images, a
    missing or mis-laid data folder, a bad class-indices file, an ImageNet class folder
    without images or an unreadable image header, an `--out` folder holding another run, a
    `--resume` without a readable checkpoint that fits the model, or whose checkpoints hold
    objects the safe loader refuses. Reads no pixels; loads the checkpoint `--resume` would
    continue from (on the CPU)."""
    from sepconc.checkpoint import check_loadable, load_latest_good, resolve_resume
    from sepconc.data import check_data, dataset_spec
    from sepconc.loop import build_optimizer
    from sepconc.model import build_model, plan_model
    from sepconc.run_folder import check_out_folder
    from sepconc.trainer import apply_checkpoint

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


def dry_run(config) -> int:
    """Print the architecture and `parameters: N` without touching data."""
    from sepconc.model import build_model

    net = build_model(config)
    for plan in net.plans:
        parts = [f"block {plan.index}: {plan.in_channels}x{plan.in_size}x{plan.in_size}",
                 f"{plan.frontend} -> {plan.frontend_channels}x{plan.frontend_size}x{plan.frontend_size}"]  # fmt: skip
        if plan.proj_size is not None:
            parts.append(f"P({plan.proj_kernel}x{plan.proj_kernel}) -> {plan.proj_size}")
        if plan.frame_width is not None:
            parts.append(f"frame {plan.frame_width} atoms {plan.frame_kernel}x{plan.frame_kernel}"
                         f"/{plan.frame_stride} {config.model.non_linearity}")  # fmt: skip
        print("  ".join(parts))
    print(net)
    from sepconc.config import PER_BLOCK

    for name in PER_BLOCK:  # the resolved per-block lists (padded with defaults)
        print(f"{name}: {' '.join(str(v) for v in getattr(config.model, name))}")
    print(f"parameters: {sum(p.numel() for p in net.parameters() if p.requires_grad)}")
    return 0
