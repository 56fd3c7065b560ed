"""What a sweep asks of the machine (or Ray cluster) it will run on, checked before it starts.

`resource_problems(spec, address)` compares a trial's needs (`workers_per_trial` x
`cpus_per_worker` CPUs and x `gpus_per_worker` GPUs) with what exists: the local machine
when there is no address (CPUs this process may use, `torch.cuda.device_count()` GPUs,
physical memory), else the cluster's totals read through a short Ray connection. Each
problem is one line naming the key, what is asked, what exists and the fix.

`resources: auto` in a sweep file fits `workers_per_trial`, `cpus_per_worker`,
`gpus_per_worker` and `max_concurrent_trials` to the machine found (`fit_resources`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sepconc.config import OptimConfig
from sepconc.errors import UserError

log = logging.getLogger(__name__)

GIB = 1024**3
# A trial process holds the data set, the model and its front-end features: below this
# much physical memory per worker a sweep swaps or is killed, so it is refused.
MIN_MEMORY_PER_WORKER = 0.5 * GIB
FIX = "or write `resources: auto` (see `validate FILE --fix-resources`)"


def local_totals() -> dict[str, float]:
    """This machine: `{"CPU": usable cores, "GPU": CUDA devices, "memory": bytes, "nodes": 1}`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        memory = 0.0  # unknown: not checked
    return {"CPU": float(cpus), "GPU": float(_cuda_devices()), "memory": memory, "nodes": 1,
            "node_cpu": float(cpus), "node_gpu": float(_cuda_devices())}  # fmt: skip


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cluster_totals(address: str) -> dict[str, float]:
    """The Ray cluster at `address`: its CPU/GPU/memory totals, node count and largest node."""
    import ray

    from sepconc.sweep.ray_join import join_cluster

    join_cluster(address)
    try:
        return ray_totals()
    finally:
        ray.shutdown()


def ray_totals() -> dict[str, float]:
    """Totals of the Ray instance this process is connected to (see `local_totals`)."""
    import ray

    total = ray.cluster_resources()
    alive = [n for n in ray.nodes() if n.get("Alive")]
    return {"CPU": total.get("CPU", 0.0), "GPU": total.get("GPU", 0.0),
            "memory": total.get("memory", 0.0), "nodes": len(alive),
            "node_cpu": max((n["Resources"].get("CPU", 0.0) for n in alive), default=0.0),
            "node_gpu": max((n["Resources"].get("GPU", 0.0) for n in alive), default=0.0)}  # fmt: skip


def describe_totals(totals: dict[str, float], address: str | None) -> str:
    where = f"the cluster at {address} ({totals['nodes']:g} nodes)" if address else "this machine"
    memory = f", {totals['memory'] / GIB:.1f} GiB memory" if totals.get("memory") else ""
    return f"{where} has {totals['CPU']:g} CPUs, {totals['GPU']:g} GPUs{memory}"


