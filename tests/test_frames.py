"""Tight-frame math (`sepconc.frames`) and the frame operator `A` (`sepconc.layers.frame`).

Properties checked, not just shapes:
- the Parseval step is the formula `(1 + b) W - b W W^T W`, and iterating it drives every
  eigenvalue of the smaller Gram matrix to 1 (wide and tall frames);
- atom norms: `sqrt(d / width)` is the exact atom norm of an equal-norm tight frame, and
  `TightFrame` resets its atoms to it before every forward pass;
- the non-linearities: thresholds `1/sqrt(width)` (relu, 0 with zero_bias) and
  `1.5/sqrt(width)` (softshrink); soft-thresholding shrinks;
- operator identities on an equal-norm tight frame `G` (`G^T G = I`), for `x` normalized
  per position (`x^`):
  `A_relu0(x) - A_relu0(-x) = G^T G x^ = x^`,
  `A_relu(x) - A_relu(-x) = G^T softshrink(G x^, lambda)` (relu(z-l) - relu(-z-l) = soft(z, l)),
  `A_abs = 0` and `A_relu0 = x^ / 2` on a sign-invariant frame `[F; -F] / sqrt 2`,
  `||A_soft x|| <= 1` per position;
- patches (k > 1, overlapping): with the identity frame on patches, `A x` is the
  overlap-average of the normalized patches, computed here by hand with unfold/fold.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import sepconc.kernels.frame as frame_module
from sepconc.frames import (
    flatten_atoms,
    parseval_step,
    relu_threshold,
    reset_atom_norms,
    softshrink_threshold,
    target_atom_norm,
)
from sepconc.kernels.frame import PointwiseReluFrame, relu_frame_reference
from sepconc.layers.frame import TightFrame, rho

DOUBLE = torch.float64


@pytest.fixture(params=("reference", "fused"))
def kernels(request) -> str:
    """Every operator test runs both implementations (`sepconc.kernels.choose`)."""
    return request.param


def small_gram_eigs(w: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the smaller Gram matrix of `w` reshaped to (out, d)."""
    m = flatten_atoms(w).double()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return torch.linalg.eigvalsh(gram)


