"""Tune's checkpoint folders of a trial (`sepconc.sweep.tune_checkpoints`), without Ray running:

- a reported checkpoint goes to Tune's folder named by its epoch, whatever counter Tune
  restored (the counter of a killed driver's last saved state was behind the folders);
- before a checkpoint is registered, Tune's list of the trial's checkpoints drops the
  folders that are gone (pruning them raised FileNotFoundError, logged at ERROR), adds the
  older folders it never heard of (so its `num_to_keep` prunes them), and never lists a
  folder twice; a newer folder (being written) is left alone;
- the callback does that on a real folder through Ray's filesystem;
- when a trial ends, the folders its process wrote after the driver was killed (a resumed
  trial that had nothing left to train reports no checkpoint) are pruned to `num_to_keep`
  and its newest folder is Tune's latest checkpoint; a list that matches is left alone.
"""

from __future__ import annotations

from types import SimpleNamespace

import ray.tune

from sepconc.sweep import tune_checkpoints
from sepconc.sweep.tune_checkpoints import TuneCheckpointsCallback, folder_index, reconcile


def result(path: str):
    return SimpleNamespace(checkpoint=SimpleNamespace(path=path), metrics={"path": path})


def paths(results) -> list[str]:
    return [r.checkpoint.path for r in results]


def test_report_names_the_folder_by_epoch(monkeypatch):
    storage = SimpleNamespace(current_checkpoint_index=1)  # restored behind the folders
    seen = []
    monkeypatch.setattr("ray.train._internal.session.get_session",
                        lambda: SimpleNamespace(storage=storage))  # fmt: skip
    monkeypatch.setattr(ray.tune, "report", lambda m, checkpoint=None: seen.append(
        (m["epoch"], checkpoint, storage.current_checkpoint_index)))  # fmt: skip
    tune_checkpoints.report_by_epoch({"epoch": 5}, checkpoint="ckpt")
    tune_checkpoints.report_by_epoch({"epoch": 6})  # no checkpoint: counter untouched
    assert seen == [(5, "ckpt", 4), (6, None, 4)]  # Tune adds 1: checkpoint_000005


def test_folder_index():
    assert folder_index("/s/tune/sw/t0/checkpoint_000012") == 12
    assert folder_index("/s/tune/sw/t0/checkpoint_tmp1") is None


def test_reconcile_after_a_killed_driver():
    base = "/s/tune/sw/t1"
    # the last saved state listed epochs 1-2; before the kill Tune had registered 3
    # (pruning 1) and the trial wrote 4; the resumed trial reports 5 (6 is being written)
    stale = [result(f"{base}/checkpoint_000001"), result(f"{base}/checkpoint_000002")]
    on_disk = ["checkpoint_000002", "checkpoint_000003", "checkpoint_000004",
               "checkpoint_000005", "checkpoint_000006"]  # fmt: skip
    fixed = reconcile(stale, f"{base}/checkpoint_000005", on_disk, result)
    assert paths(fixed) == [f"{base}/checkpoint_00000{e}" for e in (2, 3, 4)]
    assert fixed[0] is stale[1]  # Tune's own entry, its metrics kept


def test_reconcile_lists_a_folder_reported_again_once():
    base = "/s/tune/sw/t1"
    listed = [result(f"{base}/checkpoint_000002"), result(f"{base}/checkpoint_000003")]
    on_disk = ["checkpoint_000002", "checkpoint_000003"]
    fixed = reconcile(listed, f"{base}/checkpoint_000003", on_disk, result)
    assert paths(fixed) == [f"{base}/checkpoint_000002"]  # Tune appends the new 3 itself


def ended_trial(trial_dir, listed: tuple[int, ...], keep: int = 2):
    """A trial whose Tune folder is `trial_dir` and whose restored list is `listed`."""
    import pyarrow.fs
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    manager = _CheckpointManager(ray.tune.CheckpointConfig(num_to_keep=keep))
    for epoch in listed:
        path = str(trial_dir / f"checkpoint_{epoch:06d}")
        manager._checkpoint_results.append(_TrainingResult(ray.tune.Checkpoint(path), {"e": epoch}))
    storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(),
                              trial_fs_path=str(trial_dir))  # fmt: skip
    return SimpleNamespace(trial_id="t1", storage=storage,
                           run_metadata=SimpleNamespace(checkpoint_manager=manager))  # fmt: skip


