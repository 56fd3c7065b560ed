"""Where log lines go: sepconc's own on the terminal, everything else in the run's log file.

`setup_logging(verbose)` (the command line's) shows records of the `sepconc.*` loggers
on stderr; libraries (Ray, Tune, MLflow, Python warnings such as deprecations) are kept
for the log file a long command attaches (`attach_log`, e.g. a sweep's
`runs/sweeps/NAME/driver.log`). With `-v` the terminal shows everything, at DEBUG.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that install their own stderr handler (and stop propagation) at import.
LIBRARY_LOGGERS = ("ray", "ray.data", "ray.tune", "ray.train", "mlflow", "alembic")
_state = {"verbose": False, "configured": False}


class OwnRecords(logging.Filter):
    """Pass sepconc's records (and, with -v, everyone's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            _state["verbose"]
            or record.name == "sepconc"
            or record.name.startswith(("sepconc.", "__main__"))
        )


def setup_logging(verbose: bool = False) -> None:
    """The command line's logging: INFO (DEBUG with `verbose`) for sepconc on stderr."""
    _state.update(verbose=verbose, configured=True)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(root.handlers):  # ours from an earlier call; others' (pytest's) stay
        if getattr(handler, "_sepconc_terminal", False):
            root.removeHandler(handler)
    terminal = logging.StreamHandler(sys.stderr)
    terminal._sepconc_terminal = True
    terminal.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    terminal.addFilter(OwnRecords())
    root.addHandler(terminal)
    logging.captureWarnings(True)  # warnings.warn -> logger py.warnings -> the log file
    # MLflow installs its own stderr handler at import unless told not to (then its records
    # reach ours); Ray's is adopted after import (`adopt_library_loggers`).
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    adopt_library_loggers()


def adopt_library_loggers() -> None:
    """Route libraries' own stderr handlers through the root (filtered) handlers instead.

    Called again after a library is imported or initialized (Ray adds its handler then);
    does nothing unless `setup_logging` ran (a library user keeps their own set-up).
    """
    if not _state["configured"]:
        return
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                logger.removeHandler(handler)
        logger.propagate = True
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.DEBUG if _state["verbose"] else logging.INFO)


def attach_log(path: Path) -> logging.Handler | None:
    """Append every record (all loggers) to `path` until `detach_log`; None if not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(handler)
    adopt_library_loggers()
    return handler


def detach_log(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()


class LogWriter(io.TextIOBase):
    """A text stream whose lines become records of `logger` (for libraries that `print`)."""

    def __init__(self, logger: logging.Logger, level: int = logging.INFO):
        self.logger, self.level, self._partial = logger, level, ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self.logger.log(self.level, line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._partial.strip():
            self.logger.log(self.level, self._partial.rstrip())
        self._partial = ""


@contextlib.contextmanager
def stdout_to_log(name: str):
    """Lines `print`ed while the block runs go to logger `name` (the log file; `-v`: terminal)."""
    writer = LogWriter(logging.getLogger(name))
    try:
        with contextlib.redirect_stdout(writer):
            yield
    finally:
        writer.flush()
