"""What a training writes into its run folder (rank 0 only); the rules that keep a folder
to one run and one lineage are `sepconc.run_folder`'s.

`config.yaml` (the resolved config, rerunnable with `train --config`), `data.json` (the
data set's identity, e.g. ImageNet classes chosen), `metrics.jsonl` (one JSON object per
epoch), `checkpoints/epoch_NNNN.pt`, `result.json` (written at the end).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from sepconc.checkpoint import checkpoint_path, list_checkpoints, save_checkpoint
from sepconc.config import Config
from sepconc.run_folder import prepare_run_folder


def write_run_files(run_dir: Path, config: Config, identity: dict, epoch: int, resumed: bool,
                    row: dict | None) -> None:  # fmt: skip
    """Write `config.yaml` and `data.json`, and make the folder's lineage continue at `epoch`
    (`prepare_run_folder`; not for `--evaluate`, which leaves the lineage as it is)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.yaml")
    (run_dir / "data.json").write_text(json.dumps(identity, indent=1, default=str))
    if not config.run.evaluate:
        prepare_run_folder(run_dir, epoch, resumed, row)


def save_epoch_checkpoint(run_dir: Path, net, optimizer, epoch: int, best: float,
                          config: Config, metrics: dict) -> Path:  # fmt: skip
    """Write `checkpoints/epoch_NNNN.pt` (model, optimizer, epoch, best val_acc1, flat config,
    metrics row, random state), keeping the newest `run.checkpoint_keep`; returns its path."""
    row = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
             "best_val_acc1": best, "config": config.to_flat(), "metrics": row,
             "rng_cpu": torch.get_rng_state()}  # fmt: skip
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    return save_checkpoint(state, checkpoint_path(run_dir / "checkpoints", epoch),
                           keep=config.run.checkpoint_keep)  # fmt: skip


def append_metrics(run_dir: Path, row: dict) -> None:
    """Add one epoch's row to `metrics.jsonl`."""
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")


def write_result(run_dir: Path, result) -> None:
    """Write `result.json` (a `TrainResult` as JSON)."""
    (run_dir / "result.json").write_text(json.dumps(asdict(result), indent=1))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Newest checkpoint of a run folder, or None."""
    found = list_checkpoints(run_dir / "checkpoints")
    return found[-1] if found else None
