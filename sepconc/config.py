"""Typed configuration: one dataclass per concern, nested under `Config`.

The public names are the seed's flag names in snake_case (`--P-proj-size` ->
`P_proj_size`, `--wd` -> `weight_decay`), so a sweep's `base:` block and a saved
`config.yaml` read like a command line the user already knows. A flat mapping
`{name: value}` is the exchange format (command line, sweep YAML, checkpoints,
MLflow parameters); `Config.from_flat` validates it and `Config.to_flat` writes it.

Invariants are checked where a config is built; a violation is a `UserError`
naming the field, the bad value and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from sepconc.errors import UserError

ARCHS = ("analysis", "scatnet", "scatnetblock", "scatnetblockanalysis")
NON_LINEARITIES = ("absolute", "softshrink", "relu")
CLASSIFIERS = ("fc", "mlp")
BACKENDS = ("torch", "torch_skcuda")
PHASE_METHODS = ("auto", "fourier", "conv", "dense")
DEVICES = ("auto", "cpu", "cuda")

# Per-block options: one value per block; a single value is repeated, a short
# list is padded with the option's default (MODELS.md, "Notation").
PER_BLOCK = ("scat_angles", "P_proj_size", "P_kernel_size", "frame_width",
             "frame_kernel_size", "frame_stride")  # fmt: skip


@dataclass
class ModelConfig:
    arch: str = "scatnetblockanalysis"
    """Architecture: analysis | scatnet | scatnetblock | scatnetblockanalysis."""
    n_blocks: int = 4
    """Number of blocks (forced to 1 for analysis and scatnet)."""
    scat_angles: list[int] = field(default_factory=lambda: [8])
    """Orientations L of each block's wavelet frame."""
    backend: str = "torch"
    """Kymatio backend for the scattering tree: torch | torch_skcuda."""
    scattering_J: int = 4
    """Largest scale J of the scattering tree (scatnet only)."""
    P_proj_size: list[int] = field(default_factory=lambda: [256])
    """Output channels of each block's learned projection P."""
    P_kernel_size: list[int] = field(default_factory=lambda: [1])
    """Spatial kernel size of each P."""
    non_linearity: str = "relu"
    """Non-linearity of the tight frames: relu (separation) | softshrink (concentration) | absolute."""
    zero_bias: bool = False
    """ReLU with threshold 0 instead of 1/sqrt(width)."""
    frame_width: list[int] = field(default_factory=lambda: [2048])
    """Number of atoms of each tight frame."""
    frame_kernel_size: list[int] = field(default_factory=lambda: [1])
    """Spatial size k of each frame's atoms (patches of k x k)."""
    frame_stride: list[int] = field(default_factory=lambda: [1])
    """Stride between the patches a frame sees."""
    classifier_type: str = "fc"
    """Classifier after the last block: fc | mlp."""
    avg_ker_size: int = 1
    """Average-pooling kernel (stride 1) before the classifier; 1 = none."""
    nb_hidden_units: int = 2048
    """Hidden width of the mlp classifier."""
    dropout_p_mlp: float = 0.3
    """Dropout probability in the mlp classifier."""
    nb_l_mlp: int = 2
    """Number of hidden layers of the mlp classifier."""
    phase_method: str = "auto"
    """Phase scattering path: auto (fastest) | fourier (oracle) | conv (13x13, <=1e-4) | dense (exact, n<=32)."""

    @property
    def blocks(self) -> int:
        """Blocks actually built: analysis and scatnet have exactly one."""
        return 1 if self.arch in ("analysis", "scatnet") else self.n_blocks

    def block_values(self, name: str) -> list:
        """The per-block option `name`, padded to one value per block."""
        values = list(getattr(self, name))
        default = getattr(ModelConfig(), name)[0]
        if len(values) == 1:
            return values * self.blocks
        return values + [default] * (self.blocks - len(values))


