"""Per-epoch progress bar on rank 0 (rich), shown only on an interactive terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class EpochProgress:
    """`with progress.epoch(e, total, images) as advance: advance(batch_size)`."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()

    @contextmanager
    def epoch(self, epoch: int, epochs: int, images: int) -> Iterator[Callable[[int], None]]:
        if not self.enabled:
            yield lambda n: None
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total} images"), TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task("train", total=images)
            yield lambda n: bar.advance(task, n)