def folders(trial_dir, epochs) -> None:
    for epoch in epochs:
        (trial_dir / f"checkpoint_{epoch:06d}").mkdir(parents=True)
        (trial_dir / f"checkpoint_{epoch:06d}" / f"epoch_{epoch:04d}.pt").write_text("x")


def test_callback_on_a_real_folder(tmp_path):
    from ray.train._internal.session import _TrainingResult

    trial_dir = tmp_path / "t1"
    folders(trial_dir, (2, 3, 4))
    trial = ended_trial(trial_dir, (1, 2))  # the stale list: 1 is gone
    manager = trial.run_metadata.checkpoint_manager
    new = ray.tune.Checkpoint(str(trial_dir / "checkpoint_000004"))
    TuneCheckpointsCallback().on_checkpoint(0, [trial], trial, new)
    manager.register_checkpoint(_TrainingResult(new, {"epoch": 4}))  # what Tune does next
    assert sorted(p.name for p in trial_dir.iterdir()) == ["checkpoint_000003", "checkpoint_000004"]
    assert [r.checkpoint.path for r in manager._checkpoint_results] == [
        str(trial_dir / "checkpoint_000003"), str(trial_dir / "checkpoint_000004")]  # fmt: skip


def test_an_ended_trial_keeps_its_newest_folders(tmp_path):
    # restored list [3, 4]; the trial's process wrote 5 after the driver was killed and the
    # resumed trial, its own folder at epoch 5 already, reported no checkpoint
    trial_dir = tmp_path / "t1"
    folders(trial_dir, (3, 4, 5))
    (trial_dir / "params.json").write_text("{}")  # a file: not a checkpoint
    trial = ended_trial(trial_dir, (3, 4))
    TuneCheckpointsCallback().on_trial_complete(0, [trial], trial)
    manager = trial.run_metadata.checkpoint_manager
    assert sorted(p.name for p in trial_dir.iterdir()) == [
        "checkpoint_000004", "checkpoint_000005", "params.json"]  # fmt: skip
    assert paths(manager._checkpoint_results) == [
        str(trial_dir / "checkpoint_000004"), str(trial_dir / "checkpoint_000005")]  # fmt: skip
    assert manager.latest_checkpoint_result.checkpoint.path == str(trial_dir / "checkpoint_000005")
    assert manager._checkpoint_results[0].metrics == {"e": 4}  # Tune's own entry kept


def test_an_errored_trial_listing_a_gone_folder_is_settled(tmp_path):
    trial_dir = tmp_path / "t1"
    folders(trial_dir, (2, 3))
    trial = ended_trial(trial_dir, (1, 2, 3), keep=3)  # 1 is gone
    TuneCheckpointsCallback().on_trial_error(0, [trial], trial)
    manager = trial.run_metadata.checkpoint_manager
    assert sorted(p.name for p in trial_dir.iterdir()) == ["checkpoint_000002", "checkpoint_000003"]
    assert [r.metrics for r in manager._checkpoint_results] == [{"e": 2}, {"e": 3}]


def test_a_trial_whose_list_matches_its_folder_is_left_alone(tmp_path):
    trial_dir = tmp_path / "t1"
    folders(trial_dir, (4, 5))
    trial = ended_trial(trial_dir, (4, 5))
    manager = trial.run_metadata.checkpoint_manager
    before = list(manager._checkpoint_results)
    TuneCheckpointsCallback().on_trial_complete(0, [trial], trial)
    assert manager._checkpoint_results == before and manager.latest_checkpoint_result is None
    empty = ended_trial(tmp_path / "none", ())  # no folder at all: nothing to do
    TuneCheckpointsCallback().on_trial_complete(0, [empty], empty)
    assert empty.run_metadata.checkpoint_manager._checkpoint_results == []
