"""Separation (ReLU) and concentration (soft-thresholding) by one tight frame, before training.

Set-up. The `synthetic` data set's validation split (500 images 1x16x16, 10 classes: smooth
class means of per-pixel RMS 1 plus white noise of the same per-pixel size). One
`TightFrame` with a single 16x16 patch (`k = 16`, so `d = 256` and the frame acts on the
whole normalized image `x / ||x||`) and `width = 512 > d` atoms. Statistics:
`class_statistics` of the normalized input `x / ||x||` and of the frame's output
`A x = F^T rho(F x / ||x||)`, both read relatively (`within_rel = tr(S_W) / tr(S_W + S_B)`,
`between_rel = 1 - within_rel`) so the change of scale by the threshold does not count.

Which frame. Tightness alone does not produce either effect (measured below, and in
`test_a_random_tight_frame_does_neither`): a random tight frame spreads the class means
over all atoms, so the threshold removes signal as much as noise and both non-linearities
*raise* the relative within-class term. The paper's effects need atoms in which the class
means are sparse, which is what training learns. The adapted frame here is the smallest
such one: an orthonormal basis `B` of R^256 whose first 10 atoms span the 10 class means
(QR of [means, Gaussian]), taken with both signs, `F = [B; -B] / sqrt(2)` (width 512,
sign-invariant, atoms of equal norm `sqrt(d / width)`, exactly tight: `F^T F = I`). It is
made tight by the same helper as the random one (Parseval steps with beta 0.1 until every
eigenvalue of `F^T F` is within 1e-3 of 1: zero steps here, ~48 for the random frame).

Why the effects are expected (docs/models.md "Class statistics").
- Soft-thresholding, `lambda = 1.5 / sqrt(width)`: a sample of class c has large
  coefficients on the few atoms of its mean and small, spread ones (the noise) on the rest;
  the threshold keeps the first and removes most of the second, so each class concentrates
  around its mean: `within_rel` falls.
- ReLU with bias `1 / sqrt(width)` on a sign-invariant frame: each atom's pair (f, -f)
  responds to one sign only, so the output keeps the mean directions that exceed the bias
  and discards the small noise coefficients: the class means move apart relative to the
  spread, `between_rel` (and the Fisher ratio) rise.
"""

from __future__ import annotations

import math

import pytest
import torch

from sepconc.data.offline import build_synthetic, synthetic_class_means
from sepconc.frames import flatten_atoms, parseval_step, reset_atom_norms
from sepconc.layers.frame import TightFrame
from sepconc.metrics import class_statistics

D = 256  # one 16x16 patch of one channel
WIDTH = 512
FRAME_SEED = 0


@pytest.fixture(scope="module")
def probe() -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The synthetic validation split and the statistics of its normalized input."""
    val = build_synthetic().val
    x, y = val.images, val.labels
    normalized = x / x.flatten(1).norm(dim=1)[:, None, None, None]
    return x, y, class_statistics(normalized, y, 10)


def make_tight(frame: TightFrame, beta: float = 0.1, tol: float = 1e-3, steps: int = 500) -> int:
    """Parseval steps (atom norms reset as the forward pass does) until eig(F^T F) in 1 +- tol.

    Returns the number of steps taken; fails if the frame does not become tight.
    """
    for step in range(steps):
        reset_atom_norms(frame.weight.data, frame.atom_norm)
        w = flatten_atoms(frame.weight.data).double()
        eig = torch.linalg.eigvalsh(w.T @ w)
        if float((eig - 1).abs().max()) < tol:
            return step
        parseval_step(frame.weight.data, beta)
    raise AssertionError(f"frame not tight after {steps} Parseval steps: eig in "
                         f"[{float(eig.min()):.4f}, {float(eig.max()):.4f}]")  # fmt: skip


def adapted_frame(non_linearity: str) -> TightFrame:
    """[B; -B] / sqrt(2), B an orthonormal basis whose first 10 atoms span the class means."""
    gen = torch.Generator().manual_seed(FRAME_SEED)
    a = torch.randn(D, D, generator=gen, dtype=torch.float64)
    a[:, :10] = synthetic_class_means().flatten(1).double().T
    q, r = torch.linalg.qr(a)
    basis = (q * torch.sign(torch.diagonal(r))).T
    frame = TightFrame(1, WIDTH, kernel_size=16, non_linearity=non_linearity)
    weight = torch.cat([basis, -basis]) / math.sqrt(2)
    frame.weight.data.copy_(weight.reshape(frame.weight.shape).float())
    assert make_tight(frame) == 0  # already tight, with equal atom norms sqrt(d / width)
    return frame


@pytest.fixture(scope="module")
def random_weight() -> torch.Tensor:
    """The layer's own orthogonal initialization, made tight by Parseval steps (~46 steps)."""
    torch.manual_seed(FRAME_SEED)
    frame = TightFrame(1, WIDTH, kernel_size=16)
    assert make_tight(frame) > 0
    return frame.weight.data.clone()


def output_stats(frame: TightFrame, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        return class_statistics(frame(x), y, 10)


def test_soft_thresholding_concentrates_each_class(probe):
    x, y, before = probe
    after = output_stats(adapted_frame("softshrink"), x, y)
    # Measured: within_rel 0.521 -> 0.031 (also 0.031 for frame seed 1 and data seed 7);
    # tr(S_W) 0.49 -> 0.009 while tr(S_B) only 0.45 -> 0.28.
    assert before["within_rel"] > 0.45
    assert after["within_rel"] < 0.15
    assert after["within_rel"] < 0.3 * before["within_rel"]
    # The means stay apart: the nearest-class-mean read-out is not hurt.
    assert after["ncm_acc"] >= before["ncm_acc"] - 1.0  # percent


def test_relu_separates_class_means(probe):
    x, y, before = probe
    after = output_stats(adapted_frame("relu"), x, y)
    # Measured: between_rel 0.478 -> 0.906, Fisher ratio 489 -> 1296 (2.6x).
    assert after["between_rel"] > before["between_rel"] + 0.25
    assert after["fisher"] > 1.5 * before["fisher"]


@pytest.mark.parametrize("non_linearity", ["softshrink", "relu"])
def test_a_random_tight_frame_does_neither(probe, random_weight, non_linearity):
    """Tightness alone is not enough: on random atoms both raise the relative within term."""
    x, y, before = probe
    frame = TightFrame(1, WIDTH, kernel_size=16, non_linearity=non_linearity)
    frame.weight.data.copy_(random_weight)
    after = output_stats(frame, x, y)
    # Measured (frame seeds 0, 1): within_rel 0.521 -> 0.68-0.69 (softshrink), 0.65-0.66 (relu).
    assert after["within_rel"] > before["within_rel"] + 0.05
