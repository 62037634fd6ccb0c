"""Mutual information I(X; Z) between a multivariate X and a scalar Z: the Kraskov–Stögbauer–
Grassberger (KSG) estimator, algorithm 1, with the max-norm (docs/methods.md §4, Table 1).

For each point i of the N pairs (x_i, z_i), ε_i is the max-norm distance to its k-th nearest
neighbour in the joint space (x, z), the point itself excluded. n_x(i) and n_z(i) count the other
points strictly closer than ε_i in the marginal spaces (max-norm over x's coordinates; |·| for z).
Then

    Î = ψ(k) + ψ(N) − ⟨ψ(n_x + 1) + ψ(n_z + 1)⟩,

with ψ the digamma function (Kraskov, Stögbauer & Grassberger, "Estimating mutual information",
Phys. Rev. E 69, 066138, 2004, eq. 8). Neighbour searches use scipy's ``cKDTree`` with p = ∞;
"strictly closer than ε" is a closed-ball count at radius ``nextafter(ε, 0)``, the largest float
below ε.

Standardisation: by default every coordinate of x and z is divided by its standard deviation
(docs/methods.md §4: "max-norm on standardised [x, z_i]"). The true I is invariant to such scalings; the
estimate is not, because the max-norm mixes coordinates, and standardising keeps one coordinate
from dominating the neighbour search.

Duplicates: KSG assumes continuous variables. If some point has k or more exact copies in the
joint space, its ε is 0 and the estimate is meaningless there. This is detected: with the default
``jitter=0`` a ``RuntimeWarning`` names how many points are affected, and those points count no
neighbour strictly within ε (n_x = n_z = 0). Pass ``jitter > 0`` to add N(0, jitter²) noise to the
standardised coordinates (reproducible through ``seed``) before the search, as scikit-learn does
with 1e-10; the noise breaks ties without changing the estimate measurably.

Known behaviour (Kraskov et al., Figs. 4–6): for independent variables the estimate is unbiased up
to O(1/N) fluctuations and can be slightly negative; for dependent Gaussians it is biased low, the
more so for strong dependence, higher dimension and smaller N; its standard deviation falls like
1/√N.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

__all__ = ["average_latent_mutual_information", "ksg_mutual_information"]


def _as_float_array(a, name: str, ndim: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array: {err}") from None
    if arr.ndim not in ndim:
        shapes = " or ".join({1: "(N,)", 2: "(N, D)"}[d] for d in ndim)
        raise ValueError(f"{name} must have shape {shapes}, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _standardize(a: np.ndarray, name: str) -> np.ndarray:
    std = a.std(axis=0)
    if (std == 0).any():
        raise ValueError(f"{name} has a constant coordinate; mutual information with it is 0 and KSG is undefined")
    return (a - a.mean(axis=0)) / std


def ksg_mutual_information(x, z, k: int = 3, standardize: bool = True, jitter: float = 0.0,
                           seed: int | None = 0) -> float:
    """KSG estimate (algorithm 1, max-norm) of I(X; Z) in nats.

    ``x``: (N, D) or (N,) samples of X; ``z``: (N,) samples of the scalar Z (an (N, 1) array is
    accepted); the rows are paired draws. ``k``: neighbours (default 3, as docs/methods.md §4). Raises
    ValueError for mismatched or bad shapes, non-finite values, constant coordinates, or N ≤ k.
    """
    x = _as_float_array(x, "x", (1, 2))
    z = _as_float_array(z, "z", (1, 2))
    if x.ndim == 1:
        x = x[:, None]
    if z.ndim == 2:
        if z.shape[1] != 1:
            raise ValueError(f"z must be scalar per point, shape (N,) or (N, 1), got shape {z.shape}; "
                             "use average_latent_mutual_information for a multi-dimensional latent")
        z = z[:, 0]
    n = x.shape[0]
    if z.shape[0] != n:
        raise ValueError(f"x and z must have the same number of points, got {n} and {z.shape[0]}")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if n <= k:
        raise ValueError(f"KSG needs more points than neighbours: N = {n}, k = {k}")
    if jitter < 0:
        raise ValueError(f"jitter must be ≥ 0, got {jitter}")
    z = z[:, None]
    if standardize:
        x, z = _standardize(x, "x"), _standardize(z, "z")
    if jitter > 0:
        rng = np.random.default_rng(seed)
        x = x + jitter * rng.standard_normal(x.shape)
        z = z + jitter * rng.standard_normal(z.shape)

    joint = np.hstack([x, z])
    # k + 1 neighbours: the first is the point itself (distance 0).
    eps = cKDTree(joint).query(joint, k=k + 1, p=np.inf)[0][:, k]
    radius = np.nextafter(eps, 0)
    n_x = cKDTree(x).query_ball_point(x, radius, p=np.inf, return_length=True) - 1
    n_z = cKDTree(z).query_ball_point(z, radius, p=np.inf, return_length=True) - 1
    tied = eps == 0
    if tied.any():
        warnings.warn(f"KSG: {int(tied.sum())} of {n} points have ≥ {k} exact duplicates in the joint space "
                      "(zero neighbour distance); their marginal counts are set to 0. Pass jitter > 0 "
                      "(e.g. 1e-10) to break ties.", RuntimeWarning, stacklevel=2)
        n_x = np.where(tied, 0, n_x)
        n_z = np.where(tied, 0, n_z)
    return float(digamma(k) + digamma(n) - np.mean(digamma(n_x + 1) + digamma(n_z + 1)))


def average_latent_mutual_information(x, z, k: int = 3, standardize: bool = True, jitter: float = 0.0,
                                      seed: int | None = 0) -> float:
    """avg_i I(x; z_i) over the K latent coordinates (Table 1): the mean of the KSG estimates of
    x (N, D) against each column of z (N, K); a 1-D z is one latent coordinate."""
    z = _as_float_array(z, "z", (1, 2))
    if z.ndim == 1:
        z = z[:, None]
    if z.shape[1] < 1:
        raise ValueError("z has no latent coordinates")
    return float(np.mean([ksg_mutual_information(x, z[:, i], k=k, standardize=standardize, jitter=jitter,
                                                 seed=None if seed is None else seed + i)
                          for i in range(z.shape[1])]))
