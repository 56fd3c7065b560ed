"""Reports of sweeps and runs: figures and a text summary, read from MLflow (no Ray).

`sweep_report(name)` writes, under `runs/sweeps/NAME/report/` unless told otherwise:
`metric_vs_params.png`, `learning_curves.png`, `layer_stats.png`,
`parallel_coordinates.png`, `importance.png` (`sepconc.report.importance`), `pareto.png`
(a sweep with several objectives) and `summary.txt`, and logs them as artifacts
(`report/`) of the sweep's MLflow parent run. Trials are compared at epochs they all
reached, never at their own last epochs (`sepconc.tracking.epochs`).
`run_report(run_id, uri)` writes `learning_curves.png`,
`layer_stats.png` and `summary.txt` for one run and logs them to that run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sepconc.report import importance
from sepconc.report.collect import collect_run, collect_sweep
from sepconc.report.summary import format_run_summary, format_summary
from sepconc.tracking.store import tracking_client

log = logging.getLogger(__name__)

SWEEP_FIGURES = ("metric_vs_params", "learning_curves", "layer_stats", "parallel_coordinates")
RUN_FIGURES = ("learning_curves", "layer_stats")


@dataclass
class Report:
    """What a report wrote: the folder, its files (figures then summary.txt), the summary."""

    out: Path
    files: list[Path]
    summary: str


def sweep_report(name: str, runs_dir: str | Path = "runs", out: str | Path | None = None,
                 metric: str = "val_acc1", log_artifacts: bool = True) -> Report:  # fmt: skip
    """Figures and summary of sweep `name`; logged to its parent run when `log_artifacts`."""
    from sepconc.report import figures  # matplotlib only when drawing

    record = collect_sweep(name, str(runs_dir), metric)
    folder = Path(out) if out else Path(runs_dir) / "sweeps" / name / "report"
    folder.mkdir(parents=True, exist_ok=True)
    draw = {"metric_vs_params": figures.metric_vs_params,
            "learning_curves": figures.learning_curves,
            "layer_stats": figures.layer_stats,
            "parallel_coordinates": figures.parallel_coordinates}  # fmt: skip
    files = [draw[fig](record, folder / f"{fig}.png", metric) for fig in SWEEP_FIGURES]
    metrics, modes = _objectives(name, runs_dir)
    if len(metrics) > 1:  # several objectives: their Pareto front (sepconc.sweep.pareto)
        files.append(figures.pareto(record, folder / "pareto.png", metrics, modes))
    objectives = importance.sweep_objectives(name, runs_dir, metric)
    ranked = importance.sweep_importance(record, objectives)
    files.append(importance.draw(ranked, folder / "importance.png"))  # per key and objective
    summary = format_summary(record, metric, ranked)
    files.append(_write(folder / "summary.txt", summary))
    if log_artifacts:
        _log(record.meta["tracking_uri"], record.parent_run_id, files)
    return Report(folder, files, summary)


def run_report(run_id: str, tracking_uri: str, out: str | Path | None = None,
               runs_dir: str | Path = "runs", log_artifacts: bool = True) -> Report:  # fmt: skip
    """Learning curves, per-layer statistics over epochs and a summary of one MLflow run."""
    from sepconc.report import figures

    trial = collect_run(run_id, tracking_uri)
    folder = Path(out) if out else Path(runs_dir) / "reports" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    files = [figures.run_learning_curves(trial, folder / "learning_curves.png"),
             figures.run_layer_history(trial, folder / "layer_stats.png")]  # fmt: skip
    summary = format_run_summary(trial)
    files.append(_write(folder / "summary.txt", summary))
    if log_artifacts:
        _log(tracking_uri, run_id, files)
    return Report(folder, files, summary)


def _objectives(name: str, runs_dir: str | Path) -> tuple[list[str], list[str]]:
    """The sweep's objectives (one when its sweep file is not there)."""
    from sepconc.sweep.results import sweep_objectives

    if not (Path(runs_dir) / "sweeps" / name / "sweep.yaml").is_file():
        return ["val_acc1"], ["max"]
    return sweep_objectives(name, runs_dir)


def _write(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    return path


def _log(uri: str, run_id: str, files: list[Path]) -> None:

    client = tracking_client(uri)
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path="report")
    log.info("logged %d report files to MLflow run %s (artifacts/report)", len(files), run_id)


__all__ = ["Report", "run_report", "sweep_report"]
