"""Where a sweep lives: its folder under the runs folder and its storage (local or a URI).

`runs/sweeps/<name>/` holds `sweep.yaml`, `sweep.json` and `driver.log`; `<storage>/tune`,
`<storage>/train`, `<storage>/trials` and `<storage>/cache` hold the heavy parts (see
`sepconc.sweep.driver`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepconc.errors import UserError
from sepconc.sweep.spec import SweepSpec, check_name


@dataclass
class SweepPaths:
    runs_dir: Path
    name: str
    storage: str  # absolute local path or a URI such as s3://bucket/prefix
    experiment: str = ""  # Tune experiment `<name>-ext<k>` after --extend (tune_name)

    @property
    def tune_name(self) -> str:
        """The folder of the sweep's current Tune experiment under `<storage>/tune`."""
        return self.experiment or self.name

    @property
    def meta_dir(self) -> Path:
        return self.runs_dir / "sweeps" / self.name

    @property
    def local_storage(self) -> bool:
        return "://" not in self.storage

    def under(self, *parts: str) -> str:
        return "/".join([self.storage.rstrip("/"), *parts])


def sweep_paths(spec: SweepSpec, runs_dir: str | Path = "runs") -> SweepPaths:
    runs = Path(runs_dir).resolve()
    storage = spec.storage or str(runs)
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    return SweepPaths(runs, spec.name, storage)


def read_meta(name: str, runs_dir: str | Path = "runs") -> dict[str, Any]:
    """The `sweep.json` of an existing sweep; a one-line error naming the known sweeps if absent."""
    check_name(name)
    meta = Path(runs_dir).resolve() / "sweeps" / name / "sweep.json"
    if not meta.is_file():
        known = sorted(p.parent.name for p in (Path(runs_dir) / "sweeps").glob("*/sweep.json"))
        hint = f"known sweeps: {', '.join(known)}" if known else "no sweep has run in this folder"
        raise UserError(f"no sweep named '{name}' in {Path(runs_dir)}/sweeps ({hint}); "
                        f"check the name or --runs-dir")  # fmt: skip
    return json.loads(meta.read_text())


__all__ = ["SweepPaths", "read_meta", "sweep_paths"]