def resource_problems(spec, address: str | None = None, totals=None) -> list[str]:
    """One line per way the sweep's `resources:` cannot run where it will run; [] when it fits.

    `address`: a Ray cluster (`HOST:PORT`, `auto`) whose totals are read through a short
    connection; None means the local machine (embedded Ray). `totals` skips the lookup.
    Raises `UserError` only when the cluster cannot be reached.
    """
    if totals is None:
        totals = cluster_totals(address) if address else local_totals()
    where = describe_totals(totals, address)
    w, cpw, gpw = spec.workers, spec.cpus_per_worker, spec.gpus_per_worker
    problems = []
    if w * cpw > totals["CPU"]:
        fit = max(1.0, totals["CPU"] // w) if totals["CPU"] >= w else None
        hint = (f"lower resources.cpus_per_worker to {fit:g}" if fit
                else f"lower resources.workers_per_trial to {max(1, int(totals['CPU']))}")  # fmt: skip
        problems.append(f"resources: a trial asks workers_per_trial {w} x cpus_per_worker {cpw:g}"
                        f" = {w * cpw:g} CPUs but {where}; {hint}, {FIX}")  # fmt: skip
    elif cpw > totals.get("node_cpu", totals["CPU"]):
        problems.append(f"resources.cpus_per_worker {cpw:g}: no node of {where} has that many "
                        f"(largest {totals['node_cpu']:g}); lower it, {FIX}")  # fmt: skip
    if w * gpw > totals["GPU"]:
        hint = ("set resources.gpus_per_worker: 0 (CPU DDP, device cpu)" if not totals["GPU"]
                else f"lower resources.workers_per_trial to {int(totals['GPU'] // gpw) or 1} "
                     f"or gpus_per_worker")  # fmt: skip
        problems.append(f"resources: a trial asks workers_per_trial {w} x gpus_per_worker {gpw:g}"
                        f" = {w * gpw:g} GPUs but {where}; {hint}, {FIX}")  # fmt: skip
    device = spec.base.get("device", "auto")
    if device == "cuda" and not gpw:
        problems.append("base.device cuda but resources.gpus_per_worker is 0 (trials would see "
                        "no GPU); set gpus_per_worker or device: cpu")  # fmt: skip
    memory = totals.get("memory") or 0.0
    if memory and w * MIN_MEMORY_PER_WORKER > memory:
        problems.append(f"resources.workers_per_trial {w}: {where}, under "
                        f"{MIN_MEMORY_PER_WORKER / GIB:g} GiB per worker; lower it {FIX[3:]}")  # fmt: skip
    return problems


def check_resources(spec, address: str | None = None, totals=None) -> None:
    """`resource_problems` as a `UserError` (the first problem, and how many more)."""
    problems = resource_problems(spec, address, totals)
    if problems:
        more = f" (and {len(problems) - 1} more: see `validate FILE`)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)


def fit_resources(batch_size: int, totals: dict[str, float]) -> dict[str, Any]:
    """`resources:` that fill the machine found: GPUs one per worker, else 1 CPU per worker.

    `workers_per_trial` divides `batch_size` (every rank gets the same share): up to all
    GPUs of a node for GPU training; on CPUs 2 workers when 2 or more cores (gloo DDP pays
    off from 2), the rest of the cores run trials side by side.
    """
    gpus, cpus = int(totals.get("node_gpu", totals["GPU"])), int(totals["CPU"])
    wanted = gpus if gpus else min(2, cpus)
    workers = max(d for d in range(1, max(wanted, 1) + 1) if batch_size % d == 0)
    if gpus:
        concurrent = max(1, int(totals["GPU"]) // workers)
        cpus_per_worker = max(1, cpus // (concurrent * workers))
    else:
        cpus_per_worker = 1
        concurrent = max(1, cpus // workers)
    return {"workers_per_trial": workers, "cpus_per_worker": cpus_per_worker,
            "gpus_per_worker": 1 if gpus else 0, "max_concurrent_trials": concurrent}  # fmt: skip


def resources_line(resources: dict[str, Any]) -> str:
    """`resources: {...}` as a line to paste into a sweep file."""
    keys = ("workers_per_trial", "cpus_per_worker", "gpus_per_worker", "max_concurrent_trials")
    inner = ", ".join(f"{k}: {resources[k]:g}" for k in keys if k in resources)
    return f"resources: {{{inner}}}"


def validate_resources(spec, address: str | None = None,
                       fix: bool = False) -> tuple[list[str], list[str]]:  # fmt: skip
    """For `validate`: fit `resources: auto` (into `spec.resources`), and with `fix` a fitted
    `resources:` line to paste. Returns `(lines, problems)`: what the command line prints
    (the fitted resources), and the resource problems (each one line, a hint line after
    them)."""
    totals = cluster_totals(address) if address else local_totals()
    fitted = fit_resources(spec.base.get("batch_size", OptimConfig().batch_size), totals)
    lines = []
    if spec.auto_resources:
        spec.resources = {**spec.resources, **fitted}
        lines.append(f"resources: auto -> {resources_line(fitted)[11:]} "
                     f"({describe_totals(totals, address)})")  # fmt: skip
    if fix:
        lines.append(
            f"{describe_totals(totals, address)}; this fits it:\n  {resources_line(fitted)}"
        )
    problems = resource_problems(spec, address, totals)
    if problems and not fix:
        problems.append("hint: `python launch.py validate FILE --fix-resources` prints a "
                        "resources: line that fits (or write `resources: auto`)")  # fmt: skip
    return lines, problems
