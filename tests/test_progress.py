"""Progress of long work (`sepconc.progress.track`): visible, and quiet where it must be.

Proves: non-interactive output (a file, a pipe) gets no bar and no carriage return, and
at most one log line per 10 % and 30 s (a fake clock: 100 s of work -> 3 lines, a long
job -> at most 10) plus the closing line, and none for work under 30 s; a rank other than 0 prints and logs nothing,
even on a forced terminal; an interactive (forced) terminal shows the rate and the ETA;
the three users show it: the cache build and the ImageNet folder scan write their closing
lines with the rate, and evaluation advances over the whole validation set.
"""

from __future__ import annotations

import io
import logging

import torch

import sepconc.progress
from sepconc.cache import load_or_build
from sepconc.data.imagenet import build_imagenet
from sepconc.data.registry import TensorImageDataset
from sepconc.loop import evaluate
from sepconc.progress import format_seconds, track
from sepconc.scattering import ScatteringTree
from tests.fakedata import write_imagefolder


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _run(steps: int, seconds_per_step: float, caplog, **options) -> io.StringIO:
    stream, clock = io.StringIO(), Clock()
    with caplog.at_level(logging.INFO, logger="sepconc.progress"):
        with track("build", steps * 10, "images", stream=stream, clock=clock, **options) as adv:
            for _ in range(steps):
                clock.now += seconds_per_step
                adv(10)
    return stream


def test_non_interactive_output_has_no_redraws_and_few_lines(caplog, capsys):
    stream = _run(100, 1.0, caplog, done=True)  # 100 s, 1000 images
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == [
        "build: 300/1000 images (30%), 10.0 images/s, ETA 1m10s",
        "build: 600/1000 images (60%), 10.0 images/s, ETA 40s",
        "build: 900/1000 images (90%), 10.0 images/s, ETA 10s",
    ]
    assert lines[3:] == ["build: 1000 images in 1m40s (10.0 images/s)"]
    out, err = capsys.readouterr()
    assert stream.getvalue() == "" and "\r" not in out + err + "".join(lines)
    caplog.clear()
    _run(10_000, 1.0, caplog)  # 2h46m: a line per 10 %, not per 30 s
    assert 9 <= len(caplog.records) <= 10
    caplog.clear()
    _run(100, 0.29, caplog, done=True)  # 29 s of work: nothing at all, even with `done`
    assert caplog.records == []


def test_other_ranks_print_nothing(caplog, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    for force in (True, False):
        stream = _run(100, 1.0, caplog, done=True, force_terminal=force)
        assert stream.getvalue() == "" and caplog.records == []
    monkeypatch.setenv("RANK", "0")
    stream = _run(100, 1.0, caplog, done=True, enabled=False)
    assert stream.getvalue() == "" and caplog.records == []


def test_interactive_terminal_shows_rate_and_eta(caplog):
    stream, clock = io.StringIO(), Clock()
    with track("cache", 1000, "images", stream=stream, clock=clock, force_terminal=True) as adv:
        for _ in range(40):
            clock.now += 0.5
            adv(10)  # 20 images/s, 600 left: ETA 30 s
    shown = stream.getvalue()
    assert "cache" in shown and "400/1000" in shown
    assert "20.0 images/s" in shown and "ETA" in shown and "0:00:30" in shown
    assert caplog.records == []  # the bar, not log lines, on a terminal
    assert format_seconds(7620) == "2h07m" and format_seconds(185) == "3m05s"


def test_cache_build_imagenet_scan_and_evaluation_show_progress(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(sepconc.progress, "LINE_SECONDS", 0.0)  # these take milliseconds
    images = torch.rand(40, 1, 16, 16)
    dataset = TensorImageDataset(images, torch.arange(40) % 4)
    with caplog.at_level(logging.INFO, logger="sepconc.progress"):
        load_or_build(ScatteringTree(2, (16, 16), L=4), dataset, "t", "val", tmp_path / "c",
                      torch.device("cpu"))  # fmt: skip
        write_imagefolder(tmp_path / "inet", n_classes=3, n_per_class=2, size=8)
        build_imagenet(str(tmp_path / "inet"), nb_classes=3)
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("val: cache build: 40 images in") for m in lines)
    assert any(m.startswith("imagenet train: class folders: 3 folders in") for m in lines)
    assert any(m.startswith("imagenet val: image headers: 6 files in") for m in lines)
    seen = []
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 4))
    batches = [(images[i : i + 8], torch.arange(8) % 4) for i in range(0, 40, 8)]
    evaluate(net, batches, torch.device("cpu"), progress=seen.append)
    assert sum(seen) == 40
