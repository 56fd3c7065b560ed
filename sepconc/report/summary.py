"""The text summary of a sweep: best trial, its configuration and metrics, effect sizes.

Best trial: the highest best-so-far `metric` (`best_<metric>`), the ranking `launch.py best`
uses, among trials that did not fail. Effect size of a swept parameter: the mean final
`metric` of the trials at each of its values, and the spread (largest minus smallest mean),
in the metric's unit. Early-stopped trials count with the value they were stopped at, so
a value that ASHA stopped often looks worse; the count per value says how many stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sepconc.report.collect import SweepRecord, Trial, layers_of, ordered_values


@dataclass
class Effect:
    """Mean final metric per value of one parameter (`(value, mean, n, n_stopped)` in order)."""

    param: str
    rows: list[tuple[str, float, int, int]]

    @property
    def spread(self) -> float:
        means = [m for _, m, _, _ in self.rows if not math.isnan(m)]
        return max(means) - min(means) if means else math.nan


def best_trial(record: SweepRecord, metric: str = "val_acc1") -> Trial | None:
    """The non-failed trial with the highest `best_<metric>`; ties go to the higher final value."""
    scored = [((t.last.get(f"best_{metric}", t.value(metric)), t.value(metric)), t)
              for t in sorted(record.finished, key=lambda t: t.name)]  # fmt: skip
    scored = [(s, t) for s, t in scored if not math.isnan(s[0])]
    return max(scored, key=lambda st: st[0])[1] if scored else None


def effect_sizes(record: SweepRecord, metric: str = "val_acc1") -> list[Effect]:
    """One `Effect` per varying parameter, over the non-failed trials."""
    effects = []
    for param in record.varying:
        trials = [t for t in record.finished if param in t.params]
        rows = []
        for value in ordered_values([t.params[param] for t in trials]):
            group = [t for t in trials if t.params[param] == value]
            finals = [t.value(metric) for t in group if not math.isnan(t.value(metric))]
            mean = sum(finals) / len(finals) if finals else math.nan
            stopped = sum(t.status == "early_stopped" for t in group)
            rows.append((value, mean, len(group), stopped))
        effects.append(Effect(param, rows))
    return effects


def format_summary(record: SweepRecord, metric: str = "val_acc1") -> str:
    """The summary printed by `launch.py report` and saved as `summary.txt`."""
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
        f"best trial: {best.name} (MLflow run {best.run_id}, {best.status}, {best.epochs} epochs)",
        f"  config: {config}",
        f"  {metric}: final {_pct(best.value(metric))}, "
        f"best {_pct(best.last.get(f'best_{metric}', math.nan))}",
    ]
    layers = layers_of(best.last)
    if layers:
        last = layers[-1]
        lines.append(f"  {last}: fisher {best.value(f'{last}/fisher'):.4g}, within_rel "
                     f"{best.value(f'{last}/within_rel'):.3f}, between_rel "
                     f"{best.value(f'{last}/between_rel'):.3f}, ncm_acc "
                     f"{best.value(f'{last}/ncm_acc'):.3f}")  # fmt: skip
    lines += ["", f"effect sizes: mean final {metric} (%) per value, spread = max - min of means"]
    for effect in effect_sizes(record, metric):
        lines.append(f"  {effect.param}: spread {effect.spread:.2f} points")
        for value, mean, n, n_stopped in effect.rows:
            note = f", {n_stopped} early-stopped" if n_stopped else ""
            lines.append(f"    {value:>12}: {_pct(mean)} (n={n}{note})")
    return "\n".join(lines)


def format_run_summary(trial: Trial, metric: str = "val_acc1") -> str:
    """A few lines on one run: final metric and the per-layer statistics of its last epoch."""
    lines = [f"run {trial.run_id} ({trial.name}, {trial.status}): {trial.epochs} epochs, "
             f"final {metric} {_pct(trial.value(metric))}"]  # fmt: skip
    for layer in layers_of(trial.last):
        stats = ", ".join(f"{s} {trial.value(f'{layer}/{s}'):.4g}"
                          for s in ("within_rel", "between_rel", "fisher", "ncm_acc"))  # fmt: skip
        lines.append(f"  {layer}: {stats}")
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.2f}%"
