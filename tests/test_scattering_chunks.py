"""The `fft` tree's CPU chunks run side by side (`sepconc.scattering.cpu_chunks`): the same
numbers as one chunk at a time, gradients and grad mode kept, torch's thread count restored
(also when a chunk fails), and no OpenMP team opened by the worker threads (with one, the
main thread's parallel ops ran ~2x slower afterwards)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from sepconc.scattering import ScatteringTree
from sepconc.scattering.cpu_chunks import map_chunks


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _serial(tree: ScatteringTree, x: torch.Tensor) -> torch.Tensor:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the chunks run one after the other
    try:
        return tree(x)
    finally:
        torch.set_num_threads(threads)


def test_side_by_side_chunks_equal_one_at_a_time(two_threads) -> None:
    x = torch.randn(7, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    tree = ScatteringTree(3, 28, 8)
    tree.chunk_size = 4  # 21 image channels -> 6 chunks over 2 threads
    assert [len(c) for c in tree.chunks(torch.zeros(21, 28, 28), 2)] == [4, 4, 4, 3, 3, 3]
    torch.testing.assert_close(tree(x), _serial(tree, x), rtol=1e-6, atol=1e-7)


def test_gradients_and_grad_mode_cross_into_the_worker_threads(two_threads) -> None:
    x = torch.randn(3, 2, 16, 16, dtype=torch.float64, requires_grad=True)
    tree = ScatteringTree(2, 16, 4)
    tree.chunk_size = 2
    w = torch.randn_like(tree(x))
    (g,) = torch.autograd.grad((tree(x) * w).sum(), x)
    (ref,) = torch.autograd.grad((_serial(tree, x) * w).sum(), x)
    torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        assert not tree(x).requires_grad
    with torch.inference_mode():
        assert tree(x.detach()).is_inference()


def test_thread_count_restored_when_a_chunk_fails(two_threads) -> None:
    def fail(chunk: torch.Tensor) -> torch.Tensor:
        raise ValueError("chunk failed")

    with pytest.raises(ValueError, match="chunk failed"):
        map_chunks(fail, [torch.zeros(1), torch.zeros(1)], 2)
    assert torch.get_num_threads() == 2


SCRIPT = """
import os, torch
from sepconc.scattering import ScatteringTree
torch.set_num_threads(2)
tree = ScatteringTree(3, 28, 8)
tree.chunk_size = 8
x = torch.randn(64, 1, 28, 28)
with torch.no_grad():
    torch.fft.fft2(torch.randn(64, 40, 40))  # the main thread's own OpenMP team, if any
    before = len(os.listdir("/proc/self/task"))
    for _ in range(3):
        tree(x)
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc (Linux)")
def test_worker_threads_open_no_openmp_team() -> None:
    """A fresh process: the side-by-side chunks add exactly their 2 worker threads."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert proc.stdout.strip() == "2", proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("channels", "most", "workers", "sizes"),
    [
        (128, 18, 2, [16] * 8),  # not 7 x 18 + 2: one thread a chunk behind the other
        (384, 12, 2, [12] * 32),
        (10, 3, 1, [3, 3, 2, 2]),
        (5, 18, 2, [3, 2]),  # one chunk would fit: two, one per worker
        (1, 18, 2, [1]),
    ],
)
def test_chunks_are_a_multiple_of_the_workers_and_near_equal(
    channels, most, workers, sizes
) -> None:
    tree = ScatteringTree(1, 8, 2)
    tree.chunk_size = most
    assert [len(c) for c in tree.chunks(torch.zeros(channels, 8, 8), workers)] == sizes
