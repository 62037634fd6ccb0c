"""φ_GT: the ground-truth encoder of ground-truth-initialised restarts (docs/methods.md §3), and how close
it comes to the truth.

The decoder is frozen at θ_GT (the surrogate, or A_GT for eq. 6) and σ² at the truth. Each of
``restarts`` encoder stacks is first *initialised* (``training.gt_encoder.init``), then trained by
the ELBO for ``epochs`` epochs, and the restart with the best validation ELBO is kept:

* ``random``: the encoders' random initialisation, as the paper's protocol reads (no pre-fit).
* ``true_z``: a supervised pre-fit on the training points with the stored true z (and y): μ_φ(x)
  regressed on the true z, log s²_φ(x) on the log-variance of the Laplace approximation at the true
  z, 1/(1 + Σ_d (∂f_d/∂z_k)²/σ²_d) (the mean-field posterior variance for a linear decoder); for M2,
  q(z|x, y) the same with the true y as input, and q(y|x) by cross-entropy on the true class
  (discrete y) or by the same regression on the true y (continuous y).
* ``posterior``: a supervised pre-fit on the exact posterior under θ_GT and the true σ². For a 1-D
  latent, p(z|x) on a quadrature grid (:func:`quadrature_grid`); for eq. 6 its closed form
  (Gaussian); other latents fall back to ``true_z``. Each network is fitted to the posterior's
  Gaussian projection (moment matching): with ``prefit_loss: kl`` by minimising the forward
  KL(N(m(x), v(x)) ‖ q_φ(·|x)) averaged over the training points (the moments' exact KL, whose
  minimiser is μ_φ = m, s²_φ = v and which weighs a mean error by the posterior precision, so
  narrow posteriors are fitted precisely), with ``mse`` by least squares on m and log v. For M2,
  q(z|x, y) is fitted to p(z|x, y_true), q(z|x) to the y-marginal p(z|x), and q(y|x) to p(y|x)
  (KL to the class probabilities, or to the moments of a continuous y).

The pre-fit is batched over the restarts (one BatchedAdam over every restart's encoders, each with
its own batches), with a cosine decay of the learning rate to zero, and stops early once the median
restart's loss is below ``prefit_tolerance``. The ELBO fit that follows is the trainer's (the same
objective, batch size and learning rate as today's fit), with the encoders' learning rate decayed
from ``training.lr`` to zero (``lr_schedule: cosine``). Then every restart is scored on the
validation points by its ELBO (U for M2) averaged over ``val_draws`` noise draws per point, the best
is kept, and compared with the exact log p(x) under θ_GT (:func:`log_px_truth`); the per-point gap
log p(x) − ELBO of the selected restart is summarised in the file, and a mean gap above
``gap_warning`` nats logs a WARNING.

Measured on v0 of the default data (10 restarts, 100 epochs; mean / median / p95 gap in nats per
point, % of points above 5). Spiral-Dots: ``random`` with a constant 1e-3 (the former fit) 1665 /
931 / 5086 / 79% — the outer dots sit on wrong flat steps of f; ``posterior`` 4000 steps, constant
1e-3: 84 / 2.9 / 516 / 27%; ``posterior`` 16 000 steps, constant 1e-4: 1.6 / 0.6 / 2.6 / 2%;
``true_z`` the same: 9.4 / 3.3 / 15 / 21%, with the cosine decay 6.4 / 2.0 / 11 / 16%; the default
(``posterior``, 16 000 steps, cosine from 1e-3): 1.9 / 0.7 / 5.9 / 8%. What remains is on the steep
steps of f, whose posteriors are ≈ 2e-4 wide: the pre-fit converges there slowly (best of 3, cosine
ELBO fit: 4000 / 8000 / 16 000 steps give 7.9 / 3.8 / 1.1 nats), and a constant 1e-3 in the ELBO
fit undoes that precision (best of 3 after 20 000 steps: 22 nats with 1e-3, 3.2 with 1e-4). The
best mean-field Gaussian per point reaches ≈ 1–1.5; the moment-matched Gaussian itself 250 (its
tails reach the next dot), so the ELBO fit after the pre-fit is needed. The other sets, former fit
→ default: Figure-8 0.27 → 0.24, Circle 0.26 → 0.19, Absolute-Value 0.63 → 0.63 (one of the two
symmetric modes: ≈ log 2), Clusters 0.71 → 0.69, Figure-8 5-D 0.23 → 0.25, Clusters 5-D 0.89 →
0.79, Discrete semi-circle 0.54 → 0.54, Continuous semi-circle 1.27 → 1.23, eq. 6 0.56 → 0.53 (the
best mean-field q: 0.532); p95 below 3 nats and at most 1.1% of points above 5 on each. Wall time
of one fit on a busy 2-core machine, one thread: Spiral-Dots 100–250 s (the pre-fit's 16 000
steps), the others 20–115 s (their pre-fit stops after 1000–3000 steps; the continuous label's grid
posterior takes ≈ 40 s), the former fit 15–65 s.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import norm

from fmvae import methods, store
from fmvae.config import derive_seed, to_json
from fmvae.metrics.loglik import bound_per_point
from fmvae.metrics.quadrature import log_likelihood_grid
from fmvae.nn import BatchedMLP
from fmvae.objectives.unsupervised import log_normal
from fmvae.train.loop import Trainer
from fmvae.train.optim import BatchedAdam
from fmvae.train.streams import ModelStreams

log = logging.getLogger(__name__)

INITS = ("random", "true_z", "posterior")
GAP_POINT_THRESHOLD = 5.0  # nats: the recorded fraction of validation points whose gap exceeds this
LATENT_BOUND = 6.0  # quadrature over z ∈ [−6, 6]: p(|z| > 6) ≈ 2e-9
LABEL_BOUND = 4.0  # and over a continuous y ∈ [−4, 4]: p(|y| > 4) ≈ 6e-5
VAR_FLOOR = 1e-12  # smallest posterior variance a target may have (log of zero otherwise)


@lru_cache(maxsize=1)
def _schema_defaults() -> dict:
    from fmvae.config import fill_defaults, load_schema

    schema = load_schema()["properties"]["training"]["properties"]["gt_encoder"]
    return fill_defaults({}, schema)


def settings_of(spec: dict) -> dict:
    """The ``training.gt_encoder`` settings of a spec, schema defaults for what it lacks (a spec
    written before the settings existed reads as its defaults)."""
    out = copy.deepcopy(_schema_defaults())
    given = spec.get("gt_encoder", {})
    for key, value in given.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    if out["init"] not in INITS:
        raise ValueError(f"gt_encoder.init: {out['init']!r} is not allowed; allowed values: {', '.join(INITS)}")
    return out


# -- θ_GT as a plain function --------------------------------------------------------------------


def truth_decoder(model):
    """f_θGT as a function of a float32 tensor of decoder inputs (J, K + label width) -> (J, D),
    differentiable: model 0 of the stack (every restart holds the same θ_GT)."""
    if isinstance(model.decoder, BatchedMLP):
        net = model.decoder.select(0).to(model.log_sigma2.device)
        for p in net.parameters():
            p.requires_grad_(False)
        return lambda inputs: net(inputs[None])[0]
    L = model.decoder.cholesky()[0].detach()
    return lambda inputs: inputs @ L.T


def _decode_np(f, inputs: np.ndarray, device, chunk: int = 100_000) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(inputs), chunk):
            block = torch.as_tensor(inputs[start:start + chunk], dtype=torch.float32, device=device)
            out.append(f(block).double().cpu().numpy())
    return np.concatenate(out)


def noise_variance(model) -> np.ndarray:
    """σ² per data dimension of model 0 (the truth: the decoder and σ² are frozen)."""
    return torch.exp(model.log_sigma2[0]).detach().double().cpu().numpy()


# -- quadrature under θ_GT -----------------------------------------------------------------------


@dataclass
class Grid:
    """Quadrature nodes under the prior: latent z (J,), label (J,) (class index, y value, or None),
    decoder outputs f(z, y) (J, D) and log-weights (J,) that sum to one in probability."""

    z: np.ndarray
    y: np.ndarray | None
    fz: np.ndarray
    log_w: np.ndarray
    resolution: float  # largest step of f between neighbouring z nodes, in units of σ


def normal_nodes(n: int, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """Even nodes on [−bound, bound] and normalised N(0, 1) log-weights."""
    nodes = np.linspace(-bound, bound, n)
    log_w = norm.logpdf(nodes)
    return nodes, log_w - logsumexp(log_w)


def adaptive_nodes(f_np, sigma2, q: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Nodes of a 1-D N(0, 1) latent on [−6, 6], dense where f is steep: a subset of an even grid of
    ``q['base_nodes']`` nodes such that f moves at most ``q['resolution']`` σ and z at most
    ``q['max_step']`` between neighbours (as far as the base grid allows), with trapezoid weights.
    A steep step of f (Spiral-Dots: |f'| ≈ 440, posterior width ≈ 2e-4) needs such nodes; an even
    grid fine enough everywhere costs ten times more. Returns (z, f(z), log-weights, resolution)."""
    zb = np.linspace(-LATENT_BOUND, LATENT_BOUND, int(q["base_nodes"]))
    fb = f_np(zb[:, None])
    seg = np.sqrt((np.diff(fb, axis=0) ** 2 / sigma2).sum(1))
    cost = np.maximum(seg / q["resolution"], np.diff(zb) / q["max_step"])
    units = np.floor(np.concatenate([[0.0], np.cumsum(cost)]))
    keep = np.unique(np.concatenate([[0], np.flatnonzero(np.diff(units) > 0) + 1, [len(zb) - 1]]))
    z, fz = zb[keep], fb[keep]
    widths = np.empty(len(z))
    widths[1:-1] = (z[2:] - z[:-2]) / 2
    widths[0], widths[-1] = (z[1] - z[0]) / 2, (z[-1] - z[-2]) / 2
    log_w = norm.logpdf(z) + np.log(widths)
    resolution = float(np.sqrt((np.diff(fz, axis=0) ** 2 / sigma2).sum(1)).max())
    return z, fz, log_w - logsumexp(log_w), resolution


