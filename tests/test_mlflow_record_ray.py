"""A real small sweep (embedded Ray, sqlite store): what MLflow holds is enough to read and redo it.

`launch.py sweep` of 2 one-worker trials x 2 epochs on `synthetic`, with
`tracking: {system_metrics: true}`, then, from the store alone:
- a child run's params are its resolved config: every field, read back with the config's
  types, equal to the config the trial trained with (its run folder's `config.yaml`; the
  record says `tracking: true` in this store, the trial itself trained untracked);
- its `config.yaml` artifact retrains it: `train --config` gives the same first-epoch loss;
- no metric key outside sepconc's documented list (no `training_iteration`, `pid`, ...),
  and MLflow's `system/...` metrics are there;
- the experiment's kind is model training; parent and children carry the reproducibility
  tags; the parent the sweep's description and file;
- each trial's run names its final checkpoint; `best --register` registers the best
  trial's model, which `mlflow.pytorch.load_model` loads with the checkpoint's logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pytorch
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from sepconc.config import Config
from sepconc.tracking.models import TAG_CHECKPOINT, model_from_checkpoint
from sepconc.tracking.store import is_documented_metric
from sepconc.yamlio import load_yaml
from tests import helpers

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

BASE = {"dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 2,
        "P_proj_size": [8, 8], "frame_width": [16, 16], "frame_kernel_size": [4, 1],
        "frame_stride": [4, 1], "epochs": 2, "batch_size": 100, "workers": 0, "seed": 5,
        "stats_every": 1, "stats_probe_size": 100, "weight_decay": 0.00001}  # fmt: skip
SWEEP = {"name": "rec", "description": "record check", "base": BASE,
         "search": {"lr": {"grid": [0.01, 0.003]}}, "scheduler": {"type": "fifo"},
         "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1},
         "failure": {"max_retries": 0}, "tracking": {"system_metrics": True}}  # fmt: skip
REPRO = ("sepconc.git_commit", "sepconc.git_dirty", "sepconc.version.torch",
         "sepconc.version.kymatio", "sepconc.version.ray", "sepconc.version.mlflow",
         "sepconc.device", "sepconc.workers", "sepconc.gpus_per_worker")  # fmt: skip


def first_loss(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(r["train_loss"] for r in rows if r["epoch"] == 1)


def test_a_real_sweep_record_is_complete_and_reruns(tmp_path):
    runs = tmp_path / "runs"
    path = tmp_path / "rec.yaml"
    path.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    env = helpers.launch_env(keep_pythonpath=True, MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="0.5")
    proc = helpers.launch("sweep", path, "--runs-dir", runs, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rec")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (parent,) = client.search_runs([exp.experiment_id], "tags.`sepconc.kind` = 'sweep'")
    children = client.search_runs([exp.experiment_id], "tags.`sepconc.kind` = 'trial'")
    assert len(children) == 2
    assert parent.data.tags["mlflow.note.content"] == "record check"
    assert "sweep.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    for run in [parent, *children]:
        assert all(run.data.tags.get(k) for k in REPRO), run.info.run_name

    for run in children:
        trial_id = run.data.tags["sepconc.trial_id"]
        folder = runs / "trials" / "rec" / trial_id
        trained = Config.from_flat(load_yaml((folder / "config.yaml").read_text())).to_flat()
        logged = {k: load_yaml(v) for k, v in run.data.params.items()}
        assert set(logged) == set(trained)
        expected = {**trained, "tracking": True, "resume": None,
                    "tracking_uri": f"sqlite:///{runs / 'mlflow.db'}"}  # fmt: skip
        for key, value in expected.items():
            assert logged[key] == value and type(logged[key]) is type(value), key
        assert run.info.run_name.startswith(f"lr={logged['lr']:.4g} ")
        keys = set(run.data.metrics)
        assert {"val_acc1", "train_loss", "block2/fisher_k16"} <= keys
        assert any(k.startswith("system/") for k in keys), (run.info.run_name, sorted(keys))
        assert [k for k in keys if not is_documented_metric(k)] == []
        assert run.data.tags["sepconc.data.name"] == "synthetic"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "data.json"} <= artifacts
        assert Path(run.data.tags[TAG_CHECKPOINT]) == folder / "checkpoints" / "epoch_0002.pt"

    run = children[0]
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    again = tmp_path / "again"
    proc = helpers.launch("train", "--config", config, "--out", again, "--epochs", "1",
                          cwd=tmp_path, env=helpers.launch_env(), timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (logged,) = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")
                 if m.step == 1]  # fmt: skip
    assert first_loss(again) == pytest.approx(logged, rel=1e-6, abs=0)

    proc = helpers.launch("best", "rec", "--register", "recnet", "--runs-dir", runs,
                          cwd=tmp_path, env=helpers.launch_env(), timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    best_id = proc.stdout.split("registered ")[0].split()[-1]
    # both: `models:/` resolves through the registry URI, which an earlier in-process
    # `best --register` of another test may have pointed at its own store
    mlflow.set_tracking_uri(f"sqlite:///{runs / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{runs / 'mlflow.db'}")
    loaded = mlflow.pytorch.load_model("models:/recnet/1").eval()
    net, _ = model_from_checkpoint(client.get_run(best_id).data.tags[TAG_CHECKPOINT])
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=1e-5, atol=1e-6)
