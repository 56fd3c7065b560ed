"""Which implementation of the block operations runs: decided here and nowhere else.

The setting is `ModelConfig.kernels` (flag `--kernels`):

- `reference`: stock PyTorch end to end. `BatchNorm2d` then `Projection` (its 1x1
  matmul or its convolution), the frame as two convolutions with plain autograd
  (`kernels.frame.frame_reference`, every `k`), and the phase scattering's own
  `phase_method` evaluated with stock ops (`dense`: one GEMM then `common.rectify`, no
  in-place rectification or folded backward). Every module returns contiguous tensors.
- `fused`: every fused kernel wherever it applies: the dense phase scattering
  (`DenseRectified`), the standardization folded into every 1x1 projection
  (`StandardizedProjection`), the k = 1 stride-1 frame as matrix products
  (`PointwiseReluFrame` for relu), every other frame (k > 1 or stride > 1: overlapping
  patches) as the same matrix products over its patch rows (`kernels.frame.patch_frame`),
  and, in training mode, the dense phase scattering +
  standardization + projection as one operation (`DensePhaseStandardizedProjection`)
  whatever its size. Modules return channel-major tensors (`sepconc.kernels.layout`).
- `auto`: on CPU the fused kernels where they were measured faster: as `fused`, except
  that the phase + standardization + projection fusion needs a phase-scattering output
  of at least `FUSED_MIN_ELEMENTS`. On any other device (CUDA): `reference`, until a GPU
  test shows a fused path equal and faster (tests/test_gpu_kernels.py checks equality).

The phase scattering's method is its own option (`phase_method`, `phase_method_for`):
`auto` takes the dense form for `n <= AUTO_DENSE_MAX_N` and the convolution above it,
on every device (measured on CPU only, see `sepconc.scattering.phase`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sepconc.config import KERNELS

from .layout import CHANNEL_MAJOR, CONTIGUOUS

__all__ = ["FRAME_PATHS", "KERNELS", "KernelChoice", "choose_kernels", "frame_path",
           "kernels_for_precision", "output_layout", "phase_method_for", "uses_fused"]  # fmt: skip

#: The frame's implementations (`frame_path`): `kernels.frame.pointwise_frame` (k = 1,
#: stride 1), `kernels.frame.patch_frame` (any other k and stride), `frame_reference`.
#: `patches` measured on CPU (2 threads, forward + backward of the frame alone, relu,
#: loaded machine): CIFAR-10 8/8192/4 (batch 16) 3.9x, 16/8192/4 4.7x, a 64-channel
#: 16x16 block's 2/1024/2 (batch 32) 1.5x faster than the reference's convolutions; the
#: MNIST 14/2048/7 training step: benchmarks/train_step.py --compare-kernels.
FRAME_PATHS = ("pointwise", "patches", "reference")


#: `phase_method="auto"` takes the dense form up to this size, the convolution above it.
AUTO_DENSE_MAX_N = 16

#: Smallest phase-scattering output (elements, batch included) that `auto` fuses with the
#: standardization and projection. Measured on CPU, forward + backward, batch 128, L = 8:
#: CIFAR-10 block 2 (17.3M elements) 256 -> 206 ms, block 3 (8.7M) 152 -> 117 ms, block 4
#: (4.3M) 122 -> 130 ms (too few channel blocks to pay for them).
FUSED_MIN_ELEMENTS = 1 << 23


def uses_fused(kernels: str, device: torch.device | str) -> bool:
    """Whether setting `kernels` runs the fused kernels on `device`."""
    if kernels not in KERNELS:
        raise ValueError(f"unknown kernels {kernels!r}; valid: {', '.join(KERNELS)}")
    if kernels == "auto":
        return torch.device(device).type == "cpu"
    return kernels == "fused"


def kernels_for_precision(kernels: str, precision: str) -> str:
    """The rule BF16_RUNS_REFERENCE (`sepconc.precision`): under bf16 every block runs the
    reference kernels, autocast op by op (the fused kernels are float32 only)."""
    return "reference" if precision == "bf16" else kernels


def output_layout(kernels: str, device: torch.device | str) -> str:
    """The layout the block modules return under `kernels` on `device`."""
    return CHANNEL_MAJOR if uses_fused(kernels, device) else CONTIGUOUS


def phase_method_for(method: str, n: int) -> str:
    """The phase scattering's path for `phase_method=method` on `n x n` inputs."""
    if method != "auto":
        return method
    return "dense" if n <= AUTO_DENSE_MAX_N else "conv"


@dataclass(frozen=True)
class KernelChoice:
    """The implementation of one block's operations on one device (`choose_kernels`).

    `fused`: the fused kernels run (else the reference); `phase_method`: the resolved
    phase-scattering path (None without phase scattering); `fused_projection`: the
    standardization is folded into the 1x1 projection; `fused_frame`: the frame runs as
    matrix products (`frame_path`: pointwise for k = 1, over patch rows otherwise); `frontend_min_elements`: the phase + standardization +
    projection fusion runs on training batches whose phase output has at least this many
    elements (None: never); `layout`: the block's output layout.
    """

    fused: bool
    phase_method: str | None
    fused_projection: bool
    fused_frame: bool
    frontend_min_elements: int | None
    layout: str

    def fuses_frontend(self, elements: int, training: bool) -> bool:
        """Whether a batch whose phase-scattering output has `elements` elements runs the
        front-end, standardization and projection as one operation (`training` mode only:
        the fusion always takes batch statistics)."""
        return (training and self.frontend_min_elements is not None
                and elements >= self.frontend_min_elements)  # fmt: skip


def choose_kernels(plan, model, device: torch.device | str) -> KernelChoice:
    """The kernels of the block `plan` (`sepconc.model.BlockPlan`) for `model`
    (`ModelConfig`: `kernels`, `phase_method`) on `device`."""
    fused = uses_fused(model.kernels, device)
    phase = phase_method_for(model.phase_method, plan.in_size) if plan.frontend == "phase" else None
    projection_1x1 = plan.proj_size is not None and plan.proj_kernel == 1
    minimum = None
    if fused and phase == "dense" and projection_1x1:
        minimum = 0 if model.kernels == "fused" else FUSED_MIN_ELEMENTS
    return KernelChoice(
        fused=fused,
        phase_method=phase,
        fused_projection=fused and projection_1x1,
        fused_frame=fused and plan.frame_width is not None,
        frontend_min_elements=minimum,
        layout=CHANNEL_MAJOR if fused else CONTIGUOUS,
    )  # fmt: skip


def frame_is_pointwise(kernel_size: int, stride: int) -> bool:
    """Whether a frame with `kernel_size` and `stride` can run as matrix products (k = 1, s = 1)."""
    return kernel_size == 1 and stride == 1


def frame_path(kernels: str, device: torch.device | str, kernel_size: int, stride: int) -> str:
    """The implementation a `TightFrame` runs (one of `FRAME_PATHS`): with the fused kernels
    `pointwise` for k = 1 at stride 1, `patches` for any other frame; else `reference`."""
    if not uses_fused(kernels, device):
        return "reference"
    return "pointwise" if frame_is_pointwise(kernel_size, stride) else "patches"
