"""Front-end cache: the first block's fixed front-end computed once per data split, reused.

`scatnet`'s scattering tree and the first phase scattering of `scatnetblock*` have
no learned parameter, so for a split whose transform is deterministic their output
`S x` is the same for every epoch, trial and sweep that share the data, the
front-end and its parameters. We compute it once, in eval mode, in float32 batches
of `BUILD_BATCH` on the run's device, into

    <cache_dir>/<key>.npy    float32 (N, C*K, n', n'), row i = S(transform(image_i))
    <cache_dir>/<key>.json   the key's fields, shape, build time, builder pid/host
    <cache_dir>/<key>.lock   a `filelock.FileLock` serializing the build

and train on `np.load(..., mmap_mode="r")` inside `SepConcNet.frontend_skipped()` (labels are
the split's own). `key = sha256(json(fields))` over: `CACHE_VERSION`, the data set
name, the split, a sha256 of the stored images (or of the file list, sizes and
mtimes for file-backed sets), the transform's parameters, the front-end's type
and parameters (tree: J, L, shape, backend, order; phase: n, L, resolved method,
kernel size), the kymatio version and the dtype. Anything else (seed, P, frames,
optimizer) does not change `S x`, so sweeps over it share one file.

Concurrency: every process (DDP rank, trial) computes the same key; the first to
take the lock builds into `<key>.tmp-<pid>.npy` and renames it (atomic) to
`<key>.npy` after writing the sidecar; the others block on the lock, then find the
file and memory-map it. A crashed builder leaves only a temp file, removed by the
next builder. Skipped (with a log line saying why): `--no-cache`, an identity
front-end (`analysis`), a random train transform (CIFAR/ImageNet crops and flips:
val is still cached), features larger than `cache_max_gib` or than the free disk.
A failed build (disk full) logs a warning and trains without the cache. The build shows
its progress (rate, ETA) on rank 0 (`sepconc.progress.track`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sepconc.data.types import DataBundle, TensorImageDataset, files_of, images_of, labels_of
from sepconc.progress import track

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the front-ends' numbers change
DEFAULT_CACHE_DIR = "runs/cache"
BUILD_BATCH = 256
RANDOM_TRAIN = "train: cache skipped: random train transform (random crop/flip)"


@dataclass
class CachedSplits:
    """The datasets to train and evaluate on, and whether each holds front-end features."""

    train: Dataset
    val: Dataset
    train_cached: bool = False
    val_cached: bool = False


@dataclass
class CacheResult:
    """One split's features (`(N, C*K, n', n')` float32, memory-mapped) and how they came."""

    features: np.ndarray
    path: Path
    built: bool  # True in the one process that computed them
    seconds: float


def cached_splits(
    net: nn.Module, data: DataBundle, config, device: torch.device, verbose: bool = True
) -> CachedSplits:
    """Replace the cacheable splits of `data` by datasets of first-block features.

    `net` is the bare `SepConcNet` (its `blocks[0].frontend` is used); `config` the run's
    `Config` (`run.cache`, `run.cache_dir`, `run.cache_max_gib`, `data.workers`).
    """
    say = log.info if verbose else log.debug
    out = CachedSplits(data.train, data.val)
    if not config.run.cache:
        say("cache disabled (--no-cache): the front-end is recomputed every batch")
        return out
    frontend = net.blocks[0].frontend
    if frontend_fields(frontend, device) is None:
        say("cache skipped: %s has no fixed front-end to cache", config.model.arch)
        return out
    cache_dir = Path(config.run.cache_dir or DEFAULT_CACHE_DIR)
    for split in ("train", "val"):
        dataset = getattr(data, split)
        if split == "train" and data.train_transform_is_random:
            say(RANDOM_TRAIN)
            continue
        result = load_or_build(frontend, dataset, data.identity.get("name", "?"), split,
                               cache_dir, device, max_gib=config.run.cache_max_gib,
                               workers=config.data.workers, verbose=verbose)  # fmt: skip
        if result is None:
            continue
        features = features_tensor(result.features)
        setattr(out, split, TensorImageDataset(features, dataset_labels(dataset)))
        setattr(out, f"{split}_cached", True)
    return out


