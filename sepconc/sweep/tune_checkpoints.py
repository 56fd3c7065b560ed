"""A trial's checkpoints in Tune's storage (`<storage>/tune/<sweep>/<id>/checkpoint_EEEEEE/`):
named by the epoch they hold, and kept consistent with Tune's bookkeeping after a resume.

Tune names the folder of each reported checkpoint by a counter (`StorageContext`'s
`current_checkpoint_index`) and keeps the trial's newest `num_to_keep` (its
`_CheckpointManager`). Both live in the driver's experiment state, which Tune saves only
now and then; a driver killed between two saves loses the newest counter and list. On
`resume` the counter restarted behind the folders already written (a folder then held two
epochs: `checkpoint_000002/` with `epoch_0003.pt` and `epoch_0005.pt`), and the list named
folders Tune had already deleted: pruning one raised `FileNotFoundError` (logged at ERROR,
"Error handling checkpoint"), and the checkpoints written after the last save were never
pruned. So:

- the trial names each folder by its epoch (`report_by_epoch`, in the trial's process):
  epoch E is always `checkpoint_{E:06d}/`, whatever counter Tune restored;
- the driver reconciles the trial's list with its folder before each new checkpoint is
  registered (`TuneCheckpointsCallback`): folders gone are dropped, older folders Tune
  never heard of are added (Tune's `num_to_keep` then prunes them like the others), and a
  folder reported again (an epoch trained again) is listed once;
- when a trial ends (completed or failed) the driver does the same with the newest
  folder on disk as the newest checkpoint (`settle`): a resumed trial whose own folder
  already held its last epoch reports no new checkpoint, so the folders its process
  wrote after the driver was killed would otherwise stay beyond `num_to_keep`.
"""

from __future__ import annotations

import logging
import re
from pathlib import PurePosixPath
from typing import Any

from ray.tune import Callback

log = logging.getLogger(__name__)

FOLDER = re.compile(r"checkpoint_(\d{6,})$")


def report_by_epoch(metrics: dict[str, Any], checkpoint=None) -> None:
    """`ray.tune.report(metrics, checkpoint=checkpoint)`, its checkpoint stored in Tune's
    folder `checkpoint_{E:06d}` for `E = metrics["epoch"]` (Tune adds 1 to its counter
    before it copies the files). Without an integer `epoch`, Tune's own counter."""
    import ray.tune

    epoch = metrics.get("epoch")
    if checkpoint is not None and isinstance(epoch, int) and epoch >= 1:
        from ray.train._internal.session import get_session

        storage = getattr(get_session(), "storage", None)
        if storage is not None and hasattr(storage, "current_checkpoint_index"):
            storage.current_checkpoint_index = epoch - 1
    ray.tune.report(metrics, checkpoint=checkpoint)


def folder_index(path: str) -> int | None:
    """The number of a Tune checkpoint folder `.../checkpoint_000003` (3), or None."""
    found = FOLDER.match(PurePosixPath(str(path)).name)
    return int(found.group(1)) if found else None


def folder_name(result) -> str:
    """The folder name of a Tune `_TrainingResult`'s checkpoint (`checkpoint_000003`)."""
    return PurePosixPath(str(result.checkpoint.path)).name


def reconcile(results: list, new_path: str, on_disk: list[str], make_result) -> list:
    """The trial's checkpoint list to register `new_path` after: `results` (Tune's
    `_TrainingResult`s, oldest first) whose folder is in `on_disk` (the names of the
    trial folder's entries), other than `new_path`, plus a `make_result(path)` for each
    `checkpoint_N` folder on disk older than `new_path` that `results` lacks, by `N`.
    Folders of unknown number keep their place, first."""
    parent, new = str(PurePosixPath(new_path).parent), folder_index(new_path)
    present = set(on_disk)
    kept = [r for r in results if folder_name(r) in present
            and str(r.checkpoint.path) != str(new_path)]  # fmt: skip
    known = {folder_name(r) for r in results}
    if new is not None:
        for name in on_disk:
            index = folder_index(name)
            if index is not None and index < new and name not in known:
                kept.append(make_result(f"{parent}/{name}"))
    unnumbered = [r for r in kept if folder_index(r.checkpoint.path) is None]
    numbered = [r for r in kept if folder_index(r.checkpoint.path) is not None]
    return unnumbered + sorted(numbered, key=lambda r: folder_index(r.checkpoint.path))


