"""Freed host memory kept for reuse by the process: glibc's two malloc thresholds.

By default glibc hands freed memory back to the kernel: a block from its mmap threshold
up (adjusted on the fly, from 128 KiB) is its own mapping, unmapped when freed, and the
free top of a heap is trimmed past the trim threshold. The next allocation of that size
gets fresh pages, each one faulted in and zeroed by the kernel. CPU training allocates
and frees the same tensor sizes batch after batch; the ``fft`` scattering tree frees
tens of MB per chunk of images. Measured on 2 threads, batch 128, with Kymatio's tree
run between ours (``benchmarks/scattering_tree.py``): 2,700-11,000 page faults per
forward, MNIST 59-77 ms and CIFAR-10 189-197 ms; with ``keep_freed_memory()``: 0 faults,
50-59 ms and 180-184 ms (medians of 12 forwards), and the same peak resident memory
(about 770 MB).

``keep_freed_memory()`` fixes both thresholds (which also stops glibc's adjusting them):
blocks under ``MMAP_THRESHOLD`` come from the heaps and are reused once freed, and a
heap keeps up to ``TRIM_THRESHOLD`` free at its top. A block from ``MMAP_THRESHOLD`` up
(a data set's arrays) keeps its own mapping and goes back to the kernel when freed, as
before. Every training process calls it (``sepconc.training.setup.set_up``); the
benchmarks call it as the product does.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

log = logging.getLogger(__name__)

#: Blocks from this size up keep their own mapping (glibc's ``M_MMAP_THRESHOLD``): 32 MiB,
#: the most every 64-bit glibc accepts; the scattering tree's largest temporary on CPU is
#: 16 MB (``tree_fft.MAX_CHUNK_VALUES_CPU``).
MMAP_THRESHOLD = 32 << 20
#: Free memory a heap keeps at its top before returning it (``M_TRIM_THRESHOLD``): 128 MiB.
TRIM_THRESHOLD = 128 << 20

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` and then ``M_TRIM_THRESHOLD`` for this process (once;
    later calls return the first outcome). True if both are set; False where the C library
    is not glibc (macOS, musl: nothing changes there, training only runs slower on CPU) or
    glibc refuses a value (the trim threshold is set only after the mmap threshold took).
    Raises nothing. Children started by fork (data-loader
    workers under Linux's default start method) inherit the setting.

    The cost: memory a process freed after its peak stays with it (up to ``TRIM_THRESHOLD``
    free at the top of each malloc arena: the main thread's, the tree's chunk threads',
    the loader threads') instead of going back to the kernel; the peak itself is unchanged.
    """
    return _set_thresholds()


def _set_thresholds() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)  # the C library the interpreter runs on
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # musl and others: their malloc has no such thresholds
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        log.debug("glibc refused the mmap threshold: malloc left as it was")
        return False
    if mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        log.debug("glibc refused the trim threshold: only the mmap threshold is set")
        return False
    return True
