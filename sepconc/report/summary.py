"""The text summary of a sweep: best trial, its configuration and metrics, effect sizes.

Best trial: the first of `sepconc.tracking.read.rank` (the best-so-far `metric`, the
ranking `launch.py best` uses) among trials that did not fail. Effect size of a swept parameter: the mean `metric`
of the trials at each of its values, and the spread (largest minus smallest mean), in the
metric's unit, read at one epoch all those trials reached (`sepconc.tracking.epochs`): first
the common epoch of every trial, then each later epoch where ASHA stopped trials, over the
trials that reached it. A trial's value at one epoch is never averaged with another
trial's value at another epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sepconc.errors import counted
from sepconc.metrics.separation import FISHER_KEY
from sepconc.report.collect import SweepRecord, Trial, is_continuous, layers_of, ordered_values
from sepconc.report.importance import Importance, format_lines


@dataclass
class Effect:
    """Mean `metric` per value of one parameter at `epoch` (`(value, mean, n)` in order)."""

    param: str
    epoch: int
    rows: list[tuple[str, float, int]]

    @property
    def spread(self) -> float:
        """Largest minus smallest mean (NaN with fewer than two values)."""
        means = [m for _, m, _ in self.rows if not math.isnan(m)]
        return max(means) - min(means) if len(means) > 1 else math.nan


def best_trial(record: SweepRecord, metric: str = "val_acc1") -> Trial | None:
    """The non-failed trial ranked first by `metric` (`SweepRecord.best`, as `best` ranks)."""
    return record.best(metric)


def trials_at(record: SweepRecord, metric: str, epoch: int) -> list[Trial]:
    """Non-failed trials that logged `metric` at `epoch`."""
    return [t for t in record.compared(metric) if not math.isnan(t.at(metric, epoch))]


def effect_sizes(record: SweepRecord, metric: str = "val_acc1",
                 epoch: int | None = None) -> list[Effect]:  # fmt: skip
    """One `Effect` per varying parameter at `epoch` (default: the common epoch).

    Only trials that logged `metric` at `epoch` count; [] when there is no such epoch.
    """
    epoch = record.common_epoch(metric) if epoch is None else epoch
    if epoch is None:
        return []
    trials = trials_at(record, metric, epoch)
    effects = []
    for param in record.varying:
        rows = []
        for value in ordered_values([t.params.get(param, "-") for t in trials]):
            group = [t.at(metric, epoch) for t in trials if t.params.get(param, "-") == value]
            rows.append((value, sum(group) / len(group), len(group)))
        effects.append(Effect(param, epoch, rows))
    return effects


def format_summary(record: SweepRecord, metric: str = "val_acc1",
                   importance: Importance | None = None) -> str:  # fmt: skip
    """The summary printed by `launch.py report` and saved as `summary.txt`; with
    `importance` (`sepconc.report.importance`), its table at the end."""
    done, failed = record.finished, record.failed
    stopped = sum(t.status == "early_stopped" for t in done)
    lines = [f"sweep {record.name}: {len(record.trials)} trials, {len(done) - stopped} completed, "
             f"{stopped} early-stopped, {len(failed)} failed"]  # fmt: skip
    best = best_trial(record, metric)
    if best is None:
        return "\n".join([*lines, "no trial reported a metric yet"])
    config = ", ".join(f"{k}={best.params.get(k, '?')}" for k in record.varying) or "(no varying)"
    lines += [
        "",
        f"best trial: {best.name} (MLflow run {best.run_id}, {best.status}, {counted(best.epochs, 'epoch')})",
        f"  config: {config}",
        f"  {metric}: final {_pct(best.value(metric))} (epoch {best.epochs}), "
        f"best {_pct(best.last.get(f'best_{metric}', math.nan))}",
    ]
    layers = layers_of(best.last)
    if layers:
        last = layers[-1]
        lines.append(f"  {last} at epoch {best.epochs}: {_layer_line(best, last)}")
    lines += ["", *_effect_lines(record, metric)]
    if importance is not None:
        lines += ["", *format_lines(importance)]
    return "\n".join(lines)


def _effect_lines(record: SweepRecord, metric: str) -> list[str]:
    epochs = record.comparison_epochs(metric)
    if not epochs:
        return [f"effect sizes: no epoch that every trial logged {metric} at"]
    lines = [
        f"effect sizes: mean {metric} (%) per value, spread = max - min of means;",
        "every trial read at the same epoch (ASHA stops trials at different epochs)",
    ]
    for k, epoch in enumerate(epochs):
        n = len(trials_at(record, metric, epoch))
        which = (f"the last epoch all {n} trials reached" if k == 0 else
                 f"only the {n} trials that reached it: the ones kept at earlier epochs")  # fmt: skip
        lines.append(f"  at epoch {epoch} ({which}):")
        for effect in effect_sizes(record, metric, epoch):
            if is_continuous([v for v, _, _ in effect.rows], at_least=3) and all(
                n == 1 for *_, n in effect.rows
            ):
                lines.append(f"    {effect.param}: {len(effect.rows)} values, one trial each: "
                             f"no mean per value (see metric_vs_params.png)")  # fmt: skip
                continue
            if len(effect.rows) < 2:
                lines.append(f"    {effect.param}: only {effect.rows[0][0]} reached epoch {epoch}")
                continue
            lines.append(f"    {effect.param}: spread {effect.spread:.2f} points")
            for value, mean, count in effect.rows:
                lines.append(f"      {value:>12}: {_pct(mean)} (n={count})")
    return lines


def format_run_summary(trial: Trial, metric: str = "val_acc1") -> str:
    """A few lines on one run: final metric and the per-layer statistics of its last epoch."""
    lines = [f"run {trial.run_id} ({trial.name}, {trial.status}): {counted(trial.epochs, 'epoch')}, "
             f"final {metric} {_pct(trial.value(metric))}; per layer at epoch {trial.epochs}:"]  # fmt: skip
    for layer in layers_of(trial.last):
        lines.append(f"  {layer}: {_layer_line(trial, layer)}")
    return "\n".join(lines)


def _layer_line(trial: Trial, layer: str) -> str:
    """The layer-comparable measures of `layer` at the run's last epoch, each +- its SE."""
    parts = []
    for stat in (FISHER_KEY, "within_rel", "between_rel", "ncm_acc"):
        value, se = trial.value(f"{layer}/{stat}"), trial.value(f"{layer}/{stat}_se")
        text = f"{value:.2f}%" if stat == "ncm_acc" else f"{value:.4g}"
        parts.append(f"{stat} {text} +- {se:.2g}{'%' if stat == 'ncm_acc' else ''}")
    delta = trial.last.get(f"{layer}/delta_{FISHER_KEY}")
    if delta is not None:  # paired change from the layer before (sepconc.probes)
        se = trial.value(f"{layer}/delta_{FISHER_KEY}_se")
        parts.append(f"change of {FISHER_KEY} from the layer before {delta:+.4g} +- {se:.2g}")
    return ", ".join(parts)


def _pct(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.2f}%"
