"""ScatteringTree: Kymatio's order-2 tree per channel, channel layout, backend errors."""

from __future__ import annotations

import functools
import importlib.util

import pytest
import torch
from kymatio.scattering2d.frontend import base_frontend as kymatio_base
from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

from sepconc.errors import UserError
from sepconc.scattering import ScatteringTree, scattering_tree_channels
from sepconc.scattering import tree as tree_module
from sepconc.scattering.tree_fft import filter_bank_fast


@pytest.mark.parametrize(("J", "n", "L"), [(2, 28, 4), (2, 32, 4), (3, 28, 4), (3, 32, 8)])
def test_shape_and_channels(J: int, n: int, L: int) -> None:
    K = scattering_tree_channels(J, L)
    assert K == 1 + L * J + L * L * J * (J - 1) // 2
    y = ScatteringTree(J, (n, n), L)(torch.randn(2, 3, n, n))
    assert y.shape == (2, 3 * K, n // 2**J, n // 2**J)


def test_channel_count_values() -> None:
    assert scattering_tree_channels(3, 8) == 217
    assert scattering_tree_channels(2, 8) == 81
    assert scattering_tree_channels(1, 4) == 5


@pytest.mark.parametrize("backend", ["fft", "torch"])
def test_matches_kymatio_with_input_channels_outermost(backend: str) -> None:
    J, L, n = 2, 4, 16
    x = torch.randn(2, 3, n, n)
    y = ScatteringTree(J, n, L, backend=backend)(x)
    ref = ScatteringTorch2D(J, (n, n), L=L, max_order=2)(x)  # (B, C, K, n', n')
    K = scattering_tree_channels(J, L)
    for c in range(3):
        torch.testing.assert_close(y[:, c * K : (c + 1) * K], ref[:, c])


def test_low_pass_of_constant_is_constant() -> None:
    """phi has unit mass and reflection keeps a constant constant: channel 0 is the value."""
    y = ScatteringTree(2, 16, 8)(torch.full((1, 1, 16, 16), 2.5))
    torch.testing.assert_close(y[0, 0], torch.full((4, 4), 2.5), atol=1e-3, rtol=0)
    assert y[0, 1:].abs().max() < 1e-3  # zero-mean wavelets see nothing


def test_buffers_move_with_to() -> None:
    m = ScatteringTree(2, 16, 4)
    assert len(list(m.buffers())) > 0 and list(m.parameters()) == []
    m = m.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in m.buffers() if b.is_floating_point())
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    assert m(x).dtype == torch.float64
    if torch.cuda.is_available():
        gpu = ScatteringTree(2, 16, 4).to("cuda")
        assert gpu(x.float().cuda()).device.type == "cuda"


def test_unknown_backend_lists_valid_ones() -> None:
    with pytest.raises(UserError, match="valid backends: fft, torch, torch_skcuda"):
        ScatteringTree(2, 16, backend="numpy")


def test_skcuda_missing_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError) as err:
        ScatteringTree(2, 16, backend="torch_skcuda")
    msg = str(err.value)
    assert "install the extra: pip install -e '.[skcuda]'" in msg and "\n" not in msg