def frontend_fields(frontend: nn.Module, device: torch.device | None = None) -> dict | None:
    """The parameters that determine a fixed front-end's output, or None (nothing to cache)."""
    from sepconc.scattering import PhaseScattering2D, ScatteringTree

    if isinstance(frontend, ScatteringTree):
        return {"type": "ScatteringTree", "J": frontend.J, "L": frontend.L,
                "shape": list(frontend.shape), "backend": frontend.backend, "max_order": 2}  # fmt: skip
    if isinstance(frontend, PhaseScattering2D):
        return {"type": "PhaseScattering2D", "n": frontend.n, "L": frontend.L,
                "method": frontend.resolved_method,
                "kernel_size": frontend.kernel_size}  # fmt: skip
    return None


def key_fields(
    frontend: nn.Module,
    dataset: Dataset,
    dataset_name: str,
    split: str,
    dtype: str = "float32",
    device: torch.device | None = None,
) -> dict[str, Any] | None:
    """Everything the cached array depends on (None when it cannot be identified)."""
    import kymatio

    front = frontend_fields(frontend, device)
    content = dataset_fingerprint(dataset)
    if front is None or content is None:
        return None
    return {"version": CACHE_VERSION, "dataset": dataset_name, "split": split,
            "content": content, "transform": describe_transform(getattr(dataset, "transform", None)),
            "frontend": front, "kymatio": kymatio.__version__, "dtype": dtype}  # fmt: skip


