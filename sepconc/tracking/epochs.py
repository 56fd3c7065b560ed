"""The epoch at which trials are compared (ASHA stops trials at different epochs).

A trial stopped at epoch 1 and a trial completed at epoch 4 have "final" values one and
four epochs into training: comparing or averaging those compares training lengths, not
configurations. Every comparison across trials in the report and in `compare` reads each
trial's metric at one epoch all compared trials reached:

- the *common epoch*: the largest epoch at which every compared trial logged the metric;
- *comparison epochs*: the common epoch, then the later epochs where trials stopped (ASHA's
  rungs and the last epoch), each compared over the trials that reached it (at least two).

Histories are lists of `(epoch, value)` as MLflow logs them (`step` = epoch), any order.
No MLflow, no plotting: pure functions of the read side (`sepconc.tracking.read`), shared
by `report` and `compare`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

History = Sequence[tuple[int, float]]


def value_at(history: History, epoch: int | None) -> float:
    """The value logged at `epoch` (the last one logged at that step), NaN if none."""
    if epoch is None:
        return math.nan
    found = [v for s, v in history if s == epoch]
    return found[-1] if found else math.nan


def last_epoch(history: History) -> int:
    """The largest epoch in `history` (0 when empty)."""
    return max((int(s) for s, _ in history), default=0)


def common_epoch(histories: Sequence[History]) -> int | None:
    """The largest epoch present in every non-empty history; None if there is none.

    Empty histories (trials that have not finished an epoch) are left out.
    """
    steps = [{int(s) for s, _ in h} for h in histories if h]
    shared = set.intersection(*steps) if steps else set()
    return max(shared) if shared else None


def comparison_epochs(histories: Sequence[History], max_epochs: int = 3) -> list[int]:
    """The common epoch, then later epochs where trials stopped, reached by >= 2 trials.

    Returns ascending epochs (at most `max_epochs`: the first, the last and evenly spaced
    ones between); empty when no epoch is shared. A trial counts at an epoch if it logged
    the metric there.
    """
    first = common_epoch(histories)
    if first is None:
        return []
    steps = [{int(s) for s, _ in h} for h in histories if h]
    stops = sorted({max(s) for s in steps if max(s) > first})
    epochs = [first] + [e for e in stops if sum(e in s for s in steps) >= 2]
    if len(epochs) <= max(max_epochs, 1):
        return epochs
    if max_epochs < 2:
        return epochs[:1]
    picks = {round(i * (len(epochs) - 1) / (max_epochs - 1)) for i in range(max_epochs)}
    return [epochs[i] for i in sorted(picks)]