@dataclass
class DataConfig:
    dataset: str = "imagenet"
    """mnist | cifar10 | cifar100 | imagenet | digits | synthetic."""
    data: str | None = None
    """Folder holding the data set (torchvision layouts; imagenet: train/ and val/)."""
    workers: int = 4
    """Data-loading worker processes per training process (in-memory sets use none)."""
    download: bool = False
    """Allow torchvision to download mnist/cifar into --data."""
    nb_classes: int = 1000
    """ImageNet only: train on this many classes (random, seeded) when < 1000."""
    class_indices: str | None = None
    """ImageNet only: file of the class indices to use."""
    compact_head: bool = False
    """ImageNet only: k-way classifier, labels 0..k-1 (default: paper's 1000-way, original labels)."""


@dataclass
class OptimConfig:
    epochs: int = 150
    """Total number of epochs."""
    start_epoch: int = 0
    """First epoch (overridden by a resumed checkpoint)."""
    batch_size: int = 256
    """Global mini-batch size, split evenly across DDP processes."""
    lr: float = 0.01
    """Initial learning rate."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 1e-4
    """Weight decay, except on frames and projections (always 0 there)."""
    learning_rate_adjust_frequency: int = 30
    """Multiply the learning rate by 0.1 every this many epochs."""
    pars_beta: float = 5e-4
    """Step size of the tight-frame (Parseval) update after every optimizer step."""


@dataclass
class RunConfig:
    out: str | None = None
    """Run folder: resolved config, checkpoints, metrics.jsonl (default runs/train/<time>)."""
    seed: int | None = None
    """Random seed; None draws one and records it."""
    resume: str | None = None
    """Checkpoint file or run folder to continue from."""
    evaluate: bool = False
    """Only evaluate on the validation set (with --resume)."""
    print_freq: int = 100
    """Log the running loss every this many batches."""
    num_workers: int = 1
    """DDP processes (local processes for `train`, Ray workers in a sweep)."""
    device: str = "auto"
    """cpu | cuda | auto (cuda when present)."""
    checkpoint_every: int = 1
    """Write a checkpoint every this many epochs (and at the last)."""
    checkpoint_keep: int = 2
    """Checkpoints kept on disk (the newest ones)."""
    stats_every: int = 1
    """Compute per-block class statistics every this many epochs; 0 = never."""
    stats_probe_size: int = 512
    """Validation images in the fixed probe set of the class statistics."""
    cache: bool = True
    """Reuse fixed front-end features computed once (see sepconc.cache)."""
    cache_dir: str | None = None
    """Folder of the front-end cache (default runs/cache; a sweep uses <storage>/cache)."""
    cache_max_gib: float = 8.0
    """Largest front-end feature array (one split) written to the cache, in GiB."""


@dataclass
class TrackingConfig:
    tracking_uri: str | None = None
    """MLflow tracking URI (default sqlite:///runs/mlflow.db)."""
    experiment: str | None = None
    """MLflow experiment name (default: sepconc-train for single runs)."""
    tracking: bool = True
    """Log to MLflow."""


SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig,
            "tracking": TrackingConfig}  # fmt: skip
FIELD_SECTION = {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}


