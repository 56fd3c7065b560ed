"""Real `sepconc.trainer.train` runs on the `synthetic` set (1x16x16, 10 classes, 2000/500).

Proves: seeded runs repeat exactly; stop-and-resume equals an uninterrupted run (learning-
rate decay included); 2-process gloo DDP matches one process on the same global batches
(within the BatchNorm tolerance explained at the test) and every rank reports the same
numbers; checkpoints are atomic, pruned to `checkpoint_keep`, and a truncated newest one
falls back to the previous one while a lone corrupt one is a `CheckpointError` naming it;
epoch hooks see every epoch and can stop the run; a NaN loss raises `TrainingDiverged`
naming the epoch; `evaluate` reproduces the last validation numbers; `metrics.jsonl` has
the documented keys; stored loss parity (`tests/data/loss_parity.json`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch

from sepconc.batches import ShardSampler, TensorBatches
from sepconc.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sepconc.config import Config
from sepconc.loop import TrainingDiverged, build_optimizer
from sepconc.model import build_model
from sepconc.trainer import train
from tests.helpers import loss_parity_generator

# Tiny and fast: a 32-atom frame on 4x4 patches (stride 4), lr decays after epoch 2.
BASE = {
    "dataset": "synthetic",
    "arch": "analysis",
    "frame_width": [32],
    "frame_kernel_size": [4],
    "frame_stride": [4],
    "epochs": 4,
    "batch_size": 100,
    "lr": 0.01,
    "learning_rate_adjust_frequency": 2,
    "seed": 3,
    "device": "cpu",
    "stats_every": 0,
    "tracking": False,
    "checkpoint_keep": 2,
}
METRIC_KEYS = {
    "epoch",
    "train_loss",
    "train_acc1",
    "val_loss",
    "val_acc1",
    "val_acc5",
    "lr",
    "epoch_seconds",
    "images_per_s",
}
LOSSES = ("train_loss", "val_loss")


def config(**changes) -> Config:
    flat = dict(BASE, **{k: str(v) if isinstance(v, Path) else v for k, v in changes.items()})
    return Config.from_flat(flat)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def assert_same_losses(a: list[dict], b: list[dict], rtol: float = 1e-6) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        for key in LOSSES:
            assert rb[key] == pytest.approx(ra[key], rel=rtol), (ra["epoch"], key)
        assert (ra["train_acc1"], ra["val_acc1"]) == (rb["train_acc1"], rb["val_acc1"])


class Recorder:
    """Epoch hook: keeps every report; returns True (stop) from epoch `stop_at` on."""

    def __init__(self, stop_at: int | None = None):
        self.reports, self.stop_at = [], stop_at

    def __call__(self, report) -> bool:
        self.reports.append(report)
        return self.stop_at is not None and report.epoch >= self.stop_at


class RankRecorder:
    """Picklable hook for DDP children: appends (rank, epoch, metrics) to a file per rank."""

    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self, report) -> None:
        path = Path(self.folder) / f"rank{report.rank}.jsonl"
        with open(path, "a") as handle:
            handle.write(json.dumps({"epoch": report.epoch, **report.metrics}) + "\n")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The reference: 4 epochs in one go, every epoch recorded by a hook."""
    out = tmp_path_factory.mktemp("straight") / "run"
    hook = Recorder()
    result = train(config(out=out), hooks=[hook])
    return out, result, hook.reports


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """2 epochs, then `resume=` the run folder up to 4; also keeps the 2-epoch metrics."""
    out = tmp_path_factory.mktemp("resumed") / "run"
    first = train(config(out=out, epochs=2))
    first_rows = rows(out)
    hook = Recorder()
    second = train(config(out=out, epochs=4, resume=out), hooks=[hook])
    assert [r.epoch for r in hook.reports if not r.replayed] == [3, 4]  # only 3 and 4 ran
    assert [r.epoch for r in hook.reports if r.replayed] == [1, 2]  # recorded epochs first
    return out, first, first_rows, second


# ------------------------------------------------------------------ reproducibility, resume


