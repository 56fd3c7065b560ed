"""The MLflow store everything logs to, and the one-call-per-report logging helpers.

Default store: `sqlite:///<runs>/mlflow.db`, shared by every sweep and every
`train` run of a runs folder, so one `mlflow ui` shows them all. Its schema is
created (or upgraded) once, by the process that opens it first, before any
trial logs (concurrent first use of a fresh sqlite file crashes writers).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from sepconc.errors import UserError

log = logging.getLogger(__name__)

# Tag names: one place, so `status`/`compare`/`best` read what the callback wrote.
TAG_KIND = "sepconc.kind"  # sweep | trial | train
TAG_SWEEP = "sepconc.sweep"
TAG_SWEEP_HASH = "sepconc.sweep_hash"
TAG_TRIAL = "sepconc.trial_id"
TAG_STATUS = "sepconc.status"  # running | completed | early_stopped | failed
TAG_RUNG = "sepconc.asha_rung"
TAG_REASON = "sepconc.failure"
TAG_NODES = "sepconc.nodes"
PARENT = "mlflow.parentRunId"


def default_tracking_uri(runs_dir: str | Path = "runs") -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:")


def open_client(uri: str):
    """An `MlflowClient` on `uri`, its schema created first; an unreachable URI is a UserError."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if is_local_store(uri):
        path = Path(uri.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        SqlAlchemyStore(uri, str(path.parent / "mlflow-artifacts"))  # creates/upgrades schema
    elif not uri.startswith(("http://", "https://", "databricks")):
        raise UserError(
            f"tracking URI {uri!r} is not supported; use sqlite:///PATH or http://HOST:PORT"
        )
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    if not is_local_store(uri):
        check_reachable(uri)
    return client


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (one line) when a tracking server does not answer."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout)
    except urllib.error.HTTPError:
        return  # it answered (e.g. 401 with basic-auth): reachable
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"tracking server {uri} is unreachable ({reason}); start it with "
            f"`python launch.py mlflow-server` or fix --tracking-uri"
        ) from None


def experiment_id(client, name: str, runs_dir: Path | None) -> str:
    """Id of experiment `name`, created (artifacts under the runs folder for a local store)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if runs_dir is not None:
        location = (Path(runs_dir).resolve() / "mlflow-artifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


def log_report(client, run_id: str, metrics: dict[str, Any], step: int, tags=None,
               timestamp_ms: int | None = None) -> None:  # fmt: skip
    """One batched call: every finite numeric metric at `step` (+ optional tags), stamped
    `timestamp_ms` (when the metrics were measured; default now)."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]  # fmt: skip
    tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    for start in range(0, max(len(batch), 1), 1000):  # MLflow caps a batch at 1000 metrics
        client.log_batch(run_id, metrics=batch[start : start + 1000],
                         tags=tag_list if start == 0 else [])  # fmt: skip


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, param_text(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


def param_text(value: Any) -> str:
    """A parameter as one line of YAML that `sepconc.yamlio.load_yaml` reads back with the
    same type and value (`relu`, `'1e-3'` for that string, `1.0e-05`, `[64, 128]`, `null`)."""
    from sepconc.yamlio import dump_inline

    return dump_inline(value)


def last_logged_step(client, run_id: str, key: str = "val_acc1") -> int:
    """Largest step of `key` already logged in a run (0 if none): no step is logged twice."""
    history = client.get_metric_history(run_id, key)
    return max((m.step for m in history), default=0)
