"""ScatteringTree: Kymatio's order-2 tree per channel, channel layout, backend errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

from sepconc.errors import UserError
from sepconc.scattering import ScatteringTree, scattering_tree_channels
from sepconc.scattering import tree as tree_module


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


def test_matches_kymatio_with_input_channels_outermost() -> None:
    J, L, n = 2, 4, 16
    x = torch.randn(2, 3, n, n)
    y = ScatteringTree(J, n, L)(x)
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
    assert all(b.dtype == torch.float64 for b in m.buffers())
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    assert m(x).dtype == torch.float64
    if torch.cuda.is_available():
        gpu = ScatteringTree(2, 16, 4).to("cuda")
        assert gpu(x.float().cuda()).device.type == "cuda"


def test_unknown_backend_lists_valid_ones() -> None:
    with pytest.raises(UserError, match="valid backends: torch, torch_skcuda"):
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
