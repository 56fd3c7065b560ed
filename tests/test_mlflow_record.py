"""What a user reads in MLflow: every run's whole config, only sepconc's metrics, the
experiment kind, reproducibility tags (real sqlite store, no Ray).

A sweep's record is written the way the driver writes it: `parent_run` for the parent and,
per trial, `MlflowSweepCallback`'s `on_trial_start` / `on_trial_result` /
`on_trial_complete` with a stand-in trial (`trial_id`, `config`, what Tune's `Trial`
exposes) and reports carrying Ray Tune's bookkeeping keys. A `train` run's record is
written by `MlflowTracker` driven as `sepconc.train` drives it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from sepconc.cli.train_cmd import config_from_args
from sepconc.config import Config, field_kind
from sepconc.sweep.callbacks import MlflowSweepCallback
from sepconc.sweep.driver import parent_run, sweep_paths
from sepconc.sweep.spec import load_sweep
from sepconc.tracking import record
from sepconc.tracking.store import (
    MODEL_TRAINING,
    PARENT,
    TAG_EXPERIMENT_KIND,
    experiment_id,
    is_documented_metric,
    open_client,
)
from sepconc.tracking.tracker import MlflowTracker
from sepconc.training.hooks import EpochReport, TrainResult
from sepconc.yamlio import load_yaml

SWEEP = """\
name: record
description: does a wider first frame help?
base: {dataset: synthetic, arch: scatnetblockanalysis, n_blocks: 2, P_proj_size: [8, 16],
       frame_width: 32, epochs: 2, batch_size: 50, weight_decay: 0.00001, workers: 0}
search:
  frame_width: {grid: [[16, 32], 64]}
  lr: {grid: [0.01]}
scheduler: {type: fifo}
resources: {workers_per_trial: 1, cpus_per_worker: 1, max_concurrent_trials: 1}
"""
# What Ray Tune adds to every report (and a trial's own node tag): none is a metric of ours.
RAY_KEYS = {"pid": 4242, "timestamp": 1764486000, "time_total_s": 3.5, "time_this_iter_s": 1.5,
            "training_iteration": 1, "iterations_since_restore": 1, "date": "2026-11-30_07-00",
            "hostname": "node", "node_ip": "10.0.0.1", "done": False, "trial_id": "t00000",
            "time_since_restore": 3.5, "experiment_tag": "0_lr=0.01",
            "sepconc_nodes": "10.0.0.1"}  # fmt: skip
EPOCH = {"train_loss": 1.5, "train_acc1": 40.0, "train_acc5": 90.0, "val_loss": 1.2,
         "val_acc1": 50.0, "val_acc5": 95.0, "lr": 0.01, "epoch_seconds": 2.0,
         "images_per_s": 500.0, "nonfinite_grads": 0.0, "best_val_acc1": 50.0,
         "block1/fisher": 1.5, "block1/frame/norm_ratio": 1.0, "input/ncm_acc": 30.0,
         "block2/fisher_class/3": 0.5}  # fmt: skip
REPRO_TAGS = ("sepconc.git_commit", "sepconc.git_dirty", "sepconc.version.torch",
              "sepconc.version.kymatio", "sepconc.version.ray", "sepconc.version.mlflow",
              "sepconc.device", "sepconc.workers", "sepconc.gpus_per_worker")  # fmt: skip
IDENTITY = {"name": "synthetic", "root": None, "sizes": {"train": 500, "val": 100},
            "classes": ["0", "1"]}  # fmt: skip


def same_typed(a, b) -> bool:
    """Equal values of the same types (lists: element by element)."""
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(
            same_typed(x, y) for x, y in zip(a, b))  # fmt: skip
    return type(a) is type(b) and a == b


def assert_whole_config(params: dict[str, str], flat: dict) -> None:
    """Every field of the config is a param that reads back with the config's type."""
    assert set(params) == set(flat)
    for key, value in flat.items():
        back = load_yaml(params[key])
        assert same_typed(back, value), (key, params[key], value)
        if value is not None and field_kind(key) == "float":
            assert isinstance(back, float), key


def retrain_config(client, run_id: str, tmp: Path) -> Config:
    """The run's `config.yaml` artifact read the way `launch.py train --config` reads it."""
    path = client.download_artifacts(run_id, "config.yaml", str(tmp))
    return config_from_args(argparse.Namespace(config_file=path))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the module (its schema takes seconds to create)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'runs' / 'mlflow.db'}"