def suggest(name: str, choices) -> str:
    """' (did you mean X?)' for a close match of `name` in `choices`, else ''."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @classmethod
    def from_flat(cls, values: dict[str, Any], where: str = "config") -> Config:
        """Build and validate a config from `{seed_flag_name: value}`; unknown keys refused."""
        config = cls()
        for name, value in values.items():
            if name not in FIELD_SECTION:
                raise UserError(f"{where}: unknown key '{name}'{suggest(name, FIELD_SECTION)}")
            setattr(getattr(config, FIELD_SECTION[name]), name, _coerce(name, value, where))
        config.validate(where)
        return config

    def to_flat(self) -> dict[str, Any]:
        """All fields as one flat dict (the inverse of `from_flat`)."""
        flat: dict[str, Any] = {}
        for section in SECTIONS:
            flat.update(dataclasses.asdict(getattr(self, section)))
        return flat

    def replace(self, **changes: Any) -> Config:
        """A validated copy with some flat fields changed."""
        return Config.from_flat({**self.to_flat(), **changes})

    def validate(self, where: str = "config") -> None:
        """Check every invariant that does not need the data set's shape."""
        m, d, o, r = self.model, self.data, self.optim, self.run
        _check_choice(where, "arch", m.arch, ARCHS)
        _check_choice(where, "non_linearity", m.non_linearity, NON_LINEARITIES)
        _check_choice(where, "classifier_type", m.classifier_type, CLASSIFIERS)
        _check_choice(where, "backend", m.backend, BACKENDS)
        _check_choice(where, "phase_method", m.phase_method, PHASE_METHODS)
        _check_choice(where, "device", r.device, DEVICES)
        from sepconc.data import DATASETS

        _check_choice(where, "dataset", d.dataset, DATASETS)
        positive = {"n_blocks": m.n_blocks, "scattering_J": m.scattering_J,
                    "avg_ker_size": m.avg_ker_size, "nb_hidden_units": m.nb_hidden_units,
                    "nb_l_mlp": m.nb_l_mlp, "epochs": o.epochs, "batch_size": o.batch_size,
                    "lr": o.lr, "learning_rate_adjust_frequency": o.learning_rate_adjust_frequency,
                    "nb_classes": d.nb_classes, "print_freq": r.print_freq,
                    "num_workers": r.num_workers, "checkpoint_every": r.checkpoint_every,
                    "checkpoint_keep": r.checkpoint_keep, "stats_probe_size": r.stats_probe_size,
                    "cache_max_gib": r.cache_max_gib}  # fmt: skip
        for name, value in positive.items():
            if not value > 0:
                raise UserError(f"{where}: {name} must be > 0, got {value}")
        for name, value in {"momentum": o.momentum, "weight_decay": o.weight_decay,
                            "pars_beta": o.pars_beta, "start_epoch": o.start_epoch,
                            "workers": d.workers, "stats_every": r.stats_every}.items():  # fmt: skip
            if value < 0:
                raise UserError(f"{where}: {name} must be >= 0, got {value}")
        if not 0 <= m.dropout_p_mlp < 1:
            raise UserError(f"{where}: dropout_p_mlp must be in [0, 1), got {m.dropout_p_mlp}")
        if o.batch_size % r.num_workers:
            raise UserError(
                f"{where}: batch_size {o.batch_size} is not divisible by num_workers "
                f"{r.num_workers}; choose a multiple so every process gets the same share"
            )
        for name in PER_BLOCK:
            values = getattr(m, name)
            if not values:
                raise UserError(f"{where}: {name} needs at least one value")
            if len(values) > m.blocks:
                raise UserError(
                    f"{where}: {name} has {len(values)} values but {m.arch} builds "
                    f"{m.blocks} block(s); give at most {m.blocks} (or raise n_blocks)"
                )
            if any(v <= 0 for v in values):
                raise UserError(f"{where}: every {name} must be > 0, got {values}")
        if r.evaluate and not r.resume:
            raise UserError(f"{where}: evaluate needs a checkpoint: add --resume PATH")

    def save(self, path: Path) -> None:
        """Write the resolved config as YAML (readable by `train --config`)."""
        path.write_text(yaml.safe_dump(self.to_flat(), sort_keys=False))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a saved or exported config (flat YAML mapping) with the safe loader."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass a config.yaml written by a run")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: YAML syntax error{line}; fix the file") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    return values


def _check_choice(where: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise UserError(
            f"{where}: {name} '{value}' is not one of {', '.join(choices)}{suggest(str(value), choices)}"
        )


_TYPES = {f.name: f.type for cls in SECTIONS.values() for f in fields(cls)}


def _coerce(name: str, value: Any, where: str) -> Any:
    """Check a flat value's type (ints accepted for floats; scalars for per-block lists)."""
    kind = _TYPES[name]
    if name in PER_BLOCK:
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise UserError(
                f"{where}: {name} must be an integer or a list of integers, got {value!r}"
            )
        return list(items)
    optional = "None" in kind
    if value is None:
        if optional:
            return None
        raise UserError(f"{where}: {name} cannot be empty")
    base = kind.replace(" | None", "")
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[base]
    if not ok:
        raise UserError(f"{where}: {name} must be {base}, got {value!r} ({type(value).__name__})")
    return float(value) if base == "float" else value
