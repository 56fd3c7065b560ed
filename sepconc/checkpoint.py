"""Checkpoints: atomic writes, safe loads, and fallback to the last good file.

A checkpoint is a dict of tensors and plain Python values (model and optimizer
state, epoch, best metric, the resolved flat config, RNG states), so it loads
with `torch.load(weights_only=True)`: nothing in it can run code.

Writes go to a temporary file in the same folder, are flushed and fsync'ed,
then renamed over the target: a crash or a full disk mid-write leaves the
previous checkpoint intact. Files are `epoch_0007.pt`; the newest `keep` stay.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from sepconc.errors import UserError

log = logging.getLogger(__name__)
PATTERN = re.compile(r"epoch_(\d{4,})\.pt$")


class CheckpointError(UserError):
    """A checkpoint that cannot be written or read; the message names the file."""


def checkpoint_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch_{epoch:04d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in `folder`, oldest first (by epoch number)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict[str, Any], path: Path, keep: int | None = None) -> Path:
    """Write `state` to `path` atomically; then delete all but the newest `keep` files.

    A failed write (full disk, quota, permissions) is a `CheckpointError` naming `path`
    and the OS's reason; the temporary file is removed and earlier checkpoints stay.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            writer = _WriteRecorder(handle)
            try:
                torch.save(state, writer)
            except RuntimeError:  # torch reports a failed write as "unexpected pos ..."
                if writer.error is None:
                    raise
                raise writer.error from None
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; "
            f"free space or fix permissions there (the previous checkpoint is intact)"
        ) from None
    except BaseException:
        _remove(tmp)
        raise
    if keep:
        for old in list_checkpoints(path.parent)[:-keep]:
            old.unlink(missing_ok=True)
    return path


class _WriteRecorder:
    """A file handle that remembers the `OSError` of a failed write (torch.save hides it)."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove the partial checkpoint %s", path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint safely; a missing, truncated or foreign file is a `CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the --resume path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({reason}); delete it or resume "
            f"from an earlier one"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"checkpoint {path} is not a sepconc checkpoint (no model/epoch)")
    return state


def resolve_resume(target: str | Path) -> list[Path]:
    """Candidate checkpoints for `--resume`, newest first: a file, or a run/checkpoint folder."""
    target = Path(target)
    if target.is_file():
        number = PATTERN.search(target.name)
        limit = int(number.group(1)) if number else -1
        older = [p for p in list_checkpoints(target.parent)
                 if int(PATTERN.search(p.name).group(1)) < limit]  # fmt: skip
        return [target] + list(reversed(older))
    for folder in (target / "checkpoints", target):
        found = list_checkpoints(folder)
        if found:
            return list(reversed(found))
    raise CheckpointError(
        f"--resume {target}: no checkpoint there (expected a .pt file or a run folder "
        f"with checkpoints/epoch_NNNN.pt)"
    )


def load_latest_good(candidates: list[Path], map_location="cpu") -> tuple[Path, dict[str, Any]]:
    """Load the first candidate that reads; warn about each bad one that has a successor to
    fall back to (the last one's error is raised, not also logged: one line for the user)."""
    errors = []
    for i, path in enumerate(candidates):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as exc:
            errors.append(str(exc))
            if i + 1 < len(candidates):
                log.warning("%s; falling back to %s", exc, candidates[i + 1])
    raise CheckpointError(errors[0] if len(errors) == 1 else f"no readable checkpoint: {errors[0]}")
