"""Chunks of a CPU computation run side by side, one per core, each single-threaded.

The ``fft`` scattering tree (``tree_fft``) is a few dozen FFTs and element-wise passes per
chunk of images. Run with torch's intra-op threads, every one of those ops splits across the
cores and meets at a barrier; small batched FFTs then cost more in thread hand-offs than in
arithmetic (measured on 2 threads: 200 FFTs of 24 x 24 took 3.1 ms, 0.45 ms on one thread),
and a core taken by another process stalls every op. Here each core takes whole chunks
instead, with torch's intra-op threads held at 1 for the duration: no barrier per op, and a
chunk's temporaries stay in its core's cache. ``benchmarks/scattering_tree.py`` measures it
(2 threads, batch 128: 1.4-1.9x faster than the same chunks with intra-op threads).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["map_chunks"]

_LOCK = threading.Lock()
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _after_fork_in_child() -> None:
    """A forked child has the pools but not their threads, and maybe a lock held by a
    thread that does not exist there: both start afresh."""
    global _LOCK
    _POOLS.clear()
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _single_threaded() -> None:
    """A worker thread's own OpenMP thread count (thread-local) set to 1. Left at the
    default, MKL's FFTs and products in the worker open an OpenMP team of their own; with
    more OpenMP threads alive than cores, libgomp stops spin-waiting in every team, and the
    main thread's parallel ops afterwards ran ~2x slower (Kymatio's tree: 195 -> 350-430 ms
    per MNIST batch of 128; with this: 205 -> 210-217 ms)."""
    torch.set_num_threads(1)


def map_chunks(fn: Callable[[torch.Tensor], torch.Tensor], chunks: Sequence[torch.Tensor],
               threads: int) -> list[torch.Tensor]:  # fmt: skip
    """``[fn(c) for c in chunks]``, computed on ``threads`` threads, each with one intra-op
    thread; torch's intra-op thread count is restored afterwards.

    The caller's grad mode and inference mode hold in the worker threads (both are
    thread-local in torch). One call at a time per process (a lock): each uses every core.
    Raises whatever ``fn`` raises (the first failing chunk's error).
    """
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def run(chunk: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(chunk)

    with _LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(
                threads, thread_name_prefix="sepconc-chunks", initializer=_single_threaded
            )
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return list(pool.map(run, chunks))
        finally:
            torch.set_num_threads(before)
