"""Log-likelihood estimators and bound invariants on *trained* models (fmvae.metrics.loglik,
fmvae.evaluation.bound_invariants): every method's bound stays below the exact log p(x) after
training, the defensive importance sampler agrees with the quadrature where q alone misses a
mode, and the invariants flag a bound that is not one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fmvae import methods
from fmvae.data import groundtruth
from fmvae.evaluation import bound_invariants
from fmvae.metrics.loglik import (
    _log_marginal,
    best_estimate,
    bound_per_point,
    defensive_is_loglik,
    log_likelihood_estimates,
    quadrature_loglik,
    summarise,
)
from fmvae.nn import BatchedVAE
from fmvae.train.loop import Trainer

SETTINGS = {"epochs": 4, "batch_size": 50, "lr": 3e-3, "max_inner_steps": 10, "mi_patience": 1, "mi_points": 100,
            "log_every_epochs": 0}
GRIDS = {"vae": {}, "iwae": {"S": np.array([5, 5])}, "lin": {"T": np.array([0.05, 0.05]), "R": np.array([2, 2])}}


@pytest.fixture(scope="module")
def data():
    gt = groundtruth.get("figure8")
    rng = np.random.default_rng(3)
    z, _ = gt.sample_latents(rng, 800)
    x = gt.mean(z) + np.sqrt(0.02) * rng.standard_normal((800, 2))
    return torch.tensor(x[:600], dtype=torch.float32), torch.tensor(x[600:], dtype=torch.float32)


@pytest.fixture(scope="module")
def trained(data):
    """A trained 2-model stack per method, σ² learned (Figure-8, K = 1)."""
    x_train, x_test = data
    out = {}
    for name, hyper in GRIDS.items():
        model = BatchedVAE(2, 2, 1, [20, 20], 0.01, seeds=[1, 2], sigma2_init=torch.tensor(0.05), learn_sigma2=True)
        Trainer(model, methods.get(name), hyper, SETTINGS, seeds=[5, 6]).run(x_train, x_test[:100])
        out[name] = model
    return out


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_a_trained_models_bounds_stay_below_its_exact_log_likelihood(name, trained, data):
    model, x = trained[name], data[1]
    exact = quadrature_loglik(model, x).mean(1)
    method = methods.get(name)
    for bound_method, hyper in ((method, GRIDS[name]), (methods.get("vae"), {}),
                                (methods.get("iwae"), {"S": np.array([20, 20])})):
        mean, var, used = bound_per_point(model, bound_method, hyper, x, seeds=[7, 8], draws=100)
        for m in range(2):
            value, se = summarise(mean[m], var[m], used)
            assert se < 0.05  # 100 draws per point: a usable standard error
            assert value <= exact[m] + 3 * se + 1e-3, (name, bound_method.name, m, value, exact[m])


def test_quadrature_is_exact_on_a_linear_gaussian_model():
    """A linear decoder (no hidden layer) has p(x) = N(x; b, wwᵀ + σ²I) in closed form."""
    model = BatchedVAE(1, 2, 1, [], 0.01, seeds=[0], sigma2_init=torch.tensor(0.1), learn_sigma2=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = model.decode(torch.randn(1, 50, 1, generator=g))[0] + 0.3 * torch.randn(50, 2, generator=g)
        W = model.decode(torch.tensor([[[1.0]]]))[0, 0] - model.decode(torch.tensor([[[0.0]]]))[0, 0]
        bias = model.decode(torch.tensor([[[0.0]]]))[0, 0]
    cov = torch.outer(W, W).double() + 0.1 * torch.eye(2, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(bias.double(), cov).log_prob(x.double()).numpy()
    np.testing.assert_allclose(quadrature_loglik(model, x)[0], exact, atol=1e-6)


def test_log_marginal_equals_the_direct_mixture_density():
    """The matrix-product form of the quadrature sum equals log Σ_j w_j N(x; f_j, diag σ²) computed
    directly, for anisotropic σ², points far from every node and chunks that split the points."""
    g = torch.Generator().manual_seed(3)
    fz = 2 * torch.randn(2, 300, 3, generator=g, dtype=torch.float64)
    x = torch.cat([2 * torch.randn(40, 3, generator=g, dtype=torch.float64), torch.full((1, 3), 9.0)])
    log_w = torch.log_softmax(torch.randn(300, generator=g, dtype=torch.float64), 0)
    sigma2 = torch.tensor([[0.01, 0.05, 0.3], [1.0, 0.02, 0.02]], dtype=torch.float64)
    direct = np.stack([torch.logsumexp(log_w + torch.distributions.Normal(fz[m], sigma2[m].sqrt()).log_prob(x[:, None]).sum(-1), 1).numpy()
                       for m in range(2)])
    np.testing.assert_allclose(_log_marginal(x, fz, log_w, sigma2, rows=7 * 300), direct, rtol=1e-10, atol=1e-9)


def test_log_marginal_on_a_wide_grid_equals_the_sum_over_every_node():
    """On a [−40, 40] grid a point whose posterior sits in the prior's tail (z ≈ 25) needs the far
    nodes and one near the origin does not: the sum that stops once the remaining nodes cannot
    matter equals the logsumexp over all of them, for an isotropic and an anisotropic σ², and for
    chunks smaller than one point's nodes."""
    z = torch.linspace(-40, 40, 40_001, dtype=torch.float64)
    log_w = torch.distributions.Normal(0.0, 1.0).log_prob(z) + math.log(80 / 40_000)
    curve = torch.stack([z, 0.5 * z, torch.sin(z)], 1)  # (J, 3)
    fz = torch.stack([curve, 1.3 * curve + 0.1])
    g = torch.Generator().manual_seed(5)
    x = torch.cat([curve[[20_000, 20_400, 21_000, 32_500]] + 0.05 * torch.randn(4, 3, generator=g, dtype=torch.float64),
                   torch.tensor([[0.0, 9.0, 0.0], [60.0, 0.0, 0.0]], dtype=torch.float64)])
    sigma2 = torch.tensor([[0.01, 0.01, 0.01], [0.3, 0.02, 0.05]], dtype=torch.float64)
    direct = np.stack([torch.logsumexp(log_w + torch.distributions.Normal(fz[m], sigma2[m].sqrt()).log_prob(x[:, None]).sum(-1), 1).numpy()
                       for m in range(2)])
    assert direct[0, 3] > direct[0, 0] - 400  # the tail point's total is not negligible: its own posterior is far out
    for rows in (250_000, 5_000):
        np.testing.assert_allclose(_log_marginal(x, fz, log_w, sigma2, rows=rows), direct, rtol=1e-12, atol=1e-10)


