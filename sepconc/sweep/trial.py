"""One sweep trial: a Tune function trainable that trains `sepconc.train` in 1..N DDP workers.

Tune calls `run_trial(tune_config)` in a trial process. How its workers run depends on
`workers_per_trial` and on where they fit (`sweep["launcher"]`, chosen by the driver:
`sepconc.sweep.local_workers.choose_launcher`):

- **1 worker**: it trains in the trial process itself (`run_in_trial_process`); Tune
  holds the worker's resources and retries a failed trial (`max_retries`).
- **N workers that fit on one node** (`local`, the default): the trial process reserves
  all their CPUs/GPUs and runs them as local DDP processes forked from a forkserver that
  imported torch once (`sepconc.sweep.local_workers`): start-up in seconds, each report
  relayed to Tune as soon as rank 0 has it; Tune retries a failed trial (`max_retries`).
  In both cases Tune reuses the trial process for the next trial (`reuse_actors`): a
  stopped trial ends in `ray.tune.report` (`SystemExit`), its workers are killed.
- **N workers that do not fit on one node**, or `SEPCONC_TRIAL_LAUNCHER=ray_train`:
  a Ray Train (V2) `TorchTrainer` (`_fit_trainer`, gloo on CPU, NCCL on GPU) whose loop
  is `worker_loop`; Train retries failed workers itself (`max_retries`) and Tune's
  `TuneReportCallback` forwards rank 0's reports. Its worker group costs ~15 s a trial,
  and its trial process is not reused (`fit()` does not see Tune's stop: Tune ends it).

Every epoch rank 0 reports its metrics to Tune (with the checkpoint it wrote attached;
on Ray Train every rank calls `ray.train.report`, as Train requires), stamped
`sepconc_epoch_end` (`sepconc.sweep.report_latency`); Tune's scheduler's time axis is
the reported `epoch`.

A trial's checkpoints: Tune's (or the Train run's, named from the trial id) storage
holds what was reported, so a retried or resumed trial finds its own checkpoints; Tune's
folder of epoch E is `checkpoint_{E:06d}` (`sepconc.sweep.tune_checkpoints`). With
local storage a trial also has its own run folder `<storage>/trials/<sweep>/<id>/`,
written before each report reaches the driver, so after the driver was killed it can be
ahead of what Tune restores: a (re)started trial continues from the newer of the two
(`trial_resume`), and first re-reports the epochs Tune may not have received
(`RayReporter`, replayed epochs), so the driver's MLflow callback logs every epoch once.

Tracking: a trial trains with `tracking: false`, i.e. `sepconc.tracking.tracker.NoTracker`.
The driver's `MlflowSweepCallback` records every trial as a child run of the sweep from
what the trial reports to Tune, so a trial is never logged twice (nor as a `train` run).
With `tracking: {system_metrics: true}` the trial's process runs MLflow's own
`SystemMetricsMonitor` on that child run (`system/...` metrics: CPU, memory, disk,
network, GPU of the node the trial process runs on; every
`MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL` seconds, 10 by default).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Report latency: Ray Train polls workers on this interval (2 s by default) before
# a report reaches Tune; 0.5 s cuts the wait per epoch (measured in PERFORMANCE).
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def run_trial(tune_config: dict[str, Any], sweep: dict[str, Any]) -> None:
    """The Tune trainable. `sweep` holds what is fixed for the whole sweep (picklable)."""
    import ray.tune

    trial_id = ray.tune.get_context().get_trial_id()
    with system_metrics(sweep.get("system_metrics"), trial_id):
        if sweep["workers"] == 1:
            return run_in_trial_process(tune_config, sweep, trial_id)
        if sweep.get("launcher") == "local" and _holds_all_workers(sweep):
            return run_local_trial(tune_config, sweep, trial_id)
        _fit_trainer(tune_config, sweep, trial_id)


def _holds_all_workers(sweep: dict[str, Any]) -> bool:
    """Whether Tune reserved every worker's CPUs for this trial (a trial of a sweep started
    before local workers existed, restored with its old reservation, does not)."""
    import ray.tune

    try:
        held = ray.tune.get_context().get_trial_resources().required_resources
    except Exception:  # no reservation known: trust the driver's choice
        return True
    return held.get("CPU", 0) >= sweep["workers"] * sweep["cpus_per_worker"]


def _fit_trainer(tune_config: dict[str, Any], sweep: dict[str, Any], trial_id: str) -> None:
    """A multi-worker trial: a TorchTrainer of `sweep["workers"]` DDP workers."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    flat = _attempt_flat(tune_config, sweep, trial_id)
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


