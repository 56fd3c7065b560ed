"""Checkpoints written by other scripts: intact files the safe loader refuses (named, never
called corrupt), the paper's `main.py` layout (resumed, or refused in one line), and
library error text made fit for one line (no escape codes, no word cut)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sepconc.checkpoint import CheckpointError, check_loadable, load_checkpoint
from sepconc.errors import clean_reason, fit_line
from sepconc.trainer import train
from tests.test_checkpoint_faults import config, epochs_logged


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """sepconc's own checkpoint after 1 epoch of the tiny synthetic `analysis` run."""
    out = tmp_path_factory.mktemp("src") / "run"
    train(config(out=out, epochs=1))
    return out / "checkpoints" / "epoch_0001.pt"


def _user_resave(src: Path, dst: Path, legacy: bool = False) -> Path:
    """What a user script does: a numpy scalar for the best accuracy, the argparse args."""
    state = torch.load(src, weights_only=True)
    state["best_val_acc1"] = np.float64(state["best_val_acc1"])
    state["args"] = argparse.Namespace(lr=0.01, epochs=2)
    torch.save(state, dst, _use_new_zipfile_serialization=not legacy)
    return dst


@pytest.mark.parametrize("legacy", [False, True])
def test_refused_objects_are_named_and_the_file_called_intact(one_epoch, tmp_path, legacy):
    path = _user_resave(one_epoch, tmp_path / "numpy_args.pt", legacy)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and "\x1b[" not in msg
    assert msg.startswith(f"checkpoint {path} is intact but holds objects the safe loader")
    assert "numpy._core.multiarray.scalar" in msg  # the one torch names first
    if not legacy:  # the zip format is scanned for every refused global
        assert "argparse.Namespace" in msg
    assert "add_safe_globals" in msg and "re-save it without them" in msg
    assert "corrupt" not in msg and "delete" not in msg


def test_preflight_refuses_before_anything_is_written(one_epoch, tmp_path):
    path = _user_resave(one_epoch, tmp_path / "numpy_args.pt")
    with pytest.raises(CheckpointError, match="is intact but holds objects"):
        check_loadable([path])
    check_loadable([path, one_epoch])  # a loadable fallback remains: the load decides
    check_loadable([one_epoch])


class _RunsCode:
    def __reduce__(self):
        import subprocess

        return (subprocess.check_call, (["true"],))


def test_code_is_never_suggested_for_allowing(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "epoch": 1, "x": _RunsCode()}, path)
    for call in (lambda: load_checkpoint(path), lambda: check_loadable([path])):
        with pytest.raises(CheckpointError) as e:
            call()
        msg = str(e.value)
        assert "holds a call to commands.check_call" in msg and "could run code" in msg
        assert "add_safe_globals" not in msg


def test_refused_checkpoint_falls_back_to_an_earlier_one(one_epoch, tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "epoch_0001.pt").write_bytes(one_epoch.read_bytes())
    _user_resave(one_epoch, folder / "epoch_0002.pt")
    result = train(config(out=tmp_path / "run", epochs=2, resume=folder / "epoch_0002.pt"))
    assert result.epochs_done == 2 and epochs_logged(result.run_dir) == [2]


def test_paper_layout_resumes_its_weights(one_epoch, tmp_path, caplog):
    state = torch.load(one_epoch, weights_only=True)
    paper = tmp_path / "scatnet_batchsize_250_lrfreq_30.pth.tar"
    weights = {f"module.{k}": v for k, v in state["model"].items()}  # saved from DataParallel
    torch.save({"epoch": 1, "arch": "analysis", "state_dict": weights,
                "best_acc1": torch.tensor(12.5), "optimizer": state["optimizer"]}, paper)  # fmt: skip
    loaded = load_checkpoint(paper)
    assert loaded["epoch"] == 1 and loaded["best_val_acc1"] == 12.5
    assert loaded["model"].keys() == state["model"].keys()
    caplog.set_level("INFO")
    result = train(config(out=tmp_path / "run", epochs=2, resume=paper))
    assert result.epochs_done == 2 and epochs_logged(result.run_dir) == [2]
    assert any("paper's main.py layout" in r.getMessage() for r in caplog.records)
    assert json.loads((Path(result.run_dir) / "result.json").read_text())["epochs_done"] == 2


@pytest.mark.parametrize(
    "paper, expect",
    [
        ({"epoch": 3, "arch": "analysis", "best_acc1": 50.0, "optimizer": {},
          "state_dict": {"0.module.analysis.frame_weight": torch.zeros(2)}},
         "with the authors' module names (e.g. 0.module.analysis.frame_weight)"),
        ({"epoch": 3, "arch": "analysis", "best_acc1": 50.0, "state_dict": {}},
         "layout without an optimizer state"),
        ({"weights": {}}, "is not a sepconc checkpoint (keys: weights; expected model and epoch"),
    ],
)  # fmt: skip
def test_foreign_layouts_say_exactly_why_not_in_one_line(tmp_path, paper, expect):
    path = tmp_path / "foreign.pth.tar"
    torch.save(paper, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and expect in str(e.value)


def test_damaged_file_is_still_called_corrupt(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"\x80\x02garbage, not a checkpoint")
    with pytest.raises(CheckpointError, match="is corrupt or truncated"):
        load_checkpoint(path)


def test_reasons_lose_escapes_and_are_cut_between_words():
    exc = RuntimeError("\x1b[1mbold\x1b[0m start\nsecond line")
    assert clean_reason(exc) == "bold start"
    assert clean_reason(exc, whole=True) == "bold start second line"
    assert clean_reason(ValueError()) == "ValueError"
    text = "alpha beta gamma delta"
    assert fit_line(text, 13) == "alpha beta ..."  # never "alpha beta ga"
    assert fit_line(text, 100) == text
    assert fit_line("x" * 50, 10) == "x" * 10 + " ..."  # one long token: cut, and say so
