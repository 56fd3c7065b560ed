"""``PhaseScattering2D``: the one-scale phase scattering front-end of ``scatnetblock*``.

Per input channel, at scale j=0 (Kymatio's filters, see ``filters``):
``[phi x, relu(Re W_0 x), relu(Im W_0 x), relu(-Re W_0 x), relu(-Im W_0 x), ...,
W_{L-1} ...]``, subsampled by 2: ``(B, C, n, n) -> (B, C*(1 + 4L), n//2, n//2)``,
output channel ``c*(1 + 4L) + k``. ``phase_fourier`` holds the exact definition
(borders included); ``phase_conv`` the same map with ``k x k`` spatial filters
(``"conv"``) or as an exact dense matrix for small ``n`` (``"dense"``).
"""

from __future__ import annotations

import torch
from torch import nn

from sepconc.kernels.choose import output_layout, phase_method_for, uses_fused
from sepconc.kernels.layout import to_layout
from sepconc.kernels.phase_dense import phase_dense_fused, phase_dense_reference

from .filters import fourier_filters
from .phase_conv import conv_gather_index, conv_weight, dense_operator, phase_scattering_conv
from .phase_fourier import padding_index, phase_scattering_fourier

__all__ = [
    "DEFAULT_KERNEL_SIZE",
    "DENSE_MAX_N",
    "METHODS",
    "PhaseScattering2D",
    "phase_scattering_channels",
]

#: Spatial support of the convolution path. Relative L2 error to the Fourier
#: definition, measured on random and smooth inputs at n = 2..224 (L = 8):
#: 11x11 <= 5.2e-4, 13x13 <= 3.3e-5, 15x15 <= 2.1e-6. 13 is the smallest meeting 1e-4.
DEFAULT_KERNEL_SIZE = 13

METHODS = ("auto", "fourier", "conv", "dense")

#: Largest input the dense form accepts (n = 32, L = 8: a 1024 x 4352 matrix, 36 MB float64).
DENSE_MAX_N = 32


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
            ``1 + 2L`` truncated ``13 x 13`` filters; relative L2 error <= 1e-4),
            ``"dense"`` (the exact linear map as one ``n^2 x (1+2L)(n/2)^2`` matrix
            product, ``n <= 32``; error at float rounding) or ``"auto"``.
        kernel_size: odd spatial support of the ``"conv"`` path.
        kernels: ``"auto"``, ``"fused"`` or ``"reference"`` (``sepconc.kernels.choose``):
            whether the dense form runs as the fused ``DenseRectified`` or with stock ops.

    Layout (``sepconc.kernels.layout``): the output is channel-major whenever the fused
    kernels run on the input's device (every method and size: the Fourier and convolution
    outputs are reordered once, a copy the block's standardization would make anyway), and
    contiguous with the reference kernels. ``output_layout(device)`` says which; a
    channel-major output is not ``.view``-able as ``(B, -1)`` (``.reshape`` it).

    ``"auto"`` rule (``sepconc.kernels.choose.phase_method_for``), every device:
    ``"dense"`` for ``n <= 16``, ``"conv"`` above.
    Measured on CPU (2-core shared machine, float32, forward+backward): at the CIFAR-10
    block sizes with batch 128 the dense form is 4-37x faster than Fourier at n = 16, 8,
    4 (and 2-15x faster than the convolution, whose CPU backward is slow); at n = 32 the
    convolution beats the dense matrix, and at n = 32..224 it is 1.4-5x faster than
    Fourier at training batch sizes (Fourier only wins, by <= 1.5x, on small batches
    whose FFT temporaries fit in cache). CUDA was not measured (no GPU was available);
    the same rule is used there.

    Buffers (float64, non-persistent, moved by ``.to(device)``; cast to the input's
    dtype in ``forward``): ``fourier`` ``(1 + L, M, M)``, ``pad_idx`` ``(M,)``,
    ``weight`` ``(1 + 2L, 4, (k+1)/2, (k+1)/2)``, ``gather_idx`` ``(n//2*2 + k - 1,)``,
    and ``dense`` ``(n^2, (1+2L)(n//2)^2)`` when the dense form is used (else ``None``).

    Shapes: ``(B, C, n, n) -> (B, C*(1 + 4L), n//2, n//2)``.
    """

    def __init__(
        self,
        shape: int | tuple[int, int],
        L: int = 8,
        method: str = "auto",
        kernel_size: int = DEFAULT_KERNEL_SIZE,
        kernels: str = "auto",
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
        uses_fused(kernels, "cpu")  # ValueError for an unknown setting
        self.kernels = kernels
        #: The path ``forward`` takes (``"auto"`` resolved, the same on every device).
        self.resolved_method = phase_method_for(method, self.n)
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
        if method == "dense" and self.n > DENSE_MAX_N:
            raise ValueError(f"method 'dense' is for n <= {DENSE_MAX_N}, got n={self.n}")
        use_dense = self.resolved_method == "dense"
        dense = dense_operator(self.fourier, self.pad_idx) if use_dense else None
        self.register_buffer("dense", dense, persistent=False)

    @property
    def out_channels_per_input(self) -> int:
        return phase_scattering_channels(self.L)

    def output_layout(self, device: torch.device | str) -> str:
        """The layout ``forward`` returns on ``device`` (``sepconc.kernels.layout``)."""
        return output_layout(self.kernels, device)

    def check_input(self, x: torch.Tensor) -> None:
        """`ValueError` unless `x` is `(B, C, n, n)` for this module's `n`."""
        if x.dim() != 4 or x.shape[-2:] != (self.n, self.n):
            raise ValueError(
                f"PhaseScattering2D(n={self.n}) expects (B, C, {self.n}, {self.n}), "
                f"got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        fused = uses_fused(self.kernels, x.device)
        if self.resolved_method == "fourier":
            out = phase_scattering_fourier(x, self.fourier, self.pad_idx)
        elif self.resolved_method == "conv":
            out = phase_scattering_conv(x, self.weight, self.gather_idx)
        elif fused:
            out = phase_dense_fused(x, self.dense)
        else:
            out = phase_dense_reference(x, self.dense)
        return to_layout(out, self.output_layout(x.device))

    def extra_repr(self) -> str:
        return (f"n={self.n}, L={self.L}, method={self.method!r}, kernel_size={self.kernel_size}, "
                f"kernels={self.kernels!r}")  # fmt: skip