@pytest.fixture(scope="module")
def sweep(store, tmp_path_factory):
    """A sweep of 2 trials recorded by the driver's code; returns (client, meta, trials dir)."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    spec = load_sweep(tmp_path / "sweep.yaml")
    paths = sweep_paths(spec, tmp_path / "runs")
    paths.meta_dir.mkdir(parents=True)
    (paths.meta_dir / "sweep.yaml").write_text(spec.text)
    uri = store
    client = open_client(uri)
    exp = experiment_id(client, spec.name, paths.runs_dir)
    parent = parent_run(client, exp, spec, paths.meta_dir)
    trials = tmp_path / "trials"
    fixed = {"base": spec.base, "workers": 1, "gpus_per_worker": 0, "checkpoint_every": 1,
             "checkpoint_keep": 2, "trials_dir": str(trials), "cache_dir": None}  # fmt: skip
    callback = MlflowSweepCallback(uri, exp, parent, spec.name, spec.base, spec.epochs,
                                   spec.scheduler, 1, 0, fixed)  # fmt: skip
    for i, params in enumerate(({"frame_width": [16, 32], "lr": 0.01},
                                {"frame_width": 64, "lr": 0.01})):  # fmt: skip
        trial = SimpleNamespace(trial_id=f"t{i:05d}", config={"params": params})
        (trials / trial.trial_id).mkdir(parents=True)
        (trials / trial.trial_id / "data.json").write_text(json.dumps(IDENTITY))
        callback.on_trial_start(0, [], trial)
        for epoch in (1, 2):
            callback.on_trial_result(0, [], trial, {"epoch": epoch, **EPOCH, **RAY_KEYS})
        callback.on_trial_complete(0, [], trial)
    return client, {"experiment": exp, "parent": parent, "callback": callback}, trials


def children(client, meta) -> dict:
    runs = client.search_runs([meta["experiment"]],
                              filter_string=f"tags.`{PARENT}` = '{meta['parent']}'")  # fmt: skip
    return {run.data.tags["sepconc.trial_id"]: run for run in runs}


def test_a_trial_run_holds_its_whole_config_and_a_config_yaml_train_accepts(sweep, tmp_path):
    client, meta, trials = sweep
    run = children(client, meta)["t00000"]
    trial = SimpleNamespace(trial_id="t00000", config={"params": {"frame_width": [16, 32],
                                                                   "lr": 0.01}})  # fmt: skip
    flat = meta["callback"].trial_config(trial)
    assert flat == Config.from_flat(flat).to_flat(), "every field, resolved"
    assert flat["frame_width"] == [16, 32] and flat["P_proj_size"] == [8, 16]
    assert flat["weight_decay"] == 1e-5 and flat["momentum"] == 0.9 and flat["seed"] == 0
    assert flat["out"] == str(trials / "t00000") and flat["tracking"] is True
    assert_whole_config(run.data.params, flat)
    assert retrain_config(client, run.info.run_id, tmp_path).to_flat() == {
        **flat, "out": None, "resume": None}  # fmt: skip
    padded = children(client, meta)["t00001"].data.params["frame_width"]
    assert padded == "[64, 2048]", "a per-block list as the trial built it, padded"


def test_only_sepconc_metrics_reach_mlflow(sweep):
    client, meta, _ = sweep
    for run in children(client, meta).values():
        keys = set(run.data.metrics)
        expected = {"epoch", "params", "flops", *EPOCH}  # the model's cost: at step 0
        assert keys == expected, keys ^ expected
        assert all(is_documented_metric(k) for k in keys)
    for key in RAY_KEYS:
        assert not is_documented_metric(key), key


def test_the_ui_opens_on_runs_named_by_their_values_with_the_sweep_described(sweep):
    client, meta, _ = sweep
    experiment = client.get_experiment(meta["experiment"])
    assert experiment.tags[TAG_EXPERIMENT_KIND] == MODEL_TRAINING == "custom_model_development"
    names = sorted(run.info.run_name for run in children(client, meta).values())
    assert names == ["frame_width=64 lr=0.01 (t00001)", "frame_width=[16, 32] lr=0.01 (t00000)"]
    parent = client.get_run(meta["parent"])
    assert parent.data.tags["mlflow.note.content"] == "does a wider first frame help?"
    assert [a.path for a in client.list_artifacts(meta["parent"])] == ["sweep.yaml"]


def test_every_run_carries_reproducibility_tags_and_the_data_identity(sweep):
    client, meta, _ = sweep
    commit, dirty = record.project_commit()
    for run in [client.get_run(meta["parent"]), *children(client, meta).values()]:
        tags = run.data.tags
        assert all(tags.get(k) for k in REPRO_TAGS), [k for k in REPRO_TAGS if k not in tags]
        assert (tags["sepconc.git_commit"], tags["sepconc.git_dirty"]) == (commit, dirty)
        assert (tags["sepconc.device"], tags["sepconc.workers"]) == ("cpu", "1")
        assert tags["sepconc.version.mlflow"] == __import__("mlflow").__version__
    for run in children(client, meta).values():
        tags = run.data.tags
        assert tags["sepconc.data.name"] == "synthetic"
        assert json.loads(tags["sepconc.data.sizes"]) == IDENTITY["sizes"]
        assert tags["sepconc.data.digest"] == record.data_tags(IDENTITY)["sepconc.data.digest"]
        artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
        assert artifacts == ["config.yaml", "data.json"]


def test_without_git_the_commit_tags_say_unknown(monkeypatch, tmp_path):
    monkeypatch.setattr(record, "PROJECT_DIR", tmp_path)  # not a git checkout
    record.project_commit.cache_clear()
    try:
        tags = record.reproducibility_tags("cpu", 2, 0)
    finally:
        record.project_commit.cache_clear()
    assert (tags["sepconc.git_commit"], tags["sepconc.git_dirty"]) == ("unknown", "unknown")
    assert "mlflow.source.git.commit" not in tags and tags["sepconc.workers"] == "2"


def test_a_train_run_holds_the_same_record(store, tmp_path, monkeypatch):
    """`MlflowTracker` driven as `sepconc.train` drives it (start, epochs, finish)."""
    monkeypatch.chdir(tmp_path)  # the default runs folder (artifacts) is ./runs
    uri = store
    run_dir = tmp_path / "run"
    config = Config.from_flat({"dataset": "synthetic", "arch": "scatnetblockanalysis",
                               "n_blocks": 2, "frame_width": [16], "seed": 3, "device": "cpu",
                               "out": str(run_dir), "tracking_uri": uri,
                               "weight_decay": 1e-5})  # fmt: skip
    tracker = MlflowTracker()
    tracker.start(config)
    run_dir.mkdir(exist_ok=True)
    config.save(run_dir / "config.yaml")
    (run_dir / "data.json").write_text(json.dumps(IDENTITY))
    tracker.log_epoch(EpochReport(1, {"epoch": 1, **EPOCH, **RAY_KEYS}, None, run_dir, 0))
    tracker.finish(TrainResult(str(run_dir), 1, False, 50.0))
    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    assert_whole_config(run.data.params, config.to_flat())
    assert config.to_flat()["frame_width"] == [16, 2048]
    saved = client.download_artifacts(tracker.run_id, "config.yaml", str(tmp_path))
    assert Path(saved).read_text() == (run_dir / "config.yaml").read_text()
    assert retrain_config(client, tracker.run_id, tmp_path) == config.replace(out=None)
    assert set(run.data.metrics) == {"epoch", *EPOCH}
    assert all(run.data.tags.get(k) for k in REPRO_TAGS)
    assert run.data.tags["sepconc.data.name"] == "synthetic"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[TAG_EXPERIMENT_KIND] == MODEL_TRAINING


def test_system_metrics_are_sampled_into_the_trial_run(store, monkeypatch):
    """`tracking: {system_metrics: true}`: the trial process finds its child run and runs
    MLflow's own sampler on it while it trains."""
    import time

    import ray  # noqa: F401 - puts Ray's bundled psutil on the path, as in a trial process

    from sepconc.sweep.trial import system_metrics

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    client = open_client(store)
    exp = experiment_id(client, "sampled", None)
    run = client.create_run(exp, tags={"sepconc.trial_id": "t7", "sepconc.sweep": "s"})
    target = {"uri": store, "experiment_id": exp, "sweep": "s"}
    with system_metrics(target, "t7", wait_s=5):
        time.sleep(1.0)
    keys = set(client.get_run(run.info.run_id).data.metrics)
    assert (
        "system/cpu_utilization_percentage" in keys
        and "system/system_memory_usage_megabytes" in keys
    )
    assert all(is_documented_metric(k) for k in keys)
    with system_metrics(None, "t7"):  # off: nothing is looked up
        pass


