"""`launch.py sweep | validate | resume`: run, check and continue sweeps."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub) -> None:
    p = sub.add_parser("sweep", help="launch a sweep from a YAML file")
    p.add_argument("file", help="sweep file (see sweeps/)")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="join this Ray cluster (default: $RAY_ADDRESS, else embedded local Ray)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value, e.g. --set base.epochs=3 --set samples=2",
    )
    p.add_argument("--name", help="sweep name (default: the file's name:)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///runs/mlflow.db)")
    p.add_argument("--runs-dir", default="runs", help="runs folder (default: ./runs)")
    p.add_argument("--extend", action="store_true",
                   help="add this file's trials to the existing sweep of the same name (same "
                        "MLflow parent run; finished configurations are reused, not rerun)")  # fmt: skip
    p.set_defaults(func=run_sweep)

    v = sub.add_parser("validate", help="expand a sweep and build every architecture, no training")
    v.add_argument("file")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    v.add_argument("--no-build", dest="build", action="store_false",
                   help="check shapes and parameter counts by formula only (fast): do not "
                        "instantiate the models")  # fmt: skip
    v.add_argument(
        "--fix-resources",
        action="store_true",
        help="print a resources: line that fits this machine (or --address)",
    )
    v.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="check resources against this Ray cluster (default: this machine)",
    )
    v.set_defaults(func=run_validate)

    r = sub.add_parser("resume", help="continue an interrupted sweep")
    r.add_argument("name")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument(
        "--retry-errored",
        action="store_true",
        help="retry failed trials from their last checkpoint",
    )
    mode.add_argument(
        "--restart-errored", action="store_true", help="restart failed trials from scratch"
    )
    r.add_argument("--address", default=os.environ.get("RAY_ADDRESS"))
    r.add_argument("--runs-dir", default="runs")
    change = r.add_mutually_exclusive_group()
    change.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="change the stored sweep file, e.g. --set resources.cpus_per_worker=1 "
                             "(its trials must include the old ones)")  # fmt: skip
    change.add_argument("--file", help="continue with this sweep file instead of the stored one "
                                       "(its trials must include the old ones)")  # fmt: skip
    r.set_defaults(func=run_resume)


def run_sweep(args: argparse.Namespace) -> int:
    from sepconc.sweep.driver import launch
    from sepconc.sweep.schedulers import scheduler_warnings
    from sepconc.sweep.spec import load_sweep
    from sepconc.sweep.validate import validate_sweep

    spec = load_sweep(args.file, args.overrides, args.name)  # the one parse of the file
    validate_sweep(spec, build=False)
    for line in scheduler_warnings(spec):
        print(f"warning: {line}", file=sys.stderr)
    if args.extend:  # sepconc.sweep.extend
        from sepconc.sweep.extend import extend

        summary = extend(spec, args.address, args.tracking_uri, args.runs_dir)
    else:
        summary = launch(spec, args.address, args.tracking_uri, args.runs_dir)
    return _print_summary(summary, args.runs_dir)


def run_resume(args: argparse.Namespace) -> int:
    from sepconc.sweep.driver import resume

    mode = "retry" if args.retry_errored else "restart" if args.restart_errored else None
    summary = resume(args.name, mode, args.address, args.runs_dir, args.overrides, args.file)
    return _print_summary(summary, args.runs_dir)


def _print_summary(summary: dict, runs_dir: str) -> int:
    from sepconc.cli.tables import print_table
    from sepconc.sweep.results import sweep_table

    print_table(sweep_table(summary["name"], runs_dir), title=f"sweep {summary['name']}")
    print(
        f"{summary['trials']} trials in {summary['seconds']:.0f} s; "
        f"errors: {summary['errors'] or 0}"
    )
    if summary.get("search"):
        print(summary["search"])
    if summary.get("budget"):
        print(summary["budget"])
    if "reused" in summary:  # --extend: finished configurations not run again
        print(f"reused {len(summary['reused'])} finished trial(s) of this file, not rerun:")
        print("\n".join(summary["reused"]) or "  (none)")
    print(
        f"compare: python launch.py compare {summary['name']}   "
        f"best: python launch.py best {summary['name']} --out best.yaml"
    )
    print(f"MLflow UI: mlflow ui --backend-store-uri {summary['tracking_uri']}")
    return 1 if summary["errors"] else 0


def run_validate(args: argparse.Namespace) -> int:
    from sepconc.errors import UserError
    from sepconc.sweep.budget import describe_budget
    from sepconc.sweep.resources import validate_resources
    from sepconc.sweep.schedulers import describe_scheduler, scheduler_warnings
    from sepconc.sweep.spec import load_sweep
    from sepconc.sweep.validate import summary_lines, validate_sweep

    spec = load_sweep(args.file, args.overrides)
    lines, problems = validate_resources(spec, args.address, args.fix_resources)
    for line in lines:
        print(line)
    try:
        variants = validate_sweep(spec, build=args.build)
    except UserError as exc:  # every impossible trial: listed with the resource problems
        problems = str(exc).splitlines() + problems
    else:
        for line in summary_lines(spec, variants):
            print(line)
        print(describe_scheduler(spec.scheduler))
        print(describe_budget(spec.budget))
        for line in scheduler_warnings(spec):
            print(f"warning: {line}")
    for line in problems:
        print(line if line.startswith("hint:") else f"error: {line}", file=sys.stderr)
    return 2 if problems else 0
