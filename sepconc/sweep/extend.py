"""`launch.py sweep FILE --extend`: add trials to an existing sweep of the same name.

- The new trials are child runs of the sweep's MLflow parent run, so `status`, `compare`,
  `best` and `report` show old and new trials together.
- A configuration that already finished (completed, or stopped by the scheduler) is not run
  again: its result is reused (`previous_trials` reads it from the parent run's children;
  the planned trials leave it out, `remaining_trials`) and listed after the sweep.
- Finished trials seed a model-based searcher (`search.build_search_alg(spec, previous)`).
- Tune's state: each extension is a new Tune experiment `tune/<name>-ext<k>` beside
  `tune/<name>`; `sweep.json` names the latest (`tune_name`), so `resume NAME` continues
  the extension. The file of each extension is kept (`sweep.yaml` is the latest, the one
  before it `sweep-before-ext<k>.yaml`) and logged to the parent run.
- The file's `budget:` is the study's: what the sweep spent so far (trials started, time,
  GPU-hours) counts against it; raise it in the file to add trials.
- Refused in one line before anything is written: no such sweep, a sweep whose trials are
  not all finished (`resume` it first), another tracking store or storage, a budget the
  sweep has already spent.

A start that fails before Tune has written the extension's state puts `sweep.json`,
`sweep.yaml` and `budget.json` back as they were: the sweep is unchanged and `--extend`
can be run again.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

from sepconc.config import FIELD_SECTION, Config
from sepconc.errors import UserError, short_number
from sepconc.sweep.budget import FILE as BUDGET_FILE
from sepconc.sweep.budget import extend_state, write_state
from sepconc.sweep.paths import SweepPaths, read_meta, sweep_paths
from sepconc.sweep.spec import SweepSpec, load_sweep
from sepconc.tracking.read import Trial, sweep_trials
from sepconc.yamlio import load_yaml

log = logging.getLogger(__name__)

FINISHED = ("completed", "early_stopped")
Previous = list[tuple[dict[str, Any], dict[str, float]]]


def objectives(spec: SweepSpec) -> list[str]:
    """The sweep's metrics as a list (`spec.metrics` where the spec has it)."""
    listed = getattr(spec, "metrics", None) or spec.metric
    return [listed] if isinstance(listed, str) else list(listed)


def previous_trials(spec: SweepSpec, paths: SweepPaths, meta: dict[str, Any]) -> Previous:
    """`[(params, result)]` of the sweep's finished trials (children of its parent run),
    oldest first: `params` the trial's values of every key the stored or the new sweep file
    sweeps or sets differently in `base` (typed as the config's fields), `result` its last
    value of each of the new file's objectives that it logged."""
    _, _, trials = sweep_trials(meta["name"], paths.runs_dir)
    keys = _identity_keys(spec, paths)
    metrics = objectives(spec)
    out = []
    for trial in sorted((t for t in trials if t.status in FINISHED), key=lambda t: t.name):
        params = {k: load_yaml(trial.params[k]) for k in keys if k in trial.params}
        result = {m: trial.last[m] for m in metrics if m in trial.last}
        out.append((as_options(spec, params), result))
    return out


