"""Phase scattering at j=0: definition, channel order, borders, fast paths, gradients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

from sepconc.scattering import PhaseScattering2D, phase_scattering_channels
from sepconc.scattering.filters import fourier_filters, pad_left, padded_size

SIZES = (224, 112, 56, 28, 14, 7, 3, 32, 16, 8, 4, 2)
SMALL = (2, 3, 4, 5, 7, 8, 16)
REF = Path(__file__).parent / "data" / "phase_scattering_ref.npz"


@pytest.fixture(params=("reference", "fused"))
def kernels(request) -> str:
    """The dense form runs as stock ops or as the fused `DenseRectified`."""
    return request.param


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _smooth(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A natural-image-like input: 1/f^2 spectrum plus a mean offset."""
    x = np.random.default_rng(seed).standard_normal(shape)
    f = np.fft.fftfreq(shape[-1])
    s = 1.0 / (1e-2 + f[:, None] ** 2 + f[None] ** 2)
    return np.real(np.fft.ifft2(np.fft.fft2(x) * s)) / 50.0 + 0.5


def _numpy_coefficients(x: np.ndarray, L: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: np.pad(reflect), FFT product, spatial subsampling, crop.

    Returns ``phi x`` (..., n//2, n//2) real and ``W x`` (..., L, n//2, n//2) complex.
    """
    n = x.shape[-1]
    M, p = padded_size(n), pad_left(n)
    pads = [(0, 0)] * (x.ndim - 2) + [(p, M - n - p)] * 2
    xp = np.pad(x, pads, mode="reflect")
    filt = fourier_filters(n, L)
    y = np.fft.ifft2(np.fft.fft2(xp)[..., None, :, :] * filt)[..., ::2, ::2][..., 1:-1, 1:-1]
    return y[..., 0, :, :].real, y[..., 1:, :, :]


@pytest.mark.parametrize("n", SMALL)
def test_fourier_matches_independent_numpy_definition(n: int) -> None:
    """Channel c*K + k: [phi x, relu(Re W_t), relu(Im W_t), relu(-Re W_t), relu(-Im W_t)]."""
    L, C = 3, 2
    x = np.random.default_rng(n).standard_normal((2, C, n, n))
    out = PhaseScattering2D(n, L, method="fourier").double()(torch.from_numpy(x)).numpy()
    low, w = _numpy_coefficients(x, L)
    K = phase_scattering_channels(L)
    assert out.shape == (2, C * K, n // 2, n // 2)
    for c in range(C):
        np.testing.assert_allclose(out[:, c * K], low[:, c], atol=1e-12)
        for t in range(L):
            got = out[:, c * K + 1 + 4 * t : c * K + 5 + 4 * t]
            re, im = w[:, c, t].real, w[:, c, t].imag
            want = np.stack([re, im, -re, -im], axis=1).clip(min=0)
            np.testing.assert_allclose(got, want, atol=1e-12)
            # the four phases sum to |Re| + |Im|, an approximation of |W x|
            np.testing.assert_allclose(got.sum(1), np.abs(re) + np.abs(im), atol=1e-12)


@pytest.mark.parametrize("n", (3, 4, 7, 8, 16))
def test_low_pass_matches_kymatio_order_zero(n: int) -> None:
    """Kymatio's own J=1 order-0 output is phi x with the same padding and subsampling."""
    x = torch.randn(1, 2, n, n)
    kym = ScatteringTorch2D(1, (n, n), L=2, max_order=1)(x)[:, :, 0]
    ours = PhaseScattering2D(n, 2, method="fourier")(x)[:, :: phase_scattering_channels(2)]
    torch.testing.assert_close(ours, kym, atol=1e-5, rtol=1e-5)


def test_input_channels_are_outermost() -> None:
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    m = PhaseScattering2D(8, 4, method="fourier").double()
    K = phase_scattering_channels(4)
    whole = m(x)
    for c in range(3):
        torch.testing.assert_close(whole[:, c * K : (c + 1) * K], m(x[:, c : c + 1]))


@pytest.mark.parametrize("method", ("fourier", "conv", "auto"))
@pytest.mark.parametrize("n", SIZES)
def test_shapes(method: str, n: int) -> None:
    L = 8
    x = torch.randn(1, 2, n, n)
    y = PhaseScattering2D((n, n), L, method=method)(x)
    assert y.shape == (1, 2 * phase_scattering_channels(L), n // 2, n // 2)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


@pytest.mark.parametrize("kind", ("random", "smooth"))
@pytest.mark.parametrize("n", SIZES)
def test_fast_paths_match_fourier(kind: str, n: int, kernels: str) -> None:
    """Conv (13x13 truncation) within 1e-4 relative L2; dense is exact to rounding."""
    shape = (1, 1, n, n) if n > 56 else (2, 3, n, n)
    seed = 1000 + n
    xn = np.random.default_rng(seed).standard_normal(shape) if kind == "random" else None
    x = torch.from_numpy(xn if xn is not None else _smooth(shape, seed))
    ref = PhaseScattering2D(n, method="fourier").double()(x)
    assert _rel(PhaseScattering2D(n, method="conv").double()(x), ref) <= 1e-4
    if n <= 32:
        dense = PhaseScattering2D(n, method="dense", kernels=kernels).double()
        assert _rel(dense(x), ref) <= 1e-10
    # float32 end to end: same bound
    y32 = PhaseScattering2D(n, method="auto", kernels=kernels)(x.float())
    assert _rel(y32.double(), ref) <= 1e-4


def test_stored_reference(kernels: str) -> None:
    data = np.load(REF)
    x = torch.from_numpy(data["x"])
    for L in (4, 8):
        want = torch.from_numpy(data[f"out_L{L}"])
        scale = want.abs().max()
        for method in ("fourier", "dense"):
            got = PhaseScattering2D(16, L, method=method, kernels=kernels).double()(x)
            assert ((got - want).abs().max() / scale).item() <= 1e-5, method
        got32 = PhaseScattering2D(16, L, method="fourier")(x.float()).double()
        assert ((got32 - want).abs().max() / scale).item() <= 1e-5
        assert _rel(PhaseScattering2D(16, L, method="conv").double()(x), want) <= 1e-4


@pytest.mark.parametrize("method", ("fourier", "conv", "dense"))
@pytest.mark.parametrize("n", (3, 4))
def test_gradcheck(method: str, n: int, kernels: str) -> None:
    torch.manual_seed(n)
    m = PhaseScattering2D(n, 2, method=method, kernels=kernels).double()
    x = torch.randn(2, 3, n, n, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-6)


def test_dense_reads_and_writes_channel_major() -> None:
    """The fused dense path takes a (B, C, n, n) input in either storage order and returns
    the same values (and input gradients) stored channel-major, (C(1+4L), B, h, h)
    underneath, the layout the block's standardization reads without a copy."""
    torch.manual_seed(0)
    m = PhaseScattering2D(8, 2, method="dense", kernels="fused").double()
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    x_cm = x.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_(True)
    y, y_cm = m(x), m(x_cm)
    want = PhaseScattering2D(8, 2, method="fourier").double()(x)
    assert y.shape == (3, 36, 4, 4) and y.transpose(0, 1).is_contiguous()
    assert _rel(y, want) <= 1e-10 and torch.equal(y, y_cm)
    grad = torch.randn_like(want)
    g, g_cm, g_want = (torch.autograd.grad(out, inp, grad)[0]
                       for out, inp in ((y, x), (y_cm, x_cm), (want, x)))  # fmt: skip
    assert torch.equal(g, g_cm) and _rel(g, g_want) <= 1e-10


def test_no_parameters_and_buffers_follow_dtype() -> None:
    m = PhaseScattering2D(8, 4)
    assert list(m.parameters()) == [] and m.state_dict() == {}
    assert m.float().weight.dtype == torch.float32
    assert m.double().fourier.dtype == torch.float64


def test_auto_rule() -> None:
    assert PhaseScattering2D(16).resolved_method == "dense"
    assert PhaseScattering2D(32).resolved_method == "conv"
    assert PhaseScattering2D(16, method="fourier").resolved_method == "fourier"
    assert PhaseScattering2D(32).dense is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="square"):
        PhaseScattering2D((8, 16))
    with pytest.raises(ValueError, match="n >= 2"):
        PhaseScattering2D(1)
    with pytest.raises(ValueError, match="unknown method"):
        PhaseScattering2D(8, method="fft")
    with pytest.raises(ValueError, match="n <= 32"):
        PhaseScattering2D(64, method="dense")
    with pytest.raises(ValueError, match="expects"):
        PhaseScattering2D(8)(torch.randn(1, 1, 16, 16))


def test_channel_count() -> None:
    assert phase_scattering_channels(8) == 33
    assert phase_scattering_channels(4) == 17
