"""Frame and projection diagnostics (and the top-k counts) on frames with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sepconc.metrics import (
    frame_diagnostics,
    projection_diagnostics,
    target_atom_norm,
    topk_correct,
)
from sepconc.metrics.diagnostics import EXACT_MEDIAN_PAIRS, HIST_BINS


def _orthonormal(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """(rows, cols) with orthonormal rows (rows <= cols) or columns (rows > cols)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(
        torch.randn(max(rows, cols), min(rows, cols), generator=gen, dtype=torch.float64)
    )
    return q.T.contiguous() if rows <= cols else q


def _numpy_coherence(w: np.ndarray) -> tuple[float, float]:
    u = w / np.linalg.norm(w, axis=1, keepdims=True)
    cos = np.abs(u @ u.T)[np.triu_indices(len(w), k=1)]
    return float(cos.max()), float(np.median(cos))


def test_orthonormal_atoms():
    w = _orthonormal(32, 128).reshape(32, 8, 4, 4)
    diag = frame_diagnostics(w, target_norm=1.0)
    assert diag["gram_eig_min"] == pytest.approx(1.0, abs=1e-5)
    assert diag["gram_eig_max"] == pytest.approx(1.0, abs=1e-5)
    assert diag["coherence_max"] < 1e-5 and diag["coherence_median"] < 1e-5
    assert diag["atoms_off_norm"] == 0 and diag["norm_ratio"] == pytest.approx(1.0, abs=1e-5)


def test_known_norms_count_off_atoms_and_ratio():
    w = _orthonormal(6, 20, seed=1).double()
    norms = torch.tensor([1.0, 1.005, 0.996, 1.5, 0.5, 1.02], dtype=torch.float64)
    diag = frame_diagnostics(w * norms[:, None], target_norm=1.0, tol=0.01)
    assert diag["atoms_off_norm"] == 3
    assert diag["norm_ratio"] == pytest.approx(3.0, rel=1e-12)
    # orthogonal atoms: the Gram eigenvalues are the squared norms
    assert diag["gram_eig_min"] == pytest.approx(0.25, rel=1e-12)
    assert diag["gram_eig_max"] == pytest.approx(2.25, rel=1e-12)


def test_union_of_two_bases_is_tight_frame():
    d = 16
    w = torch.cat([torch.eye(d, dtype=torch.float64), _orthonormal(d, d, seed=2).double()])
    w = w / math.sqrt(2.0)  # width 2d > d: W^T W = I_d
    norm = target_atom_norm(2 * d, d)
    assert norm == pytest.approx(1 / math.sqrt(2.0))
    diag = frame_diagnostics(w.reshape(2 * d, d, 1, 1), target_norm=norm)
    assert diag["gram_eig_min"] == pytest.approx(1.0, abs=1e-12)
    assert diag["gram_eig_max"] == pytest.approx(1.0, abs=1e-12)
    assert diag["atoms_off_norm"] == 0
    coh_max, coh_median = _numpy_coherence(w.numpy())
    assert diag["coherence_max"] == pytest.approx(coh_max, rel=1e-12)
    assert diag["coherence_median"] == pytest.approx(coh_median, rel=1e-12)


def test_coherence_matches_numpy():
    rng = np.random.default_rng(3)
    for width in (300, 301):  # even and odd number of pairs
        w = rng.standard_normal((width, 20))
        diag = frame_diagnostics(torch.from_numpy(w), target_norm=1.0)
        coh_max, coh_median = _numpy_coherence(w)
        assert diag["coherence_max"] == pytest.approx(coh_max, rel=1e-12)
        assert diag["coherence_median"] == pytest.approx(coh_median, rel=1e-12)
    # float32 weights are compared in float32
    diag32 = frame_diagnostics(torch.from_numpy(w).float(), target_norm=1.0)
    assert diag32["coherence_max"] == pytest.approx(coh_max, abs=1e-6)


def test_histogram_median_for_large_width():
    width = 2100
    assert width * (width - 1) // 2 > EXACT_MEDIAN_PAIRS
    w = np.random.default_rng(4).standard_normal((width, 16)).astype(np.float32)
    diag = frame_diagnostics(torch.from_numpy(w), target_norm=1.0)
    coh_max, coh_median = _numpy_coherence(w.astype(np.float64))
    assert diag["coherence_max"] == pytest.approx(coh_max, abs=1e-6)
    assert abs(diag["coherence_median"] - coh_median) <= 0.5 / HIST_BINS + 1e-6


def test_single_atom_and_zero_atom():
    diag = frame_diagnostics(torch.ones(1, 4), target_norm=2.0)
    assert math.isnan(diag["coherence_max"]) and diag["atoms_off_norm"] == 0
    w = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    diag = frame_diagnostics(w, target_norm=1.0)
    assert diag["norm_ratio"] == math.inf
    assert diag["coherence_max"] == pytest.approx(1 / math.sqrt(2.0), rel=1e-6)


def test_projection_gram_eigenvalues():
    w = torch.empty(16, 8, 3, 3)
    torch.nn.init.orthogonal_(w)  # rows of (16, 72) orthonormal
    diag = projection_diagnostics(w)
    assert diag["gram_eig_min"] == pytest.approx(1.0, abs=1e-5)
    assert diag["gram_eig_max"] == pytest.approx(1.0, abs=1e-5)
    tall = projection_diagnostics(2.0 * _orthonormal(40, 10, seed=5).reshape(40, 10, 1, 1))
    assert tall["gram_eig_min"] == pytest.approx(4.0, rel=1e-5)
    assert tall["gram_eig_max"] == pytest.approx(4.0, rel=1e-5)


def test_target_atom_norm():
    assert target_atom_norm(1024, 64) == pytest.approx(0.25)
    assert target_atom_norm(64, 64) == 1.0 and target_atom_norm(10, 64) == 1.0


def test_topk_correct_counts():
    logits = torch.tensor([[0.1, 0.5, 0.2], [0.9, 0.0, 0.3], [0.2, 0.3, 0.1], [0.0, 0.1, 0.2]])
    target = torch.tensor([1, 2, 2, 0])
    # ranks of the target: 1, 2, 3, 3
    assert topk_correct(logits, target, ks=(1, 2, 3)) == [1, 2, 4]
    assert topk_correct(logits, target) == [1, 4]  # k=5 capped at 3 classes
    with pytest.raises(ValueError, match="logits"):
        topk_correct(logits, target[:2])
