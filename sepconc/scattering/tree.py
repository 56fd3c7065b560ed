"""``ScatteringTree``: Kymatio's order-2 scattering applied channel by channel (``scatnet``).

For each input channel, Kymatio 0.3's ``Scattering2D(J, (n, n), L, max_order=2)``
gives ``K = 1 + L*J + L^2*J*(J-1)/2`` maps (J=3, L=8: 217) of size
``n // 2^J`` (Kymatio floors: 28 -> 3 at J=3).
Shapes: ``(B, C, n, n) -> (B, C*K, n//2^J, n//2^J)``, output channel ``c*K + k``.

Backends: ``"fft"`` (the default: ``tree_fft``, the same numbers batched over filters;
relative L2 to Kymatio <= 1e-6 in float32, measured by the tests), ``"torch"`` and
``"torch_skcuda"`` (Kymatio's own backends, as in the seed).
"""

from __future__ import annotations

import importlib.util

import torch
from kymatio.scattering2d.frontend.torch_frontend import (
    ScatteringTorch2D,  # not kymatio.torch (1D/3D)
)
from torch import nn

from sepconc.errors import UserError

from .cpu_chunks import map_chunks
from .tree_fft import (
    MAX_CHUNK_VALUES,
    MAX_CHUNK_VALUES_CPU,
    TreeFilters,
    padding_indices,
    prepare_filters,
    scattering_tree_fft,
)

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "ScatteringTree", "scattering_tree_channels"]

