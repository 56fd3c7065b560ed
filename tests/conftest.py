"""Shared test set-up: CPU-only, bounded threads, repo root importable, GPU tests skipped cleanly."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_NUM_THREADS", "2")


# Modules whose tests start Ray, servers or many `launch.py` processes: the `slow` tier.
# (A test elsewhere joins the tier with `@pytest.mark.slow`; every `ray` test is slow.)
SLOW_MODULES = {
    "test_cli_train",
    "test_cluster_two_node",
    "test_distributed",
    "test_faults_ray",
    "test_sweep_callbacks",
    "test_sweep_ray",
    "test_tracking_server",
}


def pytest_collection_modifyitems(config, items):
    import torch

    slow = pytest.mark.slow
    for item in items:
        # Markers, not `item.keywords` (which also holds the names of the folders above: a
        # checkout in a folder named `gpu` or `ray` would skip or slow every test).
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES or item.get_closest_marker(
            "ray"
        ):
            item.add_marker(slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture
def repo_root() -> Path:
    return ROOT
