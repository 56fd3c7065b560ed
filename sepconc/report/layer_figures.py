"""Per-layer class statistics figures: a sweep's best trial per non-linearity, or one run.

Four panels over the layers (input, block1, block2, ...): within-class share, between-class
share, cross-fitted Fisher ratio in a fixed number of leading principal directions (log) and
leave-one-out nearest-class-mean accuracy (%), on the trainer's fixed probe set
(`sepconc.metrics.separation`), each with +- 1 standard error bars. A reading guide under
the panels says how to read them (the within share can rise while the classes separate).
Sweep trials are drawn at one epoch they all logged statistics at, never at their own
last epochs.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from sepconc.errors import counted
from sepconc.metrics.separation import FISHER_K, FISHER_KEY
from sepconc.report.collect import SweepRecord, Trial, best_per_group, layers_of
from sepconc.report.style import STYLE, save
from sepconc.tracking.epochs import common_epoch

_TOTAL = r"$\mathbb{E}\,\|x-\mu\|^2$"
STAT_AXES = {  # statistic -> (panel title, y label); x: a feature, mu_y: its class's mean
    "within_rel": ("within-class share (concentration: lower)",
                   r"$\mathbb{E}\,\|x-\mu_y\|^2\ /\ $" + _TOTAL),
    "between_rel": ("between-class share", r"$\mathbb{E}\,\|\mu_y-\mu\|^2\ /\ $" + _TOTAL),
    FISHER_KEY: (f"Fisher ratio in {FISHER_K} leading PCs, cross-fitted (separation: higher)",
                 r"$\mathrm{tr}(\Sigma_W^{-1}\,\Sigma_B)$, held out (log)"),
    "ncm_acc": ("nearest-class-mean accuracy, leave-one-out", "probe accuracy (%)"),
}  # fmt: skip
GUIDE = ("How to read: all four measures are held out and comparable across layers of any "
         "dimension; classes separate where the Fisher ratio and the NCM accuracy rise. Bars: "
         "+-1 standard error of each value;\na block's change from the layer before has its own, "
         "smaller paired error (summary.txt: change). The shares weigh all directions alike: "
         "the within share can rise while the classes separate.")  # fmt: skip
COLORS = {"relu": "tab:red", "softshrink": "tab:blue", "absolute": "tab:green"}


def _panels(fig: Figure) -> dict:
    axes = fig.subplots(2, 2, sharex=True).ravel()
    for ax, (stat, (title, ylabel)) in zip(axes, STAT_AXES.items(), strict=True):
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if stat == FISHER_KEY:
            ax.set_yscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
            ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(1.5, 2, 3, 5, 7)))
    return dict(zip(STAT_AXES, axes, strict=True))


def _finish(fig: Figure, panels: dict, ncols: int) -> None:
    handles, labels = panels["within_rel"].get_legend_handles_labels()
    legend = fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=ncols,
        frameon=False,
        title=GUIDE,
        title_fontsize=9,
    )  # the guide heads the legend
    legend.get_title().set_color("0.25")


def _values(trial: Trial, layers: list[str], stat: str, epoch: int | None) -> list[float]:
    """`stat` per layer at `epoch` (None: the run's last values). NCM is logged in percent."""
    if epoch is None:
        return [trial.value(f"{layer}/{stat}") for layer in layers]
    return [trial.at(f"{layer}/{stat}", epoch) for layer in layers]


def _draw(ax, trial: Trial, layers: list[str], stat: str, epoch: int | None, **style) -> None:
    """`stat` per layer with +- 1 standard error bars (none where `<stat>_se` was not logged)."""
    values = _values(trial, layers, stat, epoch)
    errors = [0.0 if math.isnan(e) else e for e in _values(trial, layers, f"{stat}_se", epoch)]
    ax.errorbar(layers, values, yerr=errors, marker="o", linewidth=2, capsize=4, **style)


def stats_epoch(trials: list[Trial], at_most: int | None) -> int | None:
    """The largest epoch <= `at_most` at which every trial logged its per-layer statistics."""
    histories = []
    for trial in trials:
        layers = layers_of(trial.last)
        key = f"{layers[-1]}/within_rel" if layers else ""
        histories.append([(s, v) for s, v in trial.history.get(key, [])
                          if at_most is None or s <= at_most] or [(-1, math.nan)])  # fmt: skip
    epoch = common_epoch(histories)
    return epoch if epoch is not None and epoch >= 0 else None


def layer_stats(record: SweepRecord, path: Path, metric: str = "val_acc1") -> Path:
    """Per-layer statistics of the best trial per non-linearity, all read at one epoch.

    The best trial of each non-linearity is the one with the highest `metric` at the
    largest epoch every non-linearity has a trial at (`best_per_group`); the statistics
    are those of the largest epoch, up to that one, at which all of them logged statistics.
    """
    chosen_at, groups = best_per_group(record, "non_linearity", metric)
    epoch = stats_epoch(list(groups.values()), chosen_at)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10, 7.5), layout="constrained")
        panels = _panels(fig)
        for k, (group, trial) in enumerate(groups.items() if epoch is not None else []):
            layers = layers_of(trial.last)
            label = (f"{group}: {trial.name} ({metric} {trial.at(metric, chosen_at):.1f}% "
                     f"at epoch {chosen_at}; ran {counted(trial.epochs, 'epoch')})")  # fmt: skip
            for stat, ax in panels.items():
                _draw(ax, trial, layers, stat, epoch, color=COLORS.get(group, f"C{k}"),
                      label=label)  # fmt: skip
        if epoch is None:
            panels["within_rel"].text(0.5, 0.5, "no epoch with statistics in every group",
                                      ha="center", transform=panels["within_rel"].transAxes)  # fmt: skip
        _finish(fig, panels, ncols=1)
        fig.suptitle(f"Sweep {record.name}: class statistics per layer at epoch {epoch} "
                     f"(probe set)\nbest trial per non-linearity by {metric} at epoch "
                     f"{chosen_at}, the last epoch every non-linearity has a trial at")  # fmt: skip
        return save(fig, path)


def run_layer_history(trial: Trial, path: Path) -> Path:
    """Per-layer within/between/Fisher/NCM over the run's epochs (one line per epoch)."""
    layers = layers_of(trial.last)
    epochs = sorted({s for key, h in trial.history.items() if "/" in key for s, _ in h})
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10, 7.5), layout="constrained")
        panels = _panels(fig)
        cmap = matplotlib.colormaps["viridis"]
        for k, epoch in enumerate(epochs):
            color = cmap(k / max(len(epochs) - 1, 1))
            for stat, ax in panels.items():
                _draw(ax, trial, layers, stat, epoch, color=color, label=f"epoch {epoch}")
        _finish(fig, panels, ncols=min(len(epochs), 6) or 1)
        fig.suptitle(f"Run {trial.name}: class statistics per layer, by epoch (probe set)")
        return save(fig, path)
