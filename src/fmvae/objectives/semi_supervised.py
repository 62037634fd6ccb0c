"""Kingma et al.'s M2 bounds (METHODS §2, paper Appendix B), per model and per point.

Inputs are packed, (M, N, D + 2) = [x, y, observed] (:func:`pack`); the noise ``eps`` is
(M, N, S, K + width): the first K columns reparameterise z, the rest y (standard normals, turned
into Gumbel noise through the normal CDF for discrete labels). Per point the objective is

    J_n = U(x_n)                                   if y_n is not observed,
    J_n = γ L(x_n, y_n) + α log q(y_n | x_n)      if it is,

so the batch mean is (1/N)·[Σ_unlabelled U + γ Σ_labelled L + α Σ_labelled log q(y|x)], eq. 11 with the
discriminator weight α. A label that is not observed never enters L or the discriminator (the
mask selects; :func:`pack` also zeroes such labels). U keeps the factorised q(y|x) q(z|x) of the
paper, which drives functional collapse.

Discrete y: q(y|x) is relaxed by the Gumbel-softmax (Concrete) distribution at ``TEMPERATURE``;
the prior is uniform. The ELBO versions use the analytic categorical KL(q(y|x) ‖ p(y)) [choice]
and a relaxed sample in the reconstruction term; the IWAE versions weigh relaxed samples by
Concrete log-densities of q(y|x) and of the prior (the uniform Concrete at the same temperature).
Continuous y: q(y|x) = N(μ(x), s²(x)), p(y) = N(0, 1). The IWAE discriminator stays log q(y|x),
the paper's naive adaptation.
"""

from __future__ import annotations

import math

import torch

from fmvae.objectives.unsupervised import gaussian_kl_to_standard, log_mean_weights, log_normal

TEMPERATURE = 2.2  # Appendix D: the relaxation's temperature for discrete labels


