"""Processes a test started, found through /proc: so it can check they all ended, and end
exactly those (never by name) if they did not."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> dict[int, str]:
    """{pid: start time} of every live process below `pid` (children, grandchildren ...)."""
    parent_of, started = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parent_of[int(entry.name)] = int(fields[1])
            started[int(entry.name)] = fields[19]
    found, frontier = {}, [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parent_of.items():
            if parent == current and child not in found:
                found[child] = started[child]
                frontier.append(child)
    return found


def alive(procs: dict[int, str]) -> dict[int, str]:
    """{pid: command line} of the processes of `procs` still running (same pid and start
    time, zombies excluded)."""
    left = {}
    for pid, start in procs.items():
        fields = _stat(pid)
        if fields is not None and fields[19] == start and fields[0] != "Z":
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            left[pid] = cmd.decode(errors="replace")[:160]
    return left


def kill_all(procs: dict[int, str]) -> None:
    """SIGKILL those of `procs` still running (by pid, start time checked)."""
    for pid in alive(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
