"""Figures of trained models against the truth: Figures 8–16 (one model with a 1-D latent), Figure 5
(true, VAE and IWAE p(x) side by side) and Figure 1 (eq. 6: samples from the truth and the model).

A model is the selected one of an evaluation file (:func:`fmvae.evaluation.load_evaluated_model`);
the truth is the data file with its surrogate (:class:`~fmvae.report.data_figures.SyntheticSet`).
Densities are exact quadrature over the latent, p(x) = Σ_j w_j N(x; f(z_j), σ² I), on the
SyntheticSet's grid (the prior N(0, 1) of both models; ``z_grid_points`` nodes on [−6, 6]), computed
by :func:`log_density` with torch in chunks. Both maps of a comparison share one colour scale.
"""

from __future__ import annotations

import h5py
import numpy as np
import torch
from matplotlib.colors import PowerNorm
from scipy.stats import norm

from fmvae import store
from fmvae.evaluation import load_evaluated_model, sample_x
from fmvae.metrics import quadrature
from fmvae.report.data_figures import DENSITY_CMAP, DENSITY_GAMMA, LATENT_CMAP, SyntheticSet, _prior_quantile_z
from fmvae.report.plotting import DENSITY_PER_X_AREA, density_colorbar, legend_below, legend_right, plt, save_figure

DEFAULT_STYLE = {"dpi": 150, "grid_points": 200, "z_grid_points": 4001, "curve_points": 2000}
# Figures 8–16: number -> (experiment, data set, method) of the evaluation (version 0) it shows.
MODEL_FIGURES = {8: ("unsupervised", "circle", "vae"), 9: ("unsupervised", "absolute_value", "vae"),
                 10: ("unsupervised", "figure8", "vae"), 11: ("unsupervised", "figure8", "lin"),
                 12: ("unsupervised", "figure8", "iwae"), 13: ("unsupervised", "clusters", "vae"),
                 14: ("unsupervised", "clusters", "lin"), 15: ("unsupervised", "clusters", "iwae"),
                 16: ("spiral_learned", "spiral_dots", "vae")}
FIGURE5_ROWS = ("figure8", "clusters", "circle", "absolute_value")
# Figures 23–24: number -> 5-D data set whose VAE posteriors are shown as K grows (experiments
# signal_noise_K1 and signal_noise_K2, version 0).
LATENT_GROWTH_FIGURES = {23: "clusters_5d", 24: "figure8_5d"}
LATENT_GROWTH_EXPERIMENTS = {1: "signal_noise_K1", 2: "signal_noise_K2"}
# [choice] The starred x of the posterior panels are the true noise-free means f(z) at these z: fixed,
# on the curve and distinct on every set (asymmetric, for f(z) = f(−z); one per Clusters plateau);
# they include the multi-modal cases the captions name: Figure-8's crossing, Circle's x ≈ (1, 0).
MARK_Z = (-2.5, -0.5, 0.0, 1.5)
METHOD_NAMES = {"vae": "MFG-VAE", "iwae": "IWAE", "lin": "VAE with Lagging Inference Networks (LIN)"}
DATASET_NAMES = {"figure8": "Figure-8", "circle": "Circle", "absolute_value": "Absolute-Value",
                 "clusters": "Clusters", "spiral_dots": "Spiral-Dots", "linear_cholesky": "eq. 6"}


def log_density(x, fz, log_w, sigma2, chunk: int = 2048) -> np.ndarray:
    """log Σ_j w_j N(x_i; f(z_j), σ² I) for every row of x, shape (N,); σ² scalar or per dimension.
    Same value as :func:`fmvae.metrics.quadrature.log_marginal`, via one matrix product per chunk."""
    scale = torch.as_tensor(np.sqrt(np.broadcast_to(np.asarray(sigma2, dtype=np.float64), (np.shape(x)[1],))))
    x, fz = torch.as_tensor(x, dtype=torch.float64) / scale, torch.as_tensor(fz, dtype=torch.float64) / scale
    bias = torch.as_tensor(log_w, dtype=torch.float64) - 0.5 * (fz ** 2).sum(1)  # log w_j − |f_j|²/2
    const = -torch.log(scale).sum() - 0.5 * x.shape[1] * np.log(2 * np.pi)
    with torch.no_grad():
        out = [torch.logsumexp(torch.addmm(bias, xb, fz.T), 1) - 0.5 * (xb ** 2).sum(1) + const
               for xb in x.split(chunk)]
    return torch.cat(out).numpy()


