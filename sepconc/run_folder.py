"""Run folders: one training's history each, and resuming one without mixing lineages.

A run folder (`train --out DIR`, a sweep trial's folder) holds `config.yaml`,
`data.json`, `metrics.jsonl`, `checkpoints/epoch_NNNN.pt`, `result.json` and, when
the run is tracked, `tracking.json` (its MLflow store and run id, so that
`--resume DIR` reopens that run even after a SIGKILL). The rules:

- a new run never writes into a folder that already holds a run (a checkpoint, a
  metrics row or a result): `check_out_folder` refuses it, naming `--resume DIR` and a
  fresh `--out`; a resumed run writes only into its own folder or into a fresh one;
- `prepare_run_folder` before the first epoch: temporary files of killed checkpoint
  writes are removed; when resuming at epoch E, checkpoints of later epochs (an
  abandoned continuation: the newest file was unreadable, or `--resume` named an older
  file) are moved to `checkpoints/abandoned-<time>/`, and `metrics.jsonl` keeps the
  epochs <= E (with epoch E's row restored from the checkpoint when the process was
  killed between writing the checkpoint and its row).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from sepconc.checkpoint import checkpoint_epoch, list_checkpoints, remove_partial_writes
from sepconc.errors import UserError

log = logging.getLogger(__name__)

TRACKING_FILE = "tracking.json"


def metrics_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of `run_dir/metrics.jsonl` (none if absent); a line cut by a killed
    process (not JSON) is skipped with a warning."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            log.warning("%s: skipped an incomplete line (a killed write): %.60s", path, line)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def held_run(run_dir: Path) -> str | None:
    """What shows that `run_dir` holds a run (e.g. 'checkpoints up to epoch 3'), or None."""
    run_dir = Path(run_dir)
    found = list_checkpoints(run_dir / "checkpoints")
    if found:
        return f"checkpoints up to epoch {checkpoint_epoch(found[-1])}"
    rows = metrics_rows(run_dir)
    if rows:
        return f"metrics of {len(rows)} epoch(s)"
    if (run_dir / "result.json").exists():
        return "a result.json"
    return None


#: What a run writes into its folder before it has trained an epoch (`training.run_files`,
#: the tracker's `tracking.json`): taken back when bad input stops it there.
FIRST_FILES = ("config.yaml", "data.json", "metrics.jsonl", "tracking.json", "result.json")


def is_unused(run_dir: str | Path) -> bool:
    """True when `run_dir` does not exist or is an empty folder."""
    run_dir = Path(run_dir)
    return not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir()))


def take_back(run_dir: str | Path) -> None:
    """After bad input stopped a run that started in an unused `run_dir` (`is_unused`)
    before it held anything of a run (`held_run` None): remove the files it wrote there
    (`FIRST_FILES`, an empty `checkpoints/`) and the folder if nothing else is in it.
    Anything else is left as it is."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or held_run(run_dir) is not None:
        return
    for name in FIRST_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for folder in (run_dir / "checkpoints", run_dir):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass


def run_folder_of(target: str | Path) -> Path:
    """The run folder of a `--resume` target: DIR for DIR, DIR/checkpoints, or a file there."""
    target = Path(target)
    folder = target.parent if target.is_file() or target.suffix == ".pt" else target
    return folder.parent if folder.name == "checkpoints" else folder


def same_folder(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def check_out_folder(out: str | Path | None, resume: str | Path | None) -> None:
    """Refuse (`UserError`) to write a run into a folder that holds another run.

    Allowed: a folder without a run, or the run folder of `resume` (continuing it).
    Reads only; call it before anything is written (MLflow run, run folder)."""
    if out is None:
        return
    held = held_run(Path(out))
    if held is None:
        return
    if resume is None:
        raise UserError(
            f"--out {out} already holds a run ({held}); continue it with --resume {out}, "
            f"or choose a fresh --out"
        )
    if not same_folder(run_folder_of(resume), out):
        raise UserError(
            f"--out {out} holds a run ({held}) other than the one --resume {resume} continues; "
            f"choose a fresh --out, or --resume {out} to continue the run there"
        )


def prepare_run_folder(run_dir: Path, epoch: int, resumed: bool, row: dict | None = None) -> None:
    """Make `run_dir` continue at `epoch` (0 for a new run): see the module docstring.

    `row` is the resumed checkpoint's own metrics row (epoch `epoch`), if it holds one."""
    checkpoints = Path(run_dir) / "checkpoints"
    for path in remove_partial_writes(checkpoints):
        log.warning("removed %s, a checkpoint write that never finished", path)
    later = [p for p in list_checkpoints(checkpoints) if checkpoint_epoch(p) > epoch]
    if resumed and later:
        aside = checkpoints / f"abandoned-{datetime.now():%Y%m%d-%H%M%S-%f}"
        aside.mkdir()
        for path in later:
            path.rename(aside / path.name)
        log.warning("resuming %s at epoch %d: moved the checkpoints of later epochs (%s) to %s",
                    run_dir, epoch, ", ".join(p.name for p in later), aside)  # fmt: skip
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    kept = [r for r in metrics_rows(run_dir) if r.get("epoch", 0) <= epoch]
    if resumed and row and row.get("epoch") == epoch and (not kept or kept[-1]["epoch"] < epoch):
        kept.append(row)
    _write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def abandon_run(run_dir: Path, why: str) -> Path | None:
    """Move the run in `run_dir` (checkpoints, metrics, result) to `run_dir/abandoned-<time>/`
    so that a new run can start there: for a folder that belongs to the caller (a sweep
    trial's own folder, restarted from scratch). Returns the new folder, None if empty."""
    run_dir = Path(run_dir)
    found = list_checkpoints(run_dir / "checkpoints")
    found += [p for p in (run_dir / "metrics.jsonl", run_dir / "result.json") if p.exists()]
    if not found:
        return None
    aside = run_dir / f"abandoned-{datetime.now():%Y%m%d-%H%M%S-%f}"
    aside.mkdir()
    for path in found:
        path.rename(aside / path.name)
    log.warning("%s: %s; moved its earlier files to %s", run_dir, why, aside)
    return aside


def read_tracking(run_dir: Path) -> dict[str, str] | None:
    """The MLflow record of a run folder (`tracking_uri`, `run_id`), or None."""
    path = Path(run_dir) / TRACKING_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignored %s (%s): a new MLflow run is made", path, exc)
        return None
    return record if isinstance(record, dict) and record.get("run_id") else None


def write_tracking(run_dir: Path, record: dict[str, str]) -> None:
    """Record the run's MLflow store and run id in the run folder (created if needed)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    _write_atomic(Path(run_dir) / TRACKING_FILE, json.dumps(record, indent=1))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