def test_skcuda_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(tree_module.torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        ScatteringTree(2, 16, backend="torch_skcuda")


def test_bad_scale() -> None:
    with pytest.raises(ValueError, match="2\\^J"):
        ScatteringTree(5, 16)


# --- the fft backend against Kymatio (the oracle) -------------------------------------------


@functools.lru_cache(maxsize=8)
def _kymatio_module(J: int, shape: tuple[int, int], L: int) -> ScatteringTorch2D:
    """Kymatio's frontend, its bank built by our bit-identical ``filter_bank_fast`` (cached,
    ``test_fft_backend_filter_bank_is_kymatios``): Kymatio rebuilds it in Python loops."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kymatio_base, "filter_bank", filter_bank_fast)
        return ScatteringTorch2D(J, shape, L=L, max_order=2)


def _kymatio(J: int, shape: tuple[int, int], L: int, x: torch.Tensor) -> torch.Tensor:
    """Kymatio's torch backend, laid out as ScatteringTree's output (B, C*K, m, n)."""
    ref = _kymatio_module(J, tuple(shape), L).to(x.dtype)(x.contiguous())
    return ref.reshape(ref.shape[0], -1, *ref.shape[-2:])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _real_images(C: int, n: int, count: int) -> torch.Tensor:
    """Real images: scikit-learn's bundled photos (china, flower) resized, or digits for C=1."""
    from sklearn.datasets import load_digits, load_sample_image

    if C == 1:
        digits = torch.tensor(load_digits().images[:count], dtype=torch.float32)[:, None] / 16
        return torch.nn.functional.interpolate(digits, size=(n, n), mode="bilinear")
    photos = [load_sample_image(name) for name in ("china.jpg", "flower.jpg")]
    crops = [torch.tensor(p[i * 40 : i * 40 + 256, i * 60 : i * 60 + 256], dtype=torch.float32)
             for p in photos for i in range((count + 1) // 2)][:count]  # fmt: skip
    x = torch.stack(crops).permute(0, 3, 1, 2)[:, :C] / 255
    return torch.nn.functional.interpolate(x, size=(n, n), mode="bilinear", antialias=True)


#: Odd shapes: non-square, odd sizes, 2^J = size (Kymatio's pad == size case), L != 8,
#: J = 1 (no second order).
ODD_CASES = [(2, 2, (17, 23), 6), (3, 1, (8, 8), 8), (2, 1, (4, 4), 3), (1, 2, (9, 9), 4)]


def _check_orders(y: torch.Tensor, ref: torch.Tensor, J: int, L: int) -> None:
    """Relative L2 <= 1e-6 overall and for each order on its own."""
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert _rel(y, ref) <= 1e-6
    C, K = y.shape[1] // scattering_tree_channels(J, L), scattering_tree_channels(J, L)
    y, ref = y.unflatten(1, (C, K)), ref.unflatten(1, (C, K))
    for lo, hi in ((0, 1), (1, 1 + L * J), (1 + L * J, K)):
        if hi > lo:
            assert _rel(y[:, :, lo:hi], ref[:, :, lo:hi]) <= 1e-6, (lo, hi)


@pytest.mark.parametrize(("J", "C", "n"), [(3, 1, 28), (3, 3, 32)])
def test_fft_backend_matches_kymatio_on_seed_shapes(J: int, C: int, n: int) -> None:
    """MNIST (1 x 28 x 28) and CIFAR-10 (3 x 32 x 32) at J = 3: random and real images."""
    tree = ScatteringTree(J, n, 8, backend="fft")
    for x in (torch.randn(3, C, n, n, generator=torch.Generator().manual_seed(n)),
              _real_images(C, n, 3)):  # fmt: skip
        _check_orders(tree(x), _kymatio(J, (n, n), 8, x), J, 8)


@pytest.mark.parametrize(("J", "C", "shape", "L"), ODD_CASES)
def test_fft_backend_matches_kymatio_on_odd_shapes(J, C, shape, L) -> None:
    x = torch.randn(3, C, *shape, generator=torch.Generator().manual_seed(J + C + L))
    _check_orders(ScatteringTree(J, shape, L, backend="fft")(x), _kymatio(J, shape, L, x), J, L)


@pytest.mark.slow
def test_fft_backend_matches_kymatio_on_imagenet_tree() -> None:
    """The seed's ImageNet tree: J = 4 on 3 x 224 x 224, a real image and a random one."""
    x = torch.cat([_real_images(3, 224, 1), torch.randn(1, 3, 224, 224)])
    _check_orders(ScatteringTree(4, 224, 8, backend="fft")(x), _kymatio(4, (224, 224), 8, x), 4, 8)


def test_fft_backend_float64_and_chunks() -> None:
    """float64 agrees to rounding; chunking the batch changes only roundings."""
    x = torch.randn(5, 2, 20, 20, dtype=torch.float64)
    tree = ScatteringTree(2, 20, 4, backend="fft")
    y = tree(x)
    assert y.dtype == torch.float64 and _rel(y, _kymatio(2, (20, 20), 4, x)) <= 1e-12
    tree.chunk_size = 3  # 10 image channels -> at most 3 per chunk (2 threads: 3, 3, 2, 2)
    torch.testing.assert_close(tree(x), y, rtol=1e-12, atol=1e-14)  # GEMM blocking may differ


def test_fft_backend_filter_bank_is_kymatios() -> None:
    from kymatio.scattering2d.filter_bank import filter_bank

    from sepconc.scattering.tree_fft import filter_bank_fast

    ours, ref = filter_bank_fast(24, 40, 3, 5), filter_bank(24, 40, 3, 5)
    for a, b in zip(ours["psi"] + [ours["phi"]], ref["psi"] + [ref["phi"]], strict=True):
        assert (a["j"], a.get("theta")) == (b["j"], b.get("theta"))
        assert len(a["levels"]) == len(b["levels"])
        for u, v in zip(a["levels"], b["levels"], strict=True):
            assert u.dtype == v.dtype and (u == v).all()  # bit-identical


def test_fft_backend_gradients_match_kymatio() -> None:
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, scattering_tree_channels(2, 4), 4, 4, dtype=torch.float64)
    (g,) = torch.autograd.grad((ScatteringTree(2, 16, 4, backend="fft")(x) * w).sum(), x)
    (ref,) = torch.autograd.grad((_kymatio(2, (16, 16), 4, x) * w).sum(), x)
    assert _rel(g, ref) <= 1e-10


def test_fft_backend_is_the_default_and_keys_the_cache_apart() -> None:
    from sepconc.cache import frontend_fields
    from sepconc.config import BACKENDS, ModelConfig

    assert ModelConfig().backend == "fft" == ScatteringTree(2, 16).backend
    assert BACKENDS == tree_module.BACKENDS
    ours, kymatio = (frontend_fields(ScatteringTree(2, 16, backend=b)) for b in ("fft", "torch"))
    assert ours != kymatio and ours["backend"] == "fft"
    assert ScatteringTree(2, 16).state_dict() == {}  # no filters in checkpoints


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fft_backend_on_cuda() -> None:
    x = torch.randn(4, 3, 32, 32)
    y = ScatteringTree(3, 32, 8, backend="fft").cuda()(x.cuda())
    assert y.device.type == "cuda" and _rel(y.cpu(), _kymatio(3, (32, 32), 8, x)) <= 1e-6


def test_checkpoints_load_across_backends() -> None:
    """A scatnet checkpoint written with Kymatio's backend (its filters saved as buffers)
    resumes under the fft default, and the other way round (strict loading)."""
    from sepconc.config import Config
    from sepconc.model import build_model

    def net(backend: str):
        flat = {"dataset": "digits", "arch": "scatnet", "scattering_J": 2, "P_proj_size": [8],
                "scat_angles": [4], "backend": backend}  # fmt: skip
        torch.manual_seed(0)
        return build_model(Config.from_flat(flat))

    kymatio, ours = net("torch"), net("fft")
    assert any(".scattering." in k for k in kymatio.state_dict())
    assert not any(".scattering." in k for k in ours.state_dict())
    ours.load_state_dict(kymatio.state_dict())
    kymatio.load_state_dict(ours.state_dict())
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(ours.eval()(x), kymatio.eval()(x), rtol=1e-5, atol=1e-5)


def test_fft_backend_is_float32_under_bf16_autocast() -> None:
    tree, x = ScatteringTree(2, 16, 4, backend="fft"), torch.randn(2, 1, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = tree(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, tree(x), rtol=0, atol=0)
