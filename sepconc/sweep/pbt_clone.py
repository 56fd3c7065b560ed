"""The trial side of a PBT clone (see `sepconc.sweep.pbt`): tell a cloned checkpoint from the
trial's own, and make the trial folder continue from it. No Ray import: local DDP workers
forked without Ray call it (`sepconc.sweep.trial`)."""

from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)


def cloned_from(checkpoint_path: str | None, trial_id: str) -> str | None:
    """The id of the trial whose checkpoint Tune handed to trial `trial_id` (PBT's exploit),
    or None when the checkpoint is the trial's own. Tune keeps a trial's checkpoints under
    its own folder, named by its id (`tuner.py`: `trial_dirname_creator`)."""
    if not checkpoint_path:
        return None
    parts = Path(str(checkpoint_path)).parts
    if trial_id in parts or f"trial-{trial_id}" in parts or len(parts) < 2:
        return None
    return parts[-2]


def clone_start_epoch(trial) -> int | None:
    """The epoch a PBT clone restarts from: that of the other trial's checkpoint Tune handed
    it (`trial.latest_checkpoint_result`, whose metrics are the donor's report of it), or
    None when `trial` (a Tune `Trial`) starts from its own checkpoint or none."""
    result = getattr(trial, "latest_checkpoint_result", None)
    path = getattr(getattr(result, "checkpoint", None), "path", None)
    if cloned_from(path, trial.trial_id) is None:
        return None
    epoch = (getattr(result, "metrics", None) or {}).get("epoch")
    return int(epoch) if isinstance(epoch, (int, float)) else None


def adopt_clone(out: Path, restored: Path, donor: str) -> int | None:
    """Make the trial folder `out` continue from `restored` (the checkpoint of trial
    `donor`): its checkpoint becomes the folder's newest; the folder's own checkpoints of
    that epoch and later are moved to `checkpoints/cloned-<time>/`. Returns the epoch."""
    from sepconc.checkpoint import checkpoint_epoch, list_checkpoints

    received = list_checkpoints(restored)
    if not received:
        return None
    epoch = checkpoint_epoch(received[-1])
    folder = Path(out) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    own = [p for p in list_checkpoints(folder) if checkpoint_epoch(p) >= epoch]
    if own:
        aside = folder / f"cloned-{datetime.now():%Y%m%d-%H%M%S-%f}"
        aside.mkdir()
        for path in own:
            path.rename(aside / path.name)
    tmp = folder / f".{received[-1].name}.tmp-{os.getpid()}"
    shutil.copy2(received[-1], tmp)
    os.replace(tmp, folder / received[-1].name)
    log.warning("PBT: %s continues from trial %s's checkpoint of epoch %d with new values",
                out.name, donor, epoch)  # fmt: skip
    return epoch
