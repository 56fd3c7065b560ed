"""Read a sweep's results back from MLflow: `status`, `compare`, `best` (and `best --out`).

MLflow is the record: one child run per trial under the sweep's parent run,
with the trial's resolved parameters, per-epoch metrics and status tags.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any

from sepconc.config import FIELD_SECTION, Config
from sepconc.errors import UserError
from sepconc.sweep.driver import read_meta
from sepconc.sweep.reproduce import NOT_EXPORTED, run_settings
from sepconc.sweep.spec import load_sweep
from sepconc.tracking.store import PARENT, TAG_RUNG, TAG_STATUS, TAG_TRIAL, tracking_client
from sepconc.yamlio import dump_yaml, load_yaml

# Internal per-trial settings that are not part of what the user swept.
HIDDEN_PARAMS = {"num_workers", "tracking", "checkpoint_every", "checkpoint_keep", "out", "resume",
                 "cache_dir"}  # fmt: skip


def trial_runs(name: str, runs_dir: str | Path = "runs") -> tuple[dict, list]:
    """The sweep's metadata and its child runs (MLflow `Run` objects)."""

    meta = read_meta(name, runs_dir)
    client = tracking_client(meta["tracking_uri"])
    runs = client.search_runs([meta["experiment_id"]],
                              filter_string=f"tags.`{PARENT}` = '{meta['parent_run_id']}'",
                              max_results=10000)  # fmt: skip
    return meta, runs


def _last_block(metrics: dict[str, float]) -> str | None:
    blocks = sorted({k.split("/")[0] for k in metrics if k.startswith("block") and "/fisher" in k})
    return blocks[-1] if blocks else None


def sweep_objective(name: str, runs_dir: str | Path = "runs") -> tuple[str, str]:
    """The sweep's `metric` and `mode`, from the sweep file it was launched with."""
    meta = read_meta(name, runs_dir)
    spec = load_sweep(Path(runs_dir).resolve() / "sweeps" / name / "sweep.yaml",
                      meta.get("overrides", []), name)  # fmt: skip
    return spec.metric, spec.mode


def sweep_table(name: str, runs_dir: str | Path = "runs", metric: str | None = None,
                mode: str | None = None) -> list[dict]:  # fmt: skip
    """One row per trial: id, status, epoch, rung, the params that vary, then the metric.

    Metric columns: `<metric>_at_epoch<E>`, the metric at the common epoch E (the last
    epoch every non-failed trial with a value reached: the column to compare trials by,
    since ASHA stops them at different epochs), `final_<metric>` at the trial's own last
    epoch (`epoch`), `best_<metric>` (the trainer's `best_<metric>` where it logs one,
    val_acc1, else the best of the history), and the last block's Fisher ratio, within-class
    share and NCM accuracy (%) at the trial's last epoch. `metric`/`mode` default to the
    sweep's own; rows are sorted best first (by `best_<metric>`, as `best` ranks).
    """
    from sepconc.report.epochs import common_epoch, value_at

    if metric is None or mode is None:
        metric, mode = sweep_objective(name, runs_dir)
    meta, runs = trial_runs(name, runs_dir)
    sign = 1.0 if mode == "max" else -1.0
    params = [r.data.params for r in runs]
    varying = sorted(k for k in set().union(*params) if k not in HIDDEN_PARAMS
                     and len({p.get(k) for p in params}) > 1) if params else []  # fmt: skip
    client = tracking_client(meta["tracking_uri"])
    histories = {r.info.run_id: _history(client, r.info.run_id, metric) for r in runs}
    status = {r.info.run_id: r.data.tags.get(TAG_STATUS, r.info.status.lower()) for r in runs}
    common = common_epoch([h for run_id, h in histories.items() if status[run_id] != "failed"])
    rows = []
    for run in runs:
        m, history = run.data.metrics, histories[run.info.run_id]
        row: dict[str, Any] = {"trial": run.data.tags.get(TAG_TRIAL, run.info.run_id[:8]),
                               "status": status[run.info.run_id], "epoch": int(m.get("epoch", 0)),
                               "rung": run.data.tags.get(TAG_RUNG, "")}  # fmt: skip
        row.update({k: run.data.params.get(k, "") for k in varying})
        if common is not None:
            row[f"{metric}_at_epoch{common}"] = value_at(history, common)
        row[f"final_{metric}"] = m.get(metric, math.nan)
        best = (max if mode == "max" else min)((v for _, v in history), default=math.nan)
        row[f"best_{metric}"] = m.get(f"best_{metric}", best)
        block = _last_block(m)
        if block:  # separation/concentration of the last block at the last epoch
            row[f"{block}_fisher"] = m.get(f"{block}/fisher", math.nan)
            row[f"{block}_within_rel"] = m.get(f"{block}/within_rel", math.nan)
            row[f"{block}_ncm_acc"] = m.get(f"{block}/ncm_acc", math.nan)
        row["run_id"] = run.info.run_id
        rows.append(row)
    rows.sort(key=lambda r: -_num(sign * r[f"best_{metric}"]))
    return rows


def _history(client, run_id: str, metric: str) -> list[tuple[int, float]]:
    return sorted((h.step, h.value) for h in client.get_metric_history(run_id, metric))


def _num(value) -> float:
    return value if isinstance(value, (int, float)) and not math.isnan(value) else -math.inf


def best_trials(name: str, k: int = 1, runs_dir: str | Path = "runs") -> list[dict]:
    """The top `k` trials by the sweep's metric and mode (completed or stopped)."""
    rows = [r for r in sweep_table(name, runs_dir) if r["status"] != "failed"]
    if not rows:
        raise UserError(f"sweep '{name}' has no finished trial yet; see `status {name}`")
    return rows[:k]


def export_config(name: str, run_id: str, out: Path, runs_dir: str | Path = "runs") -> Config:
    """Write the trial's full training config as YAML that `train --config` retrains.

    Exported: every field that changes the trial's numbers (`num_workers`, `seed`, `device`,
    `cache`, `phase_method`, ...), not the per-run plumbing (`reproduce.NOT_EXPORTED`).
    """
    meta = read_meta(name, runs_dir)
    run = tracking_client(meta["tracking_uri"]).get_run(run_id)
    flat = {k: load_yaml(v) for k, v in run.data.params.items()
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


def format_table(rows: list[dict], as_csv: bool = False) -> str:
    if not rows:
        return "(no trials yet)"
    columns = [c for c in rows[0] if c != "run_id"] + ["run_id"]
    if as_csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def print_table(rows: list[dict], title: str = "") -> None:
    if title:
        print(title)
    print(format_table(rows))


FLOAT_TEXT = re.compile(r"^-?\d+(\.\d+)?([eE]-?\d+)?$")


def _fmt(value) -> str:
    """A cell: floats (and float parameters, logged as text) at 4 significant digits."""
    if isinstance(value, str) and FLOAT_TEXT.match(value):
        value = float(value)  # a sampled lr is logged as 0.003123456789012345
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)