def orthogonal(d: int, seed: int) -> torch.Tensor:
    """A random d x d orthogonal matrix (float64)."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=DOUBLE))
    return q * torch.sign(torch.diagonal(r))


def union_of_bases(d: int, m: int, seed: int) -> torch.Tensor:
    """Equal-norm tight frame of m*d atoms in R^d: m orthonormal bases stacked / sqrt(m)."""
    return torch.cat([orthogonal(d, seed + i) for i in range(m)]) / math.sqrt(m)


def frame_with(
    weight: torch.Tensor,
    non_linearity: str,
    zero_bias: bool = False,
    k: int = 1,
    stride: int = 1,
    channels: int | None = None,
    kernels: str = "auto",
) -> TightFrame:
    """A float64 TightFrame whose atoms are the rows of `weight` (width, C k^2)."""
    width, d = weight.shape
    channels = channels or d // (k * k)
    frame = TightFrame(channels, width, k, stride, non_linearity, zero_bias, kernels).double()
    with torch.no_grad():
        frame.weight.copy_(weight.reshape(width, channels, k, k))
    return frame


def normalized(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def apply_frame_1x1(g: torch.Tensor, x: torch.Tensor, fn) -> torch.Tensor:
    """`G^T fn(G x^)` at every position, computed with einsum (k = 1 reference)."""
    z = torch.einsum("md,bdhw->bmhw", g, normalized(x))
    return torch.einsum("md,bmhw->bdhw", g, fn(z))


# ------------------------------------------------------------------ Parseval step


@pytest.mark.parametrize("shape", [(48, 12), (12, 48), (20, 3, 2, 2)])
def test_parseval_step_is_the_formula(shape):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(*shape, generator=gen, dtype=DOUBLE) / math.sqrt(shape[0])
    m = w.reshape(shape[0], -1).clone()
    beta = 0.01
    expected = (1 + beta) * m - beta * m @ m.T @ m
    out = parseval_step(w, beta)
    assert out is w  # in place
    torch.testing.assert_close(w.reshape(shape[0], -1), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("width,d", [(64, 16), (16, 64)])
def test_parseval_iteration_makes_a_tight_frame(width, d):
    """Each singular value follows s <- (1+b)s - b s^3, whose fixed point is 1."""
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(width, d, generator=gen) / math.sqrt(max(width, d))
    eigs = small_gram_eigs(w)
    assert eigs.min() < 0.7 and eigs.max() > 1.3  # far from tight to begin with
    errors = []
    for _ in range(300):
        parseval_step(w, 0.05)
        errors.append(float((small_gram_eigs(w) - 1).abs().max()))
    assert errors[-1] < 1e-4, errors[-1]
    assert errors[150] < 1e-2  # geometric convergence, not luck at the end
    m = w.double()
    gram = m.T @ m if width > d else m @ m.T
    torch.testing.assert_close(gram, torch.eye(min(width, d), dtype=DOUBLE), atol=1e-4, rtol=0)


def test_parseval_step_keeps_a_tight_frame_fixed():
    g = union_of_bases(8, 3, seed=2)
    before = g.clone()
    parseval_step(g, 0.1)
    torch.testing.assert_close(g, before, atol=1e-12, rtol=0)


# ------------------------------------------------------------------ atom norms


def test_target_atom_norm():
    assert target_atom_norm(64, 16) == pytest.approx(0.5)
    assert target_atom_norm(8192, 192) == pytest.approx(math.sqrt(192 / 8192))
    assert target_atom_norm(16, 16) == 1.0 and target_atom_norm(8, 16) == 1.0
    # An equal-norm tight frame (G^T G = I, trace = d) has exactly this atom norm.
    g = union_of_bases(6, 4, seed=3)
    torch.testing.assert_close(g.T @ g, torch.eye(6, dtype=DOUBLE))
    norms = g.norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, target_atom_norm(24, 6)))


def test_reset_atom_norms():
    w = torch.randn(10, 2, 3, 3) * torch.arange(1, 11).view(10, 1, 1, 1)
    direction = flatten_atoms(w) / flatten_atoms(w).norm(dim=1, keepdim=True)
    reset_atom_norms(w, 0.3)
    m = flatten_atoms(w)
    torch.testing.assert_close(m.norm(dim=1), torch.full((10,), 0.3))
    torch.testing.assert_close(m / 0.3, direction)  # directions kept


@pytest.mark.parametrize("channels,width,k", [(4, 32, 1), (2, 8, 2), (16, 8, 1)])
def test_tight_frame_resets_atom_norms_at_forward(channels, width, k, kernels):
    frame = TightFrame(channels, width, k, k, "relu", kernels=kernels)
    d = channels * k * k
    target = target_atom_norm(width, d)
    assert frame.atom_norm == pytest.approx(target)
    norms = flatten_atoms(frame.weight.detach()).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, target))  # at initialization
    with torch.no_grad():
        frame.weight.mul_(torch.rand(width, 1, 1, 1) * 3 + 0.1)
    frame(torch.randn(2, channels, 4 * k, 4 * k))
    norms = flatten_atoms(frame.weight.detach()).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, target))


# ------------------------------------------------------------------ non-linearities


def test_thresholds():
    assert relu_threshold(64) == pytest.approx(1 / 8)
    assert relu_threshold(64, zero_bias=True) == 0.0
    assert softshrink_threshold(64) == pytest.approx(1.5 / 8)
    assert TightFrame(4, 64, non_linearity="relu").threshold == pytest.approx(1 / 8)
    assert TightFrame(4, 64, non_linearity="relu", zero_bias=True).threshold == 0.0
    assert TightFrame(4, 64, non_linearity="softshrink").threshold == pytest.approx(1.5 / 8)
    assert TightFrame(4, 64, non_linearity="absolute").threshold == 0.0


def test_rho_definitions():
    z = torch.linspace(-1, 1, 2001, dtype=DOUBLE)
    lam = softshrink_threshold(100)  # 0.15
    soft = rho(z, "softshrink", lam)
    assert torch.all(soft.abs() <= z.abs())  # shrinks
    assert torch.all(soft[z.abs() <= lam] == 0)  # kills everything under the threshold
    big = z.abs() > lam
    torch.testing.assert_close(soft[big], z[big] - lam * z[big].sign())  # shifts the rest by lambda
    assert torch.all(soft * z >= 0)  # keeps the sign
    lam = relu_threshold(100)
    torch.testing.assert_close(rho(z, "relu", lam), (z - lam).clamp_min(0))
    torch.testing.assert_close(rho(z, "relu", 0.0), z.clamp_min(0))
    torch.testing.assert_close(rho(z, "absolute", 0.0), z.abs())
    # relu(z - l) - relu(-z - l) is soft-thresholding at l (used below)
    torch.testing.assert_close(rho(z, "relu", lam) - rho(-z, "relu", lam), F.softshrink(z, lam))
    with pytest.raises(ValueError):
        rho(z, "tanh", 0.0)


# ------------------------------------------------------------------ the operator A, k = 1


def test_operator_matches_the_definition_k1(kernels):
    """A x = G^T rho(G x^) for each non-linearity, on a frame set by hand."""
    d, width = 6, 24
    g = union_of_bases(d, 4, seed=4)
    x = torch.randn(3, d, 5, 5, dtype=DOUBLE)
    for name, fn in [
        ("relu", lambda z: (z - 1 / math.sqrt(width)).clamp_min(0)),
        ("softshrink", lambda z: F.softshrink(z, 1.5 / math.sqrt(width))),
        ("absolute", torch.abs),
    ]:
        frame = frame_with(g, name, kernels=kernels)
        y = frame(x)
        assert y.shape == x.shape
        torch.testing.assert_close(y, apply_frame_1x1(g, x, fn))
        torch.testing.assert_close(frame.weight.detach().reshape(width, d), g)  # already tight


def test_relu_on_a_tight_frame_reconstructs(kernels):
    """`A(x) - A(-x) = G^T (relu(G x^) - relu(-G x^)) = G^T G x^ = x^` for zero bias."""
    d = 5
    g = union_of_bases(d, 3, seed=5)
    x = torch.randn(2, d, 4, 4, dtype=DOUBLE)
    frame = frame_with(g, "relu", zero_bias=True, kernels=kernels)
    torch.testing.assert_close(frame(x) - frame(-x), normalized(x))
    # with the bias lambda, the difference is soft-thresholding of the coefficients
    biased = frame_with(g, "relu", kernels=kernels)
    lam = 1 / math.sqrt(15)
    expected = apply_frame_1x1(g, x, lambda z: F.softshrink(z, lam))
    torch.testing.assert_close(biased(x) - biased(-x), expected)


def test_sign_invariant_frame(kernels):
    """On `[F; -F] / sqrt 2` (F orthogonal): relu with zero bias gives x^ / 2, |.| gives 0."""
    d = 4
    f = orthogonal(d, seed=6)
    g = torch.cat([f, -f]) / math.sqrt(2)
    x = torch.randn(3, d, 3, 3, dtype=DOUBLE)
    torch.testing.assert_close(
        frame_with(g, "relu", zero_bias=True, kernels=kernels)(x), normalized(x) / 2
    )
    torch.testing.assert_close(frame_with(g, "absolute", kernels=kernels)(x), torch.zeros_like(x))


def test_softshrink_concentrates(kernels):
    """||A x|| <= ||x^|| = 1 per position (G^T is a contraction, soft-thresholding shrinks)."""
    g = union_of_bases(8, 4, seed=7)
    x = torch.randn(4, 8, 6, 6, dtype=DOUBLE)
    y = frame_with(g, "softshrink", kernels=kernels)(x)
    norms = y.norm(dim=1)
    assert torch.all(norms <= 1 + 1e-12)
    assert norms.mean() < 0.99  # and it does shrink something
    # an odd operator: A(-x) = -A(x)
    torch.testing.assert_close(frame_with(g, "softshrink", kernels=kernels)(-x), -y)


def test_two_forwards_before_backward(kernels):
    """The atom-norm reset must not invalidate a graph built by an earlier forward."""
    frame = TightFrame(3, 12, 1, 1, "relu", kernels=kernels)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    (frame(x) - frame(-x)).square().sum().backward()
    assert torch.isfinite(frame.weight.grad).all() and torch.isfinite(x.grad).all()


def test_operator_default_init_is_sane(kernels):
    """Fresh module (orthogonal init, atoms at target norm): shape kept, output bounded."""
    frame = TightFrame(3, 12, 1, 1, "relu", kernels=kernels)
    x = torch.randn(2, 3, 7, 7)
    y = frame(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


# ------------------------------------------------------------------ patches, k > 1


def patch_average(x: torch.Tensor, k: int, s: int, fn) -> torch.Tensor:
    """fold(fn(normalized unfold(x))) / fold(unfold(1)): the overlap average, by hand."""
    n = x.shape[-1]
    cols = F.unfold(x, k, stride=s)  # (B, C k^2, L)
    cols = fn(cols / cols.norm(dim=1, keepdim=True))
    out = F.fold(cols, (n, n), k, stride=s)
    count = F.fold(F.unfold(torch.ones_like(x[:, :1]), k, stride=s), (n, n), k, stride=s)
    return out / count


@pytest.mark.parametrize(
    "channels,n,k,s", [(2, 8, 4, 2), (1, 9, 3, 3), (3, 7, 3, 1), (1, 28, 14, 7)]
)
def test_identity_frame_on_patches_averages_normalized_patches(channels, n, k, s, kernels):
    d = channels * k * k
    eye = torch.eye(d, dtype=DOUBLE)
    x = torch.randn(2, channels, n, n, dtype=DOUBLE)
    relu0 = frame_with(
        eye, "relu", zero_bias=True, k=k, stride=s, channels=channels, kernels=kernels
    )
    absolute = frame_with(eye, "absolute", k=k, stride=s, channels=channels, kernels=kernels)
    y = relu0(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, patch_average(x, k, s, lambda c: c.clamp_min(0)))
    torch.testing.assert_close(absolute(x), patch_average(x, k, s, torch.abs))
    # on a positive signal the identity frame returns the average of its normalized patches
    pos = x.abs() + 0.1
    torch.testing.assert_close(absolute(pos), patch_average(pos, k, s, lambda c: c))


def test_patch_count_normalization(kernels):
    """With stride < k, a pixel is covered by 1, 2 or 4 patches; the average divides by that."""
    frame = TightFrame(1, 4, 2, 1, "absolute", kernels=kernels).double()
    with torch.no_grad():
        frame.weight.copy_(torch.eye(4, dtype=DOUBLE).reshape(4, 1, 2, 2))
    x = torch.ones(1, 1, 3, 3, dtype=DOUBLE)  # each 2x2 patch normalizes to 1/2 everywhere
    torch.testing.assert_close(frame(x), torch.full_like(x, 0.5))


def test_patch_frame_reconstructs_with_a_tight_frame(kernels):
    """k = s (no overlap), tight G on patches: A(x) - A(-x) = the normalized patches, in place."""
    channels, k, n = 2, 2, 6
    d = channels * k * k
    g = union_of_bases(d, 2, seed=8)
    frame = frame_with(g, "relu", zero_bias=True, k=k, stride=k, channels=channels, kernels=kernels)
    x = torch.randn(2, channels, n, n, dtype=DOUBLE)
    torch.testing.assert_close(frame(x) - frame(-x), patch_average(x, k, k, lambda c: c))


@pytest.mark.parametrize("layout", ["rows", "channel-major"])
@pytest.mark.parametrize("block_rows", [None, 16])
def test_pointwise_relu_frame_function_matches_autograd_and_gradchecks(
    layout, block_rows, monkeypatch
):
    """The k=1 ReLU frame's own autograd Function: values and gradients (rows and atoms)
    equal the plain autograd expression's, and pass gradcheck, in float64; for rows stored
    as rows or transposed (channel-major, whose output stays transposed), and computed
    in one block of rows or in several (the last one shorter)."""
    if block_rows is not None:
        monkeypatch.setattr(frame_module, "MIN_BLOCK_ROWS", block_rows)
        monkeypatch.setattr(frame_module, "ROW_BLOCK_ELEMENTS", block_rows * 12)
        assert len(frame_module.row_blocks(40, 12)) == 3
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(40, 5, generator=gen, dtype=DOUBLE)
    if layout == "channel-major":
        rows = rows.T.contiguous().T
    rows.requires_grad_(True)
    w = (torch.randn(12, 5, generator=gen, dtype=DOUBLE) / 3).requires_grad_(True)
    lam = 0.1

    def reference(rows, w):
        return relu_frame_reference(rows, w, lam)

    grad = torch.randn(40, 5, generator=gen, dtype=DOUBLE)
    ours = PointwiseReluFrame.apply(rows, w, lam)
    assert ours.stride() == rows.stride()
    ref = reference(rows, w)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad(ours, (rows, w), grad)
    g_ref = torch.autograd.grad(ref, (rows, w), grad)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda r, m: PointwiseReluFrame.apply(r, m, lam), (rows, w), eps=1e-6, atol=1e-6
    )
