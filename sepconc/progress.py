"""Progress of long work (rate, ETA): the front-end cache build, ImageNet class folders,
evaluation and training epochs. One place, rank 0 only.

`track(label, total, unit)` is a context manager yielding `advance(n)`:

- interactive (stderr is a terminal, or `force_terminal=True`): a `rich` bar on stderr
  with the count, the rate (`unit/s`) and the ETA, removed when the work ends;
- non-interactive (a file, a pipe, a job's log): no bar and no carriage return; at most
  one log line (logger `sepconc.progress`, INFO: so the terminal and the run's log file)
  per `LINE_PERCENT` % of the total AND `LINE_SECONDS` s, none in the first
  `LINE_SECONDS` s: `label: 1200/5000 images (24%), 40.1 images/s, ETA 1m35s`;
- `done=True` adds one closing line, interactive or not: `label: 5000 images in 2m05s
  (40.0 images/s)`;
- work shorter than `LINE_SECONDS` writes no line at all (a bad-input error found after a
  quick folder scan stays the command's only line);
- on any rank but 0 (`is_main_process`), or with `enabled=False`: nothing at all.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

#: Non-interactive output: a line at most every `LINE_PERCENT` % and `LINE_SECONDS` s.
LINE_PERCENT = 10.0
LINE_SECONDS = 30.0

Advance = Callable[[int], None]


def is_main_process() -> bool:
    """Rank 0 of the process group (or of `RANK` in the environment), or not distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def interactive(stream=None, force_terminal: bool | None = None) -> bool:
    """Whether `stream` (default stderr) is a terminal rich draws on (`force_terminal` decides
    when given)."""
    if force_terminal is not None:
        return force_terminal
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def format_seconds(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _Lines:
    """The non-interactive log lines of one piece of work (see the module docstring)."""

    def __init__(self, label: str, total: int | None, unit: str, clock: Callable[[], float]):
        self.label, self.total, self.unit, self.clock = label, total, unit, clock
        self.start = self.last_time = clock()
        self.done = self.last_done = 0

    def advance(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now - self.last_time < LINE_SECONDS:
            return
        if self.total and 100 * (self.done - self.last_done) / self.total < LINE_PERCENT:
            return
        self.last_time, self.last_done = now, self.done
        log.info("%s", self.line(now))

    def rate(self, now: float) -> float:
        return self.done / max(now - self.start, 1e-9)

    def line(self, now: float) -> str:
        rate = self.rate(now)
        if not self.total:
            return f"{self.label}: {self.done} {self.unit}, {rate:.1f} {self.unit}/s"
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_text = format_seconds(eta) if eta != float("inf") else "?"
        return (f"{self.label}: {self.done}/{self.total} {self.unit} "
                f"({100 * self.done / self.total:.0f}%), {rate:.1f} {self.unit}/s, ETA {eta_text}")  # fmt: skip

    def closing(self) -> str:
        now = self.clock()
        return (f"{self.label}: {self.done} {self.unit} in {format_seconds(now - self.start)} "
                f"({self.rate(now):.1f} {self.unit}/s)")  # fmt: skip


@contextmanager
def track(
    label: str,
    total: int | None,
    unit: str = "items",
    *,
    done: bool = False,
    enabled: bool | None = None,
    stream=None,
    force_terminal: bool | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Advance]:
    """Show the progress of `total` `unit`s of work called `label`; yields `advance(n)`.

    `enabled=None`: on rank 0 only (`is_main_process`). `stream`: the terminal (stderr);
    `force_terminal`: draw the bar (True) or write lines (False) whatever `stream` is;
    `clock`: seconds (tests pass a fake one). `done`: a closing line with the rate.
    """
    if not (is_main_process() if enabled is None else enabled):
        yield lambda n=1: None
        return
    lines = _Lines(label, total, unit, clock)
    if not interactive(stream, force_terminal):
        yield lambda n=1: lines.advance(n)
    else:
        with _bar(label, total, unit, stream, clock) as bar_advance:

            def advance(n: int = 1) -> None:
                lines.done += n
                bar_advance(n)

            yield advance
    if done and lines.clock() - lines.start >= LINE_SECONDS:
        log.info("%s", lines.closing())


@contextmanager
def _bar(label, total, unit, stream, clock) -> Iterator[Advance]:
    from rich import progress as rp
    from rich.console import Console
    from rich.text import Text

    class Rate(rp.ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{speed:.1f} {unit}/s")

    console = Console(file=sys.stderr if stream is None else stream, force_terminal=True)
    columns = (rp.TextColumn(label), rp.BarColumn(bar_width=20), rp.MofNCompleteColumn(),
               Rate(), rp.TextColumn("ETA"), rp.TimeRemainingColumn())  # fmt: skip
    with rp.Progress(*columns, console=console, transient=True, get_time=clock) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n=1: bar.advance(task, n)


class EpochProgress:
    """`with progress.epoch(e, total, images) as advance: advance(batch_size)`: a training
    epoch's `track` (no closing line: the epoch's summary line follows)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    @contextmanager
    def epoch(self, epoch: int, epochs: int, images: int) -> Iterator[Advance]:
        with track(f"epoch {epoch}/{epochs}", images, "images", enabled=self.enabled) as advance:
            yield advance