def as_options(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with each value of a grid/choice key written as the new file's option that
    gives the same config (a logged `[256]` is the option `256`, a logged `[8, 16, 32]` the
    rule's `8*2^block`), so a searcher finds it among its choices; others unchanged."""
    from sepconc.sweep.space import trial_flat_config

    def field(values: dict[str, Any], key: str) -> Any:
        try:
            return Config.from_flat(trial_flat_config(spec, values)).to_flat()[key]
        except UserError:
            return None

    out = dict(params)
    for key, entry in spec.search.items():
        kind, options = next(iter(entry.items()))
        if kind not in ("grid", "choice") or key not in params or params[key] in options:
            continue
        logged = field(out, key)
        out[key] = next((o for o in options if field({**out, key: o}, key) == logged), out[key])
    return out


def _identity_keys(spec: SweepSpec, paths: SweepPaths) -> list[str]:
    """Keys that tell trials of the old and the new file apart: swept in either file, or
    set differently in their `base`."""
    keys = set(spec.search)
    stored = paths.meta_dir / "sweep.yaml"
    if stored.is_file():
        old = load_sweep(stored, read_meta(spec.name, paths.runs_dir).get("overrides", []),
                         spec.name)  # fmt: skip
        keys |= set(old.search)
        keys |= {k for k in set(old.base) | set(spec.base) if old.base.get(k) != spec.base.get(k)}
    return sorted(k for k in keys if k in FIELD_SECTION)


def identity(spec: SweepSpec, params: dict[str, Any]) -> str:
    """Equal for two trials of `spec` with the same resolved training config."""
    from sepconc.sweep.dedup import trial_key

    return trial_key(spec, params)


def remaining_trials(spec: SweepSpec, previous: Previous) -> list[dict[str, Any]]:
    """The trials `spec` plans without those identical to a `previous` one: issue 13.7's
    `space.planned_trials(spec, previous)`."""
    from sepconc.sweep.space import planned_trials

    return planned_trials(spec, previous)


def reused_lines(spec: SweepSpec, previous: Previous) -> list[str]:
    """One line per finished trial the extension's file plans again (reused, not rerun)."""
    from sepconc.sweep.space import describe

    planned = _all_planned(spec)
    lines = []
    for params, result in previous:
        if identity(spec, params) in planned:
            shown = {k: v for k, v in params.items() if k in spec.search}
            values = ", ".join(f"{m} {short_number(v)}" for m, v in result.items())
            lines.append(f"  {describe(shown)}: {values or 'no result logged'}")
    return lines


def _all_planned(spec: SweepSpec) -> set[str]:
    """`identity` of every trial `spec` plans before deduplication (grid x samples)."""
    if any("grid" not in e for e in spec.search.values()):
        return {identity(spec, p) for p in remaining_trials(spec, [])}
    grids = {k: e["grid"] for k, e in spec.search.items()}
    return {identity(spec, dict(zip(grids, c, strict=True)))
            for c in itertools.product(*grids.values())}  # fmt: skip


def check_extendable(spec: SweepSpec, meta: dict[str, Any], trials: list[Trial],
                     tracking_uri: str | None, paths: SweepPaths) -> None:  # fmt: skip
    """Refuse (one-line `UserError`) an extension that would lose or mix up trials."""
    unfinished = [t.name for t in trials if t.status not in (*FINISHED, "failed")]
    if unfinished:
        raise UserError(f"sweep '{spec.name}' has {len(unfinished)} unfinished trial(s) "
                        f"({', '.join(unfinished[:3])}{', ...' if len(unfinished) > 3 else ''}); "
                        f"`resume {spec.name}` first, then --extend")  # fmt: skip
    if tracking_uri and tracking_uri != meta["tracking_uri"]:
        raise UserError(f"--tracking-uri {tracking_uri}: sweep '{spec.name}' is tracked in "
                        f"{meta['tracking_uri']}; drop --tracking-uri to extend it there")  # fmt: skip
    if spec.storage and paths.storage != meta["storage"]:
        raise UserError(f"storage {paths.storage}: sweep '{spec.name}' keeps its trials in "
                        f"{meta['storage']}; set storage: to that or remove it")  # fmt: skip


def extend(spec: SweepSpec, address: str | None = None, tracking_uri: str | None = None,
           runs_dir: str | Path = "runs") -> dict[str, Any]:  # fmt: skip
    """`launch.py sweep FILE --extend`: run the trials of `spec` that sweep `spec.name` has not
    finished yet, as children of its parent run (module docstring). Returns the driver's
    summary with `trials` (new trials run) and `reused` (lines of finished ones reused)."""
    from sepconc.logs import attach_log, detach_log
    from sepconc.sweep import driver
    from sepconc.sweep.sweep_state import tune_state_exists
    from sepconc.tracking.store import tracking_client

    if not (Path(runs_dir) / "sweeps" / spec.name / "sweep.json").is_file():
        raise UserError(f"--extend: no sweep named '{spec.name}' in {Path(runs_dir)}/sweeps to "
                        f"extend; run `sweep FILE` without --extend to start it")  # fmt: skip
    meta = read_meta(spec.name, runs_dir)
    driver._quiet_libraries()
    paths = sweep_paths(spec, runs_dir)
    paths.storage = meta["storage"] if not spec.storage else paths.storage
    _, _, trials = sweep_trials(spec.name, runs_dir)
    check_extendable(spec, meta, trials, tracking_uri, paths)
    previous = previous_trials(spec, paths, meta)
    reused = reused_lines(spec, previous)
    new = remaining_trials(spec, previous)
    model_based = getattr(spec, "searcher", {}).get("type") in ("tpe", "nsga2")
    summary = {"name": spec.name, "trials": spec.samples if model_based else len(new),
               "seconds": 0.0, "errors": 0, "tracking_uri": meta["tracking_uri"],
               "reused": reused}  # fmt: skip
    if not new and not model_based:
        return summary
    budget = extend_state(paths.meta_dir, spec.budget, spec.name)  # refuses a spent budget
    driver.preflight(spec, paths, address or meta.get("address"), meta["tracking_uri"])
    number = len(meta.get("extensions", [])) + 1
    before = {n: (paths.meta_dir / n).read_text()
              for n in ("sweep.json", "sweep.yaml", BUDGET_FILE) if (paths.meta_dir / n).exists()}  # fmt: skip
    meta = {**meta, "tune_name": f"{spec.name}-ext{number}",
            "extensions": [*meta.get("extensions", []), f"{spec.name}-ext{number}"]}  # fmt: skip
    paths.experiment = meta["tune_name"]
    handler = attach_log(paths.meta_dir / "driver.log")
    try:
        log.info("extend %s: %d new trial(s), %d finished reused (Tune experiment %s)",
                 spec.name, summary["trials"], len(reused), meta["tune_name"])  # fmt: skip
        (paths.meta_dir / f"sweep-before-ext{number}.yaml").write_text(before["sweep.yaml"])
        (paths.meta_dir / "sweep.yaml").write_text(spec.text)
        (paths.meta_dir / "sweep.json").write_text(json.dumps(meta, indent=1))
        write_state(paths.meta_dir, budget["budget"], budget["spent"])  # the file's budget
        client = tracking_client(meta["tracking_uri"])
        client.log_artifact(meta["parent_run_id"], str(paths.meta_dir / "sweep.yaml"),
                            artifact_path=f"ext{number}")  # fmt: skip
        client.update_run(meta["parent_run_id"], status="RUNNING")
        try:
            result = driver._run(spec, paths, meta, address or meta.get("address"),
                                 resume=None, previous=previous)  # fmt: skip
        except BaseException:
            if not tune_state_exists(meta["storage"], meta["tune_name"]):  # never reached Tune
                for name, text in before.items():
                    (paths.meta_dir / name).write_text(text)
                (paths.meta_dir / f"sweep-before-ext{number}.yaml").unlink(missing_ok=True)
            raise
    finally:
        detach_log(handler)
    return {**result, "trials": summary["trials"], "reused": reused}
