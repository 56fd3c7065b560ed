"""Per-layer class statistics figures: a sweep's best trial per non-linearity, or one run.

Four panels over the layers (input, block1, block2, ...): within-class share, between-class
share, Fisher ratio (log) and nearest-class-mean accuracy (%), on the trainer's fixed probe
set (`sepconc.metrics.class_stats`). A reading guide under the panels says how the shares
and the Fisher ratio relate (the within share can rise while the classes separate better).
Sweep trials are drawn at one epoch they all logged statistics at, never at their own
last epochs.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from sepconc.report.collect import SweepRecord, Trial, best_per_group, layers_of
from sepconc.report.style import STYLE, save
from sepconc.tracking.epochs import common_epoch

_TOTAL = r"$\mathbb{E}\,\|x-\mu\|^2$"
STAT_AXES = {  # statistic -> (panel title, y label); x: a feature, mu_y: its class's mean
    "within_rel": ("within-class share (concentration: lower)",
                   r"$\mathbb{E}\,\|x-\mu_y\|^2\ /\ $" + _TOTAL),
    "between_rel": ("between-class share", r"$\mathbb{E}\,\|\mu_y-\mu\|^2\ /\ $" + _TOTAL),
    "fisher": ("Fisher ratio (separation: higher)", r"$\mathrm{tr}(\Sigma_W^{+}\,\Sigma_B)$ (log)"),
    "ncm_acc": ("nearest-class-mean accuracy", "probe accuracy (%)"),
}  # fmt: skip
GUIDE = ("How to read: the two shares split the total variance " + _TOTAL + " (they sum to 1) "
         "and weigh every direction alike; the Fisher ratio\nweighs the class-mean differences "
         r"by the within-class spread along them ($\Sigma_W^{+}$). So the within share can rise "
         "while the classes separate better\n(spread grows along directions the means do not "
         "differ in): read separation from the Fisher ratio and the NCM accuracy.")  # fmt: skip
COLORS = {"relu": "tab:red", "softshrink": "tab:blue", "absolute": "tab:green"}


def _panels(fig: Figure) -> dict:
    axes = fig.subplots(2, 2, sharex=True).ravel()
    for ax, (stat, (title, ylabel)) in zip(axes, STAT_AXES.items(), strict=True):
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if stat == "fisher":
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
                     f"at epoch {chosen_at}; ran {trial.epochs} epochs)")  # fmt: skip
            for stat, ax in panels.items():
                ax.plot(layers, _values(trial, layers, stat, epoch), marker="o", linewidth=2,
                        color=COLORS.get(group, f"C{k}"), label=label)  # fmt: skip
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
                ax.plot(layers, _values(trial, layers, stat, epoch), marker="o", color=color,
                        linewidth=2, label=f"epoch {epoch}")  # fmt: skip
        _finish(fig, panels, ncols=min(len(epochs), 6) or 1)
        fig.suptitle(f"Run {trial.name}: class statistics per layer, by epoch (probe set)")
        return save(fig, path)
