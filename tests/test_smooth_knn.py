"""Tests for the smooth 1-NN two-sample statistic (fmvae.metrics.smooth_knn)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from fmvae.metrics.smooth_knn import smooth_knn_statistic

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_by_loops(a, b, alpha):
    """Plain-Python T, E0, Var0 and the statistic, following the formulas literally."""
    pts = [tuple(p) for p in a] + [tuple(p) for p in b]
    n1, n2 = len(a), len(b)
    n = n1 + n2
    label = [0] * n1 + [1] * n2
    mu = [[0.0] * n for _ in range(n)]
    for i in range(n):
        w = {j: math.exp(-alpha * math.dist(pts[i], pts[j])) for j in range(n) if j != i}
        z = sum(w.values())
        for j, wj in w.items():
            mu[i][j] = wj / z
    t = sum(mu[i][j] for i in range(n) for j in range(n) if label[i] != label[j])
    m = sum(map(sum, mu))
    e0 = 2 * m * n1 * n2 / (n * (n - 1))
    chi1 = n1 * n2 / (n * (n - 1))
    chi2 = 4 * (n1 - 1) * (n2 - 1) / ((n - 2) * (n - 3))
    rc = [sum(mu[i]) + sum(mu[j][i] for j in range(n)) for i in range(n)]
    var0 = (chi1 * (1 - chi2) * sum(x * x for x in rc)
            + chi1 * chi2 * sum(mu[i][j] ** 2 for i in range(n) for j in range(n))
            + chi1 * chi2 * sum(mu[i][j] * mu[j][i] for i in range(n) for j in range(n))
            + chi1 * (chi2 - 4 * chi1) * m * m)
    return mu, t, e0, var0, -(t - e0) / math.sqrt(var0)


A_SMALL = [[0.0, 0.0], [1.0, 0.5]]
B_SMALL = [[0.3, -0.2], [2.0, 1.0], [-1.0, 2.5]]


@pytest.mark.parametrize("alpha", [0.3, 1.0, 4.0])
def test_small_example_matches_loops(alpha):
    *_, expected = _reference_by_loops(A_SMALL, B_SMALL, alpha)
    assert smooth_knn_statistic(np.array(A_SMALL), np.array(B_SMALL), alpha) == pytest.approx(
        expected, rel=1e-10, abs=1e-12)


def test_small_example_e0_var0_are_exact_permutation_moments():
    """Enumerate all C(5,2) labellings: the mean and variance of T over them equal E0 and Var0."""
    mu, _, e0, var0, _ = _reference_by_loops(A_SMALL, B_SMALL, 1.0)
    n = len(mu)
    ts = []
    for first in itertools.combinations(range(n), len(A_SMALL)):
        lab = [int(i not in first) for i in range(n)]
        ts.append(sum(mu[i][j] for i in range(n) for j in range(n) if lab[i] != lab[j]))
    assert np.mean(ts) == pytest.approx(e0, rel=1e-12)
    assert np.var(ts) == pytest.approx(var0, rel=1e-10)


def test_null_is_standardised():
    """Same distribution: mean 0 and std 1, 100 reps per alpha.

    Bounds are ~3.5 Monte-Carlo SEs. At alpha=1 the null statistic is right-skewed (skew ~1.1), so
    a 100-draw std varies by ~0.10 (~0.06 at alpha=5, 30); pooled over 300 draws, by ~0.045.
    """
    rng = np.random.default_rng(2024)
    pooled = []
    for alpha in (1.0, 5.0, 30.0):
        vals = [smooth_knn_statistic(rng.standard_normal((200, 2)), rng.standard_normal((200, 2)),
                                     alpha) for _ in range(100)]
        assert abs(np.mean(vals)) < 0.35, alpha
        assert 0.65 < np.std(vals, ddof=1) < 1.5, alpha
        pooled += vals
    assert abs(np.mean(pooled)) < 0.2
    assert 0.85 < np.std(pooled, ddof=1) < 1.18


@pytest.mark.parametrize("alpha", [1.0, 5.0])
def test_shift_gives_large_growing_statistic(alpha):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((200, 2))
    b = rng.standard_normal((200, 2))
    vals = [smooth_knn_statistic(a, b + [shift, 0.0], alpha) for shift in (1.0, 2.0, 3.0)]
    assert vals[0] > 5
    assert vals[0] < vals[1] < vals[2]


def test_symmetric_and_accepts_torch():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((30, 3))
    b = rng.standard_normal((45, 3)) + 0.5
    s_ab = smooth_knn_statistic(a, b, 2.0)
    assert smooth_knn_statistic(b, a, 2.0) == pytest.approx(s_ab, rel=1e-12)
    assert smooth_knn_statistic(torch.from_numpy(a), torch.from_numpy(b), 2.0) == pytest.approx(
        s_ab, rel=1e-12)
    assert smooth_knn_statistic(torch.from_numpy(a).float(), b.tolist(), 2.0) == pytest.approx(
        s_ab, rel=1e-5)


@pytest.mark.parametrize("a, b, kwargs, match", [
    (np.zeros(5), np.zeros((5, 1)), {}, "2-D"),
    (np.zeros((5, 2)), np.zeros((5, 3)), {}, "dimension"),
    (np.zeros((1, 2)), np.ones((5, 2)), {}, "at least 2"),
    (np.zeros((5, 2)), np.ones((1, 2)), {}, "at least 2"),
    (np.full((5, 2), np.nan), np.ones((5, 2)), {}, "non-finite"),
    (np.zeros((5, 2)), np.ones((5, 2)), {"alpha": 0.0}, "alpha"),
    (np.zeros((5, 2)), np.ones((5, 2)), {"alpha": -1.0}, "alpha"),
    (np.zeros((5, 2)), np.ones((5, 2)), {"alpha": float("inf")}, "alpha"),
    (np.zeros((5, 2)), np.ones((5, 2)), {"k": 2}, "k=1"),
    (np.zeros((5, 2)), np.zeros((5, 2)), {}, "degenerate"),
])
def test_input_validation(a, b, kwargs, match):
    kwargs = {"alpha": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        smooth_knn_statistic(a, b, **kwargs)


def test_on_data_with_repeated_rows_a_continuous_sample_scores_high_however_close():
    """The Titanic effect behind Table 5 (docs/methods.md §4, analysis/smooth_knn_baseline.py): when
    the data hold a few distinct rows, each test point's nearest neighbour is a copy of itself, so a
    sample of the same rows scores near 0 while the same rows with a little noise score high."""
    rng = np.random.default_rng(3)
    support = rng.standard_normal((8, 3))
    train, test = support[rng.integers(0, 8, 300)], support[rng.integers(0, 8, 300)]
    same_rows = smooth_knn_statistic(train, test, alpha=10.0)
    jittered = smooth_knn_statistic(train + 0.05 * rng.standard_normal(train.shape), test, alpha=10.0)
    assert abs(same_rows) < 3 and jittered > 10
    # Without repeated rows the same small noise is invisible.
    continuous = rng.standard_normal((300, 3)), rng.standard_normal((300, 3))
    noisy = continuous[0] + 0.05 * rng.standard_normal((300, 3))
    assert abs(smooth_knn_statistic(noisy, continuous[1], alpha=10.0)) < 3


def test_the_blocked_sum_with_the_transpose_equals_the_whole_product():
    """Σ_ij μ_ij μ_ji summed over pairs of blocks, for a size that no block divides."""
    from fmvae.metrics.smooth_knn import _sum_with_transpose

    mu = torch.rand(700, 700, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for block in (256, 64, 700, 1000):
        assert _sum_with_transpose(mu, block) == pytest.approx(float((mu * mu.T).sum()), rel=1e-13)
