"""Kingma et al.'s M2 bounds (docs/methods.md §2, paper Appendix B), per model and per point.

Inputs are packed, (M, N, D + 2) = [x, y, observed] (:func:`pack`); the noise ``eps`` is
(M, N, S, K + width): the first K columns reparameterise z, the rest y (standard normals, turned
into Gumbel noise through the normal CDF for relaxed discrete labels; unused when the classes are
summed). Per point the objective is

    J_n = U(x_n)                                   if y_n is not observed,
    J_n = γ L(x_n, y_n) + α log q(y_n | x_n)      if it is,

so the batch mean is (1/N)·[Σ_unlabelled U + γ Σ_labelled L + α Σ_labelled log q(y|x)], eq. 11 with the
discriminator weight α. A label that is not observed never enters L or the discriminator (the
mask selects; :func:`pack` also zeroes such labels). U keeps the factorised q(y|x) q(z|x) of the
paper, which drives functional collapse. L(x, y) and the discriminator always see y as given
(one-hot for discrete labels).

Discrete y, ``model.labels.discrete_y`` (config ``training.m2.discrete_y``) [choice]:

* ``enumerate`` (default): the discrete model that evaluation decodes, p(y) uniform over C
  classes, decoder input one-hot(y). U sums the classes exactly, with one draw
  z ~ q(z|x) (ε[:, :, 0, :K]) shared by all of them:

      U(x)    = Σ_y q(y|x) [log p(x|z,y) + log p(y) − log q(y|x)] − KL(q(z|x) ‖ p(z)),
      U_IW(x) = log Σ_y q(y|x) (1/S) Σ_s w_s(y),  w_s(y) = p(x|z_s,y) p(z_s) p(y) / (q(y|x) q(z_s|x))
              = log Σ_y p(y) (1/S) Σ_s p(x|z_s,y) p(z_s) / q(z_s|x).

  q(y|x) cancels in U_IW: it is the Rao–Blackwellised form (y summed exactly) of the paper's
  U_IW = logmeanexp_s over joint draws (y_s, z_s), ≥ that bound by Jensen, and → log p(x) as
  S → ∞; in this version q(y|x) learns only through the discriminator term α log q(y|x).
  Why: the former mix (a relaxed Gumbel-softmax sample in the decoder, at temperature 2.2, with
  the analytic categorical KL(q(y|x) ‖ p(y))) is a bound of no model: on trained models it
  measured 0.2–0.5 nats per point *above* the exact log p(x) of the one-hot model evaluated,
  and training exploits the gap.
* ``relaxed``: the Concrete model throughout, following Appendix D's "continuous relaxations of
  the categorical distribution with temperature 2.2 as the variational family" (λ =
  ``model.labels.temperature``, default :data:`TEMPERATURE`): q(y|x) = Concrete(π(x), λ), p(y) the
  uniform Concrete at the same λ, the decoder fed the relaxed sample y_s. U's y-term is the
  single-sample estimate log q(y_s|x) − log p(y_s) of KL(q(y|x) ‖ p(y)) (never the categorical
  KL); U_IW weighs relaxed draws by the same Concrete densities. Both bound log p(x) of this
  relaxed model, the one it must then be evaluated as.

Continuous y: q(y|x) = N(μ(x), s²(x)), p(y) = N(0, 1); U uses one reparameterised y and the analytic
Gaussian KL, U_IW Gaussian densities in the weights. The IWAE discriminator stays log q(y|x), the
paper's naive adaptation.
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


def _weights(hyper: dict | None, m: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-model α and γ as (M, 1) columns (1 where the hyper-parameters are not given)."""
    ones = torch.ones(m, dtype=dtype, device=device)
    return ((hyper or {}).get("alpha", ones).to(dtype)[:, None], (hyper or {}).get("gamma", ones).to(dtype)[:, None])


