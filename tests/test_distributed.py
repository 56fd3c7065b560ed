"""`sepconc.distributed.launch_local`: a crash while leaving the process group, after every
rank finished, does not fail the run; a crash before that does.

Real spawned gloo processes on loopback. The teardown crash is made by replacing
`destroy_process_group` in rank 1 with `os.abort()` (the SIGABRT gloo intermittently
raises there); the early crash aborts rank 1 inside the work itself.
"""

from __future__ import annotations

import logging
import os

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from sepconc.distributed import launch_local


def _abort_on_leaving(out_dir: str) -> None:
    rank = dist.get_rank()
    with open(os.path.join(out_dir, f"worked-{rank}"), "w"):
        pass
    if rank == 1:
        dist.destroy_process_group = os.abort


def _abort_while_working(out_dir: str) -> None:
    if dist.get_rank() == 1:
        os.abort()
    dist.barrier()


def test_a_crash_while_leaving_after_the_run_is_logged_not_raised(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sepconc.distributed"):
        launch_local(_abort_on_leaving, 2, "cpu", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worked-0", "worked-1"]
    assert "DDP process 1 exited with SIGABRT while leaving its process group" in caplog.text


def test_a_crash_during_the_run_fails_it(tmp_path):
    with pytest.raises(mp.ProcessExitedException, match="SIGABRT"):
        launch_local(_abort_while_working, 2, "cpu", str(tmp_path))