class TuneCheckpointsCallback(Callback):
    """Before Tune registers a trial's checkpoint, its list matches the trial's folder
    (`reconcile`); when the trial ends, the list and the folder hold its newest
    `num_to_keep` (`settle`). A problem reading the folder is a warning: Tune goes on as
    it would."""

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        try:
            _reconcile_trial(trial, checkpoint)
        except Exception as exc:  # never the sweep's failure
            log.warning("trial %s: checkpoint list not checked (%s)", trial.trial_id, exc)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._settle(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._settle(trial)

    @staticmethod
    def _settle(trial) -> None:
        try:
            settle(trial)
        except Exception as exc:  # never the sweep's failure
            log.warning("trial %s: checkpoint folders not checked (%s)", trial.trial_id, exc)


def _folders(fs, parent: str) -> list[str]:
    """The names of the folders in `parent` on the pyarrow filesystem `fs` ([] if none)."""
    import pyarrow.fs

    selector = pyarrow.fs.FileSelector(parent, allow_not_found=True, recursive=False)
    return [info.base_name for info in fs.get_file_info(selector)
            if info.type == pyarrow.fs.FileType.Directory]  # fmt: skip


def _reconcile_trial(trial, checkpoint) -> None:
    manager = trial.run_metadata.checkpoint_manager
    listed = getattr(manager, "_checkpoint_results", None)
    if listed is None or not getattr(checkpoint, "path", None):
        return
    fs, parent = checkpoint.filesystem, str(PurePosixPath(checkpoint.path).parent)
    _replace_list(trial, manager, checkpoint.path, _folders(fs, parent),
                  _adopter(type(checkpoint), fs))  # fmt: skip


def _adopter(checkpoint_cls, fs):
    """`path -> _TrainingResult` (no metrics) for a folder Tune's list lacks."""
    from ray.train._internal.session import _TrainingResult

    return lambda path: _TrainingResult(checkpoint=checkpoint_cls(path, filesystem=fs), metrics={})


def _replace_list(trial, manager, new_path: str, on_disk: list[str], adopt) -> None:
    """Set `manager`'s list to `reconcile`'s, logging a change."""
    results = manager._checkpoint_results
    new = reconcile(results, new_path, on_disk, adopt)
    names = lambda rs: [folder_name(r) for r in rs]  # noqa: E731
    if names(new) != names(results):
        log.info("trial %s: Tune's checkpoints %s -> %s (its folder: %s)", trial.trial_id,
                 names(results), names(new), sorted(on_disk))  # fmt: skip
    manager._checkpoint_results = new


def settle(trial) -> None:
    """A trial that ended: its newest checkpoint folder in Tune's storage becomes Tune's
    latest checkpoint, its list is `reconcile`d with the folder, and Tune's own
    `register_checkpoint` prunes it to `num_to_keep` (deleting the folders dropped).
    Nothing changes when the list already names the folder's numbered folders."""
    import ray.tune

    manager = trial.run_metadata.checkpoint_manager
    results = getattr(manager, "_checkpoint_results", None)
    storage = getattr(trial, "storage", None)
    if results is None or storage is None:
        return
    fs, parent = storage.storage_filesystem, storage.trial_fs_path
    on_disk = _folders(fs, parent)
    numbered = sorted((n for n in on_disk if folder_index(n) is not None), key=folder_index)
    if not numbered or [folder_name(r) for r in results] == numbered:
        return
    newest, adopt = f"{parent}/{numbered[-1]}", _adopter(ray.tune.Checkpoint, fs)
    own = [r for r in results if folder_name(r) == numbered[-1]]
    _replace_list(trial, manager, newest, on_disk, adopt)
    last = own[0] if own else adopt(newest)
    manager.register_checkpoint(last)  # Tune's num_to_keep: deletes the older extras
