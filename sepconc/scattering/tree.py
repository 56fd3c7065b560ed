"""``ScatteringTree``: Kymatio's order-2 scattering applied channel by channel (``scatnet``).

For each input channel, Kymatio 0.3's ``Scattering2D(J, (n, n), L, max_order=2)``
gives ``K = 1 + L*J + L^2*J*(J-1)/2`` maps (J=3, L=8: 217) of size
``n // 2^J`` (Kymatio floors: 28 -> 3 at J=3).
Shapes: ``(B, C, n, n) -> (B, C*K, n//2^J, n//2^J)``, output channel ``c*K + k``.
"""

from __future__ import annotations

import importlib.util

import torch
from kymatio.scattering2d.frontend.torch_frontend import (
    ScatteringTorch2D,  # not kymatio.torch (1D/3D)
)
from torch import nn

from sepconc.errors import UserError

__all__ = ["BACKENDS", "ScatteringTree", "scattering_tree_channels"]

BACKENDS = ("torch", "torch_skcuda")


def scattering_tree_channels(J: int, L: int = 8) -> int:
    """Channels per input channel of the order-2 tree: ``1 + L*J + L^2*J*(J-1)/2``."""
    return 1 + L * J + L * L * J * (J - 1) // 2


def _check_backend(backend: str) -> None:
    """Raise ``UserError`` (one line) for an unknown backend or a missing skcuda setup."""
    if backend not in BACKENDS:
        raise UserError(
            f"unknown scattering backend {backend!r}; valid backends: {', '.join(BACKENDS)}"
        )
    if backend == "torch_skcuda":
        missing = [m for m in ("cupy", "skcuda") if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(
                f"scattering backend 'torch_skcuda' needs {' and '.join(missing)}, not installed;"
                " install the extra: pip install -e '.[skcuda]' (or use backend 'torch')"
            )
        if not torch.cuda.is_available():
            raise UserError(
                "scattering backend 'torch_skcuda' needs a CUDA GPU and none is available;"
                " use backend 'torch'"
            )


class ScatteringTree(nn.Module):
    """Order-2 scattering tree of scale ``J`` (Kymatio), no parameters.

    Args:
        J: number of scales (spatial size divided by ``2^J``); ``2^J <= n``.
        shape: ``n`` or ``(n, n)`` (Kymatio accepts ``(M, N)``; both are passed through).
        L: number of orientations.
        backend: ``"torch"`` or ``"torch_skcuda"`` (needs cupy, scikit-cuda and a CUDA GPU).

    Kymatio's filters are registered buffers of the wrapped module, so ``.to(device)``
    moves them. Shapes: ``(B, C, M, N) -> (B, C*K, M//2^J, N//2^J)``.
    """

    def __init__(
        self, J: int, shape: int | tuple[int, int], L: int = 8, backend: str = "torch"
    ) -> None:
        super().__init__()
        _check_backend(backend)
        shape = (shape, shape) if isinstance(shape, int) else tuple(shape)
        if J < 1 or 2**J > min(shape):
            raise ValueError(f"ScatteringTree needs 1 <= J and 2^J <= size, got J={J}, {shape}")
        self.J, self.L, self.shape, self.backend = int(J), int(L), shape, backend
        self.scattering = ScatteringTorch2D(J, shape, L=L, max_order=2, backend=backend)

    @property
    def out_channels_per_input(self) -> int:
        return scattering_tree_channels(self.J, self.L)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.shape:
            raise ValueError(
                f"ScatteringTree(shape={self.shape}) expects (B, C, {self.shape[0]}, "
                f"{self.shape[1]}), got {tuple(x.shape)}"
            )
        y = self.scattering(x.contiguous())  # (B, C, K, M/2^J, N/2^J)
        return y.reshape(y.shape[0], y.shape[1] * y.shape[2], y.shape[3], y.shape[4])

    def extra_repr(self) -> str:
        return f"J={self.J}, shape={self.shape}, L={self.L}, backend={self.backend!r}"
