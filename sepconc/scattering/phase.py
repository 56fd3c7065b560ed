"""``PhaseScattering2D``: the one-scale phase scattering front-end of ``scatnetblock*``.

Per input channel, at scale j=0 (Kymatio's filters, see ``filters``):
``[phi x, relu(Re W_0 x), relu(Im W_0 x), relu(-Re W_0 x), relu(-Im W_0 x), ...,
W_{L-1} ...]``, subsampled by 2: ``(B, C, n, n) -> (B, C*(1 + 4L), n//2, n//2)``,
output channel ``c*(1 + 4L) + k``. ``phase_fourier`` holds the exact definition
(borders included); ``phase_conv`` the same map with ``k x k`` spatial filters.
"""

from __future__ import annotations

import torch
from torch import nn

from .filters import fourier_filters
from .phase_conv import conv_gather_index, conv_weight, phase_scattering_conv
from .phase_fourier import padding_index, phase_scattering_fourier

__all__ = ["PhaseScattering2D", "phase_scattering_channels", "DEFAULT_KERNEL_SIZE", "METHODS"]

#: Spatial support of the convolution path. Relative L2 error to the Fourier
#: definition, measured on random and smooth inputs at n = 2..224 (L = 8):
#: 11x11 <= 5.2e-4, 13x13 <= 3.3e-5, 15x15 <= 2.1e-6. 13 is the smallest meeting 1e-4.
DEFAULT_KERNEL_SIZE = 13

METHODS = ("auto", "fourier", "conv")


def phase_scattering_channels(L: int = 8) -> int:
    """Output channels per input channel: ``1 + 4L`` (L = 8: 33)."""
    return 1 + 4 * L


class PhaseScattering2D(nn.Module):
    """Phase scattering at j=0 for square ``n x n`` inputs, ``n >= 2``. No parameters.

    Args:
        shape: ``n`` or ``(n, n)``.
        L: number of orientations.
        method: ``"fourier"`` (the reference: reflection padding to Kymatio's size,
            FFT, product with the filters, inverse FFT, subsampling), ``"conv"``
            (reflect-and-wrap index gather, then one polyphase convolution with
            ``1 + 2L`` truncated ``13 x 13`` filters; relative L2 error <= 1e-4) or
            ``"auto"``.
        kernel_size: odd spatial support of the ``"conv"`` path.

    ``"auto"`` rule: ``"conv"`` on every device and size. Measured on CPU (2 threads,
    float32, forward+backward): conv is 2.5-4x faster than Fourier at each CIFAR-10
    block size (32, 16, 8, 4) and >= 2x at 112 and 224. CUDA was not measured; conv
    is kept there too (a small dense convolution against ~9 FFT-sized tensors).

    Buffers (float64, non-persistent, moved by ``.to(device)``; cast to the input's
    dtype in ``forward``): ``fourier`` ``(1 + L, M, M)``, ``pad_idx`` ``(M,)``,
    ``weight`` ``(1 + 2L, 4, (k+1)/2, (k+1)/2)``, ``gather_idx`` ``(n//2*2 + k - 1,)``.

    Shapes: ``(B, C, n, n) -> (B, C*(1 + 4L), n//2, n//2)``.
    """

    def __init__(
        self,
        shape: int | tuple[int, int],
        L: int = 8,
        method: str = "auto",
        kernel_size: int = DEFAULT_KERNEL_SIZE,
    ) -> None:
        super().__init__()
        n = shape if isinstance(shape, int) else tuple(shape)
        if isinstance(n, tuple):
            if len(n) != 2 or n[0] != n[1]:
                raise ValueError(f"PhaseScattering2D needs a square shape (n, n), got {shape}")
            n = n[0]
        if n < 2:
            raise ValueError(f"PhaseScattering2D needs n >= 2, got n={n}")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
        self.n, self.L, self.kernel_size, self.method = int(n), int(L), int(kernel_size), method
        f64 = torch.float64
        self.register_buffer(
            "fourier", torch.tensor(fourier_filters(self.n, L), dtype=f64), persistent=False
        )
        self.register_buffer("pad_idx", torch.tensor(padding_index(self.n)), persistent=False)
        self.register_buffer(
            "weight", torch.tensor(conv_weight(L, kernel_size), dtype=f64), persistent=False
        )
        self.register_buffer(
            "gather_idx", torch.tensor(conv_gather_index(self.n, kernel_size)), persistent=False
        )

    @property
    def out_channels_per_input(self) -> int:
        return phase_scattering_channels(self.L)

    def resolved_method(self, device: torch.device | None = None) -> str:
        """The path ``forward`` takes on ``device`` (``"auto"`` -> ``"conv"``, see class doc)."""
        return "conv" if self.method == "auto" else self.method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2:] != (self.n, self.n):
            raise ValueError(
                f"PhaseScattering2D(n={self.n}) expects (B, C, {self.n}, {self.n}), "
                f"got {tuple(x.shape)}"
            )
        if self.resolved_method(x.device) == "fourier":
            return phase_scattering_fourier(x, self.fourier, self.pad_idx)
        return phase_scattering_conv(x, self.weight, self.gather_idx)

    def extra_repr(self) -> str:
        return f"n={self.n}, L={self.L}, method={self.method!r}, kernel_size={self.kernel_size}"