class LearnedModel:
    """The selected model of an evaluation file: f_θ, σ² and q(z|x) on numpy arrays."""

    def __init__(self, evaluation_path):
        self.model, self.attrs = load_evaluated_model(evaluation_path)
        self.sigma2 = torch.exp(self.model.log_sigma2[0]).detach().double().numpy()

    def f(self, z) -> np.ndarray:
        with torch.no_grad():
            return self.model.decode(torch.as_tensor(z, dtype=torch.float32)[None])[0].double().numpy()

    def q(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of q(z|x), each (N, K)."""
        with torch.no_grad():
            mean, log_var = self.model.encode(torch.as_tensor(x, dtype=torch.float32)[None])
        return mean[0].double().numpy(), torch.exp(log_var[0]).double().numpy()

    @property
    def title(self) -> str:
        dataset = self.attrs["dataset"]
        return f"{METHOD_NAMES[self.attrs['method']]}, {DATASET_NAMES.get(dataset, dataset)}"


def _style(style: dict) -> dict:
    return {**DEFAULT_STYLE, **style}


def _truth(data_path, surrogate_path, style) -> SyntheticSet:
    data = SyntheticSet(data_path, surrogate_path, style["z_grid_points"])
    if data.gt.latent_dim != 1 or data.gt.prior != "normal" or data.gt.label:
        raise ValueError(f"{data.gt.name}: model figures need an unsupervised set with a 1-D N(0, 1) latent")
    return data


def _x_grid(data: SyntheticSet, n: int):
    lo, hi = data.limits()
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))
    return gx, gy, np.stack([gx.ravel(), gy.ravel()], axis=1)


def _densities(data: SyntheticSet, models, n: int):
    """The x grid, then p(x) on it under the truth and under each model (first two coordinates)."""
    gx, gy, points = _x_grid(data, n)
    maps = [np.exp(log_density(points, data.fz[:, :2], data.grid.log_w, data.noise_variance))]
    maps += [np.exp(log_density(points, m.f(data.grid.z)[:, :2], data.grid.log_w, m.sigma2[:2])) for m in models]
    return gx, gy, [d.reshape(gx.shape) for d in maps]


def _density_map(ax, gx, gy, density, vmax, curve=None, marked=None, what: str = "p(x)"):
    """A density heat map (shared power-law scale) with its colour bar below, labelled ``what`` and
    the unit; optionally f(z) coloured by z and starred x's. Returns the colour mappable of z."""
    mesh = ax.pcolormesh(gx, gy, density, cmap=DENSITY_CMAP, shading="auto", rasterized=True,
                         norm=PowerNorm(DENSITY_GAMMA, vmin=0, vmax=vmax))
    density_colorbar(ax.figure, mesh, ax, f"{what} ({DENSITY_PER_X_AREA})")
    sc = None
    if curve is not None:
        z, fz = curve
        sc = ax.scatter(fz[:, 0], fz[:, 1], c=z[:, 0], cmap=LATENT_CMAP, s=3, linewidths=0)
    if marked is not None:
        ax.scatter(marked[:, 0], marked[:, 1], marker="*", s=120, c="gold", edgecolors="black", zorder=5)
        for i, (a, b) in enumerate(marked):
            ax.annotate(str(i + 1), (a, b), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.set_xlim(gx.min(), gx.max())
    ax.set_ylim(gy.min(), gy.max())
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    return sc


def model_panels(axes, evaluation_path, data_path, surrogate_path, style: dict):
    """Draw the panels of Figures 8–16 on five axes: (a) true p(x) and (a') learned p_θ(x), each with
    its f(z) coloured by z; (b) true vs learned f(z), z ∈ [−3, 3]; (c) true posteriors p(z|x) and
    (d) posteriors under the learned model (solid) with q(z|x) from the encoder (dashed), at the
    starred x = f_true(z) for z in ``MARK_Z``. Returns the learned model and the colour mappable of z."""
    style = _style(style)
    data = _truth(data_path, surrogate_path, style)
    learned = LearnedModel(evaluation_path)
    marked = data.f(np.array(MARK_Z)[:, None])[:, :2]
    z_curve = _prior_quantile_z(data.gt, style["curve_points"])
    true_curve, learned_curve = data.f(z_curve)[:, :2], learned.f(z_curve)[:, :2]
    gx, gy, (p_true, p_learned) = _densities(data, [learned], style["grid_points"])
    vmax = max(p_true.max(), p_learned.max())
    sc = _density_map(axes[0], gx, gy, p_true, vmax, (z_curve, true_curve), marked, what="true p(x)")
    axes[0].set_title(f"(a) true p(x), true f(z); σ² = {data.noise_variance:.3g}")
    _density_map(axes[1], gx, gy, p_learned, vmax, (z_curve, learned_curve), marked, what="learned $p_θ(x)$")
    axes[1].set_title(f"(a) learned $p_θ(x)$, learned $f_θ(z)$; σ² = {np.mean(learned.sigma2):.3g}")

    ax = axes[2]
    ax.plot(true_curve[:, 0], true_curve[:, 1], color="0.6", lw=5, alpha=0.5, zorder=1, label="true f(z)")
    ax.scatter(true_curve[:, 0], true_curve[:, 1], c=z_curve[:, 0], cmap=LATENT_CMAP, s=4, linewidths=0, zorder=2)
    ax.plot(learned_curve[:, 0], learned_curve[:, 1], color="black", lw=0.6, zorder=3, label="learned $f_θ(z)$")
    ax.scatter(learned_curve[:, 0], learned_curve[:, 1], c=z_curve[:, 0], cmap=LATENT_CMAP, s=4, marker="s",
               linewidths=0, zorder=4)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    legend_below(ax)
    ax.set_title("(b) true (grey band) vs learned (black line) f(z), z ∈ [−3, 3] coloured by z")

    data.posterior_panel(axes[3], marked)
    axes[3].set_title("(c) posteriors p(z|x) under the true f")
    ax = axes[4]
    post = quadrature.posterior(marked, learned.f(data.grid.z)[:, :2], data.grid.log_w, learned.sigma2[:2])
    _posterior_curves(ax, data.grid.z[:, 0], post, learned.q(marked), label="x{}: $p_θ(z|x)$")
    legend_right(ax)
    ax.set_title("(d) posteriors under the learned $f_θ$ (solid) and q(z|x) (dashed)")
    return learned, sc


def model_figure(number: int, out_paths, evaluation_path, data_path, surrogate_path, style: dict) -> None:
    """One of Figures 8–16 (``MODEL_FIGURES[number]`` must match the evaluation file)."""
    style = _style(style)
    attrs = _attrs(evaluation_path)
    if (attrs["experiment"], attrs["dataset"], attrs["method"]) != MODEL_FIGURES[number]:
        raise ValueError(f"Figure {number} shows {MODEL_FIGURES[number]}; {evaluation_path} holds "
                         f"{(attrs['experiment'], attrs['dataset'], attrs['method'])}")
    fig, axes = plt.subplot_mosaic([["a", "a", "a2", "a2", "b", "b"], ["c", "c", "c", "d", "d", "d"]],
                                   figsize=(14, 8))
    learned, sc = model_panels([axes[k] for k in ("a", "a2", "b", "c", "d")], evaluation_path, data_path,
                               surrogate_path, style)
    fig.colorbar(sc, ax=axes["b"], label="z (colour of f(z) in (a) and (b))")
    sigma = ", σ² learned" if attrs["experiment"] == "spiral_learned" else ""
    fig.suptitle(f"Figure {number}: {learned.title} example (experiment {attrs['experiment']}{sigma}, "
                 f"version {attrs['version']})")
    fig.tight_layout()
    save_figure(fig, out_paths, style["dpi"])


def figure5(out_paths, evaluations: dict, data: dict, surrogates: dict, style: dict) -> None:
    """Figure 5: rows Figure-8, Clusters, Circle, Absolute-Value (those in ``data``); columns true
    p(x), VAE p_θ(x), IWAE p_θ(x). ``evaluations``: (data set, method) -> evaluation file."""
    style = _style(style)
    rows = [name for name in FIGURE5_ROWS if name in data]
    if not rows:
        raise ValueError(f"Figure 5 needs the data of at least one of {FIGURE5_ROWS}")
    fig, axes = plt.subplots(len(rows), 3, figsize=(11, 3.4 * len(rows)), squeeze=False)
    for row, name in zip(axes, rows):
        truth = _truth(data[name], surrogates.get(name), style)
        models = [LearnedModel(evaluations[(name, m)]) if (name, m) in evaluations else None for m in ("vae", "iwae")]
        gx, gy, maps = _densities(truth, [m for m in models if m], style["grid_points"])
        vmax = max(d.max() for d in maps)
        maps = iter(maps)
        _density_map(row[0], gx, gy, next(maps), vmax, what="true p(x)")
        row[0].set_title(f"{DATASET_NAMES[name]}: true $p_{{θ_{{GT}}}}(x)$")
        for ax, model, method in zip(row[1:], models, ("VAE", "IWAE")):
            if model is None:
                ax.text(0.5, 0.5, f"no {method} evaluation", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            _density_map(ax, gx, gy, next(maps), vmax, what=f"{method} $p_θ(x)$")
            ax.set_title(f"{DATASET_NAMES[name]}: {method} $p_θ(x)$")
    fig.suptitle("Figure 5: true p(x) and the p(x) learned by the VAE and IWAE objectives (one colour scale per row)")
    fig.tight_layout()
    save_figure(fig, out_paths, style["dpi"])


def figure1(out_paths, evaluation_path, data_path, style: dict) -> tuple[float, float]:
    """Figure 1 (eq. 6): the data file's test x (ground truth, left) and as many samples of the learned
    model, z ~ N(0, I), x = Lz + σε (right), on the same axes; each titled with the sample correlation
    of x₁ and x₂. Returns the two correlations."""
    style = _style(style)
    x_true = store.read_split(data_path, "test")["x"]
    model, attrs = load_evaluated_model(evaluation_path)
    x_model = sample_x(model, len(x_true), torch.Generator().manual_seed(0))[0].double().numpy()
    both = np.concatenate([x_true, x_model])
    lo, hi = both.min(axis=0), both.max(axis=0)
    pad = 0.05 * (hi - lo)
    rhos = []
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 4), sharex=True, sharey=True)
    for ax, x, name in zip(axes, (x_true, x_model), ("ground truth, eq. 6 (test split)",
                                                       f"learned model ({METHOD_NAMES[attrs['method']]})")):
        rhos.append(float(np.corrcoef(x[:, 0], x[:, 1])[0, 1]))
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.5, linewidths=0)
        ax.set_title(f"{name}\ncorrelation of $x_1$, $x_2$: {rhos[-1]:.2f}")
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_xlabel("$x_1$")
    axes[0].set_ylabel("$x_2$")
    fig.suptitle("Figure 1: samples from the ground truth of eq. 6 and from the model selected by the ELBO")
    fig.tight_layout()
    save_figure(fig, out_paths, style["dpi"])
    return rhos[0], rhos[1]


