"""Exact quadrature over low-dimensional latents (docs/methods.md §4).

For a 1-D (or 2-D) latent, p(x) = ∫ N(x; f(z), σ² I) p(z) dz and p(z|x) ∝ N(x; f(z), σ² I) p(z)
are computed on a fine grid of latent nodes. Labels of semi-supervised models are part of the
quadrature: Bernoulli(½) labels duplicate the nodes, continuous N(0, 1) labels add a grid axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

from fmvae.data.groundtruth import GroundTruth


@dataclass
class LatentGrid:
    """Quadrature nodes (z, y) with log-weights that sum (in probability) to one."""

    z: np.ndarray  # (J, K)
    y: np.ndarray | None  # (J,) or None
    log_w: np.ndarray  # (J,)


def _axis(prior: str, n: int, bound: float = 6.0):
    """Nodes and log-weights of a 1-D prior on an even grid (uniform: [0, 1]; normal: [−b, b])."""
    if prior == "uniform":
        nodes = (np.arange(n) + 0.5) / n
        log_w = np.full(n, -np.log(n))
    else:
        nodes = np.linspace(-bound, bound, n)
        log_w = norm.logpdf(nodes)
        log_w -= logsumexp(log_w)
    return nodes, log_w


def latent_grid(gt: GroundTruth, n: int, bound: float = 6.0, n_y: int = 101) -> LatentGrid:
    """A product grid over the prior of ``gt``: n nodes per latent axis (and n_y label nodes)."""
    nodes, log_w = _axis(gt.prior, n, bound)
    mesh = np.meshgrid(*[nodes] * gt.latent_dim, indexing="ij")
    z = np.stack([m.ravel() for m in mesh], axis=1)
    lw = sum(np.meshgrid(*[log_w] * gt.latent_dim, indexing="ij")).ravel()
    if gt.label == "bernoulli":
        return LatentGrid(np.concatenate([z, z]), np.repeat([0, 1], len(z)), np.concatenate([lw, lw]) + np.log(0.5))
    if gt.label == "normal":
        y_nodes, y_log_w = _axis("normal", n_y, bound=3.5)
        return LatentGrid(np.tile(z, (n_y, 1)), np.repeat(y_nodes, len(z)),
                          (lw[None, :] + y_log_w[:, None]).ravel())
    return LatentGrid(z, None, lw)


def log_likelihood_grid(x: np.ndarray, fz: np.ndarray, sigma2) -> np.ndarray:
    """log N(x_i; f(z_j), σ² I) for every pair, shape (N, J); σ² scalar or per dimension."""
    x = np.atleast_2d(x)
    sigma2 = np.broadcast_to(np.asarray(sigma2, dtype=np.float64), (x.shape[1],))
    sq = ((x[:, None, :] - fz[None, :, :]) ** 2 / sigma2).sum(axis=2)
    return -0.5 * (sq + np.log(2 * np.pi * sigma2).sum())


def log_marginal(x: np.ndarray, fz: np.ndarray, log_w: np.ndarray, sigma2, chunk: int = 256) -> np.ndarray:
    """log p(x_i) = log Σ_j w_j N(x_i; f(z_j), σ² I), shape (N,), computed in chunks of x."""
    x = np.atleast_2d(x)
    out = np.empty(len(x))
    for start in range(0, len(x), chunk):
        ll = log_likelihood_grid(x[start:start + chunk], fz, sigma2)
        out[start:start + chunk] = logsumexp(ll + log_w[None, :], axis=1)
    return out


def posterior(x: np.ndarray, fz: np.ndarray, log_w: np.ndarray, sigma2) -> np.ndarray:
    """p(node_j | x_i) on the grid (rows sum to one), shape (N, J)."""
    logp = log_likelihood_grid(x, fz, sigma2) + log_w[None, :]
    return np.exp(logp - logsumexp(logp, axis=1, keepdims=True))
