"""What every MLflow run carries besides its metrics: its whole config, and what it takes to redo it.

Used by both writers (`sepconc.tracking.tracker.MlflowTracker` for `train` runs,
`sepconc.sweep.callbacks.MlflowSweepCallback` for sweep trials), so a `train` run and a
trial hold the same record:

- params: every field of the resolved `Config.to_flat()`, each one line of YAML
  (`store.param_text`) that `sepconc.yamlio.load_yaml` reads back with the config's type
  (per-block options as lists: `[256, 512]`);
- artifact `config.yaml`: the same config, as `launch.py train --config` reads it;
- reproducibility tags (`reproducibility_tags`): the project's git commit and whether the
  tree was dirty (`unknown` without git), the versions of torch, kymatio, ray and mlflow,
  the device and the node layout (DDP workers, GPUs per worker);
- the data set's identity (`log_data_identity`): `data.json` as an artifact and its scalar
  fields, plus a digest of the whole file, as `sepconc.data.*` tags.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from sepconc.tracking.store import log_params

TAG_GIT_COMMIT = "sepconc.git_commit"
TAG_GIT_DIRTY = "sepconc.git_dirty"
TAG_DEVICE = "sepconc.device"
TAG_WORKERS = "sepconc.workers"
TAG_GPUS_PER_WORKER = "sepconc.gpus_per_worker"
TAG_VERSION = "sepconc.version."  # + package name
TAG_DATA = "sepconc.data."  # + field of data.json, or "digest"
PACKAGES = ("torch", "kymatio", "ray", "mlflow")
PROJECT_DIR = Path(__file__).resolve().parents[2]


def log_config(client, run_id: str, flat: dict[str, Any]) -> None:
    """Log a resolved flat config as the run's params and its `config.yaml` artifact."""
    from sepconc.yamlio import dump_yaml

    log_params(client, run_id, flat)
    client.log_text(run_id, dump_yaml(flat), "config.yaml")


@functools.cache
def project_commit() -> tuple[str, str]:
    """`(commit, dirty)` of the project's git checkout, computed once per process:
    dirty is "true" when tracked files differ from the commit; ("unknown", "unknown")
    when git or the checkout is absent."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit, "true" if dirty else "false"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(PROJECT_DIR), *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()  # fmt: skip


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def reproducibility_tags(device: str, workers: int, gpus_per_worker: float) -> dict[str, str]:
    """The tags that say what produced a run: git commit and dirty flag, package versions,
    `device` (cpu | cuda), `workers` (DDP processes) and `gpus_per_worker`."""
    commit, dirty = project_commit()
    tags = {TAG_GIT_COMMIT: commit, TAG_GIT_DIRTY: dirty, TAG_DEVICE: str(device),
            TAG_WORKERS: str(workers), TAG_GPUS_PER_WORKER: f"{gpus_per_worker:g}"}  # fmt: skip
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit  # shown by `mlflow ui` on the run page
    tags.update({TAG_VERSION + name: package_version(name) for name in PACKAGES})
    return tags


def resolved_device(requested: str) -> str:
    """The device a `train` run uses for `--device` `requested` (auto: cuda when visible)."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def data_tags(identity: dict[str, Any]) -> dict[str, str]:
    """`sepconc.data.<field>` for every scalar (or small mapping) field of `data.json`, and
    `sepconc.data.digest`: the first 16 hex digits of the SHA-256 of the whole identity."""
    text = json.dumps(identity, sort_keys=True, default=str)
    tags = {TAG_DATA + "digest": hashlib.sha256(text.encode()).hexdigest()[:16]}
    for key, value in identity.items():
        if isinstance(value, (str, int, float, bool)) or (
            isinstance(value, dict) and len(json.dumps(value, default=str)) <= 500
        ):
            tags[TAG_DATA + key] = value if isinstance(value, str) else json.dumps(value)
    return tags


def log_data_identity(client, run_id: str, path: Path) -> bool:
    """Log a run folder's `data.json` (artifact + `data_tags`); False when it is not there."""
    from mlflow.entities import RunTag

    path = Path(path)
    try:
        identity = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    tags = [RunTag(k, v[:5000]) for k, v in data_tags(identity).items()]
    client.log_batch(run_id, tags=tags)
    client.log_artifact(run_id, str(path))
    return True
