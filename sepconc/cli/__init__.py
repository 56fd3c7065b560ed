"""Command-line front door: one module per command, each with `register(subparsers)`.

A command module adds its parser and sets `func(args) -> int`. `main` runs it and
turns a `UserError` into one line per problem on stderr with exit status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sepconc.errors import UserError
from sepconc.logs import setup_logging

# Command name -> module under sepconc.cli (imported lazily: `train --help` must not import Ray).
COMMANDS = {
    "train": "train_cmd",
    "sweep": "sweep_cmd",
    "validate": "sweep_cmd",
    "status": "results_cmd",
    "resume": "sweep_cmd",
    "best": "results_cmd",
    "compare": "results_cmd",
    "report": "report_cmd",
    "mlflow-server": "server_cmd",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line and exit status 2."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="launch.py",
        description="sepconc: train and sweep separation/concentration networks.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, and every library's lines (Ray, MLflow, warnings) on the terminal",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    registered = set()
    for module_name in dict.fromkeys(COMMANDS.values()):
        try:
            module = importlib.import_module(f"sepconc.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"sepconc.cli.{module_name}":
                raise
            continue  # command not built yet
        module.register(sub)
        registered.add(module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)  # sepconc's lines on the terminal; libraries' in log files
    try:
        return int(args.func(args) or 0)
    except UserError as exc:  # one line per problem (validate lists every problem of a file)
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
