"""The semi-supervised M2 bounds (docs/methods.md §2): hand computations on tiny models, the label mask,
the relaxation, the IWAE versions against the ELBO versions, and training on labelled batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import TEST_DEVICE
from fmvae import methods
from fmvae.nn import BatchedVAE, Labels
from fmvae.objectives import OBJECTIVES, elbo
from fmvae.objectives.semi_supervised import TEMPERATURE, concrete_log_density, discriminator, gumbel, pack, relaxed_log_sample
from fmvae.train.loop import Trainer

M, N, D, K = 3, 64, 2, 1
pytestmark = pytest.mark.usefixtures("one_thread")  # many small matrices on a busy machine
ONES = {"alpha": torch.ones(M), "gamma": torch.ones(M)}


def _m2(n_classes=2, seeds=(1, 2, 3), sigma2=0.1, discrete_y="enumerate"):
    torch.manual_seed(0)
    return BatchedVAE(len(seeds), D, K, [8, 8], 0.01, seeds=seeds, sigma2_init=torch.full((len(seeds), 1), sigma2),
                      learn_sigma2=False, labels=Labels(n_classes, discrete_y)).double()


def _data(n_classes=2, observed_fraction=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = (torch.randint(0, n_classes, (N,), generator=g).double() if n_classes
         else torch.randn(N, generator=g, dtype=torch.float64))
    observed = torch.rand(N, generator=g) < observed_fraction
    return x, y, observed


def _packed(x, y, observed):
    return pack(x, y, observed).double().expand(M, -1, -1)


def _eps(model, samples=1, seed=1):
    return torch.randn(M, N, samples, model.noise_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class FixedLabel:
    """The M2 stack seen as an unsupervised VAE with y fixed: decoder f(·, y), encoder ``encode``."""

    def __init__(self, model, y_in, labelled=True):
        self.model, self.y_in, self.labelled = model, y_in, labelled
        self.log_sigma2, self.latent_dim = model.log_sigma2, model.latent_dim

    def encode(self, x):
        return self.model.encode_labelled(x, self.y_in) if self.labelled else self.model.encode(x)

    def decode(self, z):
        return self.model.decode(z, self.y_in)


@pytest.mark.parametrize("n_classes", [2, 3, 0])
def test_labelled_bound_is_the_elbo_with_y_fixed_plus_log_prior(n_classes):
    model = _m2(n_classes)
    x, y, _ = _data(n_classes)
    eps = _eps(model)
    everything = torch.ones(N, dtype=torch.bool)
    hyper = {"alpha": torch.zeros(M), "gamma": torch.ones(M)}
    labelled = OBJECTIVES["m2_elbo"](model, _packed(x, y, everything), eps, hyper)
    y_in = model.labels.represent(y).double().expand(M, -1, -1)
    expected = elbo(FixedLabel(model, y_in), x.expand(M, -1, -1), eps[..., :K])
    if n_classes:
        log_prior = torch.full_like(expected, -math.log(n_classes))
    else:
        log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(y).expand(M, -1)
    assert torch.allclose(labelled, expected + log_prior, atol=1e-10)
    # γ scales L, α adds log q(y|x) at the observed label.
    scaled = OBJECTIVES["m2_elbo"](model, _packed(x, y, everything), eps,
                                   {"alpha": torch.tensor([0.0, 0.5, 2.0]), "gamma": torch.tensor([2.0, 1.0, 0.5])})
    log_q = discriminator(model, model.classify(x.expand(M, -1, -1)), y.expand(M, -1))
    gamma, alpha = torch.tensor([2.0, 1.0, 0.5])[:, None], torch.tensor([0.0, 0.5, 2.0])[:, None]
    assert torch.allclose(scaled, gamma * labelled + alpha * log_q, atol=1e-10)


def test_unlabelled_bound_with_a_certain_classifier_is_the_elbo_of_that_class():
    """With q(y|x) all but certain of class c, the class sum Σ_y q(y|x)[…] keeps class c alone:
    U = ELBO of q(z|x) with y fixed at c − log C (tests/test_m2_bounds.py: any classifier, and U_IW)."""
    model = _m2(2)
    with torch.no_grad():
        model.classifier.weights[-1].zero_()
        model.classifier.biases[-1].copy_(torch.tensor([60.0, 0.0]).expand_as(model.classifier.biases[-1]))
    x, y, _ = _data(2)
    eps = _eps(model)
    unlabelled = OBJECTIVES["m2_elbo"](model, _packed(x, y, torch.zeros(N, dtype=torch.bool)), eps, ONES)
    y_in = model.labels.represent(torch.zeros(N)).double().expand(M, -1, -1)
    expected = elbo(FixedLabel(model, y_in, labelled=False), x.expand(M, -1, -1), eps[..., :K]) - math.log(2)
    assert torch.allclose(unlabelled, expected, atol=1e-8)


@pytest.mark.parametrize("objective", ["m2_elbo", "m2_iwae"])
def test_labels_that_are_not_observed_never_enter_the_objective(objective):
    model = _m2(2)
    x, y, observed = _data(2)
    raw = torch.cat([x, y[:, None], observed.double()[:, None]], -1).expand(M, -1, -1).clone()
    flipped = raw.clone()
    flipped[:, ~observed, D] = 1 - flipped[:, ~observed, D]  # change every hidden label, bypassing pack()
    eps = _eps(model, samples=3)
    hyper = {**ONES, "S": torch.full((M,), 3)}
    before = OBJECTIVES[objective](model, raw, eps, hyper)
    after = OBJECTIVES[objective](model, flipped, eps, hyper)
    assert torch.equal(before, after)
    # The discriminator weight α touches the labelled points only, by log q(y|x).
    no_disc = OBJECTIVES[objective](model, raw, eps, {**hyper, "alpha": torch.zeros(M)})
    log_q = discriminator(model, model.classify(x.expand(M, -1, -1)), y.expand(M, -1))
    assert torch.equal(before[:, ~observed], no_disc[:, ~observed])
    assert torch.allclose(before[:, observed] - no_disc[:, observed], log_q[:, observed], atol=1e-10)
    # pack() zeroes hidden labels, so the packed data carries none.
    assert torch.all(pack(x, y, observed)[~observed, D] == 0)


@pytest.mark.parametrize("discrete_y", ["enumerate", "relaxed"])
@pytest.mark.parametrize("n_classes", [2, 3, 0])
@pytest.mark.parametrize("objective", ["m2_elbo", "m2_iwae"])
def test_each_bound_computed_on_its_own_points_equals_both_computed_everywhere(objective, n_classes, discrete_y):
    """The objective gathers each model's labelled and unlabelled points apart (padded to the
    stack's largest count); every point must get the value of the dense computation, in a stack
    whose models have different label masks (one with none observed, one with all), and so must
    the gradients."""
    from fmvae.objectives import semi_supervised as m2

    if n_classes == 0 and discrete_y == "relaxed":
        pytest.skip("a continuous label has no relaxation")
    model = _m2(n_classes, discrete_y=discrete_y)
    x, y, observed = _data(n_classes, observed_fraction=0.3)
    masks = torch.stack([observed, torch.zeros(N, dtype=torch.bool), torch.ones(N, dtype=torch.bool)])
    xp = pack(x.expand(M, -1, -1), y.expand(M, -1), masks).double()
    eps = _eps(model, samples=4)
    hyper = {"alpha": torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64), "gamma": torch.tensor([5.0, 1.0, 2.0]),
             "S": torch.full((M,), 4)}
    labelled, unlabelled = {"m2_elbo": (m2._labelled_elbo, m2._unlabelled_elbo),
                            "m2_iwae": (m2._labelled_iwae, m2._unlabelled_iwae)}[objective]
    xs, ys, _ = m2.unpack(model, xp)  # x as packed (float32 values)
    dense = torch.where(masks, hyper["gamma"][:, None] * labelled(model, xs, ys, eps, hyper)
                        + hyper["alpha"][:, None] * discriminator(model, model.classify(xs), ys),
                        unlabelled(model, xs, eps, hyper))
    gathered = OBJECTIVES[objective](model, xp, eps, hyper)
    assert gathered.shape == (M, N)
    assert torch.allclose(gathered, dense, atol=1e-10)
    params = list(model.parameters())
    grads = [torch.autograd.grad(v.sum(), params, allow_unused=True) for v in (gathered, dense)]
    for a, b in zip(*grads):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-10))


def test_relaxed_samples_tend_to_one_hot_with_the_right_class_frequencies_as_the_temperature_falls():
    logits = torch.log(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)).expand(20000, -1)
    eps = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    largest = []
    for temperature in (2.2, 1.0, 0.1, 0.01):
        y = relaxed_log_sample(logits, eps, temperature).exp()
        assert torch.allclose(y.sum(-1), torch.ones(20000, dtype=torch.float64))
        largest.append(float(y.max(-1).values.mean()))
        frequencies = torch.bincount(y.argmax(-1), minlength=3).double() / 20000  # Gumbel-max: argmax ~ π
        assert torch.allclose(frequencies, torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64), atol=0.015)
    assert largest == sorted(largest) and largest[-1] > 0.99 and largest[0] < 0.7


def test_gumbel_noise_from_normals_is_gumbel():
    g = gumbel(torch.randn(200000, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    assert abs(float(g.mean()) - 0.5772156649) < 0.01  # Euler–Mascheroni
    assert abs(float(g.var()) - math.pi ** 2 / 6) < 0.03


def test_concrete_log_density_matches_torch():
    logits = torch.tensor([[0.3, -1.0, 0.5], [2.0, 0.0, -2.0]], dtype=torch.float64)
    log_y = relaxed_log_sample(logits, torch.randn(2, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    reference = torch.distributions.RelaxedOneHotCategorical(torch.tensor(TEMPERATURE, dtype=torch.float64),
                                                             logits=logits).log_prob(log_y.exp())
    assert torch.allclose(concrete_log_density(log_y, logits), reference, atol=1e-8)


def _monte_carlo(objective, model, xp, hyper, draws=4000, seed=3):
    """Mean over ``draws`` independent noise draws of each point's bound, (M, N)."""
    total = torch.zeros(M, N, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    for _ in range(draws // 100):
        eps = torch.randn(M, N * 100, 1, model.noise_dim, generator=g, dtype=torch.float64)
        total += OBJECTIVES[objective](model, xp.repeat(1, 100, 1), eps, hyper).view(M, 100, N).sum(1)
    return total / draws


@pytest.mark.parametrize("n_classes,observed,discrete_y", [(2, True, "enumerate"), (0, True, "enumerate"),
                                                          (0, False, "enumerate"), (2, False, "relaxed"),
                                                          (2, False, "enumerate")])
def test_iwae_bounds_with_one_sample_agree_with_the_elbo_bounds_in_expectation(n_classes, observed, discrete_y):
    """L_IW and L agree in expectation; so do U_IW and U for continuous y (Gaussian KL) and for a relaxed
    y (Concrete densities in both). For a summed discrete y, U_IW = log Σ_y q(y|x) w(y) ≥ Σ_y q(y|x) log w(y)
    = U at each z (Jensen), so U_IW ≥ U in expectation, by the mean Jensen gap."""
    model = _m2(n_classes, discrete_y=discrete_y)
    x, y, _ = _data(n_classes)
    xp = _packed(x[:8].repeat(8, 1), y[:8].repeat(8), torch.full((N,), observed))
    hyper = {"alpha": torch.zeros(M), "gamma": torch.ones(M), "S": torch.ones(M, dtype=torch.long)}
    iw = _monte_carlo("m2_iwae", model, xp, hyper)
    el = _monte_carlo("m2_elbo", model, xp, hyper, seed=4)
    if n_classes and not observed and discrete_y == "enumerate":  # pointwise: tests/test_m2_bounds.py
        assert torch.all(iw.mean(1) > el.mean(1) - 0.05), (iw.mean(1), el.mean(1))
    else:
        assert torch.allclose(iw.mean(1), el.mean(1), atol=0.05), (iw.mean(1), el.mean(1))


def test_iwae_unlabelled_bound_rises_with_the_number_of_samples():
    model = _m2(2)
    x, y, _ = _data(2)
    xp = _packed(x, y, torch.zeros(N, dtype=torch.bool))
    values = []
    for s in (1, 5, 50):
        hyper = {**ONES, "S": torch.full((M,), s)}
        g = torch.Generator().manual_seed(s)
        values.append(float(np.mean([OBJECTIVES["m2_iwae"](model, xp, torch.randn(M, N, s, model.noise_dim, generator=g,
                                                                                 dtype=torch.float64), hyper).mean().item()
                                     for _ in range(20)])))
    assert values[0] < values[1] < values[2]


SETTINGS = {"epochs": 2, "batch_size": 32, "lr": 1e-3, "max_inner_steps": 10, "mi_patience": 1, "mi_points": 50, "log_every_epochs": 0}


def _train(method, fraction, seeds=(1, 2, 3), hyper=None):
    model = _m2(2, seeds).float().to(TEST_DEVICE)
    x, y, _ = _data(2, seed=5)
    x = torch.cat([x, x + 0.1]).float()
    y = torch.cat([y, y])
    observed = torch.full((len(x),), fraction > 0.5) if fraction in (0, 1) else torch.rand(len(x)) < fraction
    before = {k: v.clone() for k, v in model.state_arrays().items()}
    m = len(seeds)
    grid = {"alpha": np.ones(m), "gamma": np.ones(m), "S": np.full(m, 3), "T": np.full(m, 0.1), "R": np.full(m, 2)}
    grid.update(hyper or {})
    method = methods.get(method)
    trainer = Trainer(model, method, {k: grid[k] for k in method.hyper}, SETTINGS, seeds=[s + 7 for s in seeds])
    result = trainer.run(pack(x, y, observed), pack(x, y, torch.zeros(len(x), dtype=torch.bool)))
    return model, before, result


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["m2_vae", "m2_iwae", "m2_lin"])
@pytest.mark.parametrize("fraction", [0, 1, 0.3])
def test_all_unlabelled_all_labelled_and_mixed_batches_train(method, fraction):
    model, before, result = _train(method, fraction)
    assert not result.diverged.any() and np.isfinite(result.curve).all()
    after = model.state_arrays()
    changed = {k.split("/")[0] for k in after if not torch.equal(after[k], before[k])}
    # Only labelled points reach q(z|x, y) and the discriminator; only unlabelled ones q(z|x).
    expected = {"decoder"} | ({"encoder"} if fraction < 1 else set()) | ({"encoder_zy", "classifier"} if fraction > 0 else set())
    if fraction == 0 and method != "m2_iwae":  # U = Σ_y q(y|x)[…] trains q(y|x); in U_IW q(y|x) cancels
        expected |= {"classifier"}
    assert changed == expected, (method, fraction, changed)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["m2_vae", "m2_iwae"])
def test_an_m2_model_trains_the_same_alone_or_in_a_stack(method):
    hyper = {"alpha": np.array([0.0, 0.1, 1.0]), "gamma": np.array([0.5, 1.0, 5.0]), "S": np.array([1, 3, 5])}
    stacked, _, _ = _train(method, 0.3, hyper=hyper)
    together = stacked.state_arrays()
    for i, seed in enumerate((1, 2, 3)):
        alone, _, _ = _train(method, 0.3, seeds=(seed,), hyper={k: v[i:i + 1] for k, v in hyper.items()})
        for name, value in alone.state_arrays().items():
            assert torch.allclose(together[name][i], value[0], atol=1e-5), (method, i, name)
