"""Smooth k-nearest-neighbour two-sample statistic (Djolonga & Krause, 2017), for k = 1.

The two samples are pooled (n = n1 + n2) with Euclidean distances d_ij. Every point i picks one
neighbour j ≠ i at random with probability μ_ij = softmax_j(−α d_ij), where α = 1/temperature.
T = Σ μ_ij over pairs from different samples (both directions) is the expected number of
cross-sample kNN edges. The statistic is T standardised under the permutation null (labels
shuffled, pooled points fixed), with the sign flipped:

    S = −(T − E0) / sqrt(Var0),   m = Σ μ,   E0 = 2 m n1 n2 / (n(n−1)),
    χ1 = n1 n2 / (n(n−1)),   χ2 = 4 (n1−1)(n2−1) / ((n−2)(n−3)),
    Var0 = χ1(1−χ2) Σ_i (r_i + c_i)² + χ1 χ2 Σ μ_ij² + χ1 χ2 Σ μ_ij μ_ji + χ1(χ2 − 4χ1) m²,

with r, c the row and column sums of μ. E0 and Var0 are the exact permutation mean and variance
of T, so when both samples come from one distribution S has mean 0 and variance 1. Different
distributions give fewer cross edges, so larger S means more different.

Reference: J. Djolonga and A. Krause, "Learning Implicit Generative Models Using Differentiable
Graph Tests" (2017); code josipd/torch-two-sample, ``SmoothKNNStatistic``. The formulas above
are the same as the reference's, with these differences:
- The reference computes distances as sqrt(1e-5 + |d²|) and its std as sqrt(1e-5 + Var0), both
  in float32. Here distances come from ``torch.cdist`` and the std is sqrt(Var0), in float64.
  A Var0 that is not positive (degenerate input) raises ValueError.
- The reference averages μ over a list of α values; here there is a single α.
- The reference does k > 1 with cardinality-potential message passing; only k = 1 is supported here.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["smooth_knn_statistic"]


def _as_2d_float64(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().to(device="cpu", dtype=torch.float64)
    else:
        t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, D), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains non-finite values")
    return t


def _sum_with_transpose(mu: torch.Tensor, block: int = 256) -> float:
    """Σ_ij μ_ij μ_ji, over pairs of square blocks (each pair off the diagonal once, doubled): the
    whole-matrix product with μᵀ reads μ column-wise and took 0.19 s at n = 4 000 against 0.03 s."""
    n = mu.shape[0]
    total = torch.zeros((), dtype=mu.dtype)
    for i in range(0, n, block):
        total += (mu[i:i + block, i:i + block] * mu[i:i + block, i:i + block].T).sum()
        for j in range(i + block, n, block):
            total += 2 * (mu[i:i + block, j:j + block] * mu[j:j + block, i:i + block].T).sum()
    return total.item()


def smooth_knn_statistic(sample_a, sample_b, alpha: float, k: int = 1) -> float:
    """Normalised smooth 1-NN statistic of ``sample_a`` (n1, D) vs ``sample_b`` (n2, D).

    ``alpha`` is the inverse temperature (> 0). Returns −(T − E0)/sqrt(Var0). It is about N(0, 1)
    when the samples come from the same distribution, and larger when the distributions differ.
    """
    if isinstance(k, bool) or k != 1:
        raise ValueError(f"only k=1 is supported, got k={k!r}")
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a positive number, got {alpha!r}") from None
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
    a = _as_2d_float64(sample_a, "sample_a")
    b = _as_2d_float64(sample_b, "sample_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"samples differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    n1, n2 = a.shape[0], b.shape[0]
    n = n1 + n2
    if n1 < 2 or n2 < 2 or n < 4:
        raise ValueError(f"each sample needs at least 2 points (n1={n1}, n2={n2})")

    x = torch.cat([a, b])
    mu = torch.cdist(x, x).mul_(-alpha)
    mu.fill_diagonal_(-math.inf)
    mu = torch.softmax(mu, dim=1)  # μ_ij, rows sum to 1, zero diagonal

    t_cross = (mu[:n1, n1:].sum() + mu[n1:, :n1].sum()).item()
    m = mu.sum().item()
    node_sum = ((mu.sum(dim=1) + mu.sum(dim=0)) ** 2).sum().item()
    sq_sum = torch.dot(mu.view(-1), mu.view(-1)).item()
    flip_sum = _sum_with_transpose(mu)
    del mu

    chi1 = n1 * n2 / (n * (n - 1))
    chi2 = 4 * (n1 - 1) * (n2 - 1) / ((n - 2) * (n - 3))
    mean0 = 2 * m * chi1
    var0 = (chi1 * (1 - chi2) * node_sum + chi1 * chi2 * (sq_sum + flip_sum)
            + chi1 * (chi2 - 4 * chi1) * m ** 2)
    if not var0 > 1e-12 * m ** 2:
        raise ValueError("permutation variance of T is zero: the pooled sample is degenerate")
    return -(t_cross - mean0) / math.sqrt(var0)
