"""One sweep trial: a Tune function trainable that runs a Ray Train `TorchTrainer`.

Tune calls `run_trial(tune_config)` in a trial actor; it builds a TorchTrainer
(Ray Train V2) with `workers_per_trial` DDP workers (gloo on CPU, NCCL on GPU)
whose loop is `sepconc.train`. Every epoch every rank calls `ray.train.report`
(rank 0 attaches the checkpoint) and Tune's `TuneReportCallback` forwards rank
0's metrics to the scheduler, whose time axis is the reported `epoch`.

The Train run's name is derived from the trial id, so a retried or resumed trial
finds its own checkpoints in storage and continues from the last one.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Report latency: Ray Train polls workers on this interval (2 s by default) before
# a report reaches Tune; 0.5 s cuts the wait per epoch (measured in PERFORMANCE).
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def run_trial(tune_config: dict[str, Any], sweep: dict[str, Any]) -> None:
    """The Tune trainable. `sweep` holds what is fixed for the whole sweep (picklable)."""
    import ray.tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    if sweep["workers"] == 1:
        return run_in_trial_process(tune_config, sweep, trial_id)
    flat = trial_flat(tune_config, sweep, trial_id)
    gpus = sweep["gpus_per_worker"]
    resources = {"CPU": sweep["cpus_per_worker"], **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"flat": flat, "trial_id": trial_id, "cache_dir": sweep.get("cache_dir")},
        scaling_config=ScalingConfig(num_workers=sweep["workers"], use_gpu=gpus > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=f"trial-{trial_id}",
            storage_path=sweep["train_storage"],
            failure_config=FailureConfig(max_failures=sweep["max_retries"],
                                         controller_failure_limit=2),
            checkpoint_config=CheckpointConfig(num_to_keep=sweep["checkpoint_keep"]),
            callbacks=[TuneReportCallback()],
            worker_runtime_env={"env_vars": {k: os.environ.get(k, v) for k, v in RAY_ENV.items()}},
        ),
    )  # fmt: skip
    trainer.fit()


def trial_flat(tune_config: dict[str, Any], sweep: dict[str, Any], trial_id: str) -> dict:
    """The flat training config of a trial: base + sampled params + the sweep's run settings."""
    from sepconc.sweep.reproduce import run_settings

    params = tune_config["params"]
    run = run_settings(sweep["base"], params, sweep["workers"], sweep["gpus_per_worker"])
    flat = {**sweep["base"], **params, **run}  # num_workers, seed, device: as on its MLflow run
    flat.update(tracking=False,
                checkpoint_every=sweep["checkpoint_every"], checkpoint_keep=sweep["checkpoint_keep"],
                out=str(Path(sweep["trials_dir"]) / trial_id) if sweep["trials_dir"] else None)  # fmt: skip
    if sweep.get("cache_dir") and not flat.get("cache_dir"):
        flat["cache_dir"] = sweep["cache_dir"]  # trials share the front-end cache <storage>/cache
    return flat


def run_in_trial_process(tune_config: dict[str, Any], sweep: dict[str, Any], trial_id: str) -> None:
    """A 1-worker trial trains in the Tune trial process itself: no Train worker group to start
    (~10 s per trial saved), reports go straight to Tune (`ray.tune.report`), and a retried or
    resumed trial continues from `ray.tune.get_checkpoint()`. Tune holds the worker's resources.
    """
    import ray.tune

    _train_with_reporter(trial_flat(tune_config, sweep, trial_id), trial_id,
                         ray.tune.get_checkpoint(), ray.tune.report, ray.tune.Checkpoint)  # fmt: skip


def worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: restore the checkpoint if any, then `sepconc.train`."""
    import ray.train

    _train_with_reporter(dict(loop_config["flat"]), loop_config["trial_id"],
                         ray.train.get_checkpoint(), ray.train.report, ray.train.Checkpoint)  # fmt: skip


def _train_with_reporter(flat: dict, trial_id: str, checkpoint, report, checkpoint_cls) -> None:
    """Restore the trial's last checkpoint if any, then `sepconc.train` reporting every epoch."""
    from sepconc.config import Config
    from sepconc.trainer import train

    scratch = Path(tempfile.mkdtemp(prefix="sepconc-trial-"))
    if flat.get("out") is None:
        flat["out"] = str(scratch / "run")
    if checkpoint is not None:
        restored = scratch / "restored"
        checkpoint.to_directory(str(restored))
        flat["resume"] = str(restored)
    config = Config.from_flat(flat, where=f"trial {trial_id}")
    reporter = RayReporter(scratch, _gather_nodes(), report, checkpoint_cls)
    try:
        train(config, hooks=[reporter])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class RayReporter:
    """Epoch hook: `report` (Train's or Tune's) on every rank; rank 0 attaches the checkpoint."""

    def __init__(self, scratch: Path, nodes: str, report, checkpoint_cls):
        self.scratch, self.nodes = scratch, nodes
        self.report, self.checkpoint_cls = report, checkpoint_cls

    def __call__(self, report) -> bool:
        checkpoint = None
        if report.checkpoint is not None:
            folder = self.scratch / f"report-{report.epoch:04d}"
            folder.mkdir()
            _link_or_copy(report.checkpoint, folder / report.checkpoint.name)
            checkpoint = self.checkpoint_cls.from_directory(str(folder))
        metrics = {**report.metrics, "sepconc_nodes": self.nodes}
        self.report(metrics, checkpoint=checkpoint)
        if checkpoint is not None:
            shutil.rmtree(checkpoint.path, ignore_errors=True)
        return False


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _gather_nodes() -> str:
    """Comma-separated node IPs of all ranks, in rank order (recorded as a tag)."""
    import ray
    import torch.distributed as dist

    ip = ray.util.get_node_ip_address()
    if dist.is_initialized() and dist.get_world_size() > 1:
        ips = [None] * dist.get_world_size()
        dist.all_gather_object(ips, ip)
        return ",".join(ips)
    return ip
