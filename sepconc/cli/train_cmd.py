"""`launch.py train`: the seed's `main.py` flags (same names, short forms, defaults) and ours,
generated from the config dataclasses (`sepconc.cli.flags`).

Values are merged in this order: the defaults of `sepconc.config`, then a
`--config FILE` (a saved `config.yaml` or a `best --out` export), then the
flags actually given on the command line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sepconc.cli.flags import add_config_flags

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("train", help="train one model (one process or local DDP)",
                       argument_default=argparse.SUPPRESS,
                       description="Train one model. Accepts every flag of the paper's main.py.")  # fmt: skip
    add_config_flags(p)
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
    """Train as the flags say (tracked unless `--no-tracking`: `sepconc.trainer.train` builds
    the tracker); a diverged loss is one `error:` line and exit status 1."""
    config = config_from_args(args)
    if getattr(args, "dry_run", False):
        return dry_run(config)
    from sepconc.loop import TrainingDiverged
    from sepconc.trainer import train

    try:
        result = train(config)
    except TrainingDiverged as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        return 1
    print(f"run folder: {result.run_dir}")
    print(f"best val_acc1: {result.best_val_acc1:.2f}  epochs: {result.epochs_done}")
    return 0


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
