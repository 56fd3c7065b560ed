"""Model assembly: the four architectures of docs/models.md from one `ModelConfig`.

A block is `S` (fixed front-end) -> standardization -> `P` -> normalization ->
optional tight frame `A`; blocks are chained and the last feeds the classifier.

| arch | front-end | P | A | blocks |
| analysis | identity | - | yes | 1 |
| scatnet | scattering tree (J) | yes | - | 1 |
| scatnetblock | phase scattering | yes | - | n_blocks |
| scatnetblockanalysis | phase scattering | yes | yes | n_blocks |

Which implementation of each block's operations runs is chosen by
`sepconc.kernels.choose.choose_kernels` from the block's plan, `ModelConfig.kernels` and
the device. Layout: every block (and so `SepConcNet.features`) returns channel-major
tensors with the fused kernels and contiguous ones with the reference kernels
(`Block.output_layout`; `sepconc.kernels.layout` explains the trick): callers see
ordinary shapes and values either way, and `.reshape`/`.contiguous()` work on both.

`plan_model` computes every block's channel counts and sizes without building
anything and refuses impossible configurations; `build_model` builds the
single-device `nn.Module` (the trainer applies DDP from outside).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn

from sepconc.config import Config, ModelConfig
from sepconc.errors import UserError
from sepconc.kernels.choose import KernelChoice, choose_kernels, kernels_for_precision
from sepconc.kernels.layout import to_layout
from sepconc.kernels.phase_projection import phase_standardize_project
from sepconc.kernels.projection import standardize_project
from sepconc.layers.classifier import Classifier
from sepconc.layers.frame import TightFrame
from sepconc.layers.projection import Projection, normalize_positions
from sepconc.precision import float32_region, full


@dataclass(frozen=True)
class BlockPlan:
    """Shapes of one block: input `(in_channels, in_size)` -> output `(out_channels, out_size)`."""

    index: int
    in_channels: int
    in_size: int
    frontend: str  # "identity" | "tree" | "phase"
    frontend_channels: int  # channels after the front-end (C*K)
    frontend_size: int
    proj_size: int | None
    proj_kernel: int
    frame_width: int | None
    frame_kernel: int
    frame_stride: int
    angles: int

    @property
    def out_channels(self) -> int:
        return self.proj_size if self.proj_size is not None else self.frontend_channels

    @property
    def out_size(self) -> int:
        return self.frontend_size

    def parameter_count(self) -> int:
        """`k_P^2 (C K) P` for the projection plus `k_F^2 C width` for the frame."""
        count = 0
        if self.proj_size is not None:
            count += self.proj_kernel**2 * self.frontend_channels * self.proj_size
        if self.frame_width is not None:
            count += self.frame_kernel**2 * self.out_channels * self.frame_width
        return count


def tree_channels(J: int, L: int) -> int:
    """Scattering-tree channels per input channel, order 2: `1 + L J + L^2 J (J - 1) / 2`."""
    return 1 + L * J + L * L * J * (J - 1) // 2


def plan_model(model: ModelConfig, image_shape: tuple[int, int, int]) -> list[BlockPlan]:
    """Every block's shapes for an input `(C, n, n)`; `UserError` for impossible configs."""
    channels, size = image_shape[0], image_shape[1]
    angles = model.block_values("scat_angles")
    proj = model.block_values("P_proj_size")
    proj_k = model.block_values("P_kernel_size")
    width = model.block_values("frame_width")
    frame_k = model.block_values("frame_kernel_size")
    stride = model.block_values("frame_stride")
    has_p = model.arch != "analysis"
    has_frame = model.arch in ("analysis", "scatnetblockanalysis")
    plans = []
    for i in range(model.blocks):
        name = f"block {i + 1} ({model.arch})"
        if model.arch == "analysis":
            frontend, fc, fs = "identity", channels, size
        elif model.arch == "scatnet":
            fs = size // 2**model.scattering_J
            if fs < 1:
                raise UserError(
                    f"{name}: scattering_J={model.scattering_J} needs inputs of at least "
                    f"{2**model.scattering_J} pixels, got {size}; lower scattering_J"
                )
            frontend, fc = "tree", channels * tree_channels(model.scattering_J, angles[i])
        else:
            fs = size // 2
            if fs < 1:
                raise UserError(
                    f"{name}: input is {size}x{size}, too small for another phase-scattering "
                    f"block (it halves the size); lower n_blocks"
                )
            frontend, fc = "phase", channels * (1 + 4 * angles[i])
        if has_p and proj[i] > fc:
            raise UserError(
                f"{name}: P_proj_size {proj[i]} is larger than its input's {fc} channels; "
                f"use at most {fc}"
            )
        if has_p and proj_k[i] > 1 and (proj_k[i] % 2 == 0 or proj_k[i] // 2 >= fs):
            raise UserError(
                f"{name}: P_kernel_size {proj_k[i]} must be odd and smaller than twice the "
                f"{fs}x{fs} input it pads by reflection"
            )
        plan = BlockPlan(i + 1, channels, size, frontend, fc, fs, proj[i] if has_p else None,
                         proj_k[i], width[i] if has_frame else None, frame_k[i], stride[i],
                         angles[i])  # fmt: skip
        if has_frame:
            k, s = frame_k[i], stride[i]
            if k > fs or (fs - k) % s:
                raise UserError(
                    f"{name}: frame_kernel_size {k} with frame_stride {s} does not tile the "
                    f"{fs}x{fs} input ((n - k) must be a multiple of the stride); "
                    f"choose k and stride with (n - k) % stride == 0"
                )
        plans.append(plan)
        channels, size = plan.out_channels, plan.out_size
    if model.avg_ker_size > size:
        raise UserError(
            f"avg_ker_size {model.avg_ker_size} is larger than the last block's "
            f"{size}x{size} output; use at most {size}"
        )
    return plans


def classifier_parameter_count(model: ModelConfig, channels: int, size: int, classes: int) -> int:
    """BatchNorm `2C` plus the linear layers (docs/models.md "Parameter counts")."""
    pooled = size - model.avg_ker_size + 1
    features = channels * pooled * pooled
    if model.classifier_type == "fc":
        return 2 * channels + features * classes + classes
    h = model.nb_hidden_units
    linear = features * h + h + (model.nb_l_mlp - 1) * (h * h + h) + h * classes + classes
    return 2 * channels + linear


def expected_parameter_count(model: ModelConfig, image_shape: tuple, classes: int) -> int:
    """The parameter count docs/models.md's formulas give, without building the model."""
    plans = plan_model(model, image_shape)
    last = plans[-1]
    return sum(p.parameter_count() for p in plans) + classifier_parameter_count(
        model, last.out_channels, last.out_size, classes
    )


class Block(nn.Module):
    """One block: front-end, standardization, projection, normalization, optional frame.

    `x: (B, C, n, n) -> (B, C', n', n')` in `output_layout(device)`. The implementation of
    each operation is `kernels(device)` (`sepconc.kernels.choose.choose_kernels`).
    """

    def __init__(self, plan: BlockPlan, model: ModelConfig):
        super().__init__()
        self.plan = plan
        self.config = model
        self.frontend = _build_frontend(plan, model)
        has_p = plan.proj_size is not None
        self.standardize = nn.BatchNorm2d(plan.frontend_channels, affine=False) if has_p else None
        self.projection = (
            Projection(plan.frontend_channels, plan.proj_size, plan.proj_kernel) if has_p else None
        )
        self.frame = None
        if plan.frame_width is not None:
            self.frame = TightFrame(plan.out_channels, plan.frame_width, plan.frame_kernel,
                                    plan.frame_stride, model.non_linearity, model.zero_bias,
                                    kernels=model.kernels)  # fmt: skip

    def kernels(self, device: torch.device | str) -> KernelChoice:
        """The implementation this block runs on `device`."""
        return choose_kernels(self.plan, self.config, device)

    def output_layout(self, device: torch.device | str) -> str:
        """The layout `forward` returns on `device` (`sepconc.kernels.layout`)."""
        return self.kernels(device).layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x: (B, C, n, n)`, or the front-end's output inside `SepConcNet.frontend_skipped`."""
        choice = self.kernels(x.device)
        outputs = self.plan.frontend_channels * self.plan.frontend_size**2 * x.shape[0]
        phase = getattr(self.frontend, "dense", None) is not None  # not skipped (Identity)
        if phase and choice.fuses_frontend(outputs, self.standardize.training):
            self.frontend.check_input(x)
            x = phase_standardize_project(x, self.frontend.dense, self.standardize,
                                          self.projection)  # fmt: skip
        else:
            with float32_region(x.device.type):  # fixed front-end: float32 under bf16
                x = self.frontend(full(x))
            if self.projection is not None and choice.fused_projection:
                x = standardize_project(x, self.standardize, self.projection)
            elif self.projection is not None:
                x = self.projection(self.standardize(x))
        # the frame normalizes its patches itself
        if self.frame is not None:
            x = self.frame(x)
        else:
            with float32_region(x.device.type):
                x = normalize_positions(full(x))
        return to_layout(x, choice.layout)


def _build_frontend(plan: BlockPlan, model: ModelConfig) -> nn.Module:
    if plan.frontend == "identity":
        return nn.Identity()
    from sepconc.scattering import PhaseScattering2D, ScatteringTree

    if plan.frontend == "tree":
        return ScatteringTree(model.scattering_J, (plan.in_size, plan.in_size), L=plan.angles,
                              backend=model.backend)  # fmt: skip
    return PhaseScattering2D((plan.in_size, plan.in_size), L=plan.angles,
                             method=model.phase_method, kernels=model.kernels)  # fmt: skip


class SepConcNet(nn.Module):
    """Blocks then classifier. `x: (B, C, n, n) -> logits (B, classes)`.

    Single-device and unaware of DDP. `nonfinite_grads` counts the non-finite
    gradient entries zeroed at the inputs of blocks 2.. (docs/models.md: the
    normalization can divide by a zero norm); read it with `pop_nonfinite_count`.
    """

    def __init__(self, model: ModelConfig, image_shape: tuple[int, int, int], classes: int):
        super().__init__()
        model = replace(model, kernels=kernels_for_precision(model.kernels, model.precision))
        self.config = model
        self.plans = plan_model(model, image_shape)
        self.blocks = nn.ModuleList(Block(p, model) for p in self.plans)
        last = self.plans[-1]
        self.classifier = Classifier(last.out_channels, last.out_size, classes,
                                     model.classifier_type, model.avg_ker_size,
                                     model.nb_hidden_units, model.dropout_p_mlp,
                                     model.nb_l_mlp)  # fmt: skip
        self.nonfinite_grads = torch.zeros((), dtype=torch.long)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of every block, each in `self.blocks[i].output_layout(x.device)`."""
        outputs = []
        for i, block in enumerate(self.blocks):
            if i > 0 and x.requires_grad:
                x.register_hook(self._zero_nonfinite)
            x = block(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)[-1])

    @contextmanager
    def frontend_skipped(self, skip: bool = True) -> Iterator[SepConcNet]:
        """Inside, the first block's front-end is `nn.Identity()`: the input is the cached
        front-end output `(B, C K, n', n')` (`sepconc.cache`). Restored on exit (also on an
        error). `skip=False` changes nothing, so callers can pass their cache flag."""
        block = self.blocks[0]
        saved = block.frontend
        if skip:
            block.frontend = nn.Identity()
        try:
            yield self
        finally:
            block.frontend = saved

    def _zero_nonfinite(self, grad: torch.Tensor) -> torch.Tensor:
        bad = ~torch.isfinite(grad)
        self.nonfinite_grads = self.nonfinite_grads.to(grad.device) + bad.sum()
        return grad.masked_fill(bad, 0)

    def pop_nonfinite_count(self) -> int:
        """Non-finite gradient entries zeroed since the last call."""
        count = int(self.nonfinite_grads)
        self.nonfinite_grads = torch.zeros_like(self.nonfinite_grads)
        return count

    def tight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Frames `F` and projections `P`: no weight decay, Parseval step after each update."""
        named = []
        for i, block in enumerate(self.blocks):
            if block.projection is not None:
                named.append((f"block{i + 1}/P", block.projection.weight))
            if block.frame is not None:
                named.append((f"block{i + 1}/frame", block.frame.weight))
        return named


def build_model(config: Config | ModelConfig, image_shape=None, classes=None) -> SepConcNet:
    """Build the network for a config.

    With a full `Config`, the image shape and class count come from its data set
    (`sepconc.data.dataset_spec`, no file read); with a `ModelConfig`, pass them.
    """
    if isinstance(config, Config):
        from sepconc.data import dataset_spec

        d = config.data
        spec_shape, spec_classes = dataset_spec(d.dataset, d.nb_classes, d.compact_head)
        image_shape = image_shape or spec_shape
        classes = classes or spec_classes
        config = config.model
    if image_shape is None or classes is None:
        raise ValueError("build_model(ModelConfig) needs image_shape and classes")
    return SepConcNet(config, tuple(image_shape), classes)
