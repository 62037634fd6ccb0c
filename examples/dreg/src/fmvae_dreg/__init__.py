"""IWAE trained with the doubly reparameterised gradient estimator (DReG; Tucker, Lawson, Gu &
Maddison, "Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives", 2018), as a
method plugged into fmvae from outside the package.

The bound is the IWAE bound L_S = log (1/S) Σ_s w_s, w_s = p(x|z_s) p(z_s) / q(z_s|x), unchanged:
DReG changes only the encoder's gradient estimator. With normalised weights w̃_s = w_s / Σ_t w_t,

    ∇_θ L_S = Σ_s w̃_s ∇_θ log w_s                              (the IWAE gradient, decoder),
    ∇_φ L_S = E[Σ_s w̃_s² ∂log w_s/∂z_s · ∂z_s/∂φ]               (DReG, encoder),

where ∂log w_s/∂z_s treats q's parameters as constants (only the path through z_s = μ_φ + σ_φ ε_s).
The plain IWAE estimator Σ_s w̃_s ∇_φ log w_s has a signal-to-noise ratio that falls as S grows
(Rainforth et al. 2018); DReG's does not.

One decoder pass gives both: z_s enters the decoder through an identity whose backward pass
multiplies the incoming gradient by w̃_s (known once the forward pass has computed the weights),
and the per-point surrogate Σ_s w̃_s log w_s (log q with detached parameters) then has gradient
w̃_s ∂log w_s/∂θ for the decoder and w̃_s · w̃_s ∂log w_s/∂z_s for the encoder's path. The returned
value is the bound itself (bound + surrogate − stop_gradient(surrogate)), so selection, evaluation
and the bound invariants read the IWAE bound.

Use it by import path (``methods: {"fmvae_dreg:make_method": {S: [20]}}``) or, once installed
(``pip install --no-deps -e examples/dreg``), by its entry-point name ``dreg``.
"""

from __future__ import annotations

import torch

from fmvae.methods import Method
from fmvae.objectives.unsupervised import log_mean_weights, log_normal

__all__ = ["dreg_iwae", "make_method"]


class _ScaleGradient(torch.autograd.Function):
    """Identity on z (M, N, S, K); the backward pass multiplies the gradient by ``holder['w']``
    (M, N, S), which the caller fills in after the forward pass."""

    @staticmethod
    def forward(ctx, z, holder):
        ctx.holder = holder
        return z.view_as(z)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.holder["w"][..., None], None


def dreg_iwae(model, x, eps, hyper=None):
    """The IWAE bound per model and point (M, N), with DReG gradients for the encoder."""
    m, n, s_max, k = eps.shape
    mean, log_var = model.encode(x)
    mean, log_var = mean[:, :, None], log_var[:, :, None]
    z = mean + torch.exp(0.5 * log_var) * eps  # (M, N, S, K)
    holder = {}
    z_in = _ScaleGradient.apply(z, holder)
    fz = model.decode(z_in.reshape(m, n * s_max, k)).reshape(m, n, s_max, -1)
    log_w = (log_normal(x[:, :, None], fz, model.log_sigma2[:, None, None, :])
             + log_normal(z_in, torch.zeros_like(z), torch.zeros_like(z))
             - log_normal(z_in, mean.detach(), log_var.detach()))
    bound = log_mean_weights(log_w, hyper)
    # w̃: the softmax of each model's own S log-weights (the unused ones, beyond its S, get weight 0)
    w = torch.exp(log_w - (bound + torch.log(_samples(hyper, m, s_max, log_w))[:, None])[..., None]).detach()
    w = torch.where(torch.isfinite(w), w, torch.zeros_like(w)) * _used(hyper, m, s_max, log_w)
    holder["w"] = w
    surrogate = (w * torch.where(w > 0, log_w, torch.zeros_like(log_w))).sum(-1)
    return bound.detach() + surrogate - surrogate.detach()


def _samples(hyper, m, s_max, like):
    return (hyper["S"] if hyper and "S" in hyper else torch.full((m,), s_max)).to(like.dtype).to(like.device)


def _used(hyper, m, s_max, like):
    """(M, 1, S) mask of each model's first S samples."""
    samples = _samples(hyper, m, s_max, like)
    return (torch.arange(s_max, device=like.device)[None, :] < samples[:, None]).to(like.dtype)[:, None, :]


def make_method() -> Method:
    """IWAE-DReG: the IWAE bound with S samples (hyper-parameter ``S``), the standard schedule."""
    return Method("dreg", dreg_iwae, "standard", ("S",), samples_from="S", paper_name="IWAE-DReG")
