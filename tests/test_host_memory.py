"""Freed host memory kept for reuse (`sepconc.host_memory`): glibc's mmap and trim
thresholds, checked through glibc's own accounting (`mallinfo2`) in fresh processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sepconc import host_memory
from tests.helpers import launch_env

SCRIPT = """
import ctypes, sys
from sepconc.host_memory import keep_freed_memory
fields = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
          "fordblks", "keepcost")
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in fields]
libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    print("no-mallinfo2"); sys.exit()
libc.mallinfo2.restype = Info
kept = keep_freed_memory() if sys.argv[1] == "kept" else None
import torch
before = libc.mallinfo2().hblkhd
block = torch.empty(20 << 20, dtype=torch.uint8)  # 20 MiB: glibc's defaults map it apart
mapped = libc.mallinfo2().hblkhd - before
del block
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(2 << 20) for _ in range(60)]  # 120 MiB, one after the other
for address in reversed(blocks):  # the top of the heap last: one free block of 120 MiB
    libc.free(address)
print(kept, mapped >> 20, libc.mallinfo2().fordblks >> 20)  # MiB free in the heap
"""


def _malloc_after(mode: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=launch_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux")
def test_freed_memory_stays_for_reuse() -> None:
    """A 20 MiB tensor comes from the heap, not a mapping of its own (unmapped on free and
    faulted in again next time), and 120 MiB freed stays in the heap for reuse; with
    glibc's defaults the tensor is mapped apart."""
    kept = _malloc_after("kept")
    if kept[0] == "no-mallinfo2" or kept[0] != "True":
        pytest.skip("not glibc >= 2.33: keep_freed_memory changes nothing here")
    mapped, held = map(int, kept[1:])
    assert mapped == 0, f"{mapped} MiB mapped apart"
    assert held >= 120, f"the heap kept {held} MiB of the 120 MiB freed"
    mapped, held = map(int, _malloc_after("default")[1:])
    assert mapped >= 20 and held < 120, (mapped, held)  # glibc's defaults, for contrast


def test_keep_freed_memory_sets_the_thresholds_once(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(host_memory, "_set_thresholds", lambda: calls.append(1) or True)
    host_memory.keep_freed_memory.cache_clear()
    try:
        assert host_memory.keep_freed_memory() and host_memory.keep_freed_memory()
    finally:
        host_memory.keep_freed_memory.cache_clear()
    assert calls == [1]
