"""The MLflow store everything logs to, and the one-call-per-report logging helpers.

Default store: `sqlite:///<runs>/mlflow.db`, shared by every sweep and every
`train` run of a runs folder, so one `mlflow ui` shows them all. Every process
reaches a store through `ensure_store` (via `open_client` or `tracking_client`):
its schema is created exactly once, under the file lock `<db>.lock`, by the first
process to take it; the others wait on the lock and then find the schema complete
(concurrent first use of a fresh sqlite file otherwise crashes writers with alembic
or "table already exists" errors). Experiments are get-or-create, retried on a
name conflict, so two processes creating the same experiment both get its id.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sepconc.errors import UserError, clean_reason

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
# MLflow 3's experiment kind: `mlflow ui` opens a model-training experiment on its runs table
# (without the tag it opens the GenAI overview).
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"

# sepconc's documented metrics (README "Per-epoch metrics"): the only keys logged to MLflow.
# Ray Tune adds its bookkeeping (pid, timestamp, time_total_s, training_iteration, ...) to
# every report; those never reach a run.
EPOCH_METRICS = ("epoch", "train_loss", "train_acc1", "train_acc5", "val_loss", "val_acc1",
                 "val_acc5", "lr", "epoch_seconds", "images_per_s", "nonfinite_grads",
                 "best_val_acc1")  # fmt: skip
RUN_METRICS = (
    "sweep_seconds",  # the parent run's
    "params",
    "flops",
)  # a model's cost (sepconc.cost), known before training
# Frame diagnostics and class statistics (`input/...`, `block{i}/...`), and MLflow's own
# system-metrics sampler (`system/...`).
METRIC_PATTERN = re.compile(r"^(?:(?:input|block\d+)/\S+|system/\S+)$")


def is_documented_metric(key: str) -> bool:
    """True for a key of sepconc's documented metric list (`EPOCH_METRICS`, `RUN_METRICS`,
    `METRIC_PATTERN`); False for anything else (Ray's bookkeeping keys)."""
    return key in EPOCH_METRICS or key in RUN_METRICS or bool(METRIC_PATTERN.match(key))


def default_tracking_uri(runs_dir: str | Path = "runs") -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:")


def sqlite_path(uri: str) -> Path:
    """The database file of a `sqlite:///PATH` URI."""
    return Path(uri.removeprefix("sqlite:///"))


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold the store's schema lock (`<db>.lock`, a `filelock.FileLock`) for a sqlite URI;
    a no-op for servers and other databases (their schema is the server's business)."""
    if not is_local_store(uri):
        yield
        return
    from filelock import FileLock

    path = sqlite_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        yield


_READY: set[str] = set()  # sqlite URIs whose schema this process has checked


def ensure_store(uri: str) -> None:
    """Create a local sqlite store's schema once, under `store_lock` (no-op for servers).

    The first process to take the lock creates the tables (all MLflow migrations); later
    ones find them complete. Checked once per process and URI. Raises `UserError` naming
    the store when it cannot be opened (unwritable folder, a schema MLflow cannot use).
    """
    if not is_local_store(uri) or uri in _READY:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy.exc import SQLAlchemyError

    path = sqlite_path(uri)
    try:
        with store_lock(uri):
            SqlAlchemyStore(uri, str(path.parent / "mlflow-artifacts"))  # creates the schema
    except (MlflowException, SQLAlchemyError, OSError) as exc:
        raise UserError(
            f"MLflow store {path} cannot be opened ({clean_reason(exc)}); if an older MLflow wrote it, "
            f"back it up and run `mlflow db upgrade {uri}`, else move it away or pass "
            "another --tracking-uri"
        ) from None
    _READY.add(uri)


def tracking_client(uri: str):
    """An `MlflowClient` on `uri` after `ensure_store`: every reader and writer's way in."""
    from mlflow.tracking import MlflowClient

    ensure_store(uri)
    return MlflowClient(uri)


def open_client(uri: str):
    """`tracking_client(uri)` for the process that starts a run or sweep: also sets MLflow's
    current URI and checks a server answers. An unsupported or unreachable URI is a UserError."""
    import mlflow

    if not is_local_store(uri) and not uri.startswith(("http://", "https://", "databricks")):
        raise UserError(
            f"tracking URI {uri!r} is not supported; use sqlite:///PATH or http://HOST:PORT"
        )
    client = tracking_client(uri)
    mlflow.set_tracking_uri(uri)
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
    """Id of experiment `name`, created if absent (artifacts under the runs folder for a local
    store). Two processes creating it at once both get the one id: the loser of the race
    (MLflow's RESOURCE_ALREADY_EXISTS) reads the winner's experiment. It carries the
    model-training kind tag (`TAG_EXPERIMENT_KIND`), set on an existing experiment that has
    no kind yet."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if TAG_EXPERIMENT_KIND not in found.tags:
            client.set_experiment_tag(found.experiment_id, TAG_EXPERIMENT_KIND, MODEL_TRAINING)
        return found.experiment_id
    location = None
    if runs_dir is not None:
        location = (Path(runs_dir).resolve() / "mlflow-artifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={TAG_EXPERIMENT_KIND: MODEL_TRAINING})  # fmt: skip
    except MlflowException as exc:
        found = client.get_experiment_by_name(name)
        if exc.error_code != "RESOURCE_ALREADY_EXISTS" or found is None:
            raise
        return found.experiment_id


def log_report(client, run_id: str, metrics: dict[str, Any], step: int, tags=None,
               timestamp_ms: int | None = None) -> None:  # fmt: skip
    """One batched call: every finite numeric metric of sepconc's documented list
    (`is_documented_metric`; Ray's bookkeeping keys are dropped) at `step` (+ optional
    tags), stamped `timestamp_ms` (when the metrics were measured; default now)."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
             and is_documented_metric(k)]  # fmt: skip
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