def quadrature_grid(model, q: dict) -> Grid:
    """The grid of a 1-D latent under θ_GT: adaptive z nodes (:func:`adaptive_nodes`); a discrete
    label sums its classes exactly (adaptive nodes per class, one-hot decoder inputs, weight 1/C); a
    continuous N(0, 1) label adds a y axis, an even ``q['label_grid']`` = [z nodes, y nodes] product
    grid (y on [−4, 4])."""
    device = model.log_sigma2.device
    f = truth_decoder(model)
    sigma2 = noise_variance(model)
    labels = model.labels
    if labels is None:
        z, fz, log_w, res = adaptive_nodes(lambda zz: _decode_np(f, zz, device), sigma2, q)
        return Grid(z, None, fz, log_w, res)
    if labels.discrete:
        parts = []
        for c in range(labels.n_classes):
            onehot = np.eye(labels.n_classes)[c]
            parts.append(adaptive_nodes(
                lambda zz, onehot=onehot: _decode_np(f, np.concatenate([zz, np.broadcast_to(onehot, (len(zz), len(onehot)))], 1),
                                                     device), sigma2, q))
        z, fz, log_w, res = (list(column) for column in zip(*parts))
        return Grid(np.concatenate(z), np.repeat(np.arange(labels.n_classes), [len(nodes) for nodes in z]),
                    np.concatenate(fz), np.concatenate(log_w) - math.log(labels.n_classes), max(res))
    n_z, n_y = q["label_grid"]
    z_nodes, z_lw = normal_nodes(int(n_z), LATENT_BOUND)
    y_nodes, y_lw = normal_nodes(int(n_y), LABEL_BOUND)
    z, y = np.tile(z_nodes, len(y_nodes)), np.repeat(y_nodes, len(z_nodes))
    fz = _decode_np(f, np.stack([z, y], 1), device)
    step = np.sqrt((np.diff(fz.reshape(len(y_nodes), len(z_nodes), -1), axis=1) ** 2 / sigma2).sum(-1)).max()
    return Grid(z, y, fz, (y_lw[:, None] + z_lw[None, :]).ravel(), float(step))


