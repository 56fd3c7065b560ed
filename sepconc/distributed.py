"""Process-group plumbing for DDP: who am I, sums across ranks, local launch.

`train` runs the same code in one process, in N local processes started here
(gloo on CPU, NCCL on CUDA), or in Ray Train workers whose process group Ray
has already initialized. Nothing here knows about the model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sepconc.errors import UserError

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


def sync_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (e.g. BatchNorm running statistics) into every rank's
    `module`, one broadcast per buffer, entered by every rank (no-op without a group).

    What DDP does at the first forward after training; done explicitly so an evaluation
    runs the bare module and a rank with no batch still takes part."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=src)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def backend_for(device: torch.device | str, local_ranks: int = 1) -> str:
    """NCCL for CUDA tensors when each of the `local_ranks` processes of this node has its
    own GPU; gloo otherwise: CPU tensors, or more ranks than GPUs (NCCL >= 2.5 refuses two
    ranks on one GPU, "Duplicate GPU detected"; gloo reduces CUDA tensors through the host)."""
    if torch.device(device).type == "cuda" and local_ranks <= torch.cuda.device_count():
        return "nccl"
    return "gloo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_local(fn, nprocs: int, device_type: str, *args, reraise=(UserError,)):
    """Run `fn(*args)` in `nprocs` local processes joined in one process group; returns
    what `fn` returned on rank 0, through JSON (a dataclass comes back as its dict).

    Each child initializes the group (`backend_for`: gloo, or NCCL for CUDA) on a free loopback
    port through a file store, sets `LOCAL_RANK`, runs `fn` and tears the group
    down. An exception of a `reraise` type (built from its message) raised by `fn` on
    any rank is raised here as that type, as in one process (a `UserError` stays one line).
    Any other failure in a child is raised here (`torch.multiprocessing`'s), except
    a crash in the teardown itself once every rank has finished `fn` and met the others
    (gloo intermittently aborts there: "terminate called without an active exception");
    that is logged.
    """
    with tempfile.TemporaryDirectory(prefix="sepconc-ddp-") as tmp:
        init = f"file://{tmp}/store"
        try:
            mp.start_processes(
                _child, args=(nprocs, device_type, init, fn, args, reraise, _verbose()),
                nprocs=nprocs,
                start_method="spawn", join=True,
            )  # fmt: skip
        except mp.ProcessRaisedException:
            for rank in range(nprocs):
                raised = _side_file(init, "raised", rank)
                if os.path.exists(raised):
                    with open(raised) as f:
                        kind, message = json.load(f)
                    raise reraise[kind](message) from None
            raise
        except mp.ProcessExitedException as exc:
            if not all(os.path.exists(_finished_marker(init, r)) for r in range(nprocs)):
                raise
            log.warning(
                "DDP process %d exited with %s while leaving its process group, after every "
                "rank had finished the run; the run is complete",
                exc.error_index, exc.signal_name or f"code {exc.exit_code}",
            )  # fmt: skip
        result = _side_file(init, "result", 0)
        if not os.path.exists(result):
            return None
        with open(result) as f:
            return json.load(f)


def _side_file(init: str, kind: str, rank: int) -> str:
    """A file next to the group's file store: a child's result, exception or end marker."""
    return f"{init.removeprefix('file://')}.{kind}-{rank}"


def _finished_marker(init: str, rank: int) -> str:
    """File a child writes once `fn` has returned on it and every rank has met it."""
    return _side_file(init, "finished", rank)


def _verbose() -> bool:
    """Whether this process logs at DEBUG (`-v`): its DDP children do the same."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def join_group(rank: int, size: int, device_type: str, init: str, threads: int,
               verbose: bool = False) -> None:  # fmt: skip
    """Make this fresh process rank `rank` of a `size`-process group (gloo, or NCCL on
    `cuda:rank`) joined through `init` (a `file://` or `tcp://` URL), with `threads`
    intra-op threads and the command line's logging (`verbose`: DEBUG); ranks > 0 only warn.
    """
    os.environ["LOCAL_RANK"] = str(rank)
    # A spawned or forked process starts with no logging config: the command line's
    # (sepconc's own lines on the terminal, libraries' filtered out unless verbose).
    from sepconc.logs import setup_logging

    setup_logging(verbose)
    if rank:
        logging.getLogger().setLevel(logging.WARNING)
    if device_type == "cuda":  # ranks share the GPUs when there are fewer (`choose_device`)
        torch.cuda.set_device(rank % torch.cuda.device_count())
    torch.set_num_threads(threads)
    # all `size` ranks run on this node (local DDP): NCCL only if each has its own GPU
    dist.init_process_group(backend_for(device_type, size), init_method=init, rank=rank,
                            world_size=size)  # fmt: skip


def leave_group() -> None:
    """Tear down this process's group, if any (after every rank has met: `barrier`)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _child(rank: int, nprocs: int, device_type: str, init: str, fn, args, reraise,
           verbose: bool = False) -> None:  # fmt: skip
    join_group(rank, nprocs, device_type, init, max(1, (os.cpu_count() or 1) // nprocs), verbose)
    try:
        try:
            result = fn(*args)
        except reraise as exc:  # the parent raises it again
            kind = next(i for i, cls in enumerate(reraise) if isinstance(exc, cls))
            with open(_side_file(init, "raised", rank), "w") as f:
                json.dump([kind, str(exc)], f)
            raise
        if rank == 0:
            if dataclasses.is_dataclass(result):
                result = dataclasses.asdict(result)
            with open(_side_file(init, "result", 0), "w") as f:
                json.dump(result, f)
        # Leave together: a rank that tears gloo down while a peer is still finishing its
        # run (rank 0 writes result.json) intermittently aborts ("terminate called without
        # an active exception", SIGABRT) and fails the whole run.
        dist.barrier()
        with open(_finished_marker(init, rank), "w"):
            pass
    finally:
        leave_group()
