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

from sepconc.config_file import load_config_file as load_config_file  # re-exported
from sepconc.config_file import yaml_type_problem
from sepconc.errors import UserError
from sepconc.yamlio import dump_yaml

ARCHS = ("analysis", "scatnet", "scatnetblock", "scatnetblockanalysis")
NON_LINEARITIES = ("absolute", "softshrink", "relu")
CLASSIFIERS = ("fc", "mlp")
BACKENDS = ("fft", "torch", "torch_skcuda")  # = sepconc.scattering.tree.BACKENDS
PHASE_METHODS = ("auto", "fourier", "conv", "dense")
KERNELS = ("auto", "fused", "reference")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "tf32")  # sepconc.precision says what each means

# Per-block options: one value per block; a shorter list (a single value included) is
# padded with the option's default, as the authors' parser does (docs/models.md, "Notation").
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
    backend: str = "fft"
    """Scattering tree backend: fft (ours, batched; Kymatio's numbers) | torch | torch_skcuda (Kymatio's)."""
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
    kernels: str = "auto"
    """Implementation of the block operations: auto (fused where measured faster) | fused | reference (stock PyTorch modules)."""
    precision: str = "fp32"
    """Numeric precision: fp32 | bf16 (bfloat16 autocast on CUDA and CPU; front-ends, normalizations, Parseval steps, statistics in float32; reference kernels) | tf32 (CUDA matmuls/convolutions in TF32; no effect on CPU)."""

    @property
    def blocks(self) -> int:
        """Blocks actually built: analysis and scatnet have exactly one."""
        return 1 if self.arch in ("analysis", "scatnet") else self.n_blocks

    def block_values(self, name: str) -> list:
        """The per-block option `name`, one value per block: a shorter list (a single value
        included) is padded with the option's default (`--n-blocks 4 --frame-width 1024`
        -> `[1024, 2048, 2048, 2048]`), as the authors' parser does."""
        values = list(getattr(self, name))
        default = getattr(ModelConfig(), name)[0]
        return values + [default] * (self.blocks - len(values))

    def pad_blocks(self) -> list[str]:
        """Store every per-block option as its `block_values` (the resolved lists that
        `--dry-run`, `validate` and `config.yaml` show); one note per padded option."""
        notes = []
        for name in PER_BLOCK:
            given, values = list(getattr(self, name)), self.block_values(name)
            if len(given) < len(values) and any(v != values[-1] for v in given):
                notes.append(
                    f"{name}: {len(given)} value{'s' if len(given) > 1 else ''} for "
                    f"{self.blocks} blocks, padded with the default {values[-1]}: {values}"
                )
            setattr(self, name, values)
        return notes


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
    batch_size: int = 128
    """Global mini-batch size, split evenly across DDP processes (the authors' default 128)."""
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

# The `launch.py train` flags are generated from the fields (`sepconc.cli.flags`): a field's
# flag is `--field-name` (`scattering_J` -> `--scattering-J`), its help the field's
# docstring, its default and type the field's, per-block lists take one value or more,
# choices are `field_choices()`. Listed here: only what differs: the seed's short forms and
# aliases, and `--no-X` for the options on by default.
FLAG_NAMES = {"arch": ("-a", "--arch"), "workers": ("-j", "--workers"),
              "batch_size": ("-b", "--batch-size"), "lr": ("--lr", "--learning-rate"),
              "weight_decay": ("--wd", "--weight-decay"), "print_freq": ("-p", "--print-freq"),
              "evaluate": ("-e", "--evaluate"), "out": ("--out", "--dir"),
              "cache": ("--no-cache",), "tracking": ("--no-tracking",)}  # fmt: skip
# Fields without a flag (a config file's or a sweep's `base:` only).
NO_FLAG = ("checkpoint_every", "stats_probe_size", "cache_dir", "cache_max_gib")
# Checked against `field_choices()` by `Config.problems`, free text on the command line
# (the seed's `--backend BACKEND`).
FREE_TEXT_FLAGS = ("backend",)


