"""Real sweeps with a scheduler or a budget: `launch.py sweep | resume | status`, embedded
Ray, MLflow sqlite, `synthetic` images, 1-worker trials (each trains in its Tune process).

Proves:
- PBT (synch, 2 trials, lr perturbed every epoch): the weaker trial clones the stronger
  one's checkpoint and continues from it with the new lr: its folder holds the moved-aside
  own checkpoint (`checkpoints/cloned-*`), its MLflow run has the change in the tag
  `sepconc.pbt_changes`, `pbt/lr` logged at the epoch the new value starts, and the `lr`
  the trainer used that epoch (its own per-epoch metric) is the new value; the per-epoch
  history has each step once;
- `budget: {trials: 2}` of 4 trials stops the sweep after two trials, says so in the
  summary (2 not_started) and in `status`, keeps what was spent in `budget.json`, and
  `resume --set budget.trials=3` runs exactly one more trial (the remaining budget).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests import helpers

pytestmark = [pytest.mark.slow, pytest.mark.ray]

BASE = {"dataset": "synthetic", "arch": "analysis", "frame_width": [16], "frame_kernel_size": [4],
        "frame_stride": [4], "batch_size": 100, "lr": 0.01, "learning_rate_adjust_frequency": 10,
        "workers": 0, "seed": 0, "device": "cpu", "stats_every": 0}  # fmt: skip


def write_sweep(tmp_path: Path, name: str, epochs: int, lrs: list[float], **extra) -> Path:
    spec = {"name": name, "base": {**BASE, "epochs": epochs}, "search": {"lr": {"grid": lrs}},
            "resources": {"workers_per_trial": 1, "cpus_per_worker": 1,
                          "max_concurrent_trials": extra.pop("concurrent", 1)},
            "checkpoint": {"every": 1, "keep": 2}, **extra}  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(tmp_path: Path, *args: str):
    proc = helpers.launch(*args, "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path,
                          timeout=400, env=helpers.launch_env(keep_pythonpath=True))  # fmt: skip
    assert proc.returncode == 0, (
        f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return proc.stdout


def children(tmp_path: Path, name: str) -> list:
    from sepconc.tracking.store import tracking_client

    client = tracking_client(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`sepconc.kind` = 'trial'")
    return client, runs


def test_pbt_clone_continues_from_the_checkpoint_with_the_new_lr(tmp_path):
    mutations = {"lr": {"loguniform": [1e-5, 0.1]}}
    path = write_sweep(tmp_path, "pbt", 3, [0.01, 1e-5], concurrent=2,
                       scheduler={"type": "pbt", "perturbation_interval": 1, "synch": True,
                                  "quantile_fraction": 0.5, "resample_probability": 0,
                                  "mutations": mutations})  # fmt: skip
    run(tmp_path, "sweep", str(path))
    client, runs = children(tmp_path, "pbt")
    assert len(runs) == 2
    cloned = [r for r in runs if r.data.tags.get("sepconc.pbt_changes")]
    assert cloned, [r.data.tags for r in runs]
    # every change of either trial (whichever reported last when PBT exploited it: in synch
    # mode the exploit can come on the clone's own result, before the callbacks see it)
    for run_ in cloned:
        tag = run_.data.tags["sepconc.pbt_changes"]
        pbt_lr = {m.step: m.value for m in client.get_metric_history(run_.info.run_id, "pbt/lr")}
        used_lr = {m.step: m.value for m in client.get_metric_history(run_.info.run_id, "lr")}
        for change in tag.split("; "):  # "epoch 2: lr 1e-05 -> 0.012 (cloned <id>)"
            epoch = int(change.split(":")[0].split()[1])
            new_lr = float(change.split("-> ")[1].split()[0])
            donor = change.split("(cloned ")[1].rstrip(")")
            assert epoch >= 2 and donor in {r.data.tags["sepconc.trial_id"] for r in runs}, tag
            assert pbt_lr[epoch] == pytest.approx(new_lr, rel=1e-3), (tag, pbt_lr)
            assert used_lr[epoch] == pytest.approx(new_lr, rel=1e-3), (tag, used_lr)  # trained
            assert used_lr[epoch - 1] != pytest.approx(used_lr[epoch], rel=1e-6), (tag, used_lr)
        # pbt/lr at each step is the lr that epoch trained with (the initial one at step 1)
        assert all(used_lr[step] == pytest.approx(v, rel=1e-3) for step, v in pbt_lr.items())
        steps = [m.step for m in client.get_metric_history(run_.info.run_id, "val_acc1")]
        assert steps == [1, 2, 3]
        trial_id = run_.data.tags["sepconc.trial_id"]
        folder = tmp_path / "runs" / "trials" / "pbt" / trial_id / "checkpoints"
        assert list(folder.glob("cloned-*/epoch_*.pt")), sorted(p.name for p in folder.iterdir())


def test_trial_budget_stops_the_sweep_and_resume_spends_the_rest(tmp_path):
    path = write_sweep(tmp_path, "bud", 2, [0.01, 0.003, 0.001, 0.0003],
                       scheduler={"type": "fifo"}, budget={"trials": 2}, concurrent=2)  # fmt: skip
    out = run(tmp_path, "sweep", str(path))
    assert "budget 2 trials ended the sweep" in out and "2 trial(s) not_started" in out, out
    _, runs = children(tmp_path, "bud")
    # a trial Tune handed out but the budget held back before its first epoch may have a
    # run (created when Tune starts it): it trained nothing and is not completed
    trained = [r for r in runs if "val_acc1" in r.data.metrics]
    assert len(trained) == 2, [(r.data.tags.get("sepconc.status"), r.data.metrics) for r in runs]
    assert all(r.data.tags.get("sepconc.status") != "completed" for r in runs if r not in trained)
    state = json.loads((tmp_path / "runs" / "sweeps" / "bud" / "budget.json").read_text())
    assert len(state["spent"]["started"]) == 2 and state["spent"]["not_started"] == 2
    status = run(tmp_path, "status", "bud")
    assert "2 trial(s) not_started" in status, status

    out = run(tmp_path, "resume", "bud", "--set", "budget.trials=3")
    assert "budget 3 trials ended the sweep" in out and "1 trial(s) not_started" in out, out
    _, runs = children(tmp_path, "bud")
    trained = [r for r in runs if "val_acc1" in r.data.metrics]
    assert len(trained) == 3
    assert {r.data.tags["sepconc.status"] for r in trained} == {"completed"}
