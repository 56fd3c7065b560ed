"""ImageNet class folders: class choice, class-indices formats, labels and head size, and
the files users really have (hidden, non-image, grayscale/16-bit/CMYK/RGBA, unreadable,
empty class folders). Real torchvision loaders on real JPEG/PNG files written here."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sepconc.data import build_datasets, check_data
from sepconc.data.image_files import ImageReadError, check_images, load_rgb
from sepconc.data.imagenet import ClassSubsetImageFolder
from sepconc.errors import UserError
from tests import fakedata
from tests.test_data import IMNET_MEAN, IMNET_STD, check_bundle, one_line_error

torch.set_num_threads(1)

# ---------------------------------------------------------------- ImageNet


def test_imagenet_all_folders_by_default(tmp_path):
    root = fakedata.write_imagefolder(tmp_path, n_classes=5, n_per_class=3)
    bundle = build_datasets("imagenet", root)
    check_bundle(bundle, (3, 224, 224), 1000, 15, 15)  # the paper's 1000-way head
    assert bundle.identity["class_indices"] == list(range(5))
    assert bundle.identity["classes"] == fakedata.imagefolder_class_names(5)
    assert bundle.train_transform_is_random is True
    torch.manual_seed(0)
    draws = [bundle.train[4][0] for _ in range(5)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    torch.testing.assert_close(bundle.val[4][0], bundle.val[4][0])


def test_imagenet_val_is_resize_center_crop(tmp_path):
    root = fakedata.write_imagefolder(tmp_path, n_classes=2, n_per_class=1)
    bundle = build_datasets("imagenet", root)
    from PIL import Image

    path, label = bundle.val.samples[0]
    img = Image.open(path).convert("RGB").resize((256, 256), Image.BILINEAR)
    want = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    want = (want[:, 16:240, 16:240] - IMNET_MEAN) / IMNET_STD
    x, y = bundle.val[0]
    assert y == label
    assert (x - want).abs().mean() < 0.05  # same pipeline up to antialiasing details


def test_imagenet_seeded_subset(tmp_path):
    root = fakedata.write_imagefolder(tmp_path, n_classes=5, n_per_class=2)
    a = build_datasets("imagenet", root, nb_classes=3, seed=7)
    b = build_datasets("imagenet", root, nb_classes=3, seed=7)
    assert a.identity["class_indices"] == b.identity["class_indices"]
    idx = a.identity["class_indices"]
    assert len(idx) == 3 == len(set(idx)) and idx == sorted(idx)
    assert a.identity["class_selection"] == "random, seed 7"
    names = fakedata.imagefolder_class_names(5)
    assert a.identity["classes"] == [names[i] for i in idx]
    check_bundle(a, (3, 224, 224), 1000, 6, 6)
    for ds in (a.train, a.val):  # label = the folder's index among all 5 folders
        for path, label in ds.samples:
            assert os.path.basename(os.path.dirname(path)) == names[label]
            assert label in idx
    others = {
        tuple(build_datasets("imagenet", root, nb_classes=3, seed=s).identity["class_indices"])
        for s in range(6)
    }
    assert len(others) > 1


@pytest.mark.parametrize("kind", ["txt", "npy"])
def test_imagenet_class_indices_file(tmp_path, kind):
    root = fakedata.write_imagefolder(tmp_path / "data", n_classes=5, n_per_class=1)
    path = tmp_path / f"classes.{kind}"
    if kind == "txt":
        path.write_text("4\n 1,\n\n3 ")
    else:
        np.save(path, np.array([4, 1, 3], dtype=np.int64))
    bundle = build_datasets("imagenet", root, nb_classes=3, class_indices=str(path))
    assert bundle.identity["class_indices"] == [1, 3, 4]
    assert bundle.identity["classes"] == ["n00000001", "n00000003", "n00000004"]
    assert str(path) in bundle.identity["class_selection"]
    assert sorted(bundle.val[i][1] for i in range(3)) == [1, 3, 4]


@pytest.mark.parametrize(
    "content, nb, expect",
    [
        ("0 1 7 9", 4, ["out of range", "0..4", "7, 9"]),
        ("-1 2", 2, ["out of range", "-1"]),
        ("1 2 2 3 3", 5, ["repeats", "2, 3"]),
        ("0 1 2", 4, ["lists 3 classes", "--nb-classes 3"]),
        ("0 one 2", 3, ["non-integer", "'one'", "accepted formats"]),
    ],
)
def test_bad_class_indices_files(tmp_path, content, nb, expect):
    root = fakedata.write_imagefolder(tmp_path / "data", n_classes=5, n_per_class=1)
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(UserError) as e:
        build_datasets("imagenet", root, nb_classes=nb, class_indices=str(path))
    msg = one_line_error(e)
    assert str(path) in msg
    for piece in expect:
        assert piece in msg


def test_bad_class_indices_npy_and_missing(tmp_path):
    root = fakedata.write_imagefolder(tmp_path / "data", n_classes=5, n_per_class=1)
    path = tmp_path / "bad.npy"
    np.save(path, np.array([0.5, 1.0]))
    with pytest.raises(UserError) as e:
        build_datasets("imagenet", root, nb_classes=2, class_indices=str(path))
    assert "float64" in one_line_error(e) and str(path) in str(e.value)
    np.save(path, np.array([3, 3]))
    with pytest.raises(UserError) as e:
        build_datasets("imagenet", root, nb_classes=2, class_indices=str(path))
    assert "repeats" in one_line_error(e)
    with pytest.raises(UserError) as e:
        build_datasets("imagenet", root, nb_classes=2, class_indices=str(tmp_path / "no.txt"))
    assert "no.txt" in one_line_error(e)


def test_imagenet_layout_errors(tmp_path):
    with pytest.raises(UserError) as e:
        build_datasets("imagenet", str(tmp_path))
    msg = one_line_error(e)
    assert os.path.join(str(tmp_path), "train") in msg and "val/" in msg
    fakedata.write_imagefolder(tmp_path, n_classes=4, n_per_class=1, splits=("train",))
    fakedata.write_imagefolder(tmp_path, n_classes=3, n_per_class=1, splits=("val",))
    with pytest.raises(UserError) as e:  # class n00000003 has no val folder
        build_datasets("imagenet", str(tmp_path))
    assert "n00000003" in one_line_error(e)
    with pytest.raises(UserError) as e:
        build_datasets("imagenet", str(tmp_path), nb_classes=10)
    assert "exceeds the 4 class folders" in one_line_error(e)
    other = fakedata.write_imagefolder(tmp_path / "other", n_classes=2, n_per_class=1)
    for split in ("train", "val"):  # an empty class folder
        os.makedirs(os.path.join(other, split, "n00000009"))
    with pytest.raises(UserError) as e:
        build_datasets("imagenet", other)
    assert "n00000009" in one_line_error(e)


# ---------------------------------------------------------------- files users have

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"\x00" * 4088  # macOS `._name`


def test_hidden_and_non_image_files_are_not_samples(tmp_path):
    root = fakedata.write_imagefolder(tmp_path, n_classes=2, n_per_class=2, size=16)
    for split in ("train", "val"):
        for name in fakedata.imagefolder_class_names(2):
            d = os.path.join(root, split, name)
            for img in os.listdir(d):
                with open(os.path.join(d, f"._{img}"), "wb") as fh:
                    fh.write(APPLEDOUBLE)
            os.makedirs(os.path.join(d, ".AppleDouble"))  # netatalk's companions folder
            for junk in (".DS_Store", "notes.txt", "README.txt", ".hidden.png",
                         os.path.join(".AppleDouble", "img_0.JPEG")):  # fmt: skip
                with open(os.path.join(d, junk), "wb") as fh:
                    fh.write(b"\x00\x00\x00\x01Bud1")
    check_data("imagenet", root)
    bundle = build_datasets("imagenet", root)
    check_bundle(bundle, (3, 224, 224), 1000, 4, 4)
    names = {os.path.basename(p) for p, _ in bundle.train.samples}
    assert names == {"img_0.JPEG", "img_1.JPEG"}
    x, y = next(iter(DataLoader(bundle.val, batch_size=4)))
    assert x.shape == (4, 3, 224, 224) and sorted(y.tolist()) == [0, 0, 1, 1]


def _save_modes(folder: str) -> dict[str, int]:
    """Gray, 16-bit, CMYK, RGBA and palette images; returns name -> expected 8-bit level."""
    flat = {"gray.JPEG": ("L", 200), "deep16.png": ("I;16", 128), "cmyk.JPEG": ("CMYK", None),
            "alpha.png": ("RGBA", 90), "palette.png": ("P", None)}  # fmt: skip
    for name, (mode, level) in flat.items():
        path = os.path.join(folder, name)
        if mode == "I;16":
            Image.fromarray(np.full((12, 16), 128 * 257, dtype=np.uint16)).save(path)
        elif mode == "RGBA":
            Image.fromarray(np.full((12, 16, 4), level, dtype=np.uint8), "RGBA").save(path)
        elif mode == "L":
            Image.fromarray(np.full((12, 16), level, dtype=np.uint8), "L").save(path)
        else:
            rgb = Image.fromarray(np.full((12, 16, 3), 60, dtype=np.uint8))
            (rgb.convert("CMYK") if mode == "CMYK" else rgb.convert("P")).save(path)
    return {n: level for n, (_, level) in flat.items()}


def test_gray_16bit_cmyk_rgba_palette_load_as_rgb(tmp_path):
    root = fakedata.write_imagefolder(tmp_path, n_classes=2, n_per_class=1, size=16)
    levels = _save_modes(os.path.join(root, "val", "n00000001"))
    assert Image.open(os.path.join(root, "val", "n00000001", "deep16.png")).mode == "I;16"
    for name, level in levels.items():
        img = load_rgb(os.path.join(root, "val", "n00000001", name))
        assert img.mode == "RGB" and img.size == (16, 12)
        if level is not None:  # 16-bit 128*257 scales to 128, not clipped to 255
            assert np.abs(np.asarray(img, dtype=int) - level).max() <= 2, name
    bundle = build_datasets("imagenet", root)
    assert len(bundle.val) == 7
    x, _ = next(iter(DataLoader(bundle.val, batch_size=7)))
    assert x.shape == (7, 3, 224, 224) and torch.isfinite(x).all()


@pytest.mark.parametrize("content", [APPLEDOUBLE, b"labelled by hand\n", b"\xff\xd8\xff\xe0"])
def test_unreadable_image_is_one_line_before_training(tmp_path, content):
    root = fakedata.write_imagefolder(tmp_path, n_classes=2, n_per_class=1, size=16)
    bad = os.path.join(root, "train", "n00000001", "broken.JPEG")
    with open(bad, "wb") as fh:
        fh.write(content)
    for call in (lambda: check_data("imagenet", root), lambda: build_datasets("imagenet", root)):
        with pytest.raises(ImageReadError) as e:
            call()
        msg = one_line_error(e)
        assert msg.startswith(f"image file {bad} cannot be read") and "replace it" in msg


def test_header_check_rule_is_bounded_and_spread(tmp_path):
    good = os.path.join(tmp_path, "good.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(good)
    bad = os.path.join(tmp_path, "bad.png")
    with open(bad, "wb") as fh:
        fh.write(b"not a png")
    paths = [good] * 9 + [bad]
    with pytest.raises(ImageReadError):  # all checked when under the bound
        check_images(paths)
    with pytest.raises(ImageReadError):  # the last file is always in the sample
        check_images(paths, limit=3)
    assert check_images([good] * 2 + [bad] + [good] * 7, limit=3) == 3  # checks 0, 4, 9


def test_unreadable_image_in_a_loader_worker_is_one_line(tmp_path):
    root = fakedata.write_imagefolder(tmp_path, n_classes=1, n_per_class=1, size=16)
    bad = os.path.join(root, "train", "n00000000", "zz.JPEG")
    with open(bad, "wb") as fh:
        fh.write(APPLEDOUBLE)
    folder = ClassSubsetImageFolder(os.path.join(root, "train"), ["n00000000"], [0])
    with pytest.raises(ImageReadError) as e:  # raised in a worker process, re-raised here
        list(DataLoader(folder, batch_size=1, num_workers=1, collate_fn=lambda b: b))
    assert one_line_error(e) == (
        f"image file {bad} cannot be read (not an image PIL recognises); delete or replace "
        f"it (files whose name starts with '.' are skipped)"
    )


@pytest.mark.parametrize("split", ["train", "val"])
def test_class_folder_without_image_names_folder_and_split(tmp_path, split):
    root = fakedata.write_imagefolder(tmp_path, n_classes=2, n_per_class=1, size=16)
    d = os.path.join(root, split, "n00000001")
    os.remove(os.path.join(d, "img_0.JPEG"))
    with open(os.path.join(d, "README.txt"), "w") as fh:
        fh.write("images to come\n")
    with open(os.path.join(d, "._img_0.JPEG"), "wb") as fh:
        fh.write(APPLEDOUBLE)
    for call in (lambda: check_data("imagenet", root), lambda: build_datasets("imagenet", root)):
        with pytest.raises(UserError) as e:
            call()
        msg = one_line_error(e)
        assert f"class folder {d} ({split} split) has no image" in msg
        assert "README.txt" in msg and "--class-indices" in msg


# ---------------------------------------------------------------- class-indices formats


def _write_indices(path, kind: str) -> None:
    if kind == "torch_list":  # the authors' format: torch.save of a list
        torch.save([3, 1], path)
    elif kind == "torch_tensor":
        torch.save(torch.tensor([3, 1]), path)
    elif kind == "torch_legacy":
        torch.save((3, 1), path, _use_new_zipfile_serialization=False)
    elif kind == "npy":
        np.save(path, np.array([3, 1], dtype=np.int32))
    else:
        raw = {"crlf": b"3 \r\n1\t\r\n\r\n", "utf8_bom": "\ufeff3\n1\n".encode(),
               "utf16_le_bom": "3\r\n1\r\n".encode("utf-16"),
               "utf16_be_bom": b"\xfe\xff" + "3, 1".encode("utf-16-be"),
               "utf32_bom": "3 1".encode("utf-32"),
               "comments": b"# chosen by hand\n3  # tench\n1,\n"}[kind]  # fmt: skip
        with open(path, "wb") as fh:
            fh.write(raw)


@pytest.mark.parametrize(
    "kind",
    ["torch_list", "torch_tensor", "torch_legacy", "npy", "crlf", "utf8_bom", "utf16_le_bom",
     "utf16_be_bom", "utf32_bom", "comments"],
)  # fmt: skip
def test_class_indices_formats(tmp_path, kind):
    root = fakedata.write_imagefolder(tmp_path / "data", n_classes=5, n_per_class=1, size=16)
    path = str(tmp_path / ("idx.npy" if kind == "npy" else f"idx_{kind}"))
    _write_indices(path, kind)
    check_data("imagenet", root, nb_classes=2, class_indices=path)
    bundle = build_datasets("imagenet", root, nb_classes=2, class_indices=path)
    assert bundle.identity["class_indices"] == [1, 3]


@pytest.mark.parametrize(
    "kind, expect",
    [
        ("jpeg", "is neither utf-8 text nor a torch or .npy file"),
        ("utf16_no_bom", "NUL characters: UTF-16 text without a BOM?"),
        ("torch_dict", "holds a torch.save'd dict, not a list or 1-D tensor of integers"),
        ("torch_float", "holds a torch.save'd torch.float32 tensor"),
        ("torch_namespace", "looks like a torch.save file but does not load safely"),
        ("pickle", "looks like a torch.save file but does not load safely"),
        ("json", "non-integer entries '[1', '3]'"),
    ],
)
def test_class_indices_other_formats_name_the_accepted_ones(tmp_path, kind, expect):
    import pickle

    root = fakedata.write_imagefolder(tmp_path / "data", n_classes=5, n_per_class=1, size=16)
    path = tmp_path / f"idx_{kind}"
    if kind == "torch_dict":
        torch.save({"indices": [1, 3]}, path)
    elif kind == "torch_float":
        torch.save(torch.tensor([1.0, 3.0]), path)
    elif kind == "torch_namespace":
        torch.save(argparse.Namespace(indices=[1, 3]), path)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps([1, 3], protocol=2))
    else:
        path.write_bytes({"jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF", "json": b"[1, 3]",
                          "utf16_no_bom": "1 3".encode("utf-16-le")}[kind])  # fmt: skip
    with pytest.raises(UserError) as e:
        build_datasets("imagenet", root, nb_classes=2, class_indices=str(path))
    msg = one_line_error(e)
    assert str(path) in msg and expect in msg and "\x1b[" not in msg
    assert "accepted formats: a torch.save'd list or 1-D integer tensor, a .npy" in msg


# ---------------------------------------------------------------- labels and head


@pytest.mark.parametrize("compact", [False, True])
def test_head_and_labels_paper_default_or_compact(tmp_path, compact):
    root = fakedata.write_imagefolder(tmp_path / "data", n_classes=5, n_per_class=1, size=16)
    path = tmp_path / "idx.txt"
    path.write_text("1 3")
    bundle = build_datasets(
        "imagenet", root, nb_classes=2, class_indices=str(path), compact_head=compact
    )
    labels = sorted(y for _, y in bundle.train.samples)
    assert labels == ([0, 1] if compact else [1, 3])
    assert bundle.num_classes == (2 if compact else 1000)
    assert bundle.identity["compact_head"] is compact
    assert bundle.identity["labels"] == ([0, 1] if compact else [1, 3])
    assert bundle.identity["head"].startswith("compact: 2 outputs" if compact else "paper: 1000")


@pytest.mark.parametrize("compact", [False, True])
def test_training_uses_and_records_the_head(tmp_path, compact):
    """A real run: the classifier's outputs, data.json and config.yaml say which head."""
    import json

    import yaml

    from sepconc.config import Config
    from sepconc.trainer import train

    root = fakedata.write_imagefolder(tmp_path / "data", n_classes=3, n_per_class=2, size=40)
    flat = {"dataset": "imagenet", "data": root, "nb_classes": 2, "compact_head": compact,
            "arch": "analysis", "frame_kernel_size": [32], "frame_stride": [32],
            "frame_width": [16], "epochs": 1, "batch_size": 4, "seed": 0, "device": "cpu",
            "workers": 0, "stats_every": 0, "tracking": False, "out": str(tmp_path / "run")}  # fmt: skip
    result = train(Config.from_flat(flat))
    run = tmp_path / "run"
    state = torch.load(run / "checkpoints" / "epoch_0001.pt", weights_only=True)
    assert state["model"]["classifier.head.weight"].shape[0] == (2 if compact else 1000)
    identity = json.loads((run / "data.json").read_text())
    assert identity["compact_head"] is compact and len(identity["class_indices"]) == 2
    assert identity["labels"] == ([0, 1] if compact else identity["class_indices"])
    assert yaml.safe_load((run / "config.yaml").read_text())["compact_head"] is compact
    assert 0 <= result.metrics["val_acc5"] <= 100


