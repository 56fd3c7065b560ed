"""Parameter importance: how much of each objective's variation each swept key explains.

Optuna's fANOVA evaluator (`optuna.importance.FanovaImportanceEvaluator`, a random forest
over the trials, seed 0) is run once per objective over the sweep's finished trials
(completed or early-stopped, not failed or running). Trials are **rung-matched**: every
per-epoch objective is read at the largest epoch all of them reached
(`sepconc.tracking.epochs.common_epoch`), so ASHA's early stops do not make a short-trained
configuration look bad. Objectives logged once before training (`params`, `flops`: step 0
only) are read as logged. The importances of one objective sum to 1.

Keys: the parameters that vary across the trials (`read.varying_params`), parsed as the
config's types; numbers become continuous (log scale when positive and spread over a factor
of 10 or more), anything else (per-block lists, names, booleans) categorical.

`sweep_importance(record, objectives)` computes it for a report; `format_lines` is its
table in `summary.txt`; `draw` is `importance.png`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from sepconc.tracking.epochs import common_epoch
from sepconc.tracking.read import Trial, parse_param

MIN_TRIALS = 3


@dataclass
class Importance:
    """`table[key][objective]`: the key's share (0..1) of the objective's variation across
    `trials` trials read at `epoch`; `note` says why nothing was computed (table empty)."""

    objectives: list[str]
    keys: list[str]
    epoch: int | None
    trials: int
    table: dict[str, dict[str, float]] = field(default_factory=dict)
    note: str = ""


def is_static(history) -> bool:
    """Logged once before training (`params`, `flops` at step 0), not per epoch."""
    return bool(history) and all(int(step) <= 0 for step, _ in history)


def objective_value(trial: Trial, key: str, epoch: int | None) -> float:
    """`key` of `trial` at `epoch` (a static objective: as logged); NaN if not logged."""
    history = trial.history.get(key, [])
    if is_static(history) or (not history and key in ("params", "flops")):
        return trial.value(key) if not history else history[-1][1]
    return trial.at(key, epoch)


def importances(trials: list[Trial], keys: list[str], objectives: list[str]) -> Importance:
    """The importance of each of `keys` for each of `objectives` over `trials` (their
    histories of the per-epoch objectives fetched); rung-matched (module docstring)."""
    done = [t for t in trials if t.status in ("completed", "early_stopped")]
    per_epoch = [o for o in objectives if not all(is_static(t.history.get(o)) for t in done)]
    epoch = common_epoch([t.history.get(per_epoch[0], []) for t in done]) if per_epoch else None
    rows = [(t, [objective_value(t, o, epoch) for o in objectives]) for t in done]
    rows = [(t, values) for t, values in rows if not any(math.isnan(v) for v in values)]
    result = Importance(list(objectives), list(keys), epoch, len(rows))
    params = {k: [parse_param(k, t.params[k]) if k in t.params else None for t, _ in rows]
              for k in keys}  # fmt: skip
    varied = [k for k in keys if len(set(params[k])) > 1]
    if len(rows) < MIN_TRIALS or not varied:
        at = f" at epoch {epoch}" if epoch is not None else ""
        result.note = (f"importance needs at least {MIN_TRIALS} finished trials with every "
                       f"objective logged{at} and a key that varies among them; "
                       f"found {len(rows)} trial(s)")  # fmt: skip
        return result
    scores = _fanova([params[k] for k in varied], varied, [v for _, v in rows], objectives)
    result.table = {k: {o: scores[o].get(k, 0.0) for o in objectives} for k in keys}
    return result


def _fanova(columns: list[list], keys: list[str], values: list[list[float]],
            objectives: list[str]) -> dict[str, dict[str, float]]:  # fmt: skip
    """`{objective: {key: importance}}` from Optuna's fANOVA over trials built in memory."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions, encoded = {}, []
    for key, column in zip(keys, columns, strict=True):
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in column)
        if numbers:
            low, high = float(min(column)), float(max(column))
            log = low > 0 and high / low >= 10
            distributions[key] = FloatDistribution(low, high, log=log)
            encoded.append([float(v) for v in column])
        else:
            choices = sorted({str(v) for v in column})
            distributions[key] = CategoricalDistribution(choices)
            encoded.append([str(v) for v in column])
    study = optuna.create_study(directions=["minimize"] * len(objectives))
    for i, row in enumerate(values):
        params = {key: column[i] for key, column in zip(keys, encoded, strict=True)}
        study.add_trial(create_trial(params=params, distributions=distributions, values=row))
    out = {}
    for j, objective in enumerate(objectives):
        if len({row[j] for row in values}) < 2:  # a constant objective: nothing to explain
            out[objective] = {key: 0.0 for key in keys}
            continue
        found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                      params=keys, target=lambda t, j=j: t.values[j],
                                      normalize=True)  # fmt: skip
        out[objective] = {key: float(value) for key, value in found.items()}
    return out


