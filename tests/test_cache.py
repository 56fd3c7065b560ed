"""The front-end cache (`sepconc.cache`): exact, keyed right, built once, skipped when it must be.

Proves: training on cached first-block features gives the same metrics.jsonl as recomputing
the front-end (scatnet and scatnetblock, same seed), and a second run reuses the files;
`--no-cache` writes nothing; the key moves with J, L, the data, the split and the dtype and
nothing else; two processes started at the same moment on an empty cache build it once and
read identical arrays; a random train transform (CIFAR-10) skips train with the documented
log line and still caches val. Runs use a 200/50 subset of `synthetic` to stay fast.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

import sepconc.training.setup
from sepconc.cache import RANDOM_TRAIN, cache_key, key_fields, load_or_build
from sepconc.config import Config
from sepconc.data import build_datasets
from sepconc.data.registry import DataBundle, TensorImageDataset
from sepconc.scattering import PhaseScattering2D, ScatteringTree
from sepconc.trainer import train
from tests.fakedata import write_cifar10

BASE = {"dataset": "synthetic", "epochs": 2, "batch_size": 50, "lr": 0.05, "seed": 5,
        "device": "cpu", "stats_every": 0, "tracking": False, "scat_angles": [4]}  # fmt: skip
ARCHS = {
    "scatnet": {"arch": "scatnet", "scattering_J": 2, "P_proj_size": [16]},
    "scatnetblock": {"arch": "scatnetblock", "n_blocks": 2, "P_proj_size": [8, 16],
                     "scat_angles": [4, 4]},
}  # fmt: skip
LOSSES = ("train_loss", "train_acc1", "val_loss", "val_acc1")


def small_synthetic(*args, **kwargs) -> DataBundle:
    """`synthetic` cut to 200 train / 50 val images (the trainer's data, for speed)."""
    full = build_datasets("synthetic", None)

    def cut(ds, n):
        return TensorImageDataset(ds.images[:n].clone(), ds.labels[:n].clone())

    return DataBundle(cut(full.train, 200), cut(full.val, 50), full.num_classes,
                      full.image_shape, False, full.identity)  # fmt: skip


def rows(run_dir: str) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_cached_training_equals_recomputing(arch, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sepconc.training.setup, "build_datasets", small_synthetic)
    cache = tmp_path / "cache"
    flat = {**BASE, **ARCHS[arch], "cache_dir": str(cache)}
    plain = train(Config.from_flat({**flat, "cache": False, "out": str(tmp_path / "plain")}))
    assert not cache.exists()  # --no-cache writes nothing
    with caplog.at_level(logging.INFO, logger="sepconc.cache"):
        cached = train(Config.from_flat({**flat, "out": str(tmp_path / "cached")}))
        again = train(Config.from_flat({**flat, "out": str(tmp_path / "again")}))
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cache built" in m for m in messages) == 2  # train and val, once
    assert sum("cache hit" in m for m in messages) == 2  # the second run reuses both
    assert len(list(cache.glob("*.npy"))) == 2 and len(list(cache.glob("*.json"))) == 2
    assert not list(cache.glob("*.tmp-*"))
    for run in (cached, again):
        a, b = rows(plain.run_dir), rows(run.run_dir)
        assert len(a) == len(b) == 2
        for ra, rb in zip(a, b):
            for key in LOSSES:
                assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-6), (arch, key)


def test_cached_features_are_the_frontend_output(tmp_path):
    data = small_synthetic()
    tree = ScatteringTree(2, (16, 16), L=4)
    result = load_or_build(tree, data.val, "synthetic", "val", tmp_path, torch.device("cpu"))
    with torch.no_grad():
        direct = tree(data.val.images.float()).numpy()
    assert result.built and result.features.shape == direct.shape
    np.testing.assert_allclose(result.features, direct, rtol=1e-6, atol=1e-6)
    side = json.loads(result.path.with_suffix(".json").read_text())
    assert side["shape"] == list(direct.shape) and side["fields"]["frontend"]["J"] == 2


def test_key_changes_with_what_the_features_depend_on():
    data = small_synthetic()
    digits = build_datasets("digits", None)

    def key(frontend=None, dataset=data.val, name="synthetic", split="val", dtype="float32"):
        frontend = frontend or ScatteringTree(2, (16, 16), L=4)
        return cache_key(key_fields(frontend, dataset, name, split, dtype=dtype))

    base = key()
    assert key() == base  # stable: a fresh front-end and a fresh hash give the same key
    assert key(dataset=small_synthetic().val) == base
    changed = {
        "J": key(ScatteringTree(3, (16, 16), L=4)),
        "L": key(ScatteringTree(2, (16, 16), L=8)),
        "dtype": key(dtype="float64"),
        "split": key(split="train", dataset=data.train),
        "dataset": key(ScatteringTree(2, (28, 28), L=4), digits.val, "digits"),
        "content": key(dataset=TensorImageDataset(data.val.images + 1e-3, data.val.labels)),
        "frontend": key(PhaseScattering2D(16, L=4)),
        "phase L": cache_key(key_fields(PhaseScattering2D(16, L=2), data.val, "synthetic", "val")),
    }
    assert base not in changed.values() and len(set(changed.values())) == len(changed)


def _race(barrier, queue, cache_dir: str) -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    dataset = TensorImageDataset(torch.randn(300, 1, 16, 16, generator=gen), torch.zeros(300))
    tree = ScatteringTree(2, (16, 16), L=4)
    barrier.wait()  # both processes ask for the key at the same moment
    result = load_or_build(tree, dataset, "race", "val", cache_dir, torch.device("cpu"))
    queue.put((result.built, np.asarray(result.features).copy(), str(result.path)))


def test_two_processes_build_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(barrier, queue, str(tmp_path))) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(built for built, _, _ in results) == [False, True]  # exactly one build
    (_, a, path_a), (_, b, path_b) = results
    assert path_a == path_b and np.array_equal(a, b)
    assert len(list(tmp_path.glob("*.npy"))) == 1 and not list(tmp_path.glob("*.tmp-*"))


def test_random_train_transform_skips_train_caches_val(tmp_path, caplog):
    root = write_cifar10(tmp_path / "cifar", n_per_batch=4, n_test=10)
    flat = {**BASE, "dataset": "cifar10", "data": root, "arch": "scatnet", "scattering_J": 2,
            "P_proj_size": [16], "epochs": 1, "batch_size": 10, "workers": 0,
            "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "run")}  # fmt: skip
    with caplog.at_level(logging.INFO, logger="sepconc.cache"):
        train(Config.from_flat(flat))
    messages = [r.getMessage() for r in caplog.records]
    assert RANDOM_TRAIN in messages
    assert any(m.startswith("val: cache built") for m in messages)
    assert not any(m.startswith("train: cache built") for m in messages)
    (side,) = (tmp_path / "cache").glob("*.json")
    fields = json.loads(side.read_text())["fields"]
    assert fields["split"] == "val" and fields["dataset"] == "cifar10"
    assert "Normalize" in json.dumps(fields["transform"])