def _take(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (M, n) of each model's points in ``t`` (M, N, …) -> (M, n, …)."""
    return t.gather(1, index.view(*index.shape, *([1] * (t.dim() - 2))).expand(*index.shape, *t.shape[2:]))


def _per_point(model, xp: torch.Tensor, eps: torch.Tensor, hyper: dict | None, labelled_bound, unlabelled_bound):
    """J_n = γ L(x_n, y_n) + α log q(y_n|x_n) where y_n is observed, U(x_n) where it is not, (M, N).

    Each bound is computed only on its own points: per model, the labelled points are gathered
    (padded to the stack's largest count) and so are the unlabelled ones, then the values are put
    back in place. Every point's value is the one the dense computation gives (same x, y and
    noise); computing both bounds on every point and masking cost 1 + C decoder passes per point
    and sample instead of about 1 (labelled) or C (unlabelled). The two counts are read on the
    host once per call. ``labelled_bound(model, x, y, eps, hyper)`` and
    ``unlabelled_bound(model, x, eps, hyper)`` return (M, n) values."""
    x, y, observed = unpack(model, xp)
    m, n = observed.shape
    labelled_count = observed.sum(1)
    most_labelled, most_unlabelled = int(labelled_count.max()), int(n - labelled_count.min())
    if most_labelled == 0:
        return unlabelled_bound(model, x, eps, hyper)
    order = torch.argsort((~observed).to(torch.int8), dim=1, stable=True)  # each model's labelled points first
    index = order[:, :most_labelled]
    xl, yl, mine = _take(x, index), _take(y, index), _take(observed, index)
    labelled = labelled_bound(model, xl, yl, _take(eps, index), hyper)
    alpha, gamma = _weights(hyper, m, labelled.dtype, labelled.device)
    labelled = gamma * labelled + alpha * discriminator(model, model.classify(xl), yl)
    out = torch.zeros(m, n, dtype=labelled.dtype, device=labelled.device)
    out = out.scatter_add(1, index, torch.where(mine, labelled, torch.zeros((), dtype=labelled.dtype)))
    if most_unlabelled:
        index = order[:, n - most_unlabelled:]
        unlabelled = unlabelled_bound(model, _take(x, index), _take(eps, index), hyper)
        out = out.scatter_add(1, index, torch.where(_take(observed, index), torch.zeros((), dtype=out.dtype), unlabelled))
    return out


def _sample_y(model, out: torch.Tensor, eps_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A reparameterised y ~ q(y|x) as the decoder sees it (a relaxed one-hot sample, or y itself),
    with log q(y|x) and log p(y) there (Concrete densities at the label's temperature, or Gaussian
    ones); ``out`` = model.classify(x), broadcast against ``eps_y``. Continuous or relaxed labels."""
    if model.labels.discrete:
        t = model.labels.temperature
        log_y = relaxed_log_sample(out, eps_y, t)
        uniform = torch.zeros_like(out)
        return log_y.exp(), concrete_log_density(log_y, out, t), concrete_log_density(log_y, uniform, t)
    y = out[..., :1] + torch.exp(0.5 * out[..., 1:]) * eps_y
    zeros = torch.zeros_like(y)
    return y, log_normal(y, out[..., :1], out[..., 1:]), log_normal(y, zeros, zeros)


def _summed(model) -> bool:
    """Whether U sums a discrete y over its classes (``discrete_y: enumerate``)."""
    return model.labels.discrete and not model.labels.relaxed


def _log_joint_per_class(model, x: torch.Tensor, z: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """log p(x, y|z) = log p(x|z, y) + log p(y) for every class y (one-hot decoder input), in one
    decoder call: z (M, N, [S,] K) -> (M, N, [S,] C); ``x``, ``log_sigma2`` broadcast against z's."""
    c, m, k = model.labels.n_classes, z.shape[0], z.shape[-1]
    z = z.unsqueeze(-2).expand(*z.shape[:-1], c, k)
    y_in = torch.eye(c, dtype=z.dtype, device=z.device).expand(*z.shape[:-1], c)
    f = model.decode(z.reshape(m, -1, k), y_in.reshape(m, -1, c)).reshape(*z.shape[:-1], -1)
    return log_normal(x.unsqueeze(-2), f, log_sigma2.unsqueeze(-2)) - math.log(c)


def _labelled_elbo(model, x, y, eps, hyper=None):
    """L(x, y) = E_q(z|x,y)[log p(x|z, y)] + log p(y) − KL(q(z|x, y) ‖ p(z)), one draw eps[:, :, 0]."""
    y_in = model.labels.represent(y)
    mean, log_var = model.encode_labelled(x, y_in)
    z = mean + torch.exp(0.5 * log_var) * eps[:, :, 0, :model.latent_dim]
    return (log_normal(x, model.decode(z, y_in), model.log_sigma2[:, None, :]) + log_prior_y(model, y)
            - gaussian_kl_to_standard(mean, log_var))


def _unlabelled_elbo(model, x, eps, hyper=None):
    """U(x), one draw of z (eps[:, :, 0, :K]); a discrete y summed over its classes unless relaxed."""
    k = model.latent_dim
    log_sigma2 = model.log_sigma2[:, None, :]
    mean, log_var = model.encode(x)
    z = mean + torch.exp(0.5 * log_var) * eps[:, :, 0, :k]
    out = model.classify(x)
    if _summed(model):  # Σ_y q(y|x) [log p(x|z,y) + log p(y) − log q(y|x)]
        log_q = torch.log_softmax(out, -1)
        y_terms = (log_q.exp() * (_log_joint_per_class(model, x, z, log_sigma2) - log_q)).sum(-1)
    else:  # one reparameterised y: log p(x|z,y) − KL(q(y|x) ‖ p(y)), Gaussian (analytic) or Concrete (estimate)
        y_sample, log_q_y, log_p_y = _sample_y(model, out, eps[:, :, 0, k:])
        kl_y = log_q_y - log_p_y if model.labels.relaxed else gaussian_kl_to_standard(out[..., :1], out[..., 1:])
        y_terms = log_normal(x, model.decode(z, y_sample), log_sigma2) - kl_y
    return y_terms - gaussian_kl_to_standard(mean, log_var)


def m2_elbo(model, xp: torch.Tensor, eps: torch.Tensor, hyper: dict | None = None) -> torch.Tensor:
    """ELBO versions of L and U (one reparameterised sample, eps[:, :, 0]) combined by the label mask;
    U sums the classes of a discrete y exactly unless the label is relaxed (module docstring)."""
    return _per_point(model, xp, eps, hyper, _labelled_elbo, _unlabelled_elbo)


def _decode_samples(model, z: torch.Tensor, y_in: torch.Tensor) -> torch.Tensor:
    """The decoder on (M, N, S, ·) latents and labels -> (M, N, S, D)."""
    m, n, s = z.shape[:3]
    return model.decode(z.reshape(m, n * s, -1), y_in.reshape(m, n * s, -1)).reshape(m, n, s, -1)


def _labelled_iwae(model, x, y, eps, hyper=None):
    """L_IW(x, y) = logmeanexp_s p(x|z_s,y) p(z_s) p(y) / q(z_s|x,y), S = hyper['S'] per model."""
    eps_z = eps[..., :model.latent_dim]
    zeros = torch.zeros_like(eps_z)
    y_in = model.labels.represent(y)[:, :, None].expand(-1, -1, eps.shape[2], -1)
    mean, log_var = model.encode_labelled(x, y_in[:, :, 0])
    mean, log_var = mean[:, :, None], log_var[:, :, None]
    z = mean + torch.exp(0.5 * log_var) * eps_z
    log_w = (log_normal(x[:, :, None], _decode_samples(model, z, y_in), model.log_sigma2[:, None, None, :])
             + log_normal(z, zeros, zeros) + log_prior_y(model, y)[:, :, None] - log_normal(z, mean, log_var))
    return log_mean_weights(log_w, hyper)


def _unlabelled_iwae(model, x, eps, hyper=None):
    """U_IW(x): log Σ_y p(y) (1/S) Σ_s p(x|z_s,y) p(z_s)/q(z_s|x) for a summed discrete y, otherwise
    logmeanexp_s p(x|z_s,y_s) p(z_s) p(y_s) / (q(y_s|x) q(z_s|x))."""
    k = model.latent_dim
    eps_z = eps[..., :k]
    zeros = torch.zeros_like(eps_z)
    log_sigma2 = model.log_sigma2[:, None, None, :]
    xs = x[:, :, None]
    mean, log_var = model.encode(x)
    mean, log_var = mean[:, :, None], log_var[:, :, None]
    z = mean + torch.exp(0.5 * log_var) * eps_z
    if _summed(model):  # log Σ_y p(x|z_s,y) p(y): q(y|x) cancels
        log_w_y = torch.logsumexp(_log_joint_per_class(model, xs, z, log_sigma2), -1)
    else:  # log p(x|z_s,y_s) p(y_s)/q(y_s|x)
        y_sample, log_q_y, log_p_y = _sample_y(model, model.classify(x)[:, :, None], eps[..., k:])
        log_w_y = log_normal(xs, _decode_samples(model, z, y_sample), log_sigma2) + log_p_y - log_q_y
    return log_mean_weights(log_w_y + log_normal(z, zeros, zeros) - log_normal(z, mean, log_var), hyper)


def m2_iwae(model, xp: torch.Tensor, eps: torch.Tensor, hyper: dict | None = None) -> torch.Tensor:
    """IWAE versions of L and U (:func:`_labelled_iwae`, :func:`_unlabelled_iwae`), S = ``hyper['S']``
    per model, combined by the label mask; the discriminator stays log q(y|x), the only term that
    trains q(y|x) when y is summed."""
    return _per_point(model, xp, eps, hyper, _labelled_iwae, _unlabelled_iwae)


OBJECTIVES = {"m2_elbo": m2_elbo, "m2_iwae": m2_iwae}
