"""Tests of sepconc.data on tiny files in the real formats (tests/fakedata.py)."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sepconc.data import DATASETS, build_datasets, dataset_spec, offline
from sepconc.data.torchvision_sets import Normalize
from sepconc.errors import UserError
from tests import fakedata

torch.set_num_threads(1)

IMNET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMNET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def check_bundle(bundle, shape, num_classes, n_train, n_val):
    assert bundle.image_shape == shape and bundle.num_classes == num_classes
    assert (len(bundle.train), len(bundle.val)) == (n_train, n_val)
    assert bundle.identity["sizes"] == {"train": n_train, "val": n_val}
    json.dumps(bundle.identity)  # recorded with the run: must serialize
    for ds in (bundle.train, bundle.val):
        labels = []
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.dtype == torch.float32 and tuple(x.shape) == shape
            assert isinstance(y, int)
            labels.append(y)
        assert 0 <= min(labels) and max(labels) < num_classes


# ---------------------------------------------------------------- spec / registry


def test_dataset_spec_every_dataset():
    expected = {
        "mnist": ((1, 28, 28), 10),
        "cifar10": ((3, 32, 32), 10),
        "cifar100": ((3, 32, 32), 100),
        "imagenet": ((3, 224, 224), 1000),
        "digits": ((1, 28, 28), 10),
        "synthetic": ((1, 16, 16), 10),
    }
    assert set(expected) == set(DATASETS)
    for name, spec in expected.items():
        assert dataset_spec(name) == spec
    assert dataset_spec("imagenet", nb_classes=100) == ((3, 224, 224), 1000)  # paper's head
    assert dataset_spec("imagenet", nb_classes=100, compact_head=True) == ((3, 224, 224), 100)
    assert dataset_spec("cifar10", nb_classes=100) == ((3, 32, 32), 10)
    with pytest.raises(UserError) as e:
        dataset_spec("svhn")
    assert "svhn" in one_line_error(e) and "mnist" in str(e.value)


def test_spec_matches_built_offline_sets():
    for name in ("digits", "synthetic"):
        bundle = build_datasets(name, None)
        assert dataset_spec(name) == (bundle.image_shape, bundle.num_classes)
        assert tuple(bundle.train[0][0].shape) == bundle.image_shape


def test_registry_errors():
    with pytest.raises(UserError) as e:
        build_datasets("mnist", None)
    assert "--data" in one_line_error(e)
    with pytest.raises(UserError) as e:
        build_datasets("digits", None, class_indices="x.txt")
    assert "imagenet" in one_line_error(e)


# ---------------------------------------------------------------- MNIST


def test_mnist_loads_and_normalizes(tmp_path):
    root = fakedata.write_mnist(tmp_path, n_train=20, n_test=10)
    bundle = build_datasets("mnist", root)
    check_bundle(bundle, (1, 28, 28), 10, 20, 10)
    assert bundle.train_transform_is_random is False
    with gzip.open(tmp_path / "MNIST/raw/t10k-images-idx3-ubyte.gz") as fh:
        raw = np.frombuffer(fh.read()[16:], dtype=np.uint8).reshape(10, 28, 28)
    x, y = bundle.val[3]
    want = (torch.from_numpy(raw[3].astype(np.float32)) / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(x[0], want)
    assert y == 3
    torch.testing.assert_close(bundle.train[5][0], bundle.train[5][0])  # deterministic


def test_mnist_missing_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        build_datasets("mnist", str(tmp_path))
    msg = one_line_error(e)
    assert os.path.join(str(tmp_path), "MNIST", "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "--data" in msg and "--download" in msg


def test_mnist_hints_for_common_mistakes(tmp_path):
    fakedata.write_mnist(tmp_path)
    with pytest.raises(UserError) as e:  # pointed at MNIST/ instead of its parent
        build_datasets("mnist", str(tmp_path / "MNIST"))
    assert "parent" in one_line_error(e)
    for f in fakedata_mnist_raw(tmp_path):
        os.remove(f)
    with pytest.raises(UserError) as e:  # only the .gz files
        build_datasets("mnist", str(tmp_path))
    assert "gunzip" in one_line_error(e)


def fakedata_mnist_raw(root):
    raw = os.path.join(root, "MNIST", "raw")
    return [os.path.join(raw, f) for f in os.listdir(raw) if not f.endswith(".gz")]


def test_mnist_download_failure_is_one_line(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    def fail(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried x\nTried y")

    monkeypatch.setattr(MNIST, "download", fail)
    with pytest.raises(UserError) as e:
        build_datasets("mnist", str(tmp_path), download=True)
    assert "could not download" in one_line_error(e)


# ---------------------------------------------------------------- CIFAR


def test_cifar10_loads_val_normalized(tmp_path):
    root = fakedata.write_cifar10(tmp_path, n_per_batch=4, n_test=10)
    bundle = build_datasets("cifar10", root)
    check_bundle(bundle, (3, 32, 32), 10, 20, 10)
    assert bundle.train_transform_is_random is True
    assert bundle.identity["md5_verified"] is False
    assert bundle.identity["classes"][0] == "airplane"
    with open(tmp_path / "cifar-10-batches-py/test_batch", "rb") as fh:
        batch = pickle.load(fh, encoding="latin1")
    raw = torch.from_numpy(batch["data"][7].reshape(3, 32, 32).astype(np.float32))
    x, y = bundle.val[7]
    torch.testing.assert_close(x, (raw / 255 - IMNET_MEAN) / IMNET_STD)
    assert y == batch["labels"][7]
    torch.testing.assert_close(bundle.val[7][0], x)


def test_cifar_train_transform_is_pad_crop_flip(tmp_path):
    root = fakedata.write_cifar10(tmp_path)
    bundle = build_datasets("cifar10", root)
    raw = bundle.train.images[2]
    padded = torch.zeros(3, 40, 40, dtype=torch.uint8)
    padded[:, 4:36, 4:36] = raw
    norm = Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    candidates = {}
    for i in range(9):
        for j in range(9):
            crop = padded[:, i : i + 32, j : j + 32]
            candidates[(i, j, 0)] = norm(crop)
            candidates[(i, j, 1)] = norm(crop.flip(-1))
    torch.manual_seed(0)
    seen = set()
    for _ in range(300):
        x = bundle.train[2][0]
        hits = [k for k, c in candidates.items() if torch.equal(x, c)]
        assert hits, "train sample is not a padded crop (maybe flipped) of the image"
        seen.update(hits)
    assert {(0, 0), (8, 8)} <= {k[:2] for k in seen}
    assert {0, 1} == {k[2] for k in seen}


def test_cifar_train_random_val_deterministic(tmp_path):
    bundle = build_datasets("cifar10", fakedata.write_cifar10(tmp_path))
    torch.manual_seed(1)
    draws = [bundle.train[0][0] for _ in range(10)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert all(torch.equal(bundle.val[0][0], bundle.val[0][0]) for _ in range(3))


def test_cifar100_loads_fine_labels(tmp_path):
    root = fakedata.write_cifar100(tmp_path, n_train=20, n_test=10)
    bundle = build_datasets("cifar100", root)
    check_bundle(bundle, (3, 32, 32), 100, 20, 10)
    assert [bundle.train[i][1] for i in range(20)] == list(range(20))
    assert len(bundle.identity["classes"]) == 100


def test_cifar_missing_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        build_datasets("cifar10", str(tmp_path))
    msg = one_line_error(e)
    assert os.path.join(str(tmp_path), "cifar-10-batches-py") in msg
    assert "data_batch_1" in msg and "--data" in msg and "--download" in msg
    fakedata.write_cifar100(tmp_path)
    with pytest.raises(UserError) as e:  # pointed at the folder itself
        build_datasets("cifar100", str(tmp_path / "cifar-100-python"))
    assert "parent" in one_line_error(e)


def test_cifar_corrupt_file_is_one_line(tmp_path):
    root = fakedata.write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py/data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError) as e:
        build_datasets("cifar10", root)
    assert "data_batch_3" in one_line_error(e)


# ---------------------------------------------------------------- offline sets


def test_digits_fixed_stratified_split():
    a = build_datasets("digits", None, seed=0)
    b = build_datasets("digits", None, seed=123)
    check_bundle(a, (1, 28, 28), 10, 1437, 360)
    assert a.train_transform_is_random is False
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    counts = torch.bincount(a.val.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    assert abs(float(a.train.images.mean())) < 1e-4
    assert abs(float(a.train.images.std()) - 1) < 1e-3
    _, _, train_idx, val_idx = offline.digits_arrays()
    assert len(set(train_idx) | set(val_idx)) == 1797 and not set(train_idx) & set(val_idx)


def test_digits_resize_keeps_the_image():
    x, _, _, _ = offline.digits_arrays()
    from sklearn.datasets import load_digits

    small = torch.from_numpy(load_digits().images[:5].astype(np.float32) / 16)
    pooled = torch.nn.functional.adaptive_avg_pool2d(x[:5], 8)[:, 0]
    assert float((pooled - small).abs().mean()) < 0.1
    assert 0 <= float(x.min()) and float(x.max()) <= 1


def test_synthetic_reproducible_and_fast():
    t = time.perf_counter()
    a = build_datasets("synthetic", None, seed=0)
    assert time.perf_counter() - t < 1.0
    b = build_datasets("synthetic", None, seed=5)
    check_bundle(a, (1, 16, 16), 10, 2000, 500)
    assert a.train_transform_is_random is False
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.images, b.val.images)
    assert torch.equal(torch.bincount(a.train.labels), torch.full((10,), 200))
    assert not torch.equal(a.train.images[:500], a.val.images)


def test_synthetic_means_separated_and_noise_sigma():
    means = offline.synthetic_class_means().flatten(1)
    assert means.shape == (10, 256)
    torch.testing.assert_close(means.norm(dim=1), torch.full((10,), 16.0))
    dist = torch.cdist(means, means) + torch.eye(10) * 1e9
    sigma = offline.SYNTHETIC_SIGMA
    assert float(dist.min()) > 10 * sigma  # margin d / (2 sigma) > 5 along every pair
    # smooth: neighbouring pixels are strongly correlated
    img = offline.synthetic_class_means()[:, 0]
    corr = float((img[:, :, 1:] * img[:, :, :-1]).mean())
    assert corr > 0.5
    bundle = build_datasets("synthetic", None)
    x, y = bundle.train.images.flatten(1), bundle.train.labels
    noise = x - means[y]
    assert abs(float(noise.std()) - sigma) < 0.02
    # the nearest class mean classifies the validation set
    xv, yv = bundle.val.images.flatten(1), bundle.val.labels
    pred = torch.cdist(xv, means).argmin(dim=1)
    assert float((pred == yv).float().mean()) > 0.99


def test_in_memory_sets_batch_through_dataloader(tmp_path):
    bundle = build_datasets("cifar10", fakedata.write_cifar10(tmp_path))
    x, y = next(iter(DataLoader(bundle.train, batch_size=8, shuffle=True)))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reader_agrees_with_torchvision(tmp_path, monkeypatch, name):
    """Our reader and torchvision's CIFAR class read the same arrays (md5 check bypassed)."""
    import torchvision.datasets.cifar as tv_cifar

    root = (fakedata.write_cifar10 if name == "cifar10" else fakedata.write_cifar100)(tmp_path)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    cls = tv_cifar.CIFAR10 if name == "cifar10" else tv_cifar.CIFAR100
    ours = build_datasets(name, root)
    for split, ds in ((True, ours.train), (False, ours.val)):
        ref = cls(root, train=split)
        assert np.array_equal(ref.data, ds.images.permute(0, 2, 3, 1).numpy())
        assert list(ref.targets) == ds.labels.tolist()
    assert ref.classes == ours.identity["classes"]


