"""Per-point log-likelihoods and bounds of trained models (docs/methods.md, "Evaluation").

Every estimate names its estimator, because the tables compare numbers that different estimators
bias differently:

- ``quadrature``: exact log p_θ(x) for a 1-D latent, on an even grid of z nodes over [−b, b] with
  N(0, 1) weights; an M2 model sums its discrete classes exactly (one-hot decoder inputs) or adds a
  grid axis for a continuous label.
- ``defensive_is``: importance sampling with a defensive mixture proposal, r(z|x) = ½ q(z|x) + ½ p(z)
  (an M2 model with discrete y: per class c, ⅓ q(z|x, c) + ⅓ q(z|x) + ⅓ p(z), then the exact sum
  over c). Every sample is weighted by the whole mixture (the balance heuristic), so the weights are
  bounded by 2 p(x, z)/q(z|x) and 2 p(x|z): the estimate cannot miss a posterior mode the way one
  with q alone as proposal does (measured: 17–21 nats per point on a Spiral-Dots VAE with fixed σ²).
  Like every importance-sampled estimate it is a lower bound on log p(x) in expectation.
- ``is_q``: the model's own importance-weighted bound with many samples from q, for the M2 models
  that have no other (a continuous label with K > 1, or the Concrete-relaxed model).

:func:`bound_per_point` averages a method's bound over many noise draws per point and returns the
Monte Carlo variance beside it, so a stored bound carries its standard error.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm

from fmvae.objectives.unsupervised import log_normal
from fmvae.train.streams import ModelStreams

QUADRATURE_BOUND = 6.0  # the z grid spans at least [−6, 6]: p(|z| > 6) ≈ 2e-9
MAX_QUADRATURE_BOUND = 60.0  # and at most [−60, 60] (see quadrature_bound)
QUADRATURE_CORE_NATS = 18.0  # every point sums the nodes within 18 nats of the heaviest: |z| ≤ 6 of N(0, 1)
QUADRATURE_TAIL_NATS = 60.0  # and further nodes only while they can add e^−60 of its sum (_log_marginal)


def normal_nodes(n: int, bound: float = QUADRATURE_BOUND) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and log-weights (density times spacing) of N(0, 1) on an even grid over [−bound, bound]."""
    nodes = np.linspace(-bound, bound, n)
    return nodes, norm.logpdf(nodes) + math.log(2 * bound / (n - 1))


def quadrature_bound(model, x: torch.Tensor) -> np.ndarray:
    """Per model, the half-width of a z grid that holds the posterior: [−6, 6], widened to 8 standard
    deviations around every encoder mean on these points (q(z|x), and q(z|x, y) of each class of a
    discrete M2 model), at most 60. A badly fitted decoder can put p(z|x) far in the prior's tail
    (measured: an untrained Spiral-Dots VAE's ELBO of −774 nats per point against −1 004 from a
    [−6, 6] grid); where the encoder finds that mass, the grid follows it."""
    with torch.no_grad():
        xb = model.features(x)[None].expand(model.n_models, -1, -1)
        moments = [model.encode(xb)]
        if model.labels is not None and model.labels.discrete and not model.labels.relaxed:
            moments += [model.encode_labelled(xb, model.labels.represent(torch.full(xb.shape[:2], c)).to(xb.device))
                        for c in range(model.labels.n_classes)]
        reach = torch.stack([(mean.abs() + 8 * torch.exp(0.5 * log_var)).amax((1, 2)) for mean, log_var in moments])
    reach = reach.amax(0).double().cpu().numpy()
    return np.clip(np.nan_to_num(reach, nan=QUADRATURE_BOUND), QUADRATURE_BOUND, MAX_QUADRATURE_BOUND)


