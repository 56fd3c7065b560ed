"""Freed host memory kept for reuse (`sepconc.host_memory`): the malloc thresholds that
spare the CPU scattering tree the kernel's page faults, batch after batch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sepconc.host_memory import keep_freed_memory
from tests.helpers import launch_env

SCRIPT = """
import resource, sys, torch
from sepconc.host_memory import keep_freed_memory
from sepconc.scattering import ScatteringTree
kept = keep_freed_memory() if sys.argv[1] == "kept" else None
torch.set_num_threads(2)
tree = ScatteringTree(3, 32, 8)
x = torch.randn(64, 3, 32, 32)
with torch.no_grad():
    for _ in range(5):  # warm-up: the heaps grow to the forward's peak
        tree(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        tree(x)
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


def _faults_per_forward(mode: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=launch_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    kept, faults = done.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux")
def test_kept_memory_spares_the_tree_its_page_faults() -> None:
    """With the thresholds set, a warm CIFAR-10 forward (64 images, 2 threads) takes few new
    pages (measured 200-500); with glibc's defaults the same forward re-faulted 6,500-11,000
    (2,700-11,000 at batch 128)."""
    kept, faults = _faults_per_forward("kept")
    assert kept == "True"
    assert faults < 1000, f"{faults} page faults per warm forward"


def test_keep_freed_memory_is_once_per_process() -> None:
    first = keep_freed_memory()
    assert keep_freed_memory() is first
    assert first is sys.platform.startswith("linux")  # glibc here; nothing elsewhere