def cache_key(fields: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of `fields` (sorted keys)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load_or_build(
    frontend: nn.Module,
    dataset: Dataset,
    dataset_name: str,
    split: str,
    cache_dir: str | Path,
    device: torch.device,
    max_gib: float = 8.0,
    workers: int = 0,
    verbose: bool = True,
) -> CacheResult | None:
    """The split's features from `cache_dir`, built under the key's lock if absent; None = skip."""
    say = log.info if verbose else log.debug
    if len(dataset) == 0:
        say("%s: cache skipped: the split is empty", split)
        return None
    fields = key_fields(frontend, dataset, dataset_name, split, device=device)
    if fields is None:
        say("%s: cache skipped: cannot fingerprint a %s", split, type(dataset).__name__)
        return None
    key = cache_key(fields)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{key}.npy"
    started = time.perf_counter()
    found = _load(path, len(dataset))
    if found is not None:
        say("%s: cache hit %s %s", split, path, tuple(found.shape))
        return CacheResult(found, path, False, time.perf_counter() - started)
    frontend_mode = frontend.training
    frontend.eval()
    try:
        with torch.no_grad():
            first = frontend(_item(dataset, 0)[None].to(device)).float()
        shape = (len(dataset), *first.shape[1:])
        need = int(np.prod(shape)) * 4
        if need > max_gib * 2**30:
            say("%s: cache skipped: features take %.2f GiB > cache_max_gib %.2f; raise "
                "cache_max_gib to cache them", split, need / 2**30, max_gib)  # fmt: skip
            return None
        cache_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache_dir).free
        if need * 1.1 > free:
            log.warning("%s: cache skipped: features need %.2f GiB, %s has %.2f GiB free",
                        split, need / 2**30, cache_dir, free / 2**30)  # fmt: skip
            return None
        lock = FileLock(str(cache_dir / f"{key}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            say("%s: cache %s being built by another process: waiting", split, key[:12])
            lock.acquire()
        try:
            found = _load(path, len(dataset))
            if found is not None:
                say("%s: cache hit %s (built by another process)", split, path)
                return CacheResult(found, path, False, time.perf_counter() - started)
            say("%s: cache miss: computing %s features %s into %s", split,
                fields["frontend"]["type"], shape, path)  # fmt: skip
            label = f"{split}: cache build"  # short: the bar fits 80 columns
            with track(label, shape[0], "images", done=True, enabled=verbose) as advance:
                _build(frontend, dataset, path, shape, fields, key, device, workers, advance)
        finally:
            lock.release()
    except OSError as exc:
        log.warning("%s: cache not used: %s (training recomputes the front-end)", split, exc)
        return None
    finally:
        frontend.train(frontend_mode)
    seconds = time.perf_counter() - started
    say("%s: cache built in %.1f s: %s", split, seconds, path)
    return CacheResult(np.load(path, mmap_mode="r"), path, True, seconds)


def _load(path: Path, rows: int) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        log.warning("cache file %s unreadable (%s): rebuilding it", path, exc)
        return None
    if array.shape[0] != rows or array.dtype != np.float32:
        log.warning("cache file %s has %s %s, expected %d float32 rows: rebuilding it",
                    path, array.shape, array.dtype, rows)  # fmt: skip
        return None
    return array


def _build(frontend, dataset, path: Path, shape, fields, key, device, workers,
           advance=lambda n: None) -> None:  # fmt: skip
    """Write the features to a temp file, the sidecar, then rename (the lock is held);
    `advance(n)` after each batch of `n` images (`sepconc.progress.track`)."""
    for stale in glob.glob(str(path.with_name(f"{key}.tmp-*"))):
        os.unlink(stale)
    tmp = path.with_name(f"{key}.tmp-{os.getpid()}.npy")
    started = time.perf_counter()
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
    try:
        row = 0
        with torch.no_grad():
            for images in _input_batches(dataset, workers):
                feats = frontend(images.to(device).float()).float().cpu().numpy()
                out[row : row + len(feats)] = feats
                row += len(feats)
                advance(len(feats))
        out.flush()
        del out
        sidecar = {"key": key, "fields": fields, "shape": list(shape), "dtype": "float32",
                   "build_seconds": round(time.perf_counter() - started, 3),
                   "built_at": datetime.now().isoformat(timespec="seconds"),
                   "builder_pid": os.getpid(), "host": socket.gethostname(),
                   "device": str(device)}  # fmt: skip
        side_tmp = path.with_name(f"{key}.tmp-{os.getpid()}.json")
        side_tmp.write_text(json.dumps(sidecar, indent=1))
        os.replace(side_tmp, path.with_suffix(".json"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _input_batches(dataset: Dataset, workers: int):
    """The split's transformed images in order, `BUILD_BATCH` at a time."""
    images = images_of(dataset)
    if images is not None:
        transform = dataset.transform
        for start in range(0, len(dataset), BUILD_BATCH):
            chunk = images[start : start + BUILD_BATCH]
            yield chunk.float() if transform is None else torch.stack([transform(x) for x in chunk])
        return
    loader = DataLoader(dataset, batch_size=BUILD_BATCH, shuffle=False, num_workers=workers)
    for batch, _ in loader:
        yield batch


def _item(dataset: Dataset, index: int) -> torch.Tensor:
    return dataset[index][0].float()


dataset_labels = labels_of  # the data layer's accessor (name kept for benchmarks/cache_epoch.py)


def dataset_fingerprint(dataset: Dataset) -> dict | None:
    """sha256 of an in-memory split's stored images, or of a file-backed split's file list."""
    images = images_of(dataset)
    if images is not None:
        array = np.ascontiguousarray(images.detach().cpu().numpy())
        digest = hashlib.sha256(memoryview(array).cast("B")).hexdigest()
        return {"images_sha256": digest, "shape": list(array.shape), "dtype": str(array.dtype)}
    samples = files_of(dataset)
    if samples is not None:
        h = hashlib.sha256()
        for file, label in samples:
            st = os.stat(file)
            h.update(f"{os.path.abspath(file)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"files_sha256": h.hexdigest(), "count": len(samples)}
    return None


def describe_transform(transform) -> Any:
    """A stable, JSON-able description of a deterministic transform (no memory addresses)."""
    if transform is None:
        return None
    if type(transform).__repr__ is not object.__repr__:
        return repr(transform)
    attrs = {}
    for name, value in sorted(vars(transform).items()):
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        elif not isinstance(value, (int, float, str, bool, tuple, list, type(None))):
            value = describe_transform(value)
        attrs[name] = value
    return {"type": f"{type(transform).__module__}.{type(transform).__qualname__}", **attrs}


def features_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over the read-only memory map (never written: batches are gathered copies)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(array)
