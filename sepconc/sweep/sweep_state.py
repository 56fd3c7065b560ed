"""A sweep's state on disk and in MLflow: checked before it is written, undone if the start fails.

Order of a start (`driver.launch`): every check that can refuse the sweep (spec, resources,
storage, tracking store) runs first and writes nothing; then `create_state` writes the run
folder (`sweep.yaml`, `sweep.json`), the MLflow store and the parent run; if the sweep then
fails to reach Tune (Ray does not start, the cluster is too small), `discard_state` removes
them again, so the name is free. A `sweep.json` with no Tune state and no trial runs (left by
a driver killed while starting) does not block the name either (`is_stale`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from sepconc.errors import UserError
from sepconc.sweep.spec import SweepSpec
from sepconc.tracking.store import (
    PARENT,
    TAG_KIND,
    TAG_SWEEP,
    TAG_SWEEP_HASH,
    check_reachable,
    experiment_id,
    is_local_store,
    open_client,
    tracking_client,
)

log = logging.getLogger(__name__)


def check_writable(path: str | Path, what: str, fix: str) -> None:
    """`path` exists as a writable folder or can be created (nothing is created here)."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and (not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK)):
        reason = "is not a folder" if not probe.is_dir() else "is not writable"
        raise UserError(f"{what} {path}: {probe} {reason}; {fix}")


def check_tracking(uri: str) -> None:
    """The tracking store can be opened: a server answers, a sqlite file can be written."""
    if is_local_store(uri):
        db = Path(uri.removeprefix("sqlite:///"))
        if db.exists() and not db.is_file():
            raise UserError(
                f"tracking store {db} is not a file; fix tracking.uri or --tracking-uri"
            )
        check_writable(db.parent, "tracking store folder", "fix tracking.uri or --tracking-uri")
    elif uri.startswith(("http://", "https://")):
        check_reachable(uri)
    elif not uri.startswith("databricks"):
        raise UserError(
            f"tracking URI {uri!r} is not supported; use sqlite:///PATH or http://HOST:PORT"
        )


def check_storage(paths, nodes: int) -> None:
    """Storage every node can reach, and a runs folder this process can write."""
    check_writable(paths.runs_dir, "runs folder", "choose another --runs-dir")
    if paths.local_storage:
        check_writable(paths.storage, "storage", "fix storage: in the sweep file")
    if nodes > 1 and paths.local_storage and paths.storage.startswith(str(paths.runs_dir)):
        raise UserError(
            f"storage {paths.storage} is a node-local path but the cluster has {nodes} nodes; "
            f"set storage: to a shared path (NFS) or s3://bucket/prefix in the sweep file"
        )


def tune_state_exists(storage: str, name: str) -> bool:
    """Tune wrote an experiment state for sweep `name` under `storage` (it reached `fit`)."""
    from ray import tune

    return tune.Tuner.can_restore("/".join([storage.rstrip("/"), "tune", name]))


def is_stale(meta_dir: Path) -> bool:
    """A `sweep.json` whose sweep never started: no Tune state, no trial run, parent not done."""
    try:
        meta = json.loads((meta_dir / "sweep.json").read_text())
        if tune_state_exists(meta["storage"], meta["name"]):
            return False
        client = open_client(meta["tracking_uri"])
        children = client.search_runs(
            [meta["experiment_id"]], filter_string=f"tags.`{PARENT}` = '{meta['parent_run_id']}'"
        )
    except Exception:  # unreadable or unreachable: treat it as a real sweep
        return False
    return not children


