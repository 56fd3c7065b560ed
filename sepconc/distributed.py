"""Process-group plumbing for DDP: who am I, sums across ranks, local launch.

`train` runs the same code in one process, in N local processes started here
(gloo on CPU, NCCL on CUDA), or in Ray Train workers whose process group Ray
has already initialized. Nothing here knows about the model.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world() -> World:
    """Rank and size of the initialized process group (0 of 1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return World(dist.get_rank(), dist.get_world_size(), local)
    return World(0, 1, 0)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks (identity without a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_object(value, src: int = 0):
    """Rank `src`'s Python object on every rank."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return value


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA tensors, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_local(fn, nprocs: int, device_type: str, *args) -> None:
    """Run `fn(*args)` in `nprocs` local processes joined in one process group.

    Each child initializes the group (gloo, or NCCL for CUDA) on a free loopback
    port through a file store, sets `LOCAL_RANK`, runs `fn` and tears the group
    down. A failure in any child is raised here, except a crash in the teardown
    itself once every rank has finished `fn` and met the others (gloo intermittently
    aborts there: "terminate called without an active exception"); that is logged.
    """
    with tempfile.TemporaryDirectory(prefix="sepconc-ddp-") as tmp:
        init = f"file://{tmp}/store"
        try:
            mp.start_processes(
                _child, args=(nprocs, device_type, init, fn, args), nprocs=nprocs,
                start_method="spawn", join=True,
            )  # fmt: skip
        except mp.ProcessExitedException as exc:
            if not all(os.path.exists(_finished_marker(init, r)) for r in range(nprocs)):
                raise
            log.warning(
                "DDP process %d exited with %s while leaving its process group, after every "
                "rank had finished the run; the run is complete",
                exc.error_index, exc.signal_name or f"code {exc.exit_code}",
            )  # fmt: skip


def _finished_marker(init: str, rank: int) -> str:
    """File a child writes once `fn` has returned on it and every rank has met it."""
    return f"{init.removeprefix('file://')}.finished-{rank}"


def _child(rank: int, nprocs: int, device_type: str, init: str, fn, args) -> None:
    os.environ["LOCAL_RANK"] = str(rank)
    # A spawned process starts with no logging config: rank 0 logs like the parent, others warn.
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    threads = max(1, (os.cpu_count() or 1) // nprocs)
    torch.set_num_threads(threads)
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=nprocs)
    try:
        fn(*args)
        # Leave together: a rank that tears gloo down while a peer is still finishing its
        # run (rank 0 writes result.json) intermittently aborts ("terminate called without
        # an active exception", SIGABRT) and fails the whole run.
        dist.barrier()
        with open(_finished_marker(init, rank), "w"):
            pass
    finally:
        dist.destroy_process_group()