def test_seeded_run_is_reproducible(straight, resumed, tmp_path):
    out, _, _ = straight
    _, _, first_rows, _ = resumed
    assert_same_losses(rows(out)[:2], first_rows, rtol=0)  # bit-identical, another process state
    other = train(config(out=tmp_path / "other", epochs=1, seed=4))
    assert rows(tmp_path / "other")[0]["train_loss"] != rows(out)[0]["train_loss"]
    assert other.epochs_done == 1


def test_resume_equals_uninterrupted(straight, resumed):
    out, result, _ = straight
    res_out, first, _, second = resumed
    assert first.epochs_done == 2 and second.epochs_done == 4
    a, b = rows(out), rows(res_out)
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]  # no duplicated rows after the resume
    assert_same_losses(a, b)
    assert [r["lr"] for r in b] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert second.metrics["val_loss"] == pytest.approx(result.metrics["val_loss"], rel=1e-6)
    assert second.best_val_acc1 == result.best_val_acc1


def test_metrics_jsonl_and_run_folder(straight):
    out, result, _ = straight
    table = rows(out)
    assert [r["epoch"] for r in table] == [1, 2, 3, 4]
    for row in table:
        assert METRIC_KEYS <= set(row), METRIC_KEYS - set(row)
        assert all(math.isfinite(row[k]) for k in METRIC_KEYS)
        assert row["images_per_s"] > 0 and row["epoch_seconds"] > 0
        assert 0 <= row["val_acc1"] <= row["val_acc5"] <= 100
        assert row["nonfinite_grads"] == 0
    assert table[-1]["val_acc1"] > 50  # it learns (10 classes: chance is 10%)
    assert table[-1]["train_loss"] < table[0]["train_loss"]
    saved = json.loads((out / "result.json").read_text())
    assert saved["epochs_done"] == 4 and not saved["stopped_early"]
    assert saved["best_val_acc1"] == max(r["val_acc1"] for r in table) == result.best_val_acc1
    assert Config.from_flat(json.loads(json.dumps(_yaml(out / "config.yaml")))).to_flat() == (
        config(out=out).to_flat()
    )


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_epoch_hooks_receive_every_epoch(straight):
    out, _, reports = straight
    assert [r.epoch for r in reports] == [1, 2, 3, 4]
    for report, row in zip(reports, rows(out)):
        assert report.rank == 0 and report.run_dir == out
        assert report.metrics["train_loss"] == row["train_loss"]
        assert report.checkpoint == out / "checkpoints" / f"epoch_{report.epoch:04d}.pt"


def test_hook_returning_true_stops_the_run(tmp_path):
    hook = Recorder(stop_at=1)
    result = train(config(out=tmp_path / "run", epochs=5), hooks=[hook])
    assert result.stopped_early and result.epochs_done == 1
    assert [r.epoch for r in hook.reports] == [1]
    assert len(rows(tmp_path / "run")) == 1
    assert json.loads((tmp_path / "run" / "result.json").read_text())["stopped_early"]


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_keep_and_atomic_files(straight):
    out, _, _ = straight
    folder = out / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_0003.pt", "epoch_0004.pt"]
    state = load_checkpoint(folder / "epoch_0004.pt")
    assert state["epoch"] == 4 and state["config"]["seed"] == 3


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, folder / "epoch_0001.pt", keep=2)

    def disk_full(obj, handle):
        handle.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sepconc.checkpoint.torch.save", disk_full)
    with pytest.raises(CheckpointError, match=r"epoch_0002\.pt.*No space left"):
        save_checkpoint({"model": {}, "epoch": 2}, folder / "epoch_0002.pt", keep=2)
    assert [p.name for p in folder.iterdir()] == ["epoch_0001.pt"]  # no temp file, no partial
    assert torch.equal(load_checkpoint(folder / "epoch_0001.pt")["model"]["w"], torch.ones(3))


