"""A sweep's results as rows: `status`, `compare`, `best` (and `best --out`).

MLflow is the record: one child run per trial under the sweep's parent run, with the
trial's resolved parameters, per-epoch metrics and status tags. Reading, ranking and the
varying-params rule are `sepconc.tracking.read`'s; this module adds the sweep file (the
objective) and shapes rows. The command line prints them (`sepconc.cli.tables`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sepconc.config import FIELD_SECTION, Config
from sepconc.cost import COST_KEYS
from sepconc.errors import UserError
from sepconc.metrics.separation import FISHER_KEY
from sepconc.sweep.pareto import pareto_front, trial_points
from sepconc.sweep.paths import read_meta
from sepconc.sweep.reproduce import NOT_EXPORTED, run_settings
from sepconc.sweep.spec import load_sweep
from sepconc.tracking.epochs import common_epoch
from sepconc.tracking.read import (
    check_epoch,
    fetch_histories,
    load_run,
    mode_for,
    rank,
    score,
    sweep_trials,
    varying_params,
)
from sepconc.yamlio import dump_yaml, load_yaml


def _last_block(metrics: dict[str, float]) -> str | None:
    key = f"/{FISHER_KEY}"
    blocks = sorted({k.split("/")[0] for k in metrics if k.startswith("block") and k.endswith(key)})
    return blocks[-1] if blocks else None


def sweep_objectives(name: str, runs_dir: str | Path = "runs") -> tuple[list[str], list[str]]:
    """The sweep's objectives and their modes (`SweepSpec.metrics`/`.modes`), from the
    sweep file it was launched with."""
    meta = read_meta(name, runs_dir)
    spec = load_sweep(Path(runs_dir).resolve() / "sweeps" / name / "sweep.yaml",
                      meta.get("overrides", []), name)  # fmt: skip
    return spec.metrics, spec.modes


def sweep_objective(name: str, runs_dir: str | Path = "runs") -> tuple[str, str]:
    """The sweep's first objective and its mode (what trials are ranked by)."""
    metrics, modes = sweep_objectives(name, runs_dir)
    return metrics[0], modes[0]


def metric_mode(name: str, metric: str, runs_dir: str | Path = "runs") -> str:
    """The direction of `metric` for sweep `name`: the sweep's `mode` when `metric` is one of
    its objectives (and its sweep file is there), else `min` for a cost (`params`, `flops`)
    and `read.mode_for(metric)` for the rest."""
    if (Path(runs_dir).resolve() / "sweeps" / name / "sweep.yaml").is_file():
        metrics, modes = sweep_objectives(name, runs_dir)
        if metric in metrics:
            return modes[metrics.index(metric)]
    return "min" if metric in COST_KEYS else mode_for(metric)


def sweep_table(name: str, runs_dir: str | Path = "runs", metric: str | None = None,
                mode: str | None = None, at_epoch: int | None = None) -> list[dict]:  # fmt: skip
    """One row per trial: id, status, epoch, rung, the params that vary, then the metric.

    The varying params are `read.varying_params` (the one rule `report` uses too), their
    cells the text as logged. Metric columns: `<metric>_at_epoch<E>`, the metric at the
    common epoch E (the last epoch every non-failed trial with a value reached: the column
    to compare trials by, since ASHA stops them at different epochs), `final_<metric>` at
    the trial's own last epoch (`epoch`), `best_<metric>` (`read.score`: the trainer's
    `best_<metric>` where it logs one, val_acc1, else the best of the history), and the
    last block's Fisher ratio, within-class share and NCM accuracy (%) at the trial's last
    epoch. `at_epoch` (`compare --at-epoch E`) replaces the common epoch by E (a trial that
    stopped before E shows NaN). `metric` defaults to the sweep's own, `mode` to `metric_mode`; rows are ranked
    best first (`read.rank`, as `best` and `report` rank). [] before the first trial.
    """
    if metric is None:
        metric, sweep_mode = sweep_objective(name, runs_dir)
        mode = mode or sweep_mode
    mode = mode or metric_mode(name, metric, runs_dir)
    _, client, trials = sweep_trials(name, runs_dir)
    fetch_histories(client, trials, [metric])
    varying = varying_params(trials)
    common = common_epoch([t.history[metric] for t in trials if not t.failed])
    costs = [k for k in COST_KEYS if any(k in t.last for t in trials)]  # same columns every row
    if at_epoch is not None:  # `compare --at-epoch E`: every trial at E (nan: stopped before)
        check_epoch(trials, metric, at_epoch)
        common = at_epoch
    rows = []
    for trial in rank(trials, metric, mode):
        row: dict[str, Any] = {"trial": trial.name, "status": trial.status,
                               "epoch": int(trial.last.get("epoch", 0)),
                               "rung": "" if trial.rung is None else str(trial.rung)}  # fmt: skip
        row.update({k: trial.params.get(k, "") for k in varying})
        if common is not None:
            row[f"{metric}_at_epoch{common}"] = trial.at(metric, common)
        row[f"final_{metric}"] = trial.value(metric)
        row[f"best_{metric}"] = score(trial, metric, mode)
        row.update({k: trial.value(k) for k in costs})  # logged at step 0 (NaN: not logged)
        block = _last_block(trial.last)
        if block:  # separation/concentration of the last block at the last epoch
            for stat in (FISHER_KEY, "within_rel", "ncm_acc"):
                row[f"{block}_{stat}"] = trial.value(f"{block}/{stat}")
                row[f"{block}_{stat}_se"] = trial.value(f"{block}/{stat}_se")
        row["run_id"] = trial.run_id
        rows.append(row)
    return rows


