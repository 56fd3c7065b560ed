"""class_statistics against a direct NumPy computation that forms the D x D matrices."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from sepconc.metrics.class_stats import RIDGE, RTOL, class_statistics, class_statistics_by_layer

REL = 1e-6


def _labelled_data(n: int, d: int, c: int, seed: int = 0, shift: float = 0.7):
    """Gaussian classes with random means and a random (anisotropic) covariance."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    means = shift * rng.standard_normal((c, d))
    mix = rng.standard_normal((d, d)) / math.sqrt(d) + np.eye(d)
    x = rng.standard_normal((n, d)) @ mix + means[y]
    return x, y


def _reference(x, y, ridge=0.0, rtol=RTOL, max_dim=None):
    """The documented rule, computed directly with D x D matrices."""
    classes = np.unique(y)
    p = np.array([(y == c).mean() for c in classes])
    mus = np.stack([x[y == c].mean(axis=0) for c in classes])
    mu = p @ mus
    sw = sum(
        pc * np.cov(x[y == c].T, bias=True).reshape(x.shape[1], -1) for pc, c in zip(p, classes)
    )
    diffs = mus - mu
    sb = sum(pc * np.outer(m, m) for pc, m in zip(p, diffs))
    lam, v = np.linalg.eigh(sw)
    lam, v = lam[::-1], v[:, ::-1]
    r0 = int((lam > rtol * lam[0]).sum())
    r = r0 if max_dim is None else min(r0, max_dim)
    eps = ridge * np.trace(sw) / r0
    coords = v[:, :r].T @ diffs.T  # (r, C)
    per_class = (coords**2 / (lam[:r, None] + eps)).sum(axis=0)
    dist = ((x[:, None, :] - mus[None, :, :]) ** 2).sum(axis=2)
    ncm = 100.0 * (classes[dist.argmin(axis=1)] == y).mean()  # percent, like val_acc1
    out = {
        "within": np.trace(sw),
        "between": np.trace(sb),
        "fisher": float(p @ per_class),
        "ncm_acc": ncm,
        "fisher_dim": r,
    }
    out.update({f"fisher_class/{c}": v_ for c, v_ in zip(classes, per_class)})
    return out, sw, sb


def _assert_close(stats, ref, rel=REL):
    for key, value in ref.items():
        assert stats[key] == pytest.approx(value, rel=rel, abs=1e-12), key


def test_nonsingular_matches_textbook_formulas():
    x, y = _labelled_data(600, 40, 5)
    stats = class_statistics(torch.from_numpy(x), torch.from_numpy(y), 5, ridge=0.0)
    ref, sw, sb = _reference(x, y)
    _assert_close(stats, ref)
    assert stats["fisher"] == pytest.approx(np.trace(np.linalg.solve(sw, sb)), rel=REL)
    for c in range(5):
        m = x[y == c].mean(axis=0) - x.mean(axis=0)
        expected = m @ np.linalg.solve(sw, m)
        assert stats[f"fisher_class/{c}"] == pytest.approx(expected, rel=REL)
    assert stats["within_rel"] + stats["between_rel"] == pytest.approx(1.0, abs=1e-12)
    assert stats["within_rel"] == pytest.approx(ref["within"] / (ref["within"] + ref["between"]))
    assert stats["fisher_dim"] == 40 and stats["between_kept"] == pytest.approx(1.0)
    assert 0.0 <= stats["ncm_acc"] <= 100.0 and stats["ncm_acc"] > 1.0  # percent


def test_default_ridge_follows_documented_rule():
    x, y = _labelled_data(500, 30, 4, seed=1)
    stats = class_statistics(torch.from_numpy(x), torch.from_numpy(y), 4)
    ref, _, _ = _reference(x, y, ridge=RIDGE)
    _assert_close(stats, ref)
    # max_dim caps the subspace at the leading eigen-directions
    capped = class_statistics(torch.from_numpy(x), torch.from_numpy(y), 4, max_dim=7)
    _assert_close(capped, _reference(x, y, ridge=RIDGE, max_dim=7)[0])
    assert capped["between_kept"] < 1.0


@pytest.mark.parametrize("ridge", [0.0, RIDGE])
def test_singular_d_greater_than_n_matches_reference(ridge):
    x, y = _labelled_data(60, 150, 4, seed=2)
    stats = class_statistics(torch.from_numpy(x), torch.from_numpy(y), 4, ridge=ridge)
    ref, _, _ = _reference(x, y, ridge=ridge)
    assert ref["fisher_dim"] == 60 - 4  # rank of Sigma_W is N - C
    _assert_close(stats, ref)
    assert all(math.isfinite(v) for v in stats.values())
    assert 0.0 < stats["between_kept"] < 1.0


@pytest.mark.parametrize("ridge", [0.0, RIDGE])
def test_rank_deficient_features_match_reference(ridge):
    x, y = _labelled_data(200, 15, 3, seed=3)
    x = np.concatenate([x, x, 2.0 * x[:, :5]], axis=1)  # duplicated columns: rank 15 of 35
    stats = class_statistics(torch.from_numpy(x), torch.from_numpy(y), 3, ridge=ridge)
    ref, _, _ = _reference(x, y, ridge=ridge)
    assert ref["fisher_dim"] == 15
    _assert_close(stats, ref)
    assert all(math.isfinite(v) for v in stats.values())