@pytest.mark.parametrize("tracking", [False, True])
def test_image_damaged_past_its_header_leaves_no_run_folder(tmp_path, tracking):
    """A JPEG cut short passes the header check and fails when decoded during the first
    epoch: one line (`ImageReadError`), and the run folder the run started in is gone
    (nothing half-written); with tracking, the MLflow run is closed FAILED with the reason."""
    from sepconc.config import Config
    from sepconc.trainer import train

    root = fakedata.write_imagefolder(tmp_path / "data", n_classes=2, n_per_class=2, size=40)
    path = os.path.join(root, "train", "n00000001", "cut.JPEG")
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, "JPEG")
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 50)  # the end of the scan data and the EOI
    assert check_images([path]) == 1  # the header is intact
    out = tmp_path / "run"
    flat = {"dataset": "imagenet", "data": root, "nb_classes": 2, "compact_head": True,
            "arch": "analysis", "frame_kernel_size": [32], "frame_stride": [32],
            "frame_width": [16], "epochs": 1, "batch_size": 4, "seed": 0, "device": "cpu",
            "workers": 0, "stats_every": 0, "tracking": tracking, "out": str(out),
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}  # fmt: skip
    with pytest.raises(ImageReadError) as e:
        train(Config.from_flat(flat))
    assert one_line_error(e).startswith(f"image file {path} cannot be read")
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    if tracking:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert run.info.status == "FAILED" and "cannot be read" in run.data.tags["sepconc.failure"]
