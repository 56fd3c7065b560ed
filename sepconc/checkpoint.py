"""Checkpoints: atomic writes, safe loads, and fallback to the last good file.

A checkpoint is a dict of tensors and plain Python values (model and optimizer
state, epoch, best metric, the resolved flat config, RNG states), so it loads
with `torch.load(weights_only=True)`: nothing in it can run code.

Writes go to a temporary file in the same folder, are flushed and fsync'ed,
then renamed over the target: a crash or a full disk mid-write leaves the
previous checkpoint intact (a process killed mid-write leaves a hidden
`.epoch_0007.pt.tmp-PID`, removed by `remove_partial_writes` when the run is
resumed). Files are `epoch_0007.pt`. Retention keeps the newest `keep` files of the
run's own lineage: the file just written and those of earlier epochs; it never
deletes the file just written, nor files of later epochs (an abandoned
continuation, which the trainer sets aside before resuming).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from sepconc.errors import UserError, clean_reason

log = logging.getLogger(__name__)
PATTERN = re.compile(r"epoch_(\d{4,})\.pt$")
PARTIAL = re.compile(r"^\.epoch_\d{4,}\.pt\.tmp-\d+$")


class CheckpointError(UserError):
    """A checkpoint that cannot be written or read; the message names the file."""


def checkpoint_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch_{epoch:04d}.pt"


def checkpoint_epoch(path: Path) -> int:
    """The epoch in a checkpoint's file name (`epoch_0007.pt` -> 7); -1 for another name."""
    number = PATTERN.search(Path(path).name)
    return int(number.group(1)) if number else -1


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in `folder`, oldest first (by epoch number)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict[str, Any], path: Path, keep: int | None = None) -> Path:
    """Write `state` to `path` atomically; then keep only the newest `keep` checkpoints of
    this lineage (`path` and those of earlier epochs; see `prune_checkpoints`).

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
        prune_checkpoints(path, keep)
    return path


def prune_checkpoints(newest: Path, keep: int) -> list[Path]:
    """Delete checkpoints of epochs before `newest`'s so that `keep` remain, `newest` included.

    `newest` itself and files of later epochs are never deleted (the names sort by epoch,
    and a later epoch is not this run's lineage). Returns the files deleted.
    """
    epoch = checkpoint_epoch(newest)
    older = [p for p in list_checkpoints(newest.parent) if checkpoint_epoch(p) < epoch]
    doomed = older[: max(len(older) - (keep - 1), 0)]
    for old in doomed:
        old.unlink(missing_ok=True)
    return doomed


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that never finished (a killed process).

    Only `.epoch_NNNN.pt.tmp-PID` files go; call it where no other process writes this
    folder (the run's rank 0, before its first epoch). Returns the files removed.
    """
    found = [p for p in folder.iterdir() if PARTIAL.match(p.name)] if folder.is_dir() else []
    for path in found:
        _remove(path)
    return found


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
    """Load one checkpoint with `torch.load(weights_only=True)`; nothing in it can run code.

    Returns sepconc's layout (`model`, `optimizer`, `epoch`, `best_val_acc1`, `rng_cpu`,
    ...). The paper's `main.py` layout (`epoch`, `arch`, `state_dict`, `best_acc1`,
    `optimizer`, usually `*.pth.tar`) is recognised and converted (`from_paper_layout`).
    Raises `CheckpointError`, one line naming the file, when it is missing, truncated
    or damaged, intact but holding objects the safe loader refuses (they are named;
    the file is not called corrupt), or in neither layout.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the --resume path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = refused_globals(path, exc)
        if not refused:
            raise CheckpointError(_damaged_message(path, exc)) from None
        raise CheckpointError(_refused_message(path, refused)) from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(_damaged_message(path, exc)) from None
    if isinstance(state, dict) and PAPER_KEYS <= state.keys() and "model" not in state:
        state = from_paper_layout(path, state)
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(
            f"checkpoint {path} is not a sepconc checkpoint (keys: {_keys(state)}; expected "
            f"model and epoch, or the paper's {', '.join(sorted(PAPER_KEYS))})"
        )
    return state


PAPER_KEYS = frozenset({"epoch", "state_dict", "best_acc1"})  # + arch, optimizer


def from_paper_layout(path: Path, paper: dict[str, Any]) -> dict[str, Any]:
    """sepconc's layout from the paper's `{epoch, arch, state_dict, best_acc1, optimizer}`.

    The weights are resumed when their names are sepconc's (a leading `module.` from
    DataParallel/DDP is dropped). The authors' own module names (`0.module.analysis.
    frame_weight`, ...) are a `CheckpointError` saying so. The paper layout has no RNG
    state: `rng_cpu` is the current generator's, so the random streams are not restored.
    """
    weights = {_strip_module(k): v for k, v in paper["state_dict"].items()}
    authors = sorted(
        k for k in weights if re.match(r"\d+\.module\.|\d+\.(analysis|linear_proj|classifier)\.", k)
    )
    if authors:
        raise CheckpointError(
            f"checkpoint {path} is the paper's main.py layout with the authors' module names "
            f"(e.g. {authors[0]}), which sepconc's model does not use; it cannot resume from "
            f"it: retrain with sepconc, or rename the state_dict keys to sepconc's"
        )
    if "optimizer" not in paper:
        raise CheckpointError(
            f"checkpoint {path} is the paper's main.py layout without an optimizer state; "
            f"sepconc resumes model and optimizer together: re-save it with the optimizer"
        )
    log.info(
        "checkpoint %s has the paper's main.py layout (arch %s): resuming its weights and "
        "optimizer at epoch %s, without RNG state",
        path, paper.get("arch", "?"), int(paper["epoch"]),
    )  # fmt: skip
    best = paper["best_acc1"]
    return {"model": weights, "optimizer": paper["optimizer"], "epoch": int(paper["epoch"]),
            "best_val_acc1": float(best), "rng_cpu": torch.get_rng_state(),
            "layout": "paper main.py"}  # fmt: skip


def refused_globals(path: Path, exc: BaseException) -> list[str]:
    """Names of the objects `torch.load(weights_only=True)` refused in `path`, or [] when
    `exc` is not such a refusal: the name in torch's message, plus every other global the
    file's pickle imports that torch does not allow (read from its opcodes, run nothing)."""
    named = re.findall(r"unsupported (?:global: )?GLOBAL ([\w.]+)", str(exc), flags=re.IGNORECASE)
    if not named:
        return []
    try:
        others = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - a legacy (non-zip) file: torch's name is enough
        others = []
    return list(dict.fromkeys(named + sorted(others)))


def check_loadable(candidates: list[Path]) -> None:
    """`train`'s pre-flight for `--resume`: a `CheckpointError` now when every candidate
    holds objects the safe loader refuses (`load_checkpoint`'s message for the first).

    Reads only each file's pickle, not its tensors, and runs nothing in it; files torch
    cannot scan this way (legacy format, damaged) are left to `load_checkpoint`.
    """
    first = None
    for path in candidates:
        try:
            refused = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - not a zip checkpoint: the real load decides
            return
        if not refused:
            return
        first = first or _refused_message(path, refused)
    if first:
        raise CheckpointError(first)


# Modules whose globals can run code: never suggest allowing them (torch blocks the first four).
# (Pickle protocol 2, torch.save's, writes builtins as __builtin__ and subprocess as commands.)
_CODE_MODULES = ("sys", "os", "posix", "nt", "subprocess", "commands", "builtins", "__builtin__",
                 "shutil", "importlib", "runpy", "pty", "socket", "pickle", "marshal", "types",
                 "code", "ctypes")  # fmt: skip


def _refused_message(path: Path, refused: list[str]) -> str:
    risky = [n for n in refused if n.split(".")[0] in _CODE_MODULES]
    if risky:
        return (
            f"checkpoint {path} holds a call to {', '.join(risky)}, which the safe loader "
            f"refuses because it could run code; sepconc will not load it: resume from a "
            f"checkpoint you trust"
        )
    return (
        f"checkpoint {path} is intact but holds objects the safe loader "
        f"(torch.load weights_only=True) refuses: {', '.join(refused)}; re-save it "
        f"without them (e.g. plain floats instead of numpy scalars, a dict instead of "
        f"an argparse.Namespace), or, if you trust the file, allow them with "
        f"torch.serialization.add_safe_globals before resuming"
    )


def _damaged_message(path: Path, exc: BaseException) -> str:
    return (
        f"checkpoint {path} is corrupt or truncated ({clean_reason(exc)}); delete it or "
        f"resume from an earlier one"
    )


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def _keys(state: Any) -> str:
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a dict"
    names = sorted(str(k) for k in state)
    return ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")


def resolve_resume(target: str | Path) -> list[Path]:
    """Candidate checkpoints for `--resume`, newest first: a file, or a run/checkpoint folder."""
    target = Path(target)
    if target.is_file():
        limit = checkpoint_epoch(target)
        older = [p for p in list_checkpoints(target.parent) if checkpoint_epoch(p) < limit]
        return [target] + list(reversed(older))
    for folder in (target / "checkpoints", target):
        found = list_checkpoints(folder)
        if found:
            return list(reversed(found))
    raise CheckpointError(
        f"--resume {target}: no checkpoint there (expected a .pt file or a run folder "
        f"with checkpoints/epoch_NNNN.pt)"
    )


def load_latest_good(
    candidates: list[Path], map_location="cpu", warn: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Load the first candidate that reads; warn (unless `warn` is False: a check that the
    real load repeats) about each bad one that has a successor to fall back to. The last
    one's error is raised, not also logged: one line for the user."""
    errors = []
    for i, path in enumerate(candidates):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as exc:
            errors.append(str(exc))
            if warn and i + 1 < len(candidates):
                log.warning("%s; falling back to %s", exc, candidates[i + 1])
    raise CheckpointError(errors[0] if len(errors) == 1 else f"no readable checkpoint: {errors[0]}")