def best_trials(name: str, k: int = 1, runs_dir: str | Path = "runs") -> list[dict]:
    """The top `k` rows of `sweep_table` among trials that did not fail; with several
    objectives, the whole Pareto front (`pareto_rows`) instead."""
    metrics, _ = sweep_objectives(name, runs_dir)
    if len(metrics) > 1:
        rows = pareto_rows(name, runs_dir)
    else:
        rows = [r for r in sweep_table(name, runs_dir) if r["status"] != "failed"][:k]
    if not rows:
        raise UserError(f"sweep '{name}' has no finished trial yet; see `status {name}`")
    return rows


def pareto_rows(name: str, runs_dir: str | Path = "runs") -> list[dict]:
    """The sweep's Pareto front (`pareto.pareto_front` over every objective's `score`, failed
    trials left out): one row per non-dominated trial, in order of the first objective
    (best first): `pick` (1, 2, ...: `best --pick N`), trial, status, epoch, the varying
    params, each objective's value, run_id."""
    metrics, modes = sweep_objectives(name, runs_dir)
    _, client, trials = sweep_trials(name, runs_dir)
    trials = [t for t in trials if not t.failed]
    fetch_histories(client, trials, [m for m in metrics if m not in COST_KEYS])
    points = trial_points(trials, metrics, modes)
    varying = varying_params(trials)
    rows = []
    for pick, i in enumerate(pareto_front(points, modes), start=1):
        trial = trials[i]
        row: dict[str, Any] = {"pick": pick, "trial": trial.name, "status": trial.status,
                               "epoch": int(trial.last.get("epoch", 0))}  # fmt: skip
        row.update({k: trial.params.get(k, "") for k in varying})
        row.update(
            {f"{m} ({mode})": v for m, mode, v in zip(metrics, modes, points[i], strict=True)}
        )
        row["run_id"] = trial.run_id
        rows.append(row)
    return rows


def export_config(name: str, run_id: str, out: Path, runs_dir: str | Path = "runs") -> Config:
    """Write the trial's full training config as YAML that `train --config` retrains.

    Exported: every field that changes the trial's numbers (`num_workers`, `seed`, `device`,
    `cache`, `phase_method`, ...), not the per-run plumbing (`reproduce.NOT_EXPORTED`).
    """
    meta = read_meta(name, runs_dir)
    _, trial = load_run(run_id, meta["tracking_uri"])
    flat = {k: load_yaml(v) for k, v in trial.params.items()
            if k in FIELD_SECTION and k not in NOT_EXPORTED}  # fmt: skip
    if "num_workers" not in flat:  # a run logged before the worker count was: the sweep's
        spec = load_sweep(Path(runs_dir).resolve() / "sweeps" / name / "sweep.yaml",
                          meta.get("overrides", []), name)  # fmt: skip
        flat.update(run_settings(spec.base, flat, spec.workers, spec.gpus_per_worker))
    config = Config.from_flat(flat, where=f"trial {run_id}")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(f"# best trial of sweep {name} (MLflow run {run_id})\n"
                   + dump_yaml(flat))  # fmt: skip
    tmp.replace(out)
    return config