@pytest.mark.parametrize(("value", "problem"), [("yes", None), ("1", "must be bool")])
def test_the_sweep_file_switches_system_metrics_on(tmp_path, value, problem):
    from sepconc.errors import UserError

    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP + f"tracking: {{system_metrics: {value}}}\n")
    if problem is None:
        assert load_sweep(path).tracking == {"system_metrics": True}
    else:
        with pytest.raises(UserError, match=r"tracking\.system_metrics must be bool, got 1"):
            load_sweep(path)


def test_a_trial_shorter_than_one_sampling_interval_still_logs_system_metrics(tmp_path):
    """MLflow's sampler drops the samples of a loop stopped before its first interval ends;
    a warm trial process trains a small model faster than that (`trial._finish`)."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from sepconc.sweep.trial import _finish

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("sm"))
    monitor = SystemMetricsMonitor(run.info.run_id, sampling_interval=30, tracking_uri=uri)
    monitor.start()
    _finish(monitor)
    keys = client.get_run(run.info.run_id).data.metrics
    assert any(k.startswith("system/") for k in keys), keys


def pbt_sweep_callback(store, tmp_path, name: str, epochs: int):
    """`(client, experiment id, callback)`: the MLflow callback of a PBT sweep `name` of
    `epochs` epochs, its parent run created."""
    client = open_client(store)
    exp = experiment_id(client, name, tmp_path)
    parent = client.create_run(exp, run_name=name).info.run_id
    base = {"dataset": "synthetic", "arch": "analysis", "frame_width": [16], "epochs": epochs}
    return client, exp, MlflowSweepCallback(store, exp, parent, name, base, epochs, {"type": "pbt"})


def test_a_trial_started_during_an_outage_keeps_the_values_it_started_with(store, tmp_path):
    # its run is created when the store answers again, after PBT gave the trial new values
    client, exp, callback = pbt_sweep_callback(store, tmp_path, "late-start", epochs=2)
    callback._submit = callback._pending.append  # the store is down: operations wait
    trial = SimpleNamespace(trial_id="t00001", config={"params": {"lr": 1e-5}})
    callback.on_trial_start(0, [], trial)
    trial.config = {"params": {"lr": 0.012}}  # PBT's exploit, before the store answers
    del callback._submit
    assert callback._flush()
    run = client.search_runs([exp], filter_string="tags.`sepconc.trial_id` = 't00001'")[0]
    assert float(run.data.params["lr"]) == 1e-5


def test_a_pbt_clone_from_an_earlier_epoch_logs_the_epochs_it_trains_again(store, tmp_path):
    # asynchronous PBT: t1, at epoch 3, restarts from t0's checkpoint of epoch 2
    client, exp, callback = pbt_sweep_callback(store, tmp_path, "clone-back", epochs=4)
    trial = SimpleNamespace(trial_id="t00001", config={"params": {"lr": 1e-5}},
                            latest_checkpoint_result=None)  # fmt: skip
    callback.on_trial_start(0, [], trial)
    for epoch in (1, 2, 3):
        callback.on_trial_result(0, [], trial, {"epoch": epoch, "val_acc1": 5.0, "lr": 1e-5})
    trial.config = {"params": {"lr": 0.012}}
    trial.latest_checkpoint_result = SimpleNamespace(
        checkpoint=SimpleNamespace(path="/s/tune/clone-back/t00000/checkpoint_000001"),
        metrics={"epoch": 2, "val_acc1": 90.0},
    )
    callback.on_trial_start(0, [], trial)
    for epoch in (3, 4):
        callback.on_trial_result(0, [], trial, {"epoch": epoch, "val_acc1": 95.0, "lr": 0.012})
    trial.latest_checkpoint_result.checkpoint.path = "/s/tune/clone-back/t00001/checkpoint_2"
    callback.on_trial_start(0, [], trial)  # a retry from its own checkpoint: no epoch again
    callback.on_trial_result(0, [], trial, {"epoch": 4, "val_acc1": 99.0, "lr": 0.012})
    run = client.search_runs([exp], filter_string="tags.`sepconc.trial_id` = 't00001'")[0]
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "lr")]
    assert sorted(history) == [(1, 1e-5), (2, 1e-5), (3, 1e-5), (3, 0.012), (4, 0.012)]
    assert run.data.metrics["val_acc1"] == 95.0  # the newest step's value: the clone's
