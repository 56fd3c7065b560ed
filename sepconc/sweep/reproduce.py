"""A trial's resolved training config: the same in the trial, on its MLflow run and in `best --out`.

Everything that changes a trial's numbers is a config field with a definite value: the
DDP worker count (hence the per-rank batch `batch_size / num_workers`), the seed, the
device (`auto` resolved the way a trial's worker resolves it), the front-end cache and
the phase method, with every default written out. `train --config best.yaml` then runs
the trial again: `num_workers` local DDP processes, same seed, same data order.
"""

from __future__ import annotations

from typing import Any

from sepconc.config import Config

# Per-run plumbing, not part of what a trial computes: never exported for a retrain.
NOT_EXPORTED = {"tracking", "tracking_uri", "experiment", "checkpoint_every", "checkpoint_keep",
                "out", "resume", "cache_dir", "evaluate"}  # fmt: skip


def run_settings(base: dict[str, Any], params: dict[str, Any], workers: int,
                 gpus_per_worker: float) -> dict[str, Any]:  # fmt: skip
    """`num_workers`, `seed` (0 unless swept or set) and the device a trial's workers use."""
    device = params.get("device", base.get("device", "auto"))
    if device == "auto":  # Ray shows a worker a GPU only when the trial asks for one
        device = "cuda" if gpus_per_worker else "cpu"
    seed = params.get("seed", base.get("seed", 0))
    return {"num_workers": workers, "seed": seed, "device": device}


def resolved_trial_config(base: dict[str, Any], params: dict[str, Any], workers: int,
                          gpus_per_worker: float) -> dict[str, Any]:  # fmt: skip
    """Every field of the trial's config (defaults included) minus the per-run plumbing.

    Values the sweep file gives keep its spelling (`frame_width: 256`, not the padded
    `[256]`: the same config, and the tables read as the file does).
    """
    settings = run_settings(base, params, workers, gpus_per_worker)
    flat = {**base, **params, **settings}
    resolved = {**Config.from_flat(flat, where="trial").to_flat(), **flat}
    return {k: v for k, v in resolved.items() if k not in NOT_EXPORTED}