def sweep_objectives(name: str, runs_dir, metric: str) -> list[str]:
    """The report's `metric`, then the sweep's other objectives (its file's `metric:`, one
    or a list), then `params` when trials logged it."""
    from sepconc.sweep.spec import load_sweep

    stored = Path(runs_dir).resolve() / "sweeps" / name / "sweep.yaml"
    found = [metric]
    if stored.is_file():
        from sepconc.sweep.paths import read_meta

        spec = load_sweep(stored, read_meta(name, runs_dir).get("overrides", []), name)
        listed = getattr(spec, "metrics", None) or spec.metric
        found += [m for m in ([listed] if isinstance(listed, str) else listed) if m != metric]
    return found


def sweep_importance(record, objectives: list[str]) -> Importance:
    """`importances` of a report's `SweepRecord` (`sepconc.report.collect`): the histories
    of objectives it has not fetched yet are fetched from its store first."""
    from sepconc.tracking.read import fetch_histories
    from sepconc.tracking.store import tracking_client

    missing = [o for o in objectives if any(o not in t.history for t in record.trials)]
    if missing:
        fetch_histories(tracking_client(record.meta["tracking_uri"]), record.trials, missing)
    return importances(record.trials, list(record.varying), list(objectives))


def format_lines(result: Importance) -> list[str]:
    """The importance table of `summary.txt` (one row per key, one column per objective)."""
    if not result.table:
        return [f"importance: {result.note}" if result.note else "importance: no swept key"]
    at = f" at epoch {result.epoch}" if result.epoch is not None else ""
    lines = [f"importance (fANOVA, share of each objective's variation; {result.trials} "
             f"finished trials compared{at}, the last epoch all reached):"]  # fmt: skip
    width = max(len(k) for k in result.keys)
    cols = [max(len(o), 6) for o in result.objectives]
    lines.append("  " + " " * width + "".join(f"  {o:>{c}}" for o, c in
                                               zip(result.objectives, cols, strict=True)))  # fmt: skip
    first = result.objectives[0]
    for key in sorted(result.keys, key=lambda k: -result.table[k][first]):
        cells = "".join(f"  {result.table[key][o]:>{c}.2f}"
                        for o, c in zip(result.objectives, cols, strict=True))  # fmt: skip
        lines.append(f"  {key:<{width}}{cells}")
    return lines


def draw(result: Importance, path: Path) -> Path:
    """`importance.png`: one group of bars per key, one bar per objective (a note when
    nothing could be computed)."""
    import matplotlib
    from matplotlib.figure import Figure

    from sepconc.report.style import STYLE, save

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(max(5.0, 1.2 * len(result.keys) + 2), 3.8))
        ax = fig.subplots()
        if not result.table:
            ax.text(0.5, 0.5, result.note or "no swept key", ha="center", va="center",
                    wrap=True, transform=ax.transAxes)  # fmt: skip
            ax.set_axis_off()
        else:
            keys = sorted(result.keys, key=lambda k: -result.table[k][result.objectives[0]])
            width = 0.8 / len(result.objectives)
            for j, objective in enumerate(result.objectives):
                xs = [i + (j - (len(result.objectives) - 1) / 2) * width for i in range(len(keys))]
                ax.bar(xs, [result.table[k][objective] for k in keys], width, label=objective)
            ax.set_xticks(range(len(keys)), keys, rotation=20, ha="right")
            ax.set_ylim(0, 1)
            ax.set_ylabel("importance (fANOVA)")
            at = f" at epoch {result.epoch}" if result.epoch is not None else ""
            ax.set_title(f"parameter importance, {result.trials} trials{at}")
            ax.legend()
        return save(fig, path)