def test_dual_path_equals_primal_path():
    """Zero columns change no statistic, but switch to the N x N (dual) computation."""
    x, y = _labelled_data(120, 50, 6, seed=4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    primal = class_statistics(xt, yt, 6)
    dual = class_statistics(torch.cat([xt, torch.zeros(120, 400, dtype=xt.dtype)], dim=1), yt, 6)
    assert dual.keys() == primal.keys()
    _assert_close(dual, primal, rel=1e-8)


def test_fisher_invariant_to_invertible_linear_map():
    x, y = _labelled_data(400, 20, 5, seed=5)
    a = np.random.default_rng(0).standard_normal((20, 20)) + 3 * np.eye(20)
    base = class_statistics(torch.from_numpy(x), torch.from_numpy(y), 5, ridge=0.0)
    mapped = class_statistics(torch.from_numpy(x @ a + 5.0), torch.from_numpy(y), 5, ridge=0.0)
    for key in ["fisher"] + [f"fisher_class/{c}" for c in range(5)]:
        assert mapped[key] == pytest.approx(base[key], rel=1e-6), key


def test_scaling_rotation_translation_invariances():
    x, y = _labelled_data(300, 25, 4, seed=6)
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((25, 25)))
    base = class_statistics(torch.from_numpy(x), torch.from_numpy(y), 4)
    scaled = class_statistics(torch.from_numpy(3.0 * x), torch.from_numpy(y), 4)
    rotated = class_statistics(torch.from_numpy(x @ q - 2.0), torch.from_numpy(y), 4)
    for key in ["within_rel", "between_rel", "fisher", "ncm_acc", "fisher_class/2"]:
        assert scaled[key] == pytest.approx(base[key], rel=1e-9), key
    assert scaled["within"] == pytest.approx(9.0 * base["within"], rel=1e-12)
    assert scaled["between"] == pytest.approx(9.0 * base["between"], rel=1e-12)
    _assert_close(rotated, base, rel=1e-8)
    per_class = sum((y == c).mean() * base[f"fisher_class/{c}"] for c in range(4))
    assert base["fisher"] == pytest.approx(per_class, rel=1e-12)


def test_separated_classes_are_found_and_absent_classes_skipped():
    x, y = _labelled_data(300, 10, 3, seed=7, shift=20.0)
    y = np.array([0, 4, 7])[y]  # classes 0, 4, 7 of 10
    stats = class_statistics(torch.from_numpy(x).float().reshape(300, 2, 5), torch.tensor(y), 10)
    assert stats["ncm_acc"] == 100.0
    assert stats["between_rel"] > 0.9 and stats["fisher"] > 100.0
    assert sorted(k for k in stats if k.startswith("fisher_class/")) == [
        "fisher_class/0",
        "fisher_class/4",
        "fisher_class/7",
    ]


def test_degenerate_and_invalid_inputs():
    y = torch.tensor([0, 0, 1, 1])
    # no within-class variance: nothing to invert, Fisher terms are 0 by the rule
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0], [2.0, 0.0]])
    stats = class_statistics(x, y, 2)
    assert stats["within"] == 0.0 and stats["fisher"] == 0.0 and stats["between_rel"] == 1.0
    assert stats["ncm_acc"] == 100.0 and stats["between_kept"] == 0.0
    bad = x.clone()
    bad[1, 0] = float("nan")
    assert all(math.isnan(v) for v in class_statistics(bad, y, 2).values())
    with pytest.raises(ValueError, match="labels must lie in"):
        class_statistics(x, torch.tensor([0, 1, 2, 3]), 2)
    with pytest.raises(ValueError, match="entries"):
        class_statistics(x, torch.tensor([0, 1]), 2)


def test_by_layer_prefixes_keys():
    x, y = _labelled_data(100, 8, 2, seed=8)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    flat = class_statistics_by_layer({"input": xt, "block1": 2 * xt}, yt, 2)
    single = class_statistics(xt, yt, 2)
    assert flat["input/fisher"] == single["fisher"]
    assert flat["block1/within_rel"] == pytest.approx(single["within_rel"])
    assert "block1/fisher_class/1" in flat and len(flat) == 2 * len(single)


def test_large_d_is_fast():
    """N=1000, D=20000 (float32 input): the statistics cost a few N x N Gram products,
    never a D x D matrix. Timed against one Gram product `x @ x.T` measured in the same
    run, interleaved, best of two each, so a loaded machine slows both alike (a fixed
    wall-clock bound failed under load). Measured ratio on 2 cores: 2.6-6.8. A D x D
    covariance alone is 20x a Gram product (D/N), its eigendecomposition far more: the
    bound 30 catches that and leaves room for noise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    try:
        gen = torch.Generator().manual_seed(0)
        y = torch.randint(0, 10, (1000,), generator=gen)
        x = torch.randn(1000, 20000, generator=gen) + torch.randn(10, 20000, generator=gen)[y]
        stats_s, gram_s = [], []
        for _ in range(2):
            start = time.perf_counter()
            stats = class_statistics(x, y, 10)
            stats_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            x @ x.T
            gram_s.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    assert stats["ncm_acc"] == 100.0 and stats["fisher_dim"] == 990
    ratio = min(stats_s) / min(gram_s)
    assert ratio < 30, f"class_statistics took {ratio:.1f}x one Gram product ({stats_s}, {gram_s})"