#: ``fft``: ours (``tree_fft``); ``torch``, ``torch_skcuda``: Kymatio's backends.
BACKENDS = ("fft", "torch", "torch_skcuda")
#: Measured on CPU (2 threads, batch 128, float32, ``benchmarks/scattering_tree.py``): ``fft``
#: runs the forward 3-4x faster than Kymatio's ``torch`` (MNIST 3.3-4.1x, CIFAR-10
#: 3.1-3.8x over six runs); also the default on CUDA, unmeasured (no GPU: it launches a
#: few dozen kernels per batch where Kymatio's per-path loop launches thousands).
DEFAULT_BACKEND = "fft"


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
        backend: ``"fft"`` (ours, batched over filters), ``"torch"`` (Kymatio's) or
            ``"torch_skcuda"`` (Kymatio's; needs cupy, scikit-cuda and a CUDA GPU).

    The filters are registered buffers (``fft``: non-persistent float64, cast to the
    input's dtype in ``forward``; Kymatio's: those of the wrapped module), so
    ``.to(device)`` moves them. ``fft`` computes half-precision inputs, and inputs under
    autocast, in float32 (a float32 output). Shapes: ``(B, C, M, N) -> (B, C*K, M//2^J, N//2^J)``.
    """

    def __init__(
        self, J: int, shape: int | tuple[int, int], L: int = 8, backend: str = DEFAULT_BACKEND
    ) -> None:
        super().__init__()
        _check_backend(backend)
        shape = (shape, shape) if isinstance(shape, int) else tuple(shape)
        if J < 1 or 2**J > min(shape):
            raise ValueError(f"ScatteringTree needs 1 <= J and 2^J <= size, got J={J}, {shape}")
        self.J, self.L, self.shape, self.backend = int(J), int(L), shape, backend
        if backend == "fft":
            self.scattering = None
            self._register_fft_filters()
        else:
            self.scattering = ScatteringTorch2D(J, shape, L=L, max_order=2, backend=backend)

    def _register_fft_filters(self) -> None:
        """Kymatio's bank regrouped (``TreeFilters``) as non-persistent buffers."""
        M, N = self.shape
        bank = TreeFilters(M, N, self.J, self.L)
        rows, cols = padding_indices(M, N, self.J)
        tensors = {"rows": torch.tensor(rows), "cols": torch.tensor(cols), "low0": bank.low0}
        tensors.update({f"phi_{j}": t for j, t in enumerate(bank.phi)})
        tensors.update({f"low_{j}": t for j, t in enumerate(bank.low)})
        tensors.update({f"psi1_{j}": t for j, t in enumerate(bank.psi1)})
        tensors.update({f"psi2_{a}_{b}": t for (a, b), t in bank.psi2.items()})
        for name, tensor in tensors.items():
            self.register_buffer(f"fft_{name}", tensor, persistent=False)
        # largest temporary per image channel: order 1 at full size, order 2 from j1 = 0
        self.values_per_image = self.L * bank.Mp * bank.Np * (1 + self.L)
        #: image channels per chunk; None: from the device (``chunk_values``)
        self.chunk_size: int | None = None

    def chunk_values(self, device: torch.device) -> int:
        """Image channels per chunk of the ``fft`` tree on ``device``: ``chunk_size`` if set,
        else as many as keep the largest temporary under ``MAX_CHUNK_VALUES_CPU`` (CPU) or
        ``MAX_CHUNK_VALUES`` (accelerators)."""
        if self.chunk_size is not None:
            return self.chunk_size
        budget = MAX_CHUNK_VALUES_CPU if device.type == "cpu" else MAX_CHUNK_VALUES
        return max(1, budget // self.values_per_image)

    def chunks(self, x: torch.Tensor, workers: int) -> tuple[torch.Tensor, ...]:
        """``x`` ``(X, M, N)`` split into chunks of at most ``chunk_values(x.device)`` image
        channels: as few as fit, rounded up to a multiple of ``workers`` (the threads that run
        them side by side; at most ``X``), near-equal in size (they differ by at most one), so
        no worker waits on another's extra chunk. 128 MNIST channels at most 18 per chunk on
        2 threads: 8 chunks of 16, not 7 of 18 and one of 2 (which left one thread a chunk
        behind: 60 -> 54 ms per batch, measured)."""
        count = -(-x.shape[0] // self.chunk_values(x.device))
        count = -(-count // workers) * workers
        return torch.tensor_split(x, min(count, x.shape[0]))

    def _forward_fft(self, x: torch.Tensor) -> torch.Tensor:
        """``(X, M, N) -> (X, K, M//2^J, N//2^J)``, in chunks (``chunks``); on CPU with
        several threads the chunks run side by side, one per core (``cpu_chunks``)."""
        f = self._prepared(x.dtype)
        threads = torch.get_num_threads() if x.device.type == "cpu" else 1
        chunks = self.chunks(x, threads)
        if threads > 1 and len(chunks) > 1:  # a core per chunk
            parts = map_chunks(lambda part: scattering_tree_fft(part, f), chunks, threads)
        else:
            parts = [scattering_tree_fft(part, f) for part in chunks]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _prepared(self, dtype: torch.dtype) -> dict:
        """``prepare_filters`` of the buffers for ``dtype``, cached until they move."""
        J = self.J

        def get(name: str) -> torch.Tensor | None:
            return getattr(self, f"fft_{name}")

        key = (dtype, self.fft_phi_0.device, self.fft_phi_0.data_ptr())
        cached = getattr(self, "_prepared_cache", None)
        if cached is None or cached[0] != key:
            t = {"rows": get("rows"), "cols": get("cols"), "low0": get("low0"),
                 "phi": [get(f"phi_{j}") for j in range(J)],
                 "low": [get(f"low_{j}") for j in range(J)],
                 "psi1": [get(f"psi1_{j}") for j in range(J)],
                 "psi2": {(a, b): get(f"psi2_{a}_{b}") for a in range(J) for b in range(a + 1, J)}}  # fmt: skip
            cached = (key, prepare_filters(t, dtype))
            self._prepared_cache = cached
        return cached[1]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Checkpoints load across backends: Kymatio's filter buffers (``scattering.*``,
        fixed and equal to ours) are dropped by ``fft`` and taken from the module when a
        Kymatio backend loads a checkpoint written without them (``fft``'s are not saved)."""
        inner = prefix + "scattering."
        if self.scattering is None:
            for key in [k for k in state_dict if k.startswith(inner)]:
                del state_dict[key]
        else:
            for name, buffer in self.scattering.named_buffers():
                state_dict.setdefault(inner + name, buffer)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def out_channels_per_input(self) -> int:
        return scattering_tree_channels(self.J, self.L)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.shape:
            raise ValueError(
                f"ScatteringTree(shape={self.shape}) expects (B, C, {self.shape[0]}, "
                f"{self.shape[1]}), got {tuple(x.shape)}"
            )
        if self.scattering is None:
            B, C = x.shape[:2]
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()
            # a fixed front-end computed exactly: no bf16 matrix products under autocast
            with torch.autocast(x.device.type, enabled=False):
                y = self._forward_fft(x.reshape(B * C, *self.shape))
            return y.reshape(B, C * y.shape[1], y.shape[2], y.shape[3])
        y = self.scattering(x.contiguous())  # (B, C, K, M/2^J, N/2^J)
        return y.reshape(y.shape[0], y.shape[1] * y.shape[2], y.shape[3], y.shape[4])

    def extra_repr(self) -> str:
        return f"J={self.J}, shape={self.shape}, L={self.L}, backend={self.backend!r}"