def field_choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of each text field that has a fixed set of them."""
    from sepconc.data import DATASETS

    return {"arch": ARCHS, "non_linearity": NON_LINEARITIES, "classifier_type": CLASSIFIERS,
            "backend": BACKENDS, "phase_method": PHASE_METHODS, "kernels": KERNELS,
            "device": DEVICES, "dataset": DATASETS,
            "precision": PRECISIONS}  # fmt: skip


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
    notes: list[str] = field(default_factory=list, compare=False, repr=False)
    """What was resolved rather than given (a padded per-block list), one line each."""

    @classmethod
    def from_flat(cls, values: dict[str, Any], where: str = "config") -> Config:
        """Build and validate a config from `{seed_flag_name: value}`.

        Per-block lists shorter than the blocks built are padded with the option's
        default (a line in `notes` says so). Raises `UserError` listing EVERY problem
        (unknown key, wrong type, broken invariant), one line each, prefixed by `where`.
        """
        config, problems = cls.check_flat(values, where)
        if problems:
            raise UserError("\n".join(problems))
        return config

    @classmethod
    def check_flat(cls, values: dict[str, Any], where: str = "config") -> tuple[Config, list[str]]:
        """`(config, problems)`: like `from_flat` but returns the problems (each a line
        `where: ...`, bare when `where` is "") instead of raising; a field with a problem
        keeps its default."""
        config, problems = cls(), []
        for name, value in values.items():
            if name not in FIELD_SECTION:
                problems.append(f"unknown key '{name}'{suggest(name, FIELD_SECTION)}")
                continue
            value, problem = _coerce(name, value)
            if problem:
                problems.append(problem)
            else:
                setattr(getattr(config, FIELD_SECTION[name]), name, value)
        problems += config.problems()
        if not problems:
            config.notes = config.model.pad_blocks()
        return config, [f"{where}: {p}" if where else p for p in dict.fromkeys(problems)]

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
        """Raise `UserError` listing every broken invariant (see `problems`)."""
        problems = self.problems()
        if problems:
            raise UserError("\n".join(f"{where}: {p}" for p in problems))

    def problems(self) -> list[str]:
        """Every invariant that does not need the data set's shape and is broken, one line
        each (naming the field, the value and the fix); [] when the config is valid."""
        m, d, o, r = self.model, self.data, self.optim, self.run
        flat = self.to_flat()
        out = [problem for name, choices in field_choices().items()
               if (problem := _choice_problem(name, flat[name], choices))]  # fmt: skip
        positive = {"n_blocks": m.n_blocks, "scattering_J": m.scattering_J,
                    "avg_ker_size": m.avg_ker_size, "nb_hidden_units": m.nb_hidden_units,
                    "nb_l_mlp": m.nb_l_mlp, "epochs": o.epochs, "batch_size": o.batch_size,
                    "lr": o.lr, "learning_rate_adjust_frequency": o.learning_rate_adjust_frequency,
                    "nb_classes": d.nb_classes, "print_freq": r.print_freq,
                    "num_workers": r.num_workers, "checkpoint_every": r.checkpoint_every,
                    "checkpoint_keep": r.checkpoint_keep, "stats_probe_size": r.stats_probe_size,
                    "cache_max_gib": r.cache_max_gib}  # fmt: skip
        out += [f"{name} must be > 0, got {value}" for name, value in positive.items()
                if not value > 0]  # fmt: skip
        for name, value in {"momentum": o.momentum, "weight_decay": o.weight_decay,
                            "pars_beta": o.pars_beta, "start_epoch": o.start_epoch,
                            "workers": d.workers, "stats_every": r.stats_every}.items():  # fmt: skip
            if not value >= 0:
                out.append(f"{name} must be >= 0, got {value}")
        if not 0 <= m.dropout_p_mlp < 1:
            out.append(f"dropout_p_mlp must be in [0, 1), got {m.dropout_p_mlp}")
        if r.num_workers > 0 and o.batch_size % r.num_workers:
            out.append(
                f"batch_size {o.batch_size} is not divisible by num_workers {r.num_workers}; "
                f"choose a multiple of {r.num_workers} so every process gets the same share"
            )
        for name in PER_BLOCK:
            values = getattr(m, name)
            if not values:
                out.append(f"{name} needs at least one value")
            elif len(values) > m.blocks:
                out.append(
                    f"{name} has {len(values)} values but {m.arch} builds "
                    f"{m.blocks} block(s); give at most {m.blocks} (or raise n_blocks)"
                )
            elif any(v <= 0 for v in values):
                out.append(f"every {name} must be > 0, got {values}")
        if m.precision == "bf16" and m.kernels == "fused":  # gpu: kernels_for_precision
            out.append("kernels 'fused' cannot run with precision 'bf16' (the fused kernels are "
                       "float32 only); use --kernels auto or reference with bf16")  # fmt: skip
        if r.evaluate and not r.resume:
            out.append("evaluate needs a checkpoint: add --resume PATH")
        return out

    def save(self, path: Path) -> None:
        """Write the resolved config as YAML (readable by `train --config`)."""
        path.write_text(dump_yaml(self.to_flat()))


def _choice_problem(name: str, value: Any, choices: tuple) -> str | None:
    if value in choices:
        return None
    return f"{name} '{value}' is not one of {', '.join(choices)}{suggest(str(value), choices)}"


_TYPES = {f.name: f.type for cls in SECTIONS.values() for f in fields(cls)}


def field_kind(name: str) -> str:
    """The base type of flat field `name`: 'int', 'float', 'bool', 'str' or 'int list'
    (a per-block option)."""
    return "int list" if name in PER_BLOCK else _TYPES[name].replace(" | None", "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coerce(name: str, value: Any) -> tuple[Any, str | None]:
    """`(value, None)` when a flat value has the field's type (ints accepted for floats,
    a scalar for a per-block list), else `(None, problem)`; the problem names YAML's
    implicit types (booleans, numbers, dates) when that is why the type is wrong."""
    kind = field_kind(name)
    if kind == "int list":
        items = value if isinstance(value, (list, tuple)) else [value]
        if all(_is_int(v) for v in items):
            return list(items), None
        return None, f"{name} must be an integer or a list of integers, got {value!r}"
    if value is None:
        if "None" in _TYPES[name]:
            return None, None
        return None, f"{name} cannot be empty"
    ok = {
        "int": _is_int(value),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if ok:
        return (float(value) if kind == "float" else value), None
    if kind == "str" and not isinstance(value, (list, dict)):
        return None, yaml_type_problem(name, value)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return None, (f"{name} must be int, got {value!r} (float); write it without a dot or "
                      f"exponent: {name}: {int(value)}")  # fmt: skip
    return None, f"{name} must be {kind}, got {value!r} ({type(value).__name__})"
