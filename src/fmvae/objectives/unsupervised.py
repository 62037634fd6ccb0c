"""The MFG-VAE ELBO and the IWAE bound (docs/methods.md §2)."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def log_normal(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag exp(log_var)), summed over the last axis."""
    return -0.5 * (LOG_2PI + log_var + (x - mean) ** 2 * torch.exp(-log_var)).sum(-1)


def gaussian_kl_to_standard(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag exp(log_var)) ‖ N(0, I)), summed over the last axis."""
    return 0.5 * (mean ** 2 + torch.exp(log_var) - 1.0 - log_var).sum(-1)


def elbo(model, x: torch.Tensor, eps: torch.Tensor, hyper: dict | None = None) -> torch.Tensor:
    """ELBO = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)), one reparameterised sample (eps[:, :, 0])."""
    mean, log_var = model.encode(x)
    z = mean + torch.exp(0.5 * log_var) * eps[:, :, 0]
    log_px_z = log_normal(x, model.decode(z), model.log_sigma2[:, None, :])
    return log_px_z - gaussian_kl_to_standard(mean, log_var)


def iwae(model, x: torch.Tensor, eps: torch.Tensor, hyper: dict | None = None) -> torch.Tensor:
    """IWAE bound L_S = logsumexp_s log w_s − log S, log w = log p(x|z) + log p(z) − log q(z|x).

    Model m uses the first ``hyper['S'][m]`` of the S draws in ``eps`` (the rest are masked), so
    models with different S share one stack. No analytic KL enters log w.
    """
    m, n, s_max, k = eps.shape
    mean, log_var = model.encode(x)
    z = mean[:, :, None] + torch.exp(0.5 * log_var)[:, :, None] * eps  # (M, N, S, K)
    fz = model.decode(z.reshape(m, n * s_max, k)).reshape(m, n, s_max, -1)
    log_w = (log_normal(x[:, :, None], fz, model.log_sigma2[:, None, None, :])
             + log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
             - log_normal(z, mean[:, :, None], log_var[:, :, None]))
    return log_mean_weights(log_w, hyper)


def log_mean_weights(log_w: torch.Tensor, hyper: dict | None) -> torch.Tensor:
    """logsumexp_s log w_s − log S over the last axis of (M, N, S_max) log-weights, model m using
    its first ``hyper['S'][m]`` samples (all S_max without ``S``), so models with different S share a stack."""
    m, _, s_max = log_w.shape
    if hyper and "S" in hyper:  # masked always (not only where some S < S_max): no read from the device
        samples = hyper["S"]
        used = torch.arange(s_max, device=log_w.device)[None, :] < samples[:, None]  # (M, S)
        log_w = log_w.masked_fill(~used[:, None, :], float("-inf"))
    else:
        samples = torch.full((m,), s_max, device=log_w.device)
    return torch.logsumexp(log_w, dim=-1) - torch.log(samples.to(log_w.dtype))[:, None]


OBJECTIVES = {"elbo": elbo, "iwae": iwae}  # the M2 bounds join them in fmvae.objectives