def _moments(w: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``values`` (J,) under the rows of ``w`` (n, J), each summing to one."""
    mean = w @ values
    var = np.einsum("nj,nj->n", w, (values[None, :] - mean[:, None]) ** 2)
    return mean, np.maximum(var, VAR_FLOOR)


def grid_posterior(x: np.ndarray, grid: Grid, sigma2, n_classes: int = 0, rows: int = 2_000_000) -> dict:
    """Per point of ``x`` (N, D): log p(x) and the moments of p(z|x) on ``grid``; with a discrete
    label also p(y|x) (N, C) and the moments of p(z|x, y=c) (N, C); with a continuous one the
    moments of p(y|x). Computed in chunks of about ``rows`` (point, node) pairs."""
    n = len(x)
    out = {"log_px": np.empty(n), "z_mean": np.empty(n), "z_var": np.empty(n)}
    if n_classes:
        out.update(p_y=np.empty((n, n_classes)), zy_mean=np.empty((n, n_classes)), zy_var=np.empty((n, n_classes)))
    elif grid.y is not None:
        out.update(y_mean=np.empty(n), y_var=np.empty(n))
    chunk = max(1, rows // len(grid.z))
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        ll = log_likelihood_grid(x[sl], grid.fz, sigma2) + grid.log_w[None, :]
        lp = logsumexp(ll, axis=1)
        w = np.exp(ll - lp[:, None])
        out["log_px"][sl] = lp
        out["z_mean"][sl], out["z_var"][sl] = _moments(w, grid.z)
        if n_classes:
            for c in range(n_classes):
                members = grid.y == c
                lc = ll[:, members]
                lpc = logsumexp(lc, axis=1)
                out["p_y"][sl, c] = np.exp(lpc - lp)
                out["zy_mean"][sl, c], out["zy_var"][sl, c] = _moments(np.exp(lc - lpc[:, None]), grid.z[members])
        elif grid.y is not None:
            out["y_mean"][sl], out["y_var"][sl] = _moments(w, grid.y)
    return out


def conditional_z_moments(model, x: np.ndarray, y: np.ndarray, n_z: int,
                          rows: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Moments of p(z|x, y) for a continuous label y given per point, on an even z grid of ``n_z``
    nodes (one decoder pass per point and node)."""
    device = model.log_sigma2.device
    f = truth_decoder(model)
    sigma2 = noise_variance(model)
    nodes, log_w = normal_nodes(int(n_z), LATENT_BOUND)
    mean, var = np.empty(len(x)), np.empty(len(x))
    chunk = max(1, rows // len(nodes))
    for start in range(0, len(x), chunk):
        xs, ys = x[start:start + chunk], y[start:start + chunk]
        inputs = np.stack([np.tile(nodes, len(xs)), np.repeat(ys, len(nodes))], 1)
        fz = _decode_np(f, inputs, device).reshape(len(xs), len(nodes), -1)
        ll = -0.5 * ((xs[:, None, :] - fz) ** 2 / sigma2).sum(-1) + log_w[None, :]
        w = np.exp(ll - logsumexp(ll, axis=1, keepdims=True))
        mean[start:start + chunk], var[start:start + chunk] = _moments(w, nodes)
    return mean, var


def linear_gaussian_posterior(model, x: np.ndarray) -> dict:
    """Eq. 6 (f(z) = L z, z ~ N(0, I), noise σ²): log p(x) = log N(x; 0, LLᵀ + Ψ) and p(z|x), a
    Gaussian with precision Λ = I + LᵀΨ⁻¹L and mean Λ⁻¹LᵀΨ⁻¹x (its per-dimension moments)."""
    L = model.decoder.cholesky()[0].detach().double().cpu().numpy()
    psi = noise_variance(model)
    cov = L @ L.T + np.diag(psi)
    _, logdet = np.linalg.slogdet(cov)
    maha = np.einsum("nd,nd->n", x, np.linalg.solve(cov, x.T).T)
    log_px = -0.5 * (maha + logdet + x.shape[1] * math.log(2 * math.pi))
    precision = np.eye(L.shape[1]) + L.T @ (L / psi[:, None])
    post_cov = np.linalg.inv(precision)
    mean = x @ (L / psi[:, None]) @ post_cov.T
    return {"log_px": log_px, "z_mean": mean, "z_var": np.broadcast_to(np.diag(post_cov), mean.shape).copy()}


def importance_log_px(model, index: int, x: torch.Tensor, samples: int, seed: int, chunk: int = 100) -> np.ndarray:
    """log p(x) under θ_GT by importance sampling (an unsupervised model of any K), the defensive
    mixture ½ q(z|x) + ½ p(z) of restart ``index``'s encoder as proposal (a lower bound in expectation)."""
    if model.labels is not None:
        raise ValueError("importance sampling of log p(x) covers the unsupervised models; M2 sets have K = 1")
    generator = torch.Generator().manual_seed(int(seed))
    f = truth_decoder(model)
    log_sigma2 = model.log_sigma2[0]
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            xb = x[start:start + chunk]
            mean, log_var = (t[index] for t in model.encode(xb[None].expand(model.n_models, -1, -1)))
            n, k = mean.shape
            eps = torch.randn(n, samples, k, generator=generator).to(xb.device)
            from_q = torch.rand(n, samples, 1, generator=generator).to(xb.device) < 0.5
            z = torch.where(from_q, mean[:, None] + torch.exp(0.5 * log_var)[:, None] * eps, eps)
            fz = f(z.reshape(n * samples, k)).reshape(n, samples, -1)
            zeros = torch.zeros_like(z)
            log_prior = log_normal(z, zeros, zeros)
            log_r = torch.logaddexp(log_normal(z, mean[:, None], log_var[:, None]), log_prior) - math.log(2)
            log_w = log_normal(xb[:, None], fz, log_sigma2) + log_prior - log_r
            out.append(torch.logsumexp(log_w, 1) - math.log(samples))
    return torch.cat(out).double().cpu().numpy()


def log_px_truth(model, data, x_val: torch.Tensor, settings: dict, index: int, seed: int) -> tuple[np.ndarray, str]:
    """log p(x) under θ_GT and the true σ² per validation point, and the estimator's name:
    ``quadrature`` for a 1-D latent (M2: exact sum over a discrete y, or a y grid), ``closed_form``
    for eq. 6, ``importance_sampling`` otherwise (restart ``index``'s encoder in the proposal)."""
    x = model.features(x_val).double().cpu().numpy()
    if model.latent_dim == 1:
        grid = quadrature_grid(model, settings["quadrature"])
        n_classes = model.labels.n_classes if model.labels is not None and model.labels.discrete else 0
        return grid_posterior(x, grid, noise_variance(model), n_classes)["log_px"], "quadrature"
    if data.decoder[0] == "linear_cholesky":
        return linear_gaussian_posterior(model, x)["log_px"], "closed_form"
    return importance_log_px(model, index, model.features(x_val), settings["is_samples"], seed), "importance_sampling"


# -- pre-fit targets ----------------------------------------------------------------------------


@dataclass
class Target:
    """What one inference network is pre-fitted to on the training points: its inputs (N, ·) and a
    Gaussian (``mean``, ``var``, each (N, width)) or class probabilities (``probs``, (N, C))."""

    inputs: torch.Tensor
    mean: torch.Tensor | None = None
    var: torch.Tensor | None = None
    probs: torch.Tensor | None = None


def _laplace_variances(model, z: np.ndarray, y_in: np.ndarray | None) -> np.ndarray:
    """1/(1 + Σ_d (∂f_d/∂u)²/σ²_d) for each decoder input u (z's columns, then a continuous y), at
    the given points: the mean-field Laplace variances at the truth, (N, width)."""
    device = model.log_sigma2.device
    f = truth_decoder(model)
    inputs = torch.as_tensor(z if y_in is None else np.concatenate([z, y_in], 1), dtype=torch.float32, device=device)
    inputs.requires_grad_(True)
    out = f(inputs)
    sigma2 = torch.exp(model.log_sigma2[0]).detach()
    curvature = torch.zeros_like(inputs)
    for d in range(out.shape[1]):
        (grad,) = torch.autograd.grad(out[:, d].sum(), inputs, retain_graph=d < out.shape[1] - 1)
        curvature += grad ** 2 / sigma2[d]
    return (1.0 / (1.0 + curvature)).detach().double().cpu().numpy()


def _tensor(a, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)


def prefit_targets(model, data, init: str, settings: dict) -> dict[str, Target]:
    """Each inference network's pre-fit target on the training points (module docstring)."""
    device = model.log_sigma2.device
    x = data.x["train"]
    z_true = data.z["train"]
    k = model.latent_dim
    labels = model.labels
    y_true = data.y["train"].double().cpu().numpy() if labels is not None else None
    if init == "posterior" and not (k == 1 or data.decoder[0] == "linear_cholesky"):
        log.info("gt_encoder %s: no exact posterior for K = %d with this decoder; pre-fitting on the true z",
                 data.name, k)
        init = "true_z"
    x_np = x.double().cpu().numpy()
    targets: dict[str, Target] = {}
    if init == "true_z":
        y_in = None
        if labels is not None:
            y_in = labels.represent(torch.as_tensor(y_true)).double().numpy()
        var = _laplace_variances(model, z_true, y_in)
        targets["encoder"] = Target(_tensor(x_np, device), _tensor(z_true, device), _tensor(var[:, :k], device))
        if labels is not None:
            targets["encoder_zy"] = Target(_tensor(np.concatenate([x_np, y_in], 1), device),
                                           _tensor(z_true, device), _tensor(var[:, :k], device))
            if labels.discrete:
                targets["classifier"] = Target(_tensor(x_np, device), probs=_tensor(y_in, device))
            else:
                targets["classifier"] = Target(_tensor(x_np, device), _tensor(y_true[:, None], device),
                                               _tensor(var[:, k:], device))
        return targets
    if k != 1:  # eq. 6: the closed-form Gaussian posterior
        post = linear_gaussian_posterior(model, x_np)
        targets["encoder"] = Target(_tensor(x_np, device), _tensor(post["z_mean"], device),
                                    _tensor(post["z_var"], device))
        return targets
    grid = quadrature_grid(model, settings["quadrature"])
    n_classes = labels.n_classes if labels is not None and labels.discrete else 0
    post = grid_posterior(x_np, grid, noise_variance(model), n_classes)
    targets["encoder"] = Target(_tensor(x_np, device), _tensor(post["z_mean"][:, None], device),
                                _tensor(post["z_var"][:, None], device))
    if labels is None:
        return targets
    y_in = labels.represent(torch.as_tensor(y_true)).double().numpy()
    if labels.discrete:
        cls = y_true.astype(int)
        rows = np.arange(len(cls))
        zy_mean, zy_var = post["zy_mean"][rows, cls], post["zy_var"][rows, cls]
        targets["classifier"] = Target(_tensor(x_np, device), probs=_tensor(post["p_y"], device))
    else:
        zy_mean, zy_var = conditional_z_moments(model, x_np, y_true, settings["quadrature"]["label_grid"][0])
        targets["classifier"] = Target(_tensor(x_np, device), _tensor(post["y_mean"][:, None], device),
                                       _tensor(post["y_var"][:, None], device))
    targets["encoder_zy"] = Target(_tensor(np.concatenate([x_np, y_in], 1), device), _tensor(zy_mean[:, None], device),
                                   _tensor(zy_var[:, None], device))
    return targets


# -- pre-fit ------------------------------------------------------------------------------------


def _gaussian_loss(out: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, kind: str) -> torch.Tensor:
    """Per model and point: KL(N(mean, var) ‖ N(μ, s²)) (``kl``) or (μ − mean)² + (log s² − log var)²
    (``mse``), summed over the latent dimensions; ``out`` = [μ, log s²]."""
    width = mean.shape[-1]
    mu, log_var = out[..., :width], out[..., width:]
    if kind == "kl":
        return 0.5 * (log_var - torch.log(var) + (var + (mu - mean) ** 2) * torch.exp(-log_var) - 1).sum(-1)
    return ((mu - mean) ** 2 + (log_var - torch.log(var)) ** 2).sum(-1)


def _point_loss(net, target: Target, index: torch.Tensor, kind: str) -> torch.Tensor:
    """Pre-fit loss of one network per model and point of the batches ``index`` (M, B)."""
    out = net(target.inputs[index])
    if target.probs is not None:
        p = target.probs[index]
        return (p * (torch.log(p.clamp_min(1e-30)) - torch.log_softmax(out, -1))).sum(-1)
    return _gaussian_loss(out, target.mean[index], target.var[index], kind)


def _loss(net, target: Target, index: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-model mean pre-fit loss of one network on the batches ``index`` (M, B)."""
    return _point_loss(net, target, index, kind).mean(1)


def _all_point_losses(nets, targets: dict[str, Target], m: int, kind: str, chunk: int = 2000) -> torch.Tensor:
    """Every training point's pre-fit loss (all networks), per restart, (M, N), without gradients."""
    n = next(iter(targets.values())).inputs.shape[0]
    device = next(iter(targets.values())).inputs.device
    out = []
    with torch.no_grad():
        for start in range(0, n, chunk):
            index = torch.arange(start, min(n, start + chunk), device=device)[None].expand(m, -1)
            out.append(sum(_point_loss(nets[key], target, index, kind) for key, target in targets.items()))
    return torch.cat(out, 1)


CHECK_EVERY = 1000  # pre-fit steps between checks of the training-set loss against prefit_tolerance


@dataclass
class PrefitResult:
    loss: np.ndarray  # (M,) the final pre-fit loss per restart on the training points (NaN if it diverged)
    diverged: np.ndarray  # (M,) bool
    seconds: float
    steps: int = 0  # Adam steps taken (fewer than planned when every restart met prefit_tolerance)


def prefit(model, targets: dict[str, Target], settings: dict, seeds, name: str = "gt_encoder") -> PrefitResult:
    """Fit every restart's inference networks to ``targets`` by Adam on batches of training points
    (``prefit_batch_size``, each restart its own, drawn with replacement), ⌈``prefit_epochs`` · N / batch⌉
    steps from ``prefit_lr`` with a cosine decay to zero; a restart whose loss turns non-finite is
    frozen and marked diverged."""
    started = time.perf_counter()
    m = model.n_models
    nets = model.encoder_nets()
    lr0 = float(settings["prefit_lr"])
    device = model.log_sigma2.device
    n = next(iter(targets.values())).inputs.shape[0]
    batch = min(int(settings["prefit_batch_size"]), n)
    steps = max(1, math.ceil(float(settings["prefit_epochs"]) * n / batch))
    params = [p for key in targets for p in nets[key].parameters()]
    opt = BatchedAdam(params, m, lr0, fused=True)
    streams = ModelStreams(seeds)
    diverged = torch.zeros(m, dtype=torch.bool, device=device)
    kind = settings["prefit_loss"]
    tolerance = float(settings["prefit_tolerance"])
    block = 250  # batches drawn per block of steps (keeps the per-model Python cost off the loop)
    done = steps
    for first in range(0, steps, block):
        if first and first % CHECK_EVERY == 0 and tolerance > 0 and not bool(diverged.all()):
            median = float(_all_point_losses(nets, targets, m, kind).mean(1)[~diverged].median())
            log.info("%s pre-fit step %d/%d: median loss %.4g over %d restarts, %d diverged", name, first, steps,
                     median, m, int(diverged.sum()))
            if median < tolerance:  # converged (a straggler's noise at the high early rate does not hold it up)
                done = first
                break
        count = min(block, steps - first)
        indices = streams.randint(n, (count, batch)).to(device)
        for j in range(count):
            step = first + j
            opt.lr = lr0 * 0.5 * (1 + math.cos(math.pi * step / steps))
            loss = sum(_loss(nets[key], target, indices[:, j], kind) for key, target in targets.items())
            diverged |= ~torch.isfinite(loss)
            opt.zero_grad()
            torch.where(diverged, torch.zeros_like(loss), loss).sum().backward()
            opt.step(~diverged)
    last = torch.where(diverged.cpu(), math.nan, _all_point_losses(nets, targets, m, kind).mean(1).cpu())
    log.info("%s pre-fit: %d of %d steps, median loss %.4g over %d restarts, %d diverged", name, done, steps,
             float(np.nanmedian(last.numpy())) if not bool(diverged.all()) else math.nan, m, int(diverged.sum()))
    for p in params:
        p.grad = None
    return PrefitResult(last.numpy(), diverged.cpu().numpy(), time.perf_counter() - started, done)


class CosineAdam(BatchedAdam):
    """BatchedAdam whose learning rate follows a cosine decay from ``lr`` to zero over ``total``
    steps, read from the optimiser's own step count (so a resumed fit continues the schedule)."""

    def __init__(self, params, n_models: int, lr: float, total: int, fused: bool = True):
        self.total = max(1, int(total))
        super().__init__(params, n_models, lr, fused=fused)

    @property
    def lr(self) -> float:
        done = getattr(self, "taken", 0)  # the fused count: host-side, so reading it does not sync
        return self.base_lr * 0.5 * (1 + math.cos(math.pi * min(done, self.total) / self.total))

    @lr.setter
    def lr(self, value: float) -> None:
        self.base_lr = float(value)


def elbo_trainer(model, method, hyper: dict, training: dict, seeds, n_train: int, schedule: str, name: str) -> Trainer:
    """The frozen-decoder ELBO fit's trainer; ``schedule`` cosine decays the encoders' learning rate
    to zero over the fit (``training.gt_encoder.lr_schedule``)."""
    trainer = Trainer(model, method, hyper, training, seeds=seeds, freeze_decoder=True, name=name)
    if schedule == "cosine":
        total = training["epochs"] * (n_train // training["batch_size"])
        trainer.opt_encoder = CosineAdam(model.encoder_parameters(), model.n_models, training["lr"], total, fused=True)
    return trainer


# -- validation bound ----------------------------------------------------------------------------


def gap_statistics(gap: np.ndarray) -> dict:
    """Mean, median, 95th percentile of the per-point gaps and the fraction above 5 nats."""
    return {"gap_mean": float(gap.mean()), "gap_median": float(np.median(gap)),
            "gap_p95": float(np.percentile(gap, 95)), "gap_frac_above_5": float((gap > GAP_POINT_THRESHOLD).mean())}


# -- the fit ------------------------------------------------------------------------------------


def fit_gt_encoder(spec: dict, data_path, version: int, surrogate_path, out) -> dict:
    """φ_GT of one data set version (module docstring); writes ``out`` and returns its summary.

    The file keeps one group per inference network (what :func:`fmvae.train.protocol.read_gt_encoder`
    reads) and adds, outside those groups, the per-point validation ``val_log_px`` and ``val_gap``
    (selected restart) and the per-restart ``val_elbo_per_point``; attributes: ``init``,
    ``val_elbo`` (per restart, mean over points of the ``val_draws``-draw average) and its Monte
    Carlo standard error ``val_elbo_se``, ``log_px`` and ``log_px_method``, the gap statistics
    (:func:`gap_statistics`), ``prefit_loss`` and ``seconds`` (wall time: prefit, elbo_fit,
    evaluation, total)."""
    from fmvae.train.protocol import DataSet, _set_model, build_model, ground_truth_decoder, pick_device

    started = time.perf_counter()
    settings = settings_of(spec)
    data = DataSet(data_path)
    with h5py.File(data_path, "r") as f:  # the true latents, for the true_z pre-fit
        data.z = {split: f[split]["z"][()].astype(np.float64) for split in ("train", "val", "test") if "z" in f[split]}
    device = pick_device(spec["training"]["device"])
    semi = data.labels is not None
    n = spec["restarts"]
    seeds = [derive_seed(spec["seed"], spec["dataset"], version, "gt_encoder", r) for r in range(n)]
    plan = [{"init": "random", "seed": s} for s in seeds]
    model = build_model(data, spec["training"], plan, False, None, None, device, semi_supervised=semi)
    decoder = ground_truth_decoder(data, surrogate_path)
    for i in range(n):
        _set_model(model.decoder, i, decoder)
    for p in model.decoder_parameters():
        p.requires_grad_(False)
    name = f"gt_encoder {data.name} v{version}"
    init = settings["init"]
    pre = PrefitResult(np.full(n, math.nan), np.zeros(n, dtype=bool), 0.0)
    checkpoint = Path(str(out) + ".ckpt")
    if init != "random" and not checkpoint.exists():  # a resumed ELBO fit restores the encoders itself
        targets_started = time.perf_counter()
        targets = prefit_targets(model, data, init, settings)
        targets_seconds = time.perf_counter() - targets_started
        pre = prefit(model, targets, settings, seeds=[s + 3 for s in seeds], name=name)
        pre.seconds += targets_seconds
    method = methods.get("m2_vae" if semi else "vae")
    hyper = {key: np.ones(n) for key in method.hyper}  # α = γ = 1 for M2
    fit_started = time.perf_counter()
    trainer = elbo_trainer(model, method, hyper, spec["training"], [s + 1 for s in seeds], data.x["train"].shape[0],
                           settings["lr_schedule"], name)
    result = trainer.run(data.inputs("train", semi), data.inputs("val", semi), checkpoint=checkpoint)
    eval_started = time.perf_counter()
    x_val = data.inputs("val", semi).to(device)
    draws = int(settings["val_draws"])
    per_point, per_point_var, _ = bound_per_point(model, method, hyper, x_val, [s + 2 for s in seeds], draws)
    val = per_point.mean(1)
    val_se = np.sqrt(per_point_var.sum(1) / draws) / per_point.shape[1]
    diverged = result.diverged | pre.diverged | ~np.isfinite(val)
    val = np.where(diverged, -np.inf, val)
    best = int(np.argmax(val))
    log_px, estimator = log_px_truth(model, data, x_val, settings, best, seeds[best] + 4)
    gap = log_px - per_point[best]
    stats = gap_statistics(gap)
    seconds = {"prefit": pre.seconds, "elbo_fit": eval_started - fit_started,
               "evaluation": time.perf_counter() - eval_started}
    seconds["total"] = time.perf_counter() - started
    log.info("%s (init %s): validation ELBO per restart %s (± %.3g); keeping %d; log p(x) %.4f (%s); gap mean "
             "%.3f, median %.3f, p95 %.3f, %.1f%% of points above %g nats; %.1f s", name, init,
             np.array2string(val, precision=4), float(val_se.max()), best, float(log_px.mean()), estimator,
             stats["gap_mean"], stats["gap_median"], stats["gap_p95"], 100 * stats["gap_frac_above_5"],
             GAP_POINT_THRESHOLD, seconds["total"])
    if stats["gap_mean"] > settings["gap_warning"]:
        log.warning("gt_encoder %s v%d: φ_GT's mean gap log p(x) − ELBO on the validation points is %.3g nats per "
                    "point (threshold training.gt_encoder.gap_warning = %g; init %s): ground-truth restarts start "
                    "far from the truth", data.name, version, stats["gap_mean"], settings["gap_warning"], init)
    summary = {"dataset": data.name, "version": version, "init": init, "restarts": n, "selected": best,
               "val_elbo": val, "val_elbo_se": val_se, "val_draws": draws, "diverged": diverged,
               "log_px": float(log_px.mean()), "log_px_method": estimator, **stats,
               "gap_warning": float(settings["gap_warning"]), "prefit_loss": pre.loss, "prefit_steps": pre.steps,
               "seconds": seconds}
    with store.write_h5(out, {**summary, "config": to_json(spec)}) as f:
        for key, net in model.encoder_nets().items():
            store.write_arrays(f.create_group(key), {k: v[best].numpy() for k, v in net.state_arrays().items()})
        store.write_arrays(f, {"val_log_px": log_px, "val_gap": gap, "val_elbo_per_point": per_point})
    checkpoint.unlink(missing_ok=True)
    return summary