def _posterior_curves(ax, z, post, q=None, label: str = "x{}"):
    """1-D posteriors (rows of ``post`` on the grid ``z``), optionally q(z|x) as (mean, var) dashed
    with a legend entry for it."""
    for i, p in enumerate(post):
        ax.plot(z, p / (z[1] - z[0]), color=f"C{i}", label=label.format(i + 1))
        if q is not None:
            ax.plot(z, norm.pdf(z, q[0][i, 0], np.sqrt(q[1][i, 0])), color=f"C{i}", linestyle="--", lw=1)
    if q is not None:
        ax.plot([], [], color="0.3", linestyle="--", lw=1, label="q(z|x), encoder")
    ax.set_xlim(-4, 4)
    ax.set_xlabel("z")
    ax.set_ylabel("density per unit z")


def latent_growth_figure(number: int, out_paths, evaluations: dict, data_path, surrogate_path, style: dict) -> None:
    """Figures 23–24: posteriors as K grows on a 5-D set, at the marked x = f_GT(z) (noise-free 5-D
    points, z in ``MARK_Z``): (a) true p(z|x) under the surrogate (K = 1); (b) the K = 1 VAE's
    p_θ(z|x) with q(z|x); (c) the K = 2 VAE's p_θ(z|x) on a 2-D z grid, drawn as the contours that
    enclose 50% and 90% of its mass, with q(z|x)'s mean and 2-sd box. ``evaluations``: K -> file."""
    style = _style(style)
    data = _truth(data_path, surrogate_path, style)
    marked = data.f(np.array(MARK_Z)[:, None])
    z = data.grid.z[:, 0]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    _posterior_curves(axes[0], z, quadrature.posterior(marked, data.fz, data.grid.log_w, data.noise_variance))
    legend_right(axes[0])
    axes[0].set_title(f"(a) true posterior, K = 1 (σ² = {data.noise_variance:.3g})")
    if 1 in evaluations:
        one = LearnedModel(evaluations[1])
        post = quadrature.posterior(marked, one.f(data.grid.z), data.grid.log_w, one.sigma2)
        _posterior_curves(axes[1], z, post, one.q(marked))
        legend_right(axes[1])
        axes[1].set_title(f"(b) learned posterior, K = 1 (mean σ² = {one.sigma2.mean():.3g})")
    if 2 in evaluations:
        two = LearnedModel(evaluations[2])
        n = style["grid_points"]
        axis = np.linspace(-4, 4, n)
        zz = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
        log_prior = norm.logpdf(zz).sum(1)
        post = quadrature.posterior(marked, two.f(zz), log_prior, two.sigma2)
        mean, var = two.q(marked)
        ax = axes[2]
        for i, p in enumerate(post):
            order = np.sort(p)[::-1]
            levels = [order[np.searchsorted(np.cumsum(order), mass)] for mass in (0.9, 0.5)]
            ax.contour(axis, axis, p.reshape(n, n), levels=levels, colors=f"C{i}", linewidths=(0.8, 1.6))
            sd = 2 * np.sqrt(var[i])
            ax.add_patch(plt.Rectangle(mean[i] - sd, *(2 * sd), fill=False, color=f"C{i}", linestyle="--", lw=0.8))
            ax.plot(*mean[i], marker="+", color=f"C{i}")
        ax.set_aspect("equal")
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
        ax.set_title(f"(c) learned posterior, K = 2: 50%/90% mass contours; q(z|x) mean ± 2 sd dashed\n"
                     f"(mean σ² = {two.sigma2.mean():.3g})")
    name = "Clusters" if data.gt.name.startswith("clusters") else "Figure-8"
    fig.suptitle(f"Figure {number}: VAE posteriors as the latent dimension K grows, {name} example embedded in 5-D "
                 f"(x = Aᵀf(z) + ε); the marked x are noise-free 5-D points f_GT(z), z ∈ {list(MARK_Z)}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_paths, style["dpi"])


def _attrs(path) -> dict:
    with h5py.File(path, "r") as f:
        return store.read_attrs(f)


def plot_model_figure(number: int, out_paths, evaluations, data, surrogates, style: dict) -> None:
    """The CLI's entry: Figure 1, 5 or 8–16 from lists of files, each recognised by its attributes."""
    by_key = {(a["experiment"], a["dataset"], a["method"]): p for p, a in ((p, _attrs(p)) for p in evaluations)}
    data, surrogates = ({_attrs(p)["dataset"]: p for p in paths} for paths in (data, surrogates))
    if number == 1:
        return figure1(out_paths, by_key[("linear", "linear_cholesky", "vae")], data["linear_cholesky"], style)
    if number in LATENT_GROWTH_FIGURES:
        dataset = LATENT_GROWTH_FIGURES[number]
        by_k = {k: by_key[(e, dataset, "vae")] for k, e in LATENT_GROWTH_EXPERIMENTS.items() if (e, dataset, "vae") in by_key}
        return latent_growth_figure(number, out_paths, by_k, data[dataset], surrogates.get(dataset), style)
    if number == 5:
        return figure5(out_paths, {(d, m): p for (e, d, m), p in by_key.items() if e == "unsupervised"},
                       data, surrogates, style)
    experiment, dataset, method = MODEL_FIGURES[number]
    model_figure(number, out_paths, by_key[(experiment, dataset, method)], data[dataset], surrogates.get(dataset),
                 style)
