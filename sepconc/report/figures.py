"""The report's figures: PNG files drawn with matplotlib's Agg canvas (no display, no pyplot).

Sweep figures: final metric against each swept parameter, learning curves, per-layer class
statistics of the best trial of each non-linearity, parallel coordinates. Run figures:
learning curves and per-layer statistics over epochs. Every function takes the collected
records (`sepconc.report.collect`) and the PNG path, and returns the path.
Accuracies are percentages (as logged); layers run input, block1, block2, ...
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sepconc.report.collect import SweepRecord, Trial, layers_of, ordered_values

DPI = 120
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
         "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 13,
         "axes.grid": True, "grid.alpha": 0.3}  # fmt: skip
STATUS = {
    "completed": {"marker": "o", "color": "tab:blue", "label": "completed"},
    "early_stopped": {"marker": "v", "color": "tab:orange", "label": "early-stopped (ASHA)"},
}
OTHER = {"marker": "s", "color": "tab:gray", "label": "running / other"}
STAT_AXES = {  # statistic -> (panel title, y label)
    "within_rel": ("within-class variability", "tr(S_W) / tr(S_W + S_B)"),
    "between_rel": ("between-class separation", "tr(S_B) / tr(S_W + S_B)"),
    "fisher": ("Fisher ratio", "tr(S_W^+ S_B) (log)"),
    "ncm_acc": ("nearest-class-mean accuracy", "probe accuracy (%)"),
}


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _short(trial: Trial, varying: list[str]) -> str:
    config = ", ".join(trial.params.get(k, "?") for k in varying)
    return f"{trial.name}: {config}" if config else trial.name


def metric_vs_params(record: SweepRecord, path: Path, metric: str = "val_acc1") -> Path:
    """Final `metric` of every non-failed trial against each varying parameter (categories)."""
    params = record.varying or ["(none)"]
    ncols = min(len(params), 3)
    nrows = math.ceil(len(params) / ncols)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(max(8.0, 4.0 * ncols), 4.6 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        for ax, param in zip(axes, params, strict=False):
            trials = [t for t in record.finished if not math.isnan(t.value(metric))]
            values = ordered_values([t.params.get(param, "-") for t in trials])
            for i, value in enumerate(values):
                group = [t for t in trials if t.params.get(param, "-") == value]
                for j, trial in enumerate(group):
                    style = STATUS.get(trial.status, OTHER)
                    offset = (j - (len(group) - 1) / 2) * min(0.08, 0.5 / len(group))
                    ax.scatter(i + offset, trial.value(metric), s=55, marker=style["marker"],
                               color=style["color"], edgecolor="black", linewidth=0.5, zorder=3)  # fmt: skip
                mean = sum(t.value(metric) for t in group) / len(group)
                ax.hlines(mean, i - 0.3, i + 0.3, color="black", linewidth=2, zorder=2)
            ax.set_xticks(range(len(values)), values)
            ax.set_xlim(-0.6, len(values) - 0.4)
            ax.set_xlabel(param)
        for ax in axes[len(params) :]:
            ax.set_visible(False)
        for ax in axes[::ncols]:
            ax.set_ylabel(f"final {metric} (%)")
        handles = [Line2D([], [], linestyle="", markeredgecolor="black", markersize=8,
                          marker=s["marker"], color=s["color"], label=s["label"])
                   for s in STATUS.values()]  # fmt: skip
        handles.append(Line2D([], [], color="black", linewidth=2, label="mean per value"))
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        failed = f", {len(record.failed)} failed omitted" if record.failed else ""
        fig.suptitle(f"Sweep {record.name}: final {metric} per swept value "
                     f"({len(record.finished)} trials{failed})")  # fmt: skip
        return _save(fig, path)


def learning_curves(record: SweepRecord, path: Path, metric: str = "val_acc1") -> Path:
    """`metric` per epoch for every trial; a cross where ASHA stopped a trial."""
    trials = [t for t in record.finished if t.history.get(metric)]
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
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        title = ", ".join(record.varying) if record.varying else "trial"
        ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        ax.set_title(f"Sweep {record.name}: learning curves ({len(trials)} trials)")
        return _save(fig, path)


def best_per_group(record: SweepRecord, key: str = "non_linearity", metric: str = "val_acc1"):
    """`{value of key: best trial}` over trials with per-layer statistics (best `best_metric`)."""
    best: dict[str, Trial] = {}
    for trial in record.finished:
        if not layers_of(trial.last):
            continue
        group = trial.params.get(key, "-")
        score = trial.last.get(f"best_{metric}", trial.value(metric))
        held = best.get(group)
        if held is None or score > held.last.get(f"best_{metric}", held.value(metric)):
            best[group] = trial
    return {g: best[g] for g in ordered_values(list(best))}


def _layer_panels(fig: Figure):
    axes = fig.subplots(2, 2, sharex=True).ravel()
    for ax, (stat, (title, ylabel)) in zip(axes, STAT_AXES.items(), strict=True):
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if stat == "fisher":
            ax.set_yscale("log")
    return dict(zip(STAT_AXES, axes, strict=True))


def _layer_values(values: dict[str, float], layers: list[str], stat: str) -> list[float]:
    scale = 100.0 if stat == "ncm_acc" else 1.0
    return [scale * values.get(f"{layer}/{stat}", math.nan) for layer in layers]


def layer_stats(record: SweepRecord, path: Path, metric: str = "val_acc1") -> Path:
    """Per-layer within/between/Fisher/NCM at the final epoch, best trial per non-linearity."""
    groups = best_per_group(record, "non_linearity", metric)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(9, 6.5), layout="constrained")
        panels = _layer_panels(fig)
        colors = {"relu": "tab:red", "softshrink": "tab:blue", "absolute": "tab:green"}
        for k, (group, trial) in enumerate(groups.items()):
            layers = layers_of(trial.last)
            label = f"{group}: best trial {trial.name} (final {trial.value(metric):.1f}%)"
            for stat, ax in panels.items():
                ax.plot(layers, _layer_values(trial.last, layers, stat), marker="o",
                        linewidth=2, color=colors.get(group, f"C{k}"), label=label)  # fmt: skip
        handles, labels = panels["within_rel"].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle(f"Sweep {record.name}: class statistics per layer at the final epoch\n"
                     f"(probe set; separation vs concentration, best trial per non-linearity)")  # fmt: skip
        return _save(fig, path)


def parallel_coordinates(record: SweepRecord, path: Path, metric: str = "val_acc1") -> Path:
    """One line per trial across normalized axes (varying params, final metric), by colour."""
    trials = [t for t in record.finished if not math.isnan(t.value(metric))]
    axes_names = [*record.varying, f"final {metric}"]
    finals = [t.value(metric) for t in trials]
    lo, hi = (min(finals), max(finals)) if finals else (0.0, 1.0)
    span = hi - lo or 1.0
    levels = {p: ordered_values([t.params.get(p, "-") for t in trials]) for p in record.varying}
    with matplotlib.rc_context({**STYLE, "axes.grid": False}):
        fig = Figure(figsize=(max(8.0, 2.2 * len(axes_names)), 5), layout="constrained")
        ax = fig.subplots()
        cmap = matplotlib.colormaps["viridis"]
        norm = matplotlib.colors.Normalize(lo, hi)
        for k, trial in enumerate(sorted(trials, key=lambda t: t.value(metric))):
            jitter = 0.06 * (k / max(len(trials) - 1, 1) - 0.5)  # unstack identical lines
            ys = [_level(levels[p], trial.params.get(p, "-")) + jitter for p in record.varying]
            ys.append((trial.value(metric) - lo) / span)
            ax.plot(range(len(axes_names)), ys, color=cmap(norm(trial.value(metric))),
                    linewidth=2.2, alpha=0.9, marker="o", markersize=4,
                    linestyle="--" if trial.status == "early_stopped" else "-")  # fmt: skip
        for i, param in enumerate(record.varying):
            ax.axvline(i, color="black", linewidth=1)
            for value in levels[param]:
                ax.text(i + 0.03, _level(levels[param], value), value, va="center", fontsize=10,
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7})  # fmt: skip
        last = len(axes_names) - 1
        ax.axvline(last, color="black", linewidth=1)
        for frac in (0.0, 0.5, 1.0):
            ax.text(last + 0.03, frac, f"{lo + frac * span:.1f}%", va="center", fontsize=10)
        ax.set_xticks(range(len(axes_names)), axes_names)
        ax.set_yticks([])
        ax.set_ylim(-0.08, 1.08)
        ax.set_xlim(-0.1, last + 0.4)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        colorbar = fig.colorbar(matplotlib.cm.ScalarMappable(norm, cmap), ax=ax, pad=0.02)
        colorbar.set_label(f"final {metric} (%)")
        ax.plot([], [], color="gray", linestyle="--", label="early-stopped")
        ax.plot([], [], color="gray", linestyle="-", label="completed")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=2, frameon=False)
        ax.set_title(f"Sweep {record.name}: parallel coordinates (axes normalized per parameter)")
        return _save(fig, path)


def _level(values: list[str], value: str) -> float:
    return values.index(value) / (len(values) - 1) if len(values) > 1 else 0.5


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
        return _save(fig, path)


def run_layer_history(trial: Trial, path: Path) -> Path:
    """Per-layer within/between/Fisher/NCM over the run's epochs (one line per epoch)."""
    layers = layers_of(trial.last)
    epochs = sorted({s for key, h in trial.history.items() if "/" in key for s, _ in h})
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(9, 6.5), layout="constrained")
        panels = _layer_panels(fig)
        cmap = matplotlib.colormaps["viridis"]
        for k, epoch in enumerate(epochs):
            color = cmap(k / max(len(epochs) - 1, 1))
            for stat, ax in panels.items():
                values = {f"{layer}/{stat}": dict(trial.history.get(f"{layer}/{stat}", [])).get(
                    epoch, math.nan) for layer in layers}  # fmt: skip
                ax.plot(layers, _layer_values(values, layers, stat), marker="o", color=color,
                        linewidth=2, label=f"epoch {epoch}")  # fmt: skip
        handles, labels = panels["within_rel"].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6),
                   frameon=False)  # fmt: skip
        fig.suptitle(f"Run {trial.name}: class statistics per layer, by epoch (probe set)")
        return _save(fig, path)