def test_truncated_newest_checkpoint_falls_back(straight, tmp_path, caplog):
    out, _, _ = straight
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    newest = copy / "checkpoints" / "epoch_0004.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    hook = Recorder()
    with caplog.at_level(logging.WARNING, logger="sepconc.checkpoint"):
        result = train(config(out=copy, epochs=4, resume=copy), hooks=[hook])
    assert [r.epoch for r in hook.reports if not r.replayed] == [4]  # resumed from epoch 3
    # the unreadable epoch 4 is no longer in the lineage: set aside, then written anew
    assert [p.name for p in copy.glob("checkpoints/abandoned-*/*")] == ["epoch_0004.pt"]
    assert load_checkpoint(newest)["epoch"] == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("epoch_0004.pt" in w and "corrupt or truncated" in w for w in warnings), warnings
    assert result.epochs_done == 4
    assert_same_losses(rows(out), rows(copy))  # epoch 4 retrained from epoch 3: same numbers


def test_lone_corrupt_checkpoint_is_an_error(tmp_path):
    bad = tmp_path / "ckpt" / "epoch_0001.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"epoch_0001\.pt is corrupt or truncated") as exc:
        train(config(out=tmp_path / "run", resume=bad))
    assert "\n" not in str(exc.value)
    with pytest.raises(CheckpointError, match=r"no checkpoint there"):
        train(config(out=tmp_path / "run", resume=tmp_path / "nothing"))


def test_evaluate_with_resume(straight, tmp_path):
    out, _, _ = straight
    result = train(config(out=tmp_path / "eval", resume=out, evaluate=True))
    last = rows(out)[-1]
    assert result.epochs_done == 4 and not (tmp_path / "eval" / "metrics.jsonl").exists()
    assert result.metrics["val_loss"] == pytest.approx(last["val_loss"], rel=1e-6)
    assert result.metrics["val_acc1"] == last["val_acc1"]
    assert result.metrics["val_acc5"] == last["val_acc5"]


# ------------------------------------------------------------------ divergence


def test_nan_loss_raises_training_diverged(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1"):
        train(config(out=tmp_path / "run", lr=1e6, epochs=2))


def test_nan_after_the_first_epoch_names_that_epoch(tmp_path, monkeypatch):
    """A hook poisons the training images after epoch 1: epoch 2's loss is NaN."""
    from sepconc.training import setup

    bundles = []

    def capture(*args, **kwargs):
        bundles.append(trainer_build(*args, **kwargs))
        return bundles[-1]

    trainer_build = setup.build_datasets
    monkeypatch.setattr(setup, "build_datasets", capture)

    def poison(report):
        bundles[0].train.images.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"at epoch 2 \(step \d+\)"):
        train(config(out=tmp_path / "run", epochs=3), hooks=[poison])
    assert [r["epoch"] for r in rows(tmp_path / "run")] == [1]


# ------------------------------------------------------------------ DDP


