"""`launch.py status | compare | best`: read a sweep's results from MLflow."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    for name, helptext in (("status", "trial table: state, epoch/rung, last and best metric"),
                           ("compare", "side-by-side table of trials (params that vary), metric at a common epoch")):  # fmt: skip
        p = sub.add_parser(name, help=helptext)
        p.add_argument("name", help="sweep name")
        p.add_argument("--runs-dir", default="runs")
        if name == "compare":
            p.add_argument("--csv", action="store_true", help="CSV on stdout")
            p.add_argument("--at-epoch", type=int, metavar="E",
                           help="show every trial's metric at epoch E (default: the last "
                                "epoch every trial reached)")  # fmt: skip
        p.set_defaults(func=run_table)
    b = sub.add_parser("best", help="top-k trials; --out writes a config `train --config` retrains")
    b.add_argument("name")
    b.add_argument("-k", type=int, default=1, help="how many trials (default 1)")
    b.add_argument("--out", help="write the best trial's config here (YAML)")
    b.add_argument("--pick", type=int, default=1, metavar="N",
                   help="with --out/--register: the N-th row shown (default 1); with several "
                        "objectives `best` shows the Pareto front and N picks from it")  # fmt: skip
    b.add_argument("--register", metavar="MODEL",
                   help="log the best trial's model as an MLflow PyTorch model and register "
                        "it as MODEL in the store's model registry")  # fmt: skip
    b.add_argument("--runs-dir", default="runs")
    b.set_defaults(func=run_best)


def run_table(args: argparse.Namespace) -> int:
    from sepconc.cli.tables import print_table
    from sepconc.sweep.results import sweep_table

    rows = sweep_table(args.name, args.runs_dir, at_epoch=getattr(args, "at_epoch", None))
    if args.command == "status":
        keep = ("trial", "status", "epoch", "rung")
        rows = [{k: v for k, v in r.items() if k in keep or k.startswith(("final_", "best_"))}
                | {"run_id": r["run_id"]} for r in rows]  # fmt: skip
    as_csv = getattr(args, "csv", False)
    print_table(rows, as_csv=as_csv)
    if args.command == "status":  # the budget: which ended the sweep, trials not_started (sched)
        from pathlib import Path

        from sepconc.sweep.budget import budget_line

        line = budget_line(Path(args.runs_dir).resolve() / "sweeps" / args.name)
        if line:
            print(line)
    common = next((k for k in rows[0] if "_at_epoch" in k), None) if rows else None
    if args.command == "compare" and not as_csv and common and args.at_epoch is not None:
        metric, epoch = common.rsplit("_at_epoch", 1)
        print(f"\n{common}: {metric} at epoch {epoch} (--at-epoch); nan: the trial stopped "
              f"before it")  # fmt: skip
    elif args.command == "compare" and not as_csv and common:
        metric, epoch = common.rsplit("_at_epoch", 1)
        print(f"\n{common}: {metric} at epoch {epoch}, the last epoch every trial reached; "
              f"compare trials by it (final_{metric} is at each trial's own last epoch, "
              f"and ASHA stops trials at different epochs)")  # fmt: skip
    return 0


def run_best(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sepconc.cli.tables import print_table
    from sepconc.errors import UserError
    from sepconc.sweep.results import best_trials, export_config

    if args.k < 1:
        raise UserError(f"-k must be >= 1, got {args.k}")
    if args.pick < 1:
        raise UserError(f"--pick must be >= 1, got {args.pick}")
    rows = best_trials(args.name, max(args.k, args.pick), args.runs_dir)
    if args.pick > len(rows):
        raise UserError(f"--pick {args.pick}: sweep '{args.name}' shows {len(rows)} trial(s) "
                        f"(its Pareto front or -k); pick 1 to {len(rows)}")  # fmt: skip
    front = "pick" in rows[0]
    if front:
        print(f"Pareto front of sweep {args.name}: {len(rows)} non-dominated trial(s), in order "
              f"of the first objective; `--pick N --out FILE` exports row N")  # fmt: skip
    print_table(rows if front else rows[: max(args.k, args.pick)])
    chosen = rows[args.pick - 1]
    if args.out:
        export_config(args.name, chosen["run_id"], Path(args.out), args.runs_dir)
        print(f"wrote {args.out}: retrain with `python launch.py train --config {args.out}`")
    if args.register:
        from sepconc.sweep.paths import read_meta
        from sepconc.tracking.models import best_model

        uri = read_meta(args.name, args.runs_dir)["tracking_uri"]
        model_uri, version = best_model(uri, chosen["run_id"], args.register)
        print(f"registered {model_uri} as {args.register} version {version}: "
              f"mlflow.pytorch.load_model('models:/{args.register}/{version}')")  # fmt: skip
    return 0
