"""`launch.py report NAME | --run RUN_ID`: figures and a summary of a sweep or a run (MLflow)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("report", help="figures + summary of a sweep (or --run RUN_ID), from MLflow")
    p.add_argument("name", nargs="?", help="sweep name (omit with --run)")
    p.add_argument("--run", metavar="RUN_ID", help="report one MLflow run instead of a sweep")
    p.add_argument("--runs-dir", default="runs", help="runs folder of the sweep (default: runs)")
    p.add_argument("--out", help="output folder (default: RUNS/sweeps/NAME/report, "
                                 "RUNS/reports/RUN_ID with --run)")  # fmt: skip
    p.add_argument(
        "--tracking-uri",
        default="sqlite:///runs/mlflow.db",
        help="MLflow store of --run (default: sqlite:///runs/mlflow.db)",
    )
    p.add_argument("--metric", default="val_acc1", help="metric to report (default: val_acc1)")
    p.add_argument("--no-log", action="store_true", help="do not log the files to MLflow")
    p.set_defaults(func=run_report_cmd)


def run_report_cmd(args: argparse.Namespace) -> int:
    from sepconc.errors import UserError
    from sepconc.report import run_report, sweep_report

    if bool(args.name) == bool(args.run):
        raise UserError("report needs a sweep NAME or --run RUN_ID (exactly one); "
                        "e.g. `report quickstart` or `report --run 9119082172374ec9`")  # fmt: skip
    if args.run:
        report = run_report(args.run, args.tracking_uri, args.out, args.runs_dir,
                            log_artifacts=not args.no_log)  # fmt: skip
    else:
        report = sweep_report(args.name, args.runs_dir, args.out, args.metric,
                              log_artifacts=not args.no_log)  # fmt: skip
    print(report.summary)
    print(f"\nwrote {len(report.files)} files to {report.out}:")
    for path in report.files:
        print(f"  {path.name}")
    return 0