def test_defensive_sampling_finds_the_mode_that_q_misses(trained, data):
    """With q pushed onto one end of the curve, q-proposal importance sampling misses the posterior
    mass elsewhere; the defensive mixture ½ q + ½ p(z) does not."""
    model, x = trained["vae"], data[1][:200]
    with torch.no_grad():
        model.encoder.biases[-1][..., 0] = 4.0  # every q(z|x) centred at z ≈ 4 (plus what the weights add)
        model.encoder.biases[-1][..., 1] = -6.0  # and narrow
    exact = quadrature_loglik(model, x)
    defensive = defensive_is_loglik(model, x, samples=2000, seed=1)
    naive, _, _ = bound_per_point(model, methods.get("iwae"), {"S": np.array([1000, 1000])}, x, seeds=[1, 2], draws=1)
    assert np.abs(defensive.mean(1) - exact.mean(1)).max() < 0.05
    assert (exact.mean(1) - naive.mean(1)).min() > 1.0  # the q-proposal estimate is far too low


def test_best_estimate_prefers_the_quadrature_for_a_1d_latent(trained, data):
    estimates = log_likelihood_estimates(trained["iwae"], data[1][:100], {"quadrature_points": 2001, "loglik_samples": 500}, 3)
    assert set(estimates) == {"quadrature", "defensive_is"}
    assert best_estimate(estimates)[0] == "quadrature"
    assert np.all(np.abs(estimates["quadrature"].mean(1) - estimates["defensive_is"].mean(1)) < 0.05)


def test_invariants_flag_a_bound_above_the_log_likelihood():
    estimates = {"quadrature": np.full(10, -1.0), "defensive_is": np.full(10, -1.01)}
    valid = bound_invariants({"elbo": (-1.2, 0.01), "iwae_check": (-1.1, 0.01)}, estimates, 0.01, 0.05)
    assert all(r["holds"] for r in valid) and len(valid) == 5
    broken = bound_invariants({"elbo": (-0.8, 0.01), "iwae_check": (-1.1, 0.01), "m2_vae": (-0.6, 0.02)},
                              estimates, 0.01, 0.05)
    failed = {r["name"] for r in broken if not r["holds"]}
    assert failed == {"elbo <= log p(x) [quadrature]", "m2_vae <= log p(x) [quadrature]", "elbo <= iwae_check"}
    assert not bound_invariants({"elbo": (-1.2, 0.0), "iwae_check": (-1.1, 0.0)},
                                {"quadrature": np.full(3, -1.0), "defensive_is": np.full(3, -1.3)}, 0.01, 0.05)[-1]["holds"]
    assert math.isclose(broken[0]["slack"], 0.04)