def create_state(spec: SweepSpec, paths, uri: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the sweep's folder, MLflow experiment and parent run; returns `meta` completed."""
    paths.meta_dir.mkdir(parents=True, exist_ok=True)
    (paths.meta_dir / "sweep.yaml").write_text(spec.text)
    meta = {**meta, "tracking_uri": uri}
    try:
        client = open_client(uri)
        meta["experiment_id"] = experiment_id(
            client, spec.tracking.get("experiment") or spec.name,
            paths.runs_dir if is_local_store(uri) else None,
        )  # fmt: skip
        meta["parent_run_id"] = parent_run(client, meta["experiment_id"], spec, paths.meta_dir)
        (paths.meta_dir / "sweep.json").write_text(json.dumps(meta, indent=1))
    except BaseException:
        discard_state(paths, meta)
        raise
    return meta


def parent_run(client, exp_id: str, spec: SweepSpec, meta_dir: Path) -> str:
    """A new parent run for the sweep, with the sweep file attached and the reproducibility
    tags (`sepconc.tracking.record`: the trials' device and node layout)."""
    from sepconc.sweep.reproduce import run_settings
    from sepconc.tracking.record import reproducibility_tags

    device = run_settings(spec.base, {}, spec.workers, spec.gpus_per_worker)["device"]
    run = client.create_run(exp_id, run_name=spec.name, tags={
        TAG_KIND: "sweep", TAG_SWEEP: spec.name, TAG_SWEEP_HASH: spec.content_hash,
        "mlflow.note.content": spec.description,
        **reproducibility_tags(device, spec.workers, spec.gpus_per_worker)})  # fmt: skip
    client.log_artifact(run.info.run_id, str(meta_dir / "sweep.yaml"))
    return run.info.run_id


def discard_state(paths, meta: dict[str, Any]) -> None:
    """Undo `create_state` (a start that never reached Tune): the name is free again.

    The parent run is deleted (MLflow keeps it in the trash, out of every search); the
    driver log stays as the record of what happened.
    """
    for name in ("sweep.json", "sweep.yaml"):
        (paths.meta_dir / name).unlink(missing_ok=True)
    if meta.get("parent_run_id"):
        try:
            client = tracking_client(meta["tracking_uri"])
            client.set_terminated(meta["parent_run_id"], "FAILED")
            client.delete_run(meta["parent_run_id"])
        except Exception as exc:  # the start already failed: report that, not this
            log.warning("could not delete parent run %s: %s", meta["parent_run_id"], exc)
    try:
        paths.meta_dir.rmdir()  # only when empty (no driver.log)
    except OSError:
        pass


def trials_problem(old: SweepSpec, new: SweepSpec, started: bool) -> str | None:
    """Why `new` cannot continue sweep `old`, or None: its trials must include the old ones.

    The trials are `base` x `search` x `samples`; `resources`, `failure`, `checkpoint` and
    the scheduler may change. Once Tune has started the sweep its trial list is fixed, so
    trials can be added only to a sweep that never started.
    """
    for key in sorted(set(old.base) | set(new.base)):
        if old.base.get(key) != new.base.get(key):
            return (f"base.{key} {old.base.get(key)!r} -> {new.base.get(key)!r} changes the trials "
                    f"already run; start a new sweep with --name")  # fmt: skip
    added = False
    for key in new.search:
        if key not in old.search:
            return f"search.{key} is new: it changes every trial; start a new sweep with --name"
    for key, entry in old.search.items():
        kind, args = next(iter(entry.items()))
        if key not in new.search:
            return f"search.{key} was removed; put it back or start a new sweep with --name"
        new_kind, new_args = next(iter(new.search[key].items()))
        if kind in ("grid", "choice") and new_kind == kind:
            if any(a not in new_args for a in args):
                return (f"search.{key}: {[a for a in args if a not in new_args]} dropped; the "
                        f"trials already run must stay, or start a new sweep with --name")  # fmt: skip
            added |= len(new_args) > len(args)
        elif (new_kind, new_args) != (kind, args):
            return (f"search.{key} {entry} -> {new.search[key]} changes the trials; start a new "
                    f"sweep with --name")  # fmt: skip
    if new.samples < old.samples:
        return f"samples {old.samples} -> {new.samples} drops trials; keep {old.samples} or more"
    added |= new.samples > old.samples
    if added and started:
        return ("adds trials to a sweep Tune has already started (its trial list is fixed); "
                "start the extra trials as a new sweep with --name")  # fmt: skip
    return None


def finish_parent(meta: dict, summary: dict | None) -> None:
    """End the parent run: FINISHED, or FAILED when trials failed or the sweep broke off."""
    try:
        client = tracking_client(meta["tracking_uri"])
        if summary is not None:
            client.log_metric(meta["parent_run_id"], "sweep_seconds", summary["seconds"])
            if summary.get("budget"):  # which budget ended it, the trials left
                client.set_tag(meta["parent_run_id"], "sepconc.budget", summary["budget"])
        failed = summary is None or summary["errors"]
        client.set_terminated(meta["parent_run_id"], "FAILED" if failed else "FINISHED")
    except Exception as exc:  # never hide the sweep's own outcome behind this
        log.warning("could not close parent run %s: %s", meta["parent_run_id"], exc)


def mark_trials(meta: dict, trial_ids: list[str], status: str) -> None:
    """Set the status tag of these trials' MLflow runs (e.g. `paused` by the budget: they
    continue on `resume`) and end the runs meanwhile; a store problem is a warning."""
    from sepconc.tracking.store import TAG_STATUS, TAG_TRIAL

    try:
        client = tracking_client(meta["tracking_uri"])
        for trial_id in trial_ids:
            found = client.search_runs([meta["experiment_id"]],
                                       filter_string=f"tags.`{TAG_TRIAL}` = '{trial_id}' and "
                                       f"tags.`{TAG_SWEEP}` = '{meta['name']}'")  # fmt: skip
            for run in found:
                client.set_tag(run.info.run_id, TAG_STATUS, status)
                client.set_terminated(run.info.run_id, "KILLED")
    except Exception as exc:  # never hide the sweep's own outcome behind this
        log.warning("could not mark trials %s %s: %s", trial_ids, status, exc)
