"""Known answers for the objectives on a linear-Gaussian model (closed forms) and a 1-D latent
(quadrature)."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch

from fmvae import methods
from fmvae.evaluation import refit_sigma2
from fmvae.metrics.loglik import quadrature_loglik
from fmvae.nn import BatchedVAE
from fmvae.objectives import elbo, iwae
from fmvae.train.loop import evaluate_objective


class LinearGaussian:
    """p(z) = N(0, I), p(x|z) = N(Wz, σ² I), q(z|x) = N(Cx, diag s²): one model (M = 1)."""

    n_models = 1

    def __init__(self, W, C, log_s2, sigma2):
        self.W, self.C = torch.as_tensor(W, dtype=torch.float64), torch.as_tensor(C, dtype=torch.float64)
        self.log_s2 = torch.as_tensor(log_s2, dtype=torch.float64)
        self.latent_dim, self.data_dim = self.W.shape[1], self.W.shape[0]
        self.log_sigma2 = torch.full((1, self.data_dim), math.log(sigma2), dtype=torch.float64)

    def encode(self, x):
        return x @ self.C.T, self.log_s2.expand(*x.shape[:-1], self.latent_dim)

    def decode(self, z):
        return z @ self.W.T

    def closed_form_elbo(self, x):
        m, s2 = x @ self.C.T, torch.exp(self.log_s2)
        sigma2 = math.exp(self.log_sigma2[0, 0])
        d = self.data_dim
        sq = ((x - m @ self.W.T) ** 2).sum(-1) + (self.W ** 2 @ s2).sum()
        rec = -0.5 * (d * math.log(2 * math.pi * sigma2) + sq / sigma2)
        kl = 0.5 * ((m ** 2).sum(-1) + s2.sum() - self.latent_dim - self.log_s2.sum())
        return rec - kl

    def log_marginal(self, x):
        cov = self.W @ self.W.T + math.exp(self.log_sigma2[0, 0]) * torch.eye(self.data_dim, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(torch.zeros(self.data_dim, dtype=torch.float64), cov).log_prob(x)


@pytest.fixture
def linear():
    W = np.array([[1.0, 0.3], [-0.5, 0.8], [0.2, -1.1]])
    C = np.array([[0.4, -0.2, 0.1], [0.1, 0.3, -0.4]])
    return LinearGaussian(W, C, np.array([-1.5, -1.0]), 0.3)


def _x(n=40, seed=0):
    return torch.randn(1, n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_elbo_matches_the_closed_form(linear):
    x = _x()
    draws = 20000  # one call: every point repeated ``draws`` times
    eps = torch.randn(1, x.shape[1] * draws, 1, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    values = elbo(linear, x.repeat_interleave(draws, 1), eps).view(x.shape[1], draws)
    standard_error = values.std(1) / math.sqrt(draws)
    exact = linear.closed_form_elbo(x)[0]
    assert ((values.mean(1) - exact).abs() < 4.5 * standard_error).all()
    assert standard_error.max() < 0.05  # the comparison is sharp at this size


def test_iwae_with_one_sample_is_the_elbo_in_expectation(linear):
    x = _x(10)
    g = torch.Generator().manual_seed(2)
    draws = 40000  # S = 1 bounds from independent single samples, averaged
    eps = torch.randn(1, 10 * draws, 1, 2, generator=g, dtype=torch.float64)
    singles = iwae(linear, x.repeat_interleave(draws, 1), eps).view(10, draws).mean(1)
    assert torch.allclose(singles, linear.closed_form_elbo(x), atol=0.1)


def test_iwae_bound_rises_with_samples_towards_the_log_likelihood(linear):
    x = _x(200)
    exact = linear.log_marginal(x).mean().item()
    g = torch.Generator().manual_seed(3)
    bounds = []
    for s in (1, 5, 50, 1000):
        eps = torch.randn(1, 200, s, 2, generator=g, dtype=torch.float64)
        bounds.append(iwae(linear, x, eps, {"S": torch.tensor([s])}).mean().item())
    assert all(a < b for a, b in pairwise(bounds))
    assert bounds[-1] <= exact + 0.01
    assert exact - bounds[-1] < 0.05 < exact - bounds[0]


def test_iwae_masks_samples_beyond_each_models_s():
    # Two identical models with S = 2 and S = 5 in one stack: the first must ignore draws 3-5.
    model = LinearGaussian(np.eye(2), np.eye(2) * 0.5, np.array([-1.0, -1.0]), 0.5)
    x = _x(5)[..., :2]
    eps = torch.randn(1, 5, 5, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    alone = iwae(model, x, eps[:, :, :2], {"S": torch.tensor([2])})
    masked = iwae(model, x, eps, {"S": torch.tensor([2])})
    assert torch.allclose(alone, masked)


def _wide_encoder_model(sigma2=0.1):
    """A 1-D latent MLP decoder on figure-8-like data whose encoder is the prior (q = N(0, 1))."""
    model = BatchedVAE(1, 2, 1, [20, 20], 0.01, seeds=[5], sigma2_init=torch.tensor(sigma2), learn_sigma2=False)
    with torch.no_grad():
        for w, b in zip(model.encoder.weights, model.encoder.biases):
            w.zero_()
            b.zero_()
    return model


def test_importance_sampled_loglik_agrees_with_quadrature():
    torch.manual_seed(0)
    model = _wide_encoder_model()
    with torch.no_grad():
        x = model.decode(torch.randn(1, 300, 1)) + 0.3 * torch.randn(1, 300, 2)
    x = x[0]
    exact = quadrature_loglik(model, x)[0].mean()
    iwae_method = methods.get("iwae")
    estimate = evaluate_objective(model, iwae_method, {"S": np.array([3000])}, x, seeds=[1], chunk=50)[0]
    assert abs(estimate - exact) < 0.02


def test_closed_form_sigma2_maximises_the_elbo():
    from scipy.optimize import minimize_scalar

    model = _wide_encoder_model(0.5)
    with torch.no_grad():
        model.encoder.biases[-1][..., 1] = -2.0  # a narrower q, not the prior
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(6))
    refit = refit_sigma2(model, x, draws=400, seed=7)[0]
    repeated = x.repeat_interleave(400, 0)[None]
    eps = torch.randn(1, repeated.shape[1], 1, 1, generator=torch.Generator().manual_seed(8))

    def negative_elbo(log_s2, dim):
        with torch.no_grad():
            model.log_sigma2[0, dim] = log_s2
            return -float(elbo(model, repeated, eps).mean())

    for dim in range(2):
        best = minimize_scalar(lambda v, dim=dim: negative_elbo(v, dim), bounds=(-5, 3), method="bounded",
                               options={"xatol": 1e-5}).x
        model.log_sigma2[0, dim] = 0.0
        assert abs(math.exp(best) / refit[dim] - 1) < 0.03