@contextlib.contextmanager
def system_metrics(target: dict[str, Any] | None, trial_id: str, wait_s: float = 60.0):
    """While the block runs, MLflow's `SystemMetricsMonitor` samples this node into the
    trial's child run (`target`: its store `uri`, `experiment_id` and `sweep`; the run is
    found by its `sepconc.trial_id` tag, waiting up to `wait_s` for the driver to create
    it). A no-op when `target` is None; a store problem is a warning, never the trial's
    failure."""
    monitor = None
    if target:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            run_id = _child_run(target, trial_id, wait_s)
            if run_id:
                monitor = SystemMetricsMonitor(run_id, tracking_uri=target["uri"],
                                               resume_logging=True)  # fmt: skip
                monitor.start()
            else:
                log.warning("trial %s: no MLflow run after %.0f s; no system metrics",
                            trial_id, wait_s)  # fmt: skip
        except Exception as exc:  # never the trial's failure
            log.warning("trial %s: system metrics not sampled (%s)", trial_id, exc)
    try:
        yield
    finally:
        if monitor is not None:
            _finish(monitor)


def _finish(monitor) -> None:
    """Stop MLflow's sampler; a trial shorter than one sampling interval (a warm trial
    process trains a small model in under a second) still logs the samples it took: the
    sampler's loop drops them when it is stopped before its first interval ends."""
    logged = getattr(monitor, "_logging_step", None)
    monitor.finish()
    try:
        if logged is not None and monitor._logging_step == logged:
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
    except Exception as exc:  # never the trial's failure
        log.warning("system metrics: last samples not logged (%s)", exc)


def _child_run(target: dict[str, Any], trial_id: str, wait_s: float) -> str | None:
    """The id of the trial's child run in `target`'s store, polled until `wait_s` passed."""
    from sepconc.tracking.store import TAG_SWEEP, TAG_TRIAL, tracking_client

    client = tracking_client(target["uri"])
    query = f"tags.`{TAG_TRIAL}` = '{trial_id}' and tags.`{TAG_SWEEP}` = '{target['sweep']}'"
    deadline = time.monotonic() + wait_s
    while True:
        found = client.search_runs([target["experiment_id"]], filter_string=query)
        if found or time.monotonic() > deadline:
            return found[0].info.run_id if found else None
        time.sleep(0.5)


def trial_flat(tune_config: dict[str, Any], sweep: dict[str, Any], trial_id: str) -> dict:
    """The flat training config of a trial: base + sampled params + the sweep's run settings."""
    from sepconc.sweep.reproduce import run_settings
    from sepconc.sweep.rules import resolve_per_block

    params = tune_config["params"]
    run = run_settings(sweep["base"], params, sweep["workers"], sweep["gpus_per_worker"])
    flat = {**sweep["base"], **params, **run}  # num_workers, seed, device: as on its MLflow run
    flat.update(tracking=False,  # the driver's callback records the trial (module docstring)
                checkpoint_every=sweep["checkpoint_every"], checkpoint_keep=sweep["checkpoint_keep"],
                out=str(Path(sweep["trials_dir"]) / trial_id) if sweep["trials_dir"] else None)  # fmt: skip
    if sweep.get("cache_dir") and not flat.get("cache_dir"):
        flat["cache_dir"] = sweep["cache_dir"]  # trials share the front-end cache <storage>/cache
    return resolve_per_block(flat)  # per-block rules' `{start, factor}` (sweep.rules)


def _attempt_flat(tune_config: dict[str, Any], sweep: dict[str, Any], trial_id: str) -> dict:
    """`trial_flat` plus `restart` (resume --restart-errored: see `train_with_reporter`)."""
    return {**trial_flat(tune_config, sweep, trial_id),
            "restart": sweep.get("restart_errored", False)}  # fmt: skip


def run_in_trial_process(tune_config: dict[str, Any], sweep: dict[str, Any], trial_id: str) -> None:
    """A 1-worker trial trains in the Tune trial process itself: no worker to start, reports
    go straight to Tune (`ray.tune.report`), and a retried or resumed trial continues from
    `ray.tune.get_checkpoint()`. Tune holds the worker's resources."""
    import ray.tune

    from sepconc.sweep.tune_checkpoints import report_by_epoch

    flat = _attempt_flat(tune_config, sweep, trial_id)
    train_with_reporter(flat, trial_id, ray.tune.get_checkpoint(), report_by_epoch,
                        ray.tune.Checkpoint)  # fmt: skip


def run_local_trial(tune_config: dict[str, Any], sweep: dict[str, Any], trial_id: str) -> None:
    """A one-node multi-worker trial: its workers are local processes of this trial process
    (`sepconc.sweep.local_workers`), resuming from `ray.tune.get_checkpoint()`."""
    import ray
    import ray.tune

    from sepconc.sweep.local_workers import run_local_workers
    from sepconc.sweep.tune_checkpoints import report_by_epoch

    flat = _attempt_flat(tune_config, sweep, trial_id)
    nodes = ",".join([ray.util.get_node_ip_address()] * sweep["workers"])
    run_local_workers(train_with_reporter, flat, trial_id, sweep, ray.tune.get_checkpoint(),
                      report_by_epoch, ray.tune.Checkpoint, nodes)  # fmt: skip


def worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: restore the checkpoint if any, then `sepconc.train`."""
    import ray.train

    train_with_reporter(dict(loop_config["flat"]), loop_config["trial_id"],
                        ray.train.get_checkpoint(), ray.train.report, ray.train.Checkpoint)  # fmt: skip


def train_with_reporter(flat: dict, trial_id: str, checkpoint, report, checkpoint_cls,
                        reports_dir: Path | None = None, nodes: str | None = None) -> None:  # fmt: skip
    """Restore the trial's last checkpoint if any, then `sepconc.train` reporting every epoch.

    `checkpoint`: Tune's or Train's (anything with `to_directory(path)`), or None.
    `report(metrics, checkpoint=checkpoint_cls.from_directory(folder))` on every rank.
    `reports_dir`: where rank 0 links each reported checkpoint, left for the receiver to
    remove (local workers); default a scratch folder removed once `report` returned.
    `nodes`: the ranks' node IPs as reported (default gathered through Ray and the group).
    `flat["restart"]` (resume --restart-errored): without a checkpoint from Tune, the trial
    starts from scratch even if its folder holds an earlier attempt (moved aside)."""
    from sepconc.checkpoint import checkpoint_epoch, list_checkpoints
    from sepconc.config import Config
    from sepconc.distributed import current_world
    from sepconc.sweep.pbt_clone import cloned_from
    from sepconc.trainer import on_main, train

    restart = flat.pop("restart", False)
    scratch = Path(tempfile.mkdtemp(prefix="sepconc-trial-"))
    restored = None
    if checkpoint is not None:
        restored = scratch / "restored"
        checkpoint.to_directory(str(restored))
    if flat.get("out") is None:  # no trial folder (remote storage): a fresh one each attempt
        flat["out"] = str(scratch / "run")
        flat["resume"] = str(restored) if restored else None
    else:
        donor = cloned_from(getattr(checkpoint, "path", None), trial_id)  # PBT: sweep/pbt_clone.py
        flat["resume"] = on_main(current_world(), trial_resume, Path(flat["out"]), restored,
                                 restart, donor)  # fmt: skip
    config = Config.from_flat(flat, where=f"trial {trial_id}")
    received = list_checkpoints(restored) if restored else []
    reporter = RayReporter(reports_dir or scratch, nodes or _gather_nodes(), report,
                           checkpoint_cls, checkpoint_epoch(received[-1]) if received else 0,
                           keep=reports_dir is not None)  # fmt: skip
    try:
        train(config, hooks=[reporter])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def trial_resume(out: Path, restored: Path | None, restart: bool,
                 donor: str | None = None) -> str | None:  # fmt: skip
    """What a (re)started trial resumes from, on rank 0: its folder `out` (returned) once it
    holds the newest checkpoint (Ray's `restored` one is copied in when it is newer), or
    None (start from scratch; an earlier attempt's files in `out` are moved aside).
    `donor`: PBT handed it trial `donor`'s checkpoint, which the folder adopts."""
    from sepconc.checkpoint import checkpoint_epoch, list_checkpoints
    from sepconc.run_folder import abandon_run
    from sepconc.sweep.pbt_clone import adopt_clone

    if donor and restored is not None:
        adopt_clone(out, restored, donor)

    folder = out / "checkpoints"
    received = list_checkpoints(restored) if restored else []
    own = list_checkpoints(folder)
    if restored is None and restart:
        abandon_run(out, "restarted from scratch (resume --restart-errored)")
        return None
    if received and (not own or checkpoint_epoch(received[-1]) > checkpoint_epoch(own[-1])):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{received[-1].name}.tmp-{os.getpid()}"
        shutil.copy2(received[-1], tmp)
        os.replace(tmp, folder / received[-1].name)
        own = list_checkpoints(folder)
    if own:
        return str(out)
    abandon_run(out, "an earlier attempt left no checkpoint; the trial starts over")
    return None


class RayReporter:
    """Epoch hook: `report` (Train's or Tune's) on every rank; rank 0 attaches the checkpoint
    (hard-linked into `scratch/report-EEEE/`, removed once `report` returned unless `keep`).

    A replayed epoch (the trial was resumed from its folder) is reported, without a
    checkpoint, only if it is after `received` (the epoch of the checkpoint Tune restored,
    whose reports Tune had): Tune and the MLflow callback then see every epoch. A new
    epoch's metrics carry `sepconc_epoch_end` (`time.time()` now: report latency)."""

    def __init__(self, scratch: Path, nodes: str, report, checkpoint_cls, received: int = 0,
                 keep: bool = False):  # fmt: skip
        self.scratch, self.nodes = scratch, nodes
        self.report, self.checkpoint_cls = report, checkpoint_cls
        self.received, self.keep = received, keep

    def __call__(self, report) -> bool:
        if report.replayed:
            if report.epoch > self.received:
                self.report({**report.metrics, "sepconc_nodes": self.nodes})
            return False
        checkpoint = None
        if report.checkpoint is not None:
            folder = self.scratch / f"report-{report.epoch:04d}"
            folder.mkdir()
            _link_or_copy(report.checkpoint, folder / report.checkpoint.name)
            checkpoint = self.checkpoint_cls.from_directory(str(folder))
        metrics = {**report.metrics, "sepconc_nodes": self.nodes, "sepconc_epoch_end": time.time()}
        self.report(metrics, checkpoint=checkpoint)
        if checkpoint is not None and not self.keep:
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