def bound_per_point(model, method, hyper: dict, x: torch.Tensor, seeds, draws: int,
                    rows: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """The method's objective per model and point averaged over ``draws`` independent noise draws
    (``draws`` / S for an importance-weighted bound of S samples, at least 2): (mean, Monte Carlo
    variance of one draw, draws used), the first two (M, N). ``x`` is (N, ·), the same for every model.
    The points are processed in chunks of about ``rows`` decoder rows."""
    from fmvae.train.loop import hyper_tensors

    m = model.n_models
    hyper_t = hyper_tensors(method, hyper, m, x.device)
    counts = [method.samples({k: v[i].item() for k, v in hyper_t.items()}) for i in range(m)]
    draws = max(2, draws // max(counts))  # an S-sample bound: as many decoder passes as the ELBO's draws
    width = max(counts) * (model.labels.width if model.labels else 1)
    chunk = max(1, rows // (draws * width))
    streams, objective = ModelStreams(seeds), method.objective_fn
    total = torch.zeros(m, x.shape[0], dtype=torch.float64)
    square = torch.zeros_like(total)
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            xb = x[start:start + chunk]
            n = xb.shape[0]
            eps = streams.normal((n * draws, max(counts), model.noise_dim), samples=counts).to(x.device)
            values = objective(model, xb.repeat_interleave(draws, 0).expand(m, -1, -1), eps, hyper_t)
            values = values.double().cpu().view(m, n, draws)
            total[:, start:start + n] = values.mean(-1)
            square[:, start:start + n] = values.var(-1, correction=1)
    return total.numpy(), square.numpy(), draws


def summarise(per_point_mean: np.ndarray, per_point_var: np.ndarray, draws: int) -> tuple[float, float]:
    """(mean over points, its Monte Carlo standard error) of one model's per-point averages."""
    n = per_point_mean.shape[-1]
    return float(per_point_mean.mean()), float(math.sqrt(np.nansum(per_point_var) / draws) / n)


# -- quadrature --------------------------------------------------------------------------------


def _decode_grid(model, z: np.ndarray, labels: torch.Tensor | None = None) -> np.ndarray:
    """f_θ at grid nodes for every model, (M, J, D) float64 on the CPU."""
    device = model.log_sigma2.device
    zt = torch.as_tensor(z, dtype=torch.float32, device=device)[None].expand(model.n_models, -1, -1)
    y = None if labels is None else labels.to(device)[None].expand(model.n_models, -1, -1)
    with torch.no_grad():
        return model.decode(zt, y).double().cpu()


def quadrature_loglik(model, x: torch.Tensor, grid_points: int = 4001, label_points: int = 201) -> np.ndarray:
    """Exact log p_θ(x) per model and point for a 1-D latent, (M, N): z on ``grid_points`` nodes per
    [−6, 6], at the same spacing over the widest range :func:`quadrature_bound` asks for among the
    models; an M2 model sums its classes (one-hot) or integrates a continuous y on ``label_points``
    nodes over [−6, 6] (with at most 1001 z nodes per [−6, 6])."""
    if model.latent_dim != 1:
        raise ValueError(f"quadrature needs a 1-D latent, the model has K = {model.latent_dim}")
    labels = model.labels
    if labels is not None and labels.relaxed:
        raise ValueError("the Concrete-relaxed M2 model has no quadrature over y")
    continuous = labels is not None and not labels.discrete
    # a second grid axis (continuous y) takes a coarser z grid: 1001 nodes per [−6, 6]
    per_unit = (min(grid_points, 1001) if continuous else grid_points - 1) / (2 * QUADRATURE_BOUND)
    bound = float(quadrature_bound(model, x).max())
    nodes, lw = normal_nodes(round(2 * bound * per_unit) + 1, bound)
    if labels is None:
        z, log_w, y_in = nodes, lw, None
    elif labels.discrete:
        c = labels.n_classes
        z, log_w = np.tile(nodes, c), np.tile(lw, c) - math.log(c)
        y_in = labels.represent(torch.arange(c).repeat_interleave(len(nodes)))
    else:
        y_nodes, y_lw = normal_nodes(label_points)
        z, log_w = np.tile(nodes, len(y_nodes)), (y_lw[:, None] + lw[None, :]).ravel()
        y_in = labels.represent(torch.as_tensor(np.repeat(y_nodes, len(nodes)), dtype=torch.float32))
    fz = _decode_grid(model, z[:, None], y_in)
    sigma2 = torch.exp(model.log_sigma2).detach().double().cpu()
    return _log_marginal(model.features(x).cpu().double(), fz, torch.as_tensor(log_w), sigma2)


def _log_marginal(x: torch.Tensor, fz: torch.Tensor, log_w: torch.Tensor, sigma2: torch.Tensor,
                  rows: int = 250_000) -> np.ndarray:
    """log Σ_j w_j N(x; f_m(z_j), diag σ²_m) per model and point, (M, N), in float64 and in
    chunks of about ``rows`` (point, node) pairs.

    With x and f scaled by 1/σ, −½‖x − f_j‖² = x·f_j − ½‖f_j‖² − ½‖x‖²: the last term leaves the sum
    over nodes, so each chunk is one matrix product with a per-node bias followed by a logsumexp
    (three times faster than forming the differences). Moving ½‖x‖² out costs float64 rounding
    of about 1e-16·‖x/σ‖² nats: 1e-12 at ‖x/σ‖² = 10⁴, far below every Monte Carlo error here.

    Nodes are summed heaviest weight first, and a point's sum stops where the remaining nodes
    cannot matter: every term is at most w_j · max N = w_j (2π)^(−D/2) Π σ_d⁻¹, and the sum over
    the heaviest nodes (those within :data:`QUADRATURE_CORE_NATS` of the largest weight, the
    [−6, 6] core of the grid) is already a lower bound L on the point's total. A node whose bound
    is more than :data:`QUADRATURE_TAIL_NATS` below L adds less than e^−60 of it, so all the
    nodes dropped together change log p(x) by less than J·e^−60 (1e-21 at J = 10⁵ nodes): below
    float64 rounding. The wide grids of :func:`quadrature_bound` (up to [−60, 60], kept for the
    points the decoder fits badly) then cost only where a point needs them."""
    m, n = fz.shape[0], x.shape[0]
    order = torch.argsort(log_w, descending=True)
    log_w, fz = log_w[order], fz[:, order]
    core = int((log_w >= log_w[0] - QUADRATURE_CORE_NATS).sum())
    out = torch.empty(m, n, dtype=torch.float64)
    for i in range(m):
        scale = sigma2[i].rsqrt()
        xs, fs = x * scale, fz[i] * scale
        log_peak = -0.5 * torch.log(2 * math.pi * sigma2[i]).sum()
        bias = log_w + log_peak - 0.5 * (fs ** 2).sum(1)
        half_x2 = 0.5 * (xs ** 2).sum(1)

        everyone = torch.arange(n)
        terms = (xs, fs, bias, half_x2, rows)
        total = _partial_log_marginal(*terms, everyone, 0, core)
        # nodes a point still needs: those whose bound w_j·max N reaches L − QUADRATURE_TAIL_NATS
        cutoff = total - log_peak - QUADRATURE_TAIL_NATS
        needed = torch.searchsorted(-log_w, -cutoff, right=True)  # log_w descending
        wide = torch.argsort(needed, descending=True)[:int((needed > core).sum())]
        start = 0
        while start < len(wide):  # the points that need the most nodes first, a chunk at a time
            hi = int(needed[wide[start]])
            points = wide[start:start + max(1, rows // (hi - core))]
            total[points] = torch.logaddexp(total[points], _partial_log_marginal(*terms, points, core, hi))
            start += len(points)
        out[i] = total
    return out.numpy()


def _partial_log_marginal(xs, fs, bias, half_x2, rows: int, points: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """log Σ over nodes [lo, hi) of :func:`_log_marginal`'s terms for ``points``, chunked by ``rows``."""
    chunk = max(1, rows // (hi - lo))
    parts = [torch.logsumexp(torch.addmm(bias[None, lo:hi], xs[points[s:s + chunk]], fs[lo:hi].T), 1)
             for s in range(0, len(points), chunk)]
    return torch.cat(parts) - half_x2[points]


# -- importance sampling -----------------------------------------------------------------------


def _log_mixture(z: torch.Tensor, components: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """log of the equal-weight mixture of diagonal Gaussians (mean, log-variance) at z."""
    logs = torch.stack([log_normal(z, mean, log_var) for mean, log_var in components])
    return torch.logsumexp(logs, 0) - math.log(len(components))


def _defensive_log_px(model, x: torch.Tensor, components, y_in, samples: int, generator) -> torch.Tensor:
    """logmeanexp_s [log p(x|z_s, y) + log p(z_s) − log r(z_s)], r the equal mixture of ``components``
    (each (M, n, K) mean and log-variance, broadcast over samples), ``samples`` split evenly
    (stratified) between them. Shape (M, n)."""
    m, n, k = components[0][0].shape
    per = max(1, samples // len(components))
    draws = []
    for mean, log_var in components:
        eps = torch.randn(m, n, per, k, generator=generator).to(mean.device)
        draws.append(mean[:, :, None] + torch.exp(0.5 * log_var)[:, :, None] * eps)
    z = torch.cat(draws, 2)  # (M, n, S, K)
    s = z.shape[2]
    mix = [(mean[:, :, None], log_var[:, :, None]) for mean, log_var in components]
    y_rep = None if y_in is None else y_in[:, :, None].expand(-1, -1, s, -1).reshape(m, n * s, -1)
    fz = model.decode(z.reshape(m, n * s, k), y_rep).reshape(m, n, s, -1)
    zeros = torch.zeros_like(z)
    log_w = (log_normal(x[:, :, None], fz, model.log_sigma2[:, None, None, :]) + log_normal(z, zeros, zeros)
             - _log_mixture(z, mix))
    return torch.logsumexp(log_w, -1) - math.log(s)


def defensive_is_loglik(model, x: torch.Tensor, samples: int, seed: int, chunk: int = 100) -> np.ndarray:
    """Importance-sampled log p_θ(x) per model and point with the defensive mixture proposal (module
    docstring), ``samples`` per point (per class for a discrete M2 label), (M, N)."""
    generator = torch.Generator().manual_seed(int(seed))
    labels = model.labels
    if labels is not None and not (labels.discrete and not labels.relaxed):
        raise ValueError("defensive importance sampling covers unsupervised and discrete (enumerated) M2 models")
    m, out = model.n_models, []
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            xb = model.features(x[start:start + chunk])[None].expand(m, -1, -1)
            mean, log_var = model.encode(xb)
            prior = (torch.zeros_like(mean), torch.zeros_like(log_var))
            if labels is None:
                out.append(_defensive_log_px(model, xb, [(mean, log_var), prior], None, samples, generator))
                continue
            per_class = []
            for c in range(labels.n_classes):
                y_in = labels.represent(torch.full(xb.shape[:2], c)).to(xb.device)
                labelled = model.encode_labelled(xb, y_in)
                per_class.append(_defensive_log_px(model, xb, [labelled, (mean, log_var), prior], y_in, samples,
                                                   generator) - math.log(labels.n_classes))
            out.append(torch.logsumexp(torch.stack(per_class), 0))
    return torch.cat(out, 1).double().cpu().numpy()


def own_bound_loglik(model, x: torch.Tensor, samples: int, seed: int) -> np.ndarray:
    """The M2 importance-weighted bound U_IW with ``samples`` samples from q, per model and point (M, N)."""
    from fmvae import methods

    method = methods.get("m2_iwae")
    hyper = {**{k: np.ones(model.n_models) for k in method.hyper}, "S": np.full(model.n_models, samples)}
    mean, _, _ = bound_per_point(model, method, hyper, x, [seed + i for i in range(model.n_models)], draws=2)
    return mean


def log_likelihood_estimates(model, x: torch.Tensor, settings: dict, seed: int, best_only: bool = False
                             ) -> dict[str, np.ndarray]:
    """Every log-likelihood estimate that applies to the model (only the best with ``best_only``),
    per model and point, by estimator name; ``x`` is what the model's bounds take (packed inputs for
    M2, labels unobserved). The best is :func:`best_estimate`'s pick."""
    labels = model.labels
    out = {}
    if model.latent_dim == 1 and not (labels is not None and labels.relaxed):
        out["quadrature"] = quadrature_loglik(model, x, settings["quadrature_points"])
        if best_only:
            return out
    if labels is None or (labels.discrete and not labels.relaxed):
        out["defensive_is"] = defensive_is_loglik(model, x, settings["loglik_samples"], seed)
    else:
        out["is_q"] = own_bound_loglik(model, x, settings["loglik_samples"], seed)
    return out


ESTIMATOR_ORDER = ("quadrature", "defensive_is", "is_q")  # the first available is the best


def best_estimate(estimates: dict) -> tuple[str, np.ndarray]:
    name = next(n for n in ESTIMATOR_ORDER if n in estimates)
    return name, estimates[name]


def best_log_likelihood(model, x: torch.Tensor, settings: dict, seed: int) -> tuple[str, np.ndarray]:
    """(estimator, per model and point log p(x)) of the best estimator alone."""
    return best_estimate(log_likelihood_estimates(model, x, settings, seed, best_only=True))