def test_shards_make_the_same_global_batches():
    """Rank batches of B/world, joined, are the one-process batch of B (even with padding)."""
    size, batch = 103, 20
    images, labels = torch.arange(size).float().view(size, 1, 1, 1), torch.arange(size)
    single = ShardSampler(size, 1, 0, shuffle=True, seed=5)
    single.set_epoch(2)
    one = [set(y.tolist()) for _, y in TensorBatches(images, labels, single, batch)]
    shards = []
    for rank in range(2):
        sampler = ShardSampler(size, 2, rank, shuffle=True, seed=5)
        sampler.set_epoch(2)
        shards.append([y.tolist() for _, y in TensorBatches(images, labels, sampler, batch // 2)])
    assert len(shards[0]) == len(shards[1])
    joined = [set(a) | set(b) for a, b in zip(*shards)]
    assert joined[: len(one) - 1] == one[:-1]  # every full batch identical
    assert set().union(*joined) == set(range(size))
    val = [ShardSampler(size, 2, r, shuffle=False).indices().tolist() for r in range(2)]
    assert sorted(val[0] + val[1]) == list(range(size))  # validation: each sample once


def test_optimizer_groups():
    """Weight decay on everything except frames and projections."""
    net = build_model(
        Config.from_flat(
            {
                "dataset": "synthetic",
                "arch": "scatnetblockanalysis",
                "n_blocks": 1,
                "P_proj_size": [8],
                "frame_width": [16],
                "scat_angles": [2],
            }
        )
    )
    opt = build_optimizer(net, 0.1, 0.9, 1e-4)
    decayed, free = opt.param_groups
    tight = {id(p) for _, p in net.tight_parameters()}
    assert {id(p) for p in free["params"]} == tight and free["weight_decay"] == 0
    assert decayed["weight_decay"] == 1e-4 and not tight & {id(p) for p in decayed["params"]}
    assert len(decayed["params"]) + len(free["params"]) == len(list(net.parameters()))


def test_ddp_two_processes_match_one(straight, tmp_path):
    """2 gloo processes x 50 images == 1 process x 100 images, up to BatchNorm.

    The gradients are averaged over ranks, so without BatchNorm the two runs would agree to
    float rounding. The classifier's BatchNorm normalizes with per-rank batch statistics
    (50 x 16 x 16 values instead of 100 x 16 x 16), which moves the losses by ~1e-4
    relative (measured: 5e-5 on epoch-1 train loss, 1e-3 on epoch-2 val loss); a bug in
    sharding or gradient reduction moves them by far more (a different batch order changes
    the epoch-1 loss by ~10%). Tolerance: 5e-3 relative on losses, or 1e-4 absolute once
    they are tiny (synthetic is easy: by epoch 4 the mean loss is ~7e-4, carried by a few
    images, and the relative gap grows to ~5e-3 there); 1 image on accuracies; the trained
    weights within 5e-3 of their largest entry.
    """
    out, _, _ = straight
    ddp_out = tmp_path / "ddp"
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir()
    result = train(config(out=ddp_out, num_workers=2), hooks=[RankRecorder(str(hook_dir))])
    assert result.epochs_done == 4
    one, two = rows(out), rows(ddp_out)
    assert [r["epoch"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        for key in LOSSES:
            assert b[key] == pytest.approx(a[key], rel=5e-3, abs=1e-4), (a["epoch"], key)
        assert abs(a["train_acc1"] - b["train_acc1"]) <= 100 / 2000 + 1e-9
        assert abs(a["val_acc1"] - b["val_acc1"]) <= 100 / 500 + 1e-9
    ranks = [
        [json.loads(line) for line in (hook_dir / f"rank{r}.jsonl").read_text().splitlines()]
        for r in range(2)
    ]
    assert [r["epoch"] for r in ranks[0]] == [1, 2, 3, 4]
    assert ranks[0] == ranks[1]  # every rank reports the same numbers
    assert ranks[0][-1]["val_loss"] == two[-1]["val_loss"]
    # the trained weights agree too
    w1 = load_checkpoint(out / "checkpoints" / "epoch_0004.pt")["model"]
    w2 = load_checkpoint(ddp_out / "checkpoints" / "epoch_0004.pt")["model"]
    for name in ("blocks.0.frame.weight", "classifier.head.weight"):
        scale = w1[name].abs().max()
        assert (w1[name] - w2[name]).abs().max() <= 5e-3 * scale, name


# ------------------------------------------------------------------ loss parity


def test_loss_parity(tmp_path):
    """The stored seeded run's per-epoch losses are reproduced (tests/data/loss_parity.json)."""
    generator = loss_parity_generator()
    reference = json.loads(generator.REFERENCE.read_text())
    assert reference["config"] == generator.CONFIG  # the stored numbers belong to this run
    values = generator.run(tmp_path / "run")
    # Epoch 1 is compared at float32 rounding level. Later epochs amplify rounding: a
    # refactor that was exact to 5e-16 in float64 (the dense phase-scattering operator
    # with 4L instead of 2L wavelet columns) moved epoch 3 by 3.7e-3 relative in float32,
    # and another CPU's GEMM kernels may round differently. A real change of the maths
    # moves them by far more than 2 %.
    for key in ("train_loss", "val_loss"):
        assert values[key][0] == pytest.approx(reference[key][0], rel=1e-4), key
        assert values[key][1:] == pytest.approx(reference[key][1:], rel=2e-2), key
    for key in ("train_acc1", "val_acc1"):
        assert values[key] == pytest.approx(reference[key], abs=0.1), key
