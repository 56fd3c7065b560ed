"""The report's figures: PNG files drawn with matplotlib's Agg canvas (no display, no pyplot).

Sweep figures: the metric against each swept parameter, learning curves, parallel
coordinates (here) and per-layer class statistics (`layer_figures`). Run figures: learning
curves (here) and per-layer statistics over epochs. Every function takes the collected
records (`sepconc.report.collect`) and the PNG path, and returns the path.

Trials are compared only at epochs they all reached (`sepconc.tracking.epochs`): ASHA stops
trials at different epochs, and a stopped trial's epoch-1 value beside a completed trial's
epoch-4 value compares training lengths, not configurations. Each figure names the epoch
it compares. Accuracies are percentages (as logged).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sepconc.report.collect import SweepRecord, Trial, ordered_values, short_value
from sepconc.report.layer_figures import layer_stats, run_layer_history
from sepconc.report.style import OTHER, STATUS, STYLE, save

LABEL_BOX = {"facecolor": "white", "edgecolor": "0.6", "alpha": 0.85, "pad": 2}


def _short(trial: Trial, varying: list[str]) -> str:
    config = ", ".join(short_value(trial.params.get(k, "?")) for k in varying)
    return f"{trial.name}: {config}" if config else trial.name


def metric_vs_params(record: SweepRecord, path: Path, metric: str = "val_acc1") -> Path:
    """`metric` against each varying parameter: one row per comparison epoch.

    Row 1 holds every trial at the common epoch; later rows the trials that reached a
    later stop epoch (ASHA rung or the end). A black bar is the mean of one value's trials
    at that row's epoch.
    """
    params = record.varying or ["(none)"]
    epochs = record.comparison_epochs(metric) or [None]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(max(8.0, 3.8 * len(params)), 0.6 + 3.4 * len(epochs)),
                     layout="constrained")  # fmt: skip
        grid = fig.subplots(len(epochs), len(params), sharey="row", squeeze=False)
        for row, epoch in zip(grid, epochs, strict=True):
            trials = [t for t in record.compared(metric) if not math.isnan(t.at(metric, epoch))]
            for ax, param in zip(row, params, strict=True):
                _strip(ax, trials, param, metric, epoch)
            row[0].set_ylabel(f"{metric} at epoch {epoch} (%)\n{len(trials)} trials")
        handles = [Line2D([], [], linestyle="", markeredgecolor="black", markersize=8,
                          marker=s["marker"], color=s["color"], label=s["label"])
                   for s in STATUS.values()]  # fmt: skip
        handles.append(Line2D([], [], color="black", linewidth=2, label="mean per value"))
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        failed = f", {len(record.failed)} failed omitted" if record.failed else ""
        fig.suptitle(f"Sweep {record.name}: {metric} per swept value, every trial read at the "
                     f"same epoch{failed}\nrow 1: epoch {epochs[0]}, the last all trials "
                     f"reached; rows below: only the trials ASHA kept to that epoch")  # fmt: skip
        return save(fig, path)


def _strip(ax, trials: list[Trial], param: str, metric: str, epoch: int | None) -> None:
    values = ordered_values([t.params.get(param, "-") for t in trials])
    for i, value in enumerate(values):
        group = [t for t in trials if t.params.get(param, "-") == value]
        for j, trial in enumerate(group):
            style = STATUS.get(trial.status, OTHER)
            offset = (j - (len(group) - 1) / 2) * min(0.08, 0.5 / len(group))
            ax.scatter(i + offset, trial.at(metric, epoch), s=55, marker=style["marker"],
                       color=style["color"], edgecolor="black", linewidth=0.5, zorder=3)  # fmt: skip
        mean = sum(t.at(metric, epoch) for t in group) / len(group)
        ax.hlines(mean, i - 0.3, i + 0.3, color="black", linewidth=2, zorder=2)
    labels = [short_value(v) for v in values]
    crowded = len(values) > 4 or max(map(len, labels), default=0) * len(values) > 24
    ax.set_xticks(range(len(values)), labels, rotation=45 if crowded else 0)
    ax.set_xlim(-0.6, len(values) - 0.4)
    ax.set_xlabel(param)


def learning_curves(record: SweepRecord, path: Path, metric: str = "val_acc1") -> Path:
    """`metric` per epoch for every trial; a cross where ASHA stopped a trial."""
    trials = record.compared(metric)
    epochs = record.comparison_epochs(metric)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10, 5), layout="constrained")
        ax = fig.subplots()
        colors = matplotlib.colormaps["tab20" if len(trials) > 10 else "tab10"]
        for k, trial in enumerate(sorted(trials, key=lambda t: t.name)):
            steps, values = zip(*trial.history[metric], strict=True)
            color = colors(k % colors.N)
            ax.plot(steps, values, marker="o", markersize=4, color=color, linewidth=1.6,
                    label=_short(trial, record.varying))  # fmt: skip
            if trial.status == "early_stopped":
                ax.plot(steps[-1], values[-1], marker="X", markersize=12, color=color,
                        markeredgecolor="black", linestyle="")  # fmt: skip
        ax.plot([], [], marker="X", markersize=10, color="white", markeredgecolor="black",
                linestyle="", label="stopped by ASHA (rung = last epoch)")  # fmt: skip
        for epoch in epochs:
            ax.axvline(epoch, color="0.4", linestyle=":", linewidth=1.2, zorder=1)
        if epochs:
            ax.plot([], [], color="0.4", linestyle=":", label="epochs the report compares at")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        title = ", ".join(record.varying) if record.varying else "trial"
        ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        ax.set_title(f"Sweep {record.name}: learning curves ({len(trials)} trials)")
        return save(fig, path)


def parallel_coordinates(record: SweepRecord, path: Path, metric: str = "val_acc1") -> Path:
    """One line per trial: its parameter values, then `metric` at each comparison epoch.

    Parameter axes are categorical: each value owns a band and the trials with that value
    spread across it (ranked by `metric` at the common epoch), so two-valued parameters
    do not collapse lines. Each metric axis spans its epoch's lowest to highest value
    (labelled); a line ends at the last comparison epoch its trial reached. Colour:
    `metric` at the common epoch.
    """
    epochs = record.comparison_epochs(metric)
    first = epochs[0] if epochs else None
    trials = [t for t in record.compared(metric) if not math.isnan(t.at(metric, first))]
    trials.sort(key=lambda t: (t.at(metric, first), t.name))  # worst first
    names = [*record.varying, *(f"{metric}\nat epoch {e}" for e in epochs)]
    scales = {e: _scale(_at(trials, metric, e)) for e in epochs}
    bands = {p: _bands(trials, p) for p in record.varying}
    with matplotlib.rc_context({**STYLE, "axes.grid": False}):
        fig = Figure(figsize=(max(8.0, 2.3 * len(names)), 5.5), layout="constrained")
        ax = fig.subplots()
        cmap = matplotlib.colormaps["viridis"]
        low, span = _scale(_at(trials, metric, first))
        norm = matplotlib.colors.Normalize(low, low + span)
        for trial in trials:
            ys = [bands[p][trial.run_id] for p in record.varying]
            ys += [(v - scales[e][0]) / scales[e][1] for e in epochs
                   if not math.isnan(v := trial.at(metric, e))]  # fmt: skip
            ax.plot(range(len(ys)), ys, color=cmap(norm(trial.at(metric, first))), linewidth=2,
                    alpha=0.9, marker="o", markersize=4,
                    linestyle="--" if trial.status == "early_stopped" else "-")  # fmt: skip
        for i, param in enumerate(record.varying):
            ax.axvline(i, color="black", linewidth=1)
            levels = ordered_values([t.params.get(param, "-") for t in trials])
            for value in levels:
                ax.text(i - 0.04, _centre(levels, value), short_value(value), va="center", ha="right",
                        fontsize=10, bbox=LABEL_BOX, zorder=4)  # fmt: skip
        for i, epoch in enumerate(epochs, len(record.varying)):
            ax.axvline(i, color="black", linewidth=1)
            low, span = scales[epoch]
            for frac in (0.0, 0.5, 1.0):
                ax.text(i - 0.04, frac, f"{low + frac * span:.1f}%", va="center", ha="right",
                        fontsize=9, bbox=LABEL_BOX, zorder=4)  # fmt: skip
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks([])
        ax.set_ylim(-0.2, 1.2)
        ax.set_xlim(-0.4, len(names) - 0.7)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        colorbar = fig.colorbar(matplotlib.cm.ScalarMappable(norm, cmap), ax=ax, pad=0.02)
        colorbar.set_label(f"{metric} at epoch {first} (%)")
        ax.plot([], [], color="gray", linestyle="--", label="early-stopped (line ends there)")
        ax.plot([], [], color="gray", linestyle="-", label="completed")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, frameon=False)
        ax.set_title(f"Sweep {record.name}: parallel coordinates ({len(trials)} trials)\n"
                     f"each value a band, its trials ranked in it by {metric} at epoch {first}; "
                     f"each {metric} axis spans that epoch's range")  # fmt: skip
        return save(fig, path)


def pareto(record: SweepRecord, path: Path, metrics: list[str], modes: list[str]) -> Path:
    """The Pareto front of a multi-objective sweep: the first objective against each other
    one (one panel each, log scale for `params`/`flops`), every finished trial a grey dot,
    the non-dominated trials (`sepconc.sweep.pareto`, as `best` lists them) in red,
    joined in order and numbered as `best --pick N` numbers them."""
    from sepconc.sweep.pareto import pareto_front, trial_points

    trials = record.finished
    points = trial_points(trials, metrics, modes)
    front = pareto_front(points, modes)
    others = list(range(1, len(metrics)))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.5 * len(others), 4.8), layout="constrained")
        axes = fig.subplots(1, len(others), squeeze=False)[0]
        for ax, j in zip(axes, others, strict=True):
            xs, ys = [p[j] for p in points], [p[0] for p in points]
            ax.scatter(xs, ys, color="0.6", s=30, label=f"trials ({len(trials)})", zorder=2)
            fx, fy = [xs[i] for i in front], [ys[i] for i in front]
            order = sorted(range(len(front)), key=lambda k: fx[k])
            ax.plot([fx[k] for k in order], [fy[k] for k in order], color="tab:red", marker="o",
                    markersize=7, linewidth=1.5, label=f"Pareto front ({len(front)})", zorder=3)  # fmt: skip
            for pick, (x, y) in enumerate(zip(fx, fy, strict=True), start=1):
                ax.annotate(str(pick), (x, y), textcoords="offset points", xytext=(5, 5),
                            fontsize=9, color="tab:red")  # fmt: skip
            if metrics[j] in ("params", "flops") and min(xs, default=0) > 0:
                ax.set_xscale("log")
            ax.set_xlabel(f"{metrics[j]} ({modes[j]})")
            ax.set_ylabel(f"{metrics[0]} ({modes[0]})")
            ax.legend(loc="best", frameon=False)
        fig.suptitle(f"Sweep {record.name}: Pareto front of {', '.join(metrics)}\nred: trials "
                     f"no other trial beats on every objective, numbered as `best --pick N`")  # fmt: skip
        return save(fig, path)


def _at(trials: list[Trial], metric: str, epoch: int | None) -> list[float]:
    return [t.at(metric, epoch) for t in trials]


def _scale(values: list[float]) -> tuple[float, float]:
    """`(lowest, span)` of the non-NaN `values` (span 1 when they are all equal)."""
    values = [v for v in values if not math.isnan(v)] or [0.0]
    return min(values), (max(values) - min(values)) or 1.0


def _centre(levels: list[str], value: str) -> float:
    return levels.index(value) / (len(levels) - 1) if len(levels) > 1 else 0.5


def _bands(trials: list[Trial], param: str) -> dict[str, float]:
    """`{run_id: height}` on a categorical axis: each value a band, its trials spread across it.

    `trials` come ranked (worst first); a band is +-0.12 around the value's centre (less
    when there are many values), so lines of trials sharing a value stay apart.
    """
    levels = ordered_values([t.params.get(param, "-") for t in trials])
    half = min(0.12, 0.35 / max(len(levels) - 1, 1))
    heights = {}
    for value in levels:
        group = [t for t in trials if t.params.get(param, "-") == value]
        for j, trial in enumerate(group):
            offset = (2 * j / (len(group) - 1) - 1) * half if len(group) > 1 else 0.0
            heights[trial.run_id] = _centre(levels, value) + offset
    return heights


def run_learning_curves(trial: Trial, path: Path) -> Path:
    """Train and validation top-1 per epoch of one run."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(8, 5), layout="constrained")
        ax = fig.subplots()
        for key, color in (("train_acc1", "tab:gray"), ("val_acc1", "tab:blue")):
            if trial.history.get(key):
                steps, values = zip(*trial.history[key], strict=True)
                ax.plot(steps, values, marker="o", color=color, linewidth=2, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="lower right")
        ax.set_title(f"Run {trial.name}: learning curves")
        return save(fig, path)


__all__ = ["layer_stats", "learning_curves", "metric_vs_params", "parallel_coordinates",
           "run_layer_history", "run_learning_curves"]  # fmt: skip
