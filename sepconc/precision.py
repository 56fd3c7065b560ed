"""Numeric precision of training and evaluation (`ModelConfig.precision`, flag `--precision`).

- `fp32`: float32 everywhere, TF32 off (cuBLAS matmuls and cuDNN convolutions in IEEE
  float32; PyTorch's own default lets cuDNN convolutions use TF32).
- `tf32`: float32 tensors, CUDA matmuls and convolutions in TF32 (10-bit mantissa,
  Ampere and later). No effect on CPU.
- `bf16`: `torch.autocast(dtype=bfloat16)` around the forward pass and the loss, on CUDA
  and on CPU. Autocast casts the learned layers' convolutions and matrix products (the
  projections `P`, the frames' atoms, the classifier) to bfloat16; these stay float32
  (`float32_region`): the fixed front-ends (scattering, so cached and recomputed
  features are the same numbers), the normalizations (positions and the frames' patch
  norms), the loss, the Parseval steps (outside the forward), and the statistics of
  `sepconc.metrics` (computed outside autocast, in float64). Parameters, gradients and
  the optimizer stay float32 (no loss scaling: bfloat16 has float32's exponent range).
  The fused kernels are float32 kernels: under bf16 every block runs the reference
  (`sepconc.kernels.choose.kernels_for_precision`).

TF32 flags are process-wide; `set_precision` sets them once per training process (new
`fp32_precision` API when torch has it: torch refuses a mix of it and `allow_tf32`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch

from sepconc.config import PRECISIONS

__all__ = ["PRECISIONS", "autocast", "float32_region", "full", "set_precision", "set_tf32",
           "tf32_enabled"]  # fmt: skip
_HALF = (torch.bfloat16, torch.float16)


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 in CUDA matmuls and cuDNN convolutions, process-wide."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        mode = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:  # torch < 2.9
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def tf32_enabled() -> bool:
    """Whether CUDA matmuls currently may use TF32."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)


def set_precision(precision: str, device: torch.device) -> None:
    """Process-wide settings of `precision` on `device`: the TF32 flags (tf32 on, else off)
    and, on CUDA, `cudnn.benchmark` (every batch of a run has the same shape but the last,
    so cuDNN's autotuned algorithms are reused). Raises `ValueError` for an unknown name."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    set_tf32(precision == "tf32")
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def autocast(precision: str, device: torch.device | str):
    """The context of a forward pass under `precision`: bfloat16 autocast on `device`'s type
    for bf16, nothing otherwise."""
    if precision != "bf16":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


@contextmanager
def float32_region(device_type: str) -> Iterator[None]:
    """Autocast off inside (a no-op without autocast); pair with `full` on the inputs."""
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            yield
    else:
        yield


def full(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32 when it is a half type (bfloat16/float16); float32/64 unchanged."""
    return x.float() if x.dtype in _HALF else x
