"""A trial's model in MLflow (real sqlite store, a real 1-epoch training, no Ray).

The trial trains in its own folder as a sweep trial does (untracked, `trial_flat`); the
driver's callback records it (start, result, complete) and tags its final checkpoint;
`best NAME --register MODEL` logs the best trial's network as an MLflow PyTorch model and
registers it; `mlflow.pytorch.load_model` gives the checkpoint's logits.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlflow.pytorch
import pytest
import torch

import sepconc
from sepconc.config import Config
from sepconc.sweep.callbacks import MlflowSweepCallback
from sepconc.sweep.driver import parent_run, sweep_paths
from sepconc.sweep.spec import load_sweep
from sepconc.sweep.trial import trial_flat
from sepconc.tracking.models import TAG_CHECKPOINT, model_from_checkpoint
from sepconc.tracking.store import experiment_id, open_client
from tests.helpers import cli

pytestmark = pytest.mark.slow

SWEEP = """\
name: models
base: {dataset: synthetic, arch: scatnetblockanalysis, n_blocks: 2, P_proj_size: 8,
       frame_width: 16, frame_kernel_size: [4, 1], frame_stride: [4, 1], epochs: 1,
       batch_size: 100, workers: 0, stats_every: 0, device: cpu}
search: {lr: {grid: [0.01]}}
scheduler: {type: fifo}
resources: {workers_per_trial: 1, cpus_per_worker: 1, max_concurrent_trials: 1}
"""


def test_best_registers_a_model_that_gives_the_checkpoints_logits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    spec = load_sweep(tmp_path / "sweep.yaml")
    runs = tmp_path / "runs"
    paths = sweep_paths(spec, runs)
    paths.meta_dir.mkdir(parents=True)
    (paths.meta_dir / "sweep.yaml").write_text(spec.text)
    uri = f"sqlite:///{runs / 'mlflow.db'}"
    client = open_client(uri)
    exp = experiment_id(client, spec.name, runs)
    parent = parent_run(client, exp, spec, paths.meta_dir)
    meta = {"name": spec.name, "tracking_uri": uri, "experiment_id": exp,
            "parent_run_id": parent, "storage": str(runs), "overrides": []}  # fmt: skip
    (paths.meta_dir / "sweep.json").write_text(json.dumps(meta))
    fixed = {"base": spec.base, "workers": 1, "gpus_per_worker": 0, "checkpoint_every": 1,
             "checkpoint_keep": 2, "trials_dir": str(runs / "trials" / "models")}  # fmt: skip
    callback = MlflowSweepCallback(uri, exp, parent, spec.name, spec.base, spec.epochs,
                                   spec.scheduler, 1, 0, fixed)  # fmt: skip
    trial = SimpleNamespace(trial_id="t00000", config={"params": {"lr": 0.01}})
    callback.on_trial_start(0, [], trial)
    result = sepconc.train(Config.from_flat(trial_flat(trial.config, fixed, trial.trial_id)))
    callback.on_trial_result(0, [], trial, dict(result.metrics))
    callback.on_trial_complete(0, [], trial)

    (run,) = client.search_runs([exp], "tags.`sepconc.kind` = 'trial'")
    checkpoint = Path(run.data.tags[TAG_CHECKPOINT])
    assert checkpoint == Path(result.run_dir) / "checkpoints" / "epoch_0001.pt"
    assert cli("best", spec.name, "--register", "sepnet", "--runs-dir", str(runs)) == 0
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # `models:/` resolves through the registry URI
    loaded = mlflow.pytorch.load_model("models:/sepnet/1")
    net, config = model_from_checkpoint(checkpoint)
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # equal up to float rounding (the kernels may pick another path)
        torch.testing.assert_close(loaded.eval()(x), net(x), rtol=1e-5, atol=1e-6)
    assert config.to_flat()["lr"] == 0.01
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/input_example.json", "model/MLmodel"} <= artifacts
    extra = [a.path for a in client.list_artifacts(run.info.run_id, "model/extra_files")]
    assert extra == ["model/extra_files/config.yaml"]