def pack(x: torch.Tensor, y: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """[x, y, observed] as one (…, D + 2) float tensor; labels that are not observed are zeroed."""
    observed = observed.to(torch.bool)
    y = torch.where(observed, y.to(torch.float32), torch.zeros((), dtype=torch.float32))
    return torch.cat([x.to(torch.float32), y[..., None], observed.to(torch.float32)[..., None]], -1)


def unpack(model, xp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d = model.data_dim
    return xp[..., :d], xp[..., d], xp[..., d + 1] > 0.5


def gumbel(eps: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise from standard normals: −log(−log Φ(ε)), Φ(ε) being uniform."""
    return -torch.log((-torch.special.log_ndtr(eps)).clamp_min(1e-30))


def relaxed_log_sample(logits: torch.Tensor, eps: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """log of a Gumbel-softmax (Concrete) sample: log_softmax((log π + g) / λ)."""
    return torch.log_softmax((torch.log_softmax(logits, -1) + gumbel(eps)) / temperature, -1)


def concrete_log_density(log_y: torch.Tensor, logits: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """log density of the Concrete(π, λ) distribution at y (given as log y), Maddison et al. eq. 10:
    log (n−1)! + (n−1) log λ + Σ_k (log π_k − (λ+1) log y_k) − n logsumexp_k (log π_k − λ log y_k)."""
    n = log_y.shape[-1]
    log_pi = torch.log_softmax(logits, -1)
    return (math.lgamma(n) + (n - 1) * math.log(temperature) + (log_pi - (temperature + 1) * log_y).sum(-1)
            - n * torch.logsumexp(log_pi - temperature * log_y, -1))


def log_prior_y(model, y: torch.Tensor) -> torch.Tensor:
    """log p(y) of observed labels: uniform over the classes, or N(0, 1)."""
    if model.labels.discrete:
        return torch.full_like(y, -math.log(model.labels.n_classes))
    return log_normal(y[..., None], torch.zeros_like(y[..., None]), torch.zeros_like(y[..., None]))


def discriminator(model, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log q(y|x) at the given labels (M, N); ``out`` = model.classify(x)."""
    if model.labels.discrete:
        return torch.log_softmax(out, -1).gather(-1, y.long()[..., None])[..., 0]
    return log_normal(y[..., None], out[..., :1], out[..., 1:])


def _combine(labelled: torch.Tensor, unlabelled: torch.Tensor, log_q_y: torch.Tensor, observed: torch.Tensor,
             hyper: dict | None) -> torch.Tensor:
    m = labelled.shape[0]
    ones = torch.ones(m, dtype=labelled.dtype, device=labelled.device)
    alpha = (hyper or {}).get("alpha", ones).to(labelled.dtype)[:, None]
    gamma = (hyper or {}).get("gamma", ones).to(labelled.dtype)[:, None]
    return torch.where(observed, gamma * labelled + alpha * log_q_y, unlabelled)


def _sample_y(model, out: torch.Tensor, eps_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A reparameterised y ~ q(y|x) (``out`` = model.classify(x), broadcast against ``eps_y``) as
    the decoder sees it, and the sample as :func:`_log_densities_y` takes it (log y of the relaxed
    one-hot sample, or y itself)."""
    if model.labels.discrete:
        log_y = relaxed_log_sample(out, eps_y)
        return log_y.exp(), log_y
    y = out[..., :1] + torch.exp(0.5 * out[..., 1:]) * eps_y
    return y, y


def _kl_y(model, out: torch.Tensor) -> torch.Tensor:
    """The analytic KL(q(y|x) ‖ p(y)): categorical against uniform, or Gaussian against N(0, 1)."""
    if model.labels.discrete:
        log_pi = torch.log_softmax(out, -1)
        return (log_pi.exp() * (log_pi + math.log(model.labels.n_classes))).sum(-1)
    return gaussian_kl_to_standard(out[..., :1], out[..., 1:])


def _log_densities_y(model, out: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log q(y|x) and log p(y) at a sample of :func:`_sample_y` (Concrete densities for discrete labels)."""
    if model.labels.discrete:
        return concrete_log_density(sample, out), concrete_log_density(sample, torch.zeros_like(out))
    zeros = torch.zeros_like(sample)
    return log_normal(sample, out[..., :1], out[..., 1:]), log_normal(sample, zeros, zeros)


def m2_elbo(model, xp: torch.Tensor, eps: torch.Tensor, hyper: dict | None = None) -> torch.Tensor:
    """ELBO versions of L and U (one reparameterised sample, eps[:, :, 0]) combined by the label mask."""
    x, y, observed = unpack(model, xp)
    k = model.latent_dim
    eps_z, eps_y = eps[:, :, 0, :k], eps[:, :, 0, k:]
    log_sigma2 = model.log_sigma2[:, None, :]
    y_in = model.labels.represent(y)
    mean, log_var = model.encode_labelled(x, y_in)
    z = mean + torch.exp(0.5 * log_var) * eps_z
    labelled = (log_normal(x, model.decode(z, y_in), log_sigma2) + log_prior_y(model, y)
                - gaussian_kl_to_standard(mean, log_var))
    mean, log_var = model.encode(x)
    z = mean + torch.exp(0.5 * log_var) * eps_z
    out = model.classify(x)
    y_sample, _ = _sample_y(model, out, eps_y)
    unlabelled = (log_normal(x, model.decode(z, y_sample), log_sigma2) - _kl_y(model, out)
                  - gaussian_kl_to_standard(mean, log_var))
    return _combine(labelled, unlabelled, discriminator(model, out, y), observed, hyper)


def m2_iwae(model, xp: torch.Tensor, eps: torch.Tensor, hyper: dict | None = None) -> torch.Tensor:
    """IWAE versions: L_IW = logmeanexp_s p(x|z_s,y)p(z_s)p(y)/q(z_s|x,y) and
    U_IW = logmeanexp_s p(x|z_s,y_s)p(z_s)p(y_s)/(q(y_s|x)q(z_s|x)), S = ``hyper['S']`` per model;
    the discriminator stays log q(y|x)."""
    x, y, observed = unpack(model, xp)
    m, n, s_max, _ = eps.shape
    k = model.latent_dim
    eps_z, eps_y = eps[..., :k], eps[..., k:]
    log_sigma2 = model.log_sigma2[:, None, None, :]
    xs = x[:, :, None]
    zeros = torch.zeros_like(eps_z)

    def decode(z, y_in):  # (M, N, S, ·) -> (M, N, S, D)
        return model.decode(z.reshape(m, n * s_max, k), y_in.reshape(m, n * s_max, -1)).reshape(m, n, s_max, -1)

    y_in = model.labels.represent(y)[:, :, None].expand(-1, -1, s_max, -1)
    mean, log_var = model.encode_labelled(x, y_in[:, :, 0])
    mean, log_var = mean[:, :, None], log_var[:, :, None]
    z = mean + torch.exp(0.5 * log_var) * eps_z
    log_w = (log_normal(xs, decode(z, y_in), log_sigma2) + log_normal(z, zeros, zeros)
             + log_prior_y(model, y)[:, :, None] - log_normal(z, mean, log_var))
    labelled = log_mean_weights(log_w, hyper)
    mean, log_var = model.encode(x)
    mean, log_var = mean[:, :, None], log_var[:, :, None]
    z = mean + torch.exp(0.5 * log_var) * eps_z
    out = model.classify(x)
    y_sample, drawn = _sample_y(model, out[:, :, None], eps_y)
    log_q_y, log_p_y = _log_densities_y(model, out[:, :, None], drawn)
    log_w = (log_normal(xs, decode(z, y_sample), log_sigma2) + log_normal(z, zeros, zeros) + log_p_y
             - log_q_y - log_normal(z, mean, log_var))
    unlabelled = log_mean_weights(log_w, hyper)
    return _combine(labelled, unlabelled, discriminator(model, out, y), observed, hyper)


OBJECTIVES = {"m2_elbo": m2_elbo, "m2_iwae": m2_iwae}
