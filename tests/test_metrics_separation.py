"""Known-answer tests of the layer-comparable separation measures (`sepconc.metrics.separation`).

Gaussian mixture with a known population Fisher ratio: 4 classes, means `1.5 e_c` in the
first 4 coordinates, within-class noise of variance 1 in the first 8 coordinates and
`TAIL^2` in the other `D - 8` (a spiked spectrum, like a network's features: the class-mean
directions lie in the leading principal directions). Population Fisher ratio
`sum_c p_c ||mu_c - mu||^2 / 1 = 1.6875` for every `D`: an estimator that compares layers
must neither drift with `D` nor with `N`.
"""

from __future__ import annotations

import math

import pytest
import torch

from sepconc.metrics.separation import FISHER_KEY, paired_deltas, separation_statistics
from tests.test_separation import adapted_frame

CLASSES, TAIL, SEP = 4, 0.05, 1.5
TRUTH = (CLASSES - 1) / CLASSES * SEP**2  # sum_c p_c ||mu_c - mu||^2 with unit noise
TOL = 0.2  # relative tolerance on the truth (measured worst case 0.12, N = 400 and 800)


def mixture(n: int, d: int, seed: int = 0, noise: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x: (n, d), y: (n,)) from the mixture of the module docstring."""
    gen = torch.Generator().manual_seed(seed)
    mu = torch.zeros(CLASSES, d)
    mu[:, :CLASSES] = SEP * torch.eye(CLASSES)
    scale = torch.full((d,), TAIL)
    scale[:8] = noise
    y = torch.arange(n) % CLASSES
    return mu[y] + torch.randn(n, d, generator=gen) * scale, y


@pytest.mark.parametrize("n", [400, 800])
def test_fisher_is_near_the_truth_and_flat_in_dimension(n):
    dims = (8, 128, 2048)
    est = [separation_statistics(*mixture(n, d), CLASSES, halves=0)[FISHER_KEY] for d in dims]
    insample = [separation_statistics(*mixture(n, d), CLASSES, halves=0)["fisher_insample"]
                for d in (8, 64)]  # fmt: skip
    for d, value in zip(dims, est, strict=True):
        assert abs(value - TRUTH) < TOL * TRUTH, f"D={d}: {value:.3f} vs truth {TRUTH:.3f}"
    assert max(est) - min(est) < TOL * TRUTH  # no trend with the dimension
    assert insample[1] > insample[0]  # the in-sample ratio does drift with D (the caveat)


def test_small_probe_is_unbiased_on_average():
    """N = 120 (60 per fold, K = 16): the Wishart factor (0.65 here) matters; mean of 12 probes."""
    est = [separation_statistics(*mixture(120, 64, seed=s), CLASSES, halves=0)[FISHER_KEY]
           for s in range(12)]  # fmt: skip
    assert abs(sum(est) / len(est) - TRUTH) < 0.12 * TRUTH, est


def test_standard_error_matches_the_spread_over_draws():
    """The half-sample SE is within a factor 2 of the spread over 6 independent probes."""
    draws = [separation_statistics(*mixture(300, 32, seed=s), CLASSES, halves=6)
             for s in range(6)]  # fmt: skip
    for key in (FISHER_KEY, "within_rel", "ncm_acc"):
        spread = float(torch.tensor([d[key] for d in draws]).std())
        mean_se = sum(d[f"{key}_se"] for d in draws) / len(draws)
        assert 0.5 * spread < mean_se < 2.0 * spread, f"{key}: se {mean_se:.4g} vs {spread:.4g}"


def test_invertible_maps_leave_the_measures_unchanged():
    x, y = mixture(400, 8)
    base = separation_statistics(x, y, CLASSES, halves=0)
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=torch.float64))
    similar = separation_statistics((x.double() @ q) * 7.0, y, CLASSES, halves=0)
    for key, value in base.items():  # rotation and scale: every measure but the raw traces
        if key in ("within", "between"):
            assert similar[key] == pytest.approx(49.0 * value, rel=1e-6), key
            continue
        assert similar[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    a = torch.randn(8, 8, generator=gen, dtype=torch.float64) + 4 * torch.eye(8)
    general = separation_statistics(x.double() @ a, y, CLASSES, halves=0)
    # D = 8 <= K: the Fisher ratio uses every direction and is affine-invariant
    assert general[FISHER_KEY] == pytest.approx(base[FISHER_KEY], rel=1e-6)
    assert general["within_rel"] != pytest.approx(base["within_rel"], rel=1e-3)  # not this one


def test_previous_layer_plus_noise_scores_lower():
    x, y = mixture(400, 64)
    gen = torch.Generator().manual_seed(5)
    before = separation_statistics(x, y, CLASSES)
    after = separation_statistics(x + 0.8 * torch.randn(x.shape, generator=gen), y, CLASSES)
    for key, sign in ((FISHER_KEY, 1), ("between_rel", 1), ("ncm_acc", 1), ("within_rel", -1)):
        gap = sign * (before[key] - after[key])
        assert gap > 2 * math.hypot(before[f"{key}_se"], after[f"{key}_se"]), key


@pytest.fixture(scope="module")
def synthetic():
    from sepconc.data.offline import build_synthetic

    val = build_synthetic().val
    x = val.images / val.images.flatten(1).norm(dim=1)[:, None, None, None]
    return x, val.labels, separation_statistics(x, val.labels, 10)


def test_relu_on_an_adapted_tight_frame_separates(synthetic):
    x, y, before = synthetic
    with torch.no_grad():
        after = separation_statistics(adapted_frame("relu")(x), y, 10)
    assert after["between_rel"] > before["between_rel"] + 2 * after["between_rel_se"]
    assert after[FISHER_KEY] > before[FISHER_KEY] + 2 * after[f"{FISHER_KEY}_se"]


def test_soft_thresholding_on_an_adapted_tight_frame_concentrates(synthetic):
    x, y, before = synthetic
    with torch.no_grad():
        after = separation_statistics(adapted_frame("softshrink")(x), y, 10)
    assert after["within_rel"] < before["within_rel"] - 2 * before["within_rel_se"]
    assert after["ncm_acc"] >= before["ncm_acc"] - 2 * before["ncm_acc_se"]


def test_bad_input_and_degenerate_classes():
    x, y = mixture(40, 8)
    with pytest.raises(ValueError, match="k must be"):
        separation_statistics(x, y, CLASSES, k=0)
    y_small = y.clone()
    y_small[:37] = 0  # classes 1..3 with 1 sample each
    assert math.isnan(separation_statistics(x, y_small, CLASSES, halves=0)[FISHER_KEY])
    x_bad = x.clone()
    x_bad[0, 0] = math.nan
    assert all(math.isnan(v) for v in separation_statistics(x_bad, y, CLASSES).values())


def test_paired_deltas_cancel_the_shared_probe_noise():
    x, y = mixture(400, 64)
    gen = torch.Generator().manual_seed(5)
    stats = {}
    for name, feats in (
        ("x", x),
        ("2x", 2 * x),
        ("noisy", x + 0.6 * torch.randn(x.shape, generator=gen)),
    ):
        halves: list[dict[str, float]] = []
        stats[name] = (separation_statistics(feats, y, CLASSES, half_values=halves), halves)
    same = paired_deltas(stats["x"], stats["2x"])  # the same layer, rescaled: no change at all
    assert stats["x"][0][f"{FISHER_KEY}_se"] > 0.02
    assert abs(same[f"delta_{FISHER_KEY}"]) < 1e-9 and same[f"delta_{FISHER_KEY}_se"] < 1e-9
    worse = paired_deltas(stats["x"], stats["noisy"])
    assert worse[f"delta_{FISHER_KEY}"] == pytest.approx(
        stats["noisy"][0][FISHER_KEY] - stats["x"][0][FISHER_KEY]
    )
    assert worse[f"delta_{FISHER_KEY}"] < -2 * worse[f"delta_{FISHER_KEY}_se"]