# ------------------------------------------------------------------ one way to read a split


def test_accessors_read_in_memory_and_file_backed_splits(tmp_path):
    """`images_of`/`plain_images_of`/`labels_of`/`files_of` agree with the items themselves,
    for an in-memory split without transform (synthetic), one with a transform (cifar10)
    and a file-backed one (imagenet folders)."""
    from sepconc.data import files_of, images_of, labels_of, plain_images_of

    synthetic = offline.build_synthetic().val
    assert plain_images_of(synthetic) is images_of(synthetic) is synthetic.images
    assert torch.equal(images_of(synthetic)[3].float(), synthetic[3][0])
    assert files_of(synthetic) is None
    fakedata.write_cifar10(tmp_path / "c", n_per_batch=2, n_test=3)
    cifar = build_datasets("cifar10", str(tmp_path / "c")).val
    assert images_of(cifar).shape == (3, 3, 32, 32) and plain_images_of(cifar) is None
    fakedata.write_imagefolder(tmp_path / "imnet", n_classes=3, n_per_class=2, size=8)
    folder = build_datasets("imagenet", str(tmp_path / "imnet"), nb_classes=3).train
    assert images_of(folder) is None and plain_images_of(folder) is None
    assert [label for _, label in files_of(folder)] == labels_of(folder).tolist()
    for split in (synthetic, cifar, folder):
        labels = labels_of(split)
        assert labels.dtype == torch.int64 and labels.shape == (len(split),)
        assert labels.tolist() == [int(split[i][1]) for i in range(len(split))]


def test_only_the_data_layer_reads_a_splits_attributes():
    """Outside `sepconc/data/`, a split's images and labels are read through the accessors
    (a `getattr(dataset, ...)` or `dataset.labels`/`.targets`/`.images`/`.samples` guess
    elsewhere is a second rule)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "sepconc"
    guess = re.compile(
        r"getattr\((dataset|ds|split|data\.(train|val))\s*,\s*\"(images|labels|targets|samples)\""
        r"|\b(dataset|ds|split)\.(images|labels|targets|samples)\b"
    )
    found = [f"{path.relative_to(root)}:{i}: {line.strip()}"
             for path in sorted(root.rglob("*.py")) if "data" not in path.relative_to(root).parts
             for i, line in enumerate(path.read_text().splitlines(), 1)
             if guess.search(line)]  # fmt: skip
    assert not found, found
