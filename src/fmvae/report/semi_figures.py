"""Figures of the semi-supervised M2 models against the truth: Figures 17–22 (one model on a
semi-circle set) and Figure 6 (the truth, IWAE and the VAE side by side on the Discrete Semi-Circle).

A model is the selected one of an evaluation file (:func:`fmvae.evaluation.load_evaluated_model`);
the truth is the data file with its surrogate (:class:`~fmvae.report.data_figures.SyntheticSet`).
Densities and posteriors are exact quadrature on the SyntheticSet's (z, y) grid
(:func:`fmvae.metrics.quadrature.latent_grid`: each z node once per class with weight ½, or on a y axis
of N(0, 1) nodes over [−3.5, 3.5] for the continuous label):

- p(x) = Σ_j w_j N(x; f(z_j, y_j), σ² I) over all nodes;
- p(x | y) on the z nodes alone, y fixed at the cohort's value (:func:`fmvae.evaluation.label_cohorts`);
- p(z | x) ∝ Σ_y p(y) N(x; f(z, y), σ² I) p(z): the posterior of the (z, y) nodes summed over y
  (:func:`marginal_posterior`), drawn beside the unlabelled encoder's q(z | x).

Maps of one comparison (one row of Figure 6, one panel of Figures 17–22) share one colour scale.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

from fmvae.evaluation import label_cohorts, learned_decoder
from fmvae.metrics import quadrature
from fmvae.metrics.quadrature import LatentGrid
from fmvae.report.data_figures import LATENT_CMAP, SyntheticSet
from fmvae.report.model_figures import LearnedModel, _attrs, _density_map, _posterior_curves, _style, _x_grid, log_density
from fmvae.report.plotting import legend_below, legend_right, plt, save_figure
from fmvae.train.protocol import DataSet

EXPERIMENT = "semi_synthetic"
# Figures 17–22: number -> (experiment, data set, method) of the evaluation (version 0) it shows.
SEMI_FIGURES = {17: (EXPERIMENT, "discrete_semicircle", "m2_vae"), 18: (EXPERIMENT, "discrete_semicircle", "m2_lin"),
                19: (EXPERIMENT, "discrete_semicircle", "m2_iwae"),
                20: (EXPERIMENT, "continuous_semicircle", "m2_vae"),
                21: (EXPERIMENT, "continuous_semicircle", "m2_lin"),
                22: (EXPERIMENT, "continuous_semicircle", "m2_iwae")}
# Figure 6: the evaluations of its model columns, in the paper's order (after the truth: IWAE, VAE).
FIGURE6_KEYS = ((EXPERIMENT, "discrete_semicircle", "m2_iwae"), (EXPERIMENT, "discrete_semicircle", "m2_vae"))
SEMI_FIGURE_NUMBERS = (6, *SEMI_FIGURES)
METHOD_NAMES = {"m2_vae": "MFG-VAE (ELBO)", "m2_lin": "VAE with Lagging Inference Networks (LIN)",
                "m2_iwae": "IWAE"}
SHORT_NAMES = {"m2_vae": "VAE", "m2_lin": "LIN", "m2_iwae": "IWAE"}
DATASET_NAMES = {"discrete_semicircle": "Discrete Semi-Circle", "continuous_semicircle": "Continuous Semi-Circle"}
# [choice] The starred x of the posterior panels are the true noise-free means f_GT(z, y) at these z,
# for each cohort y in turn: on both semi-circles they spread over the arc (angles ≈ 0.004π, 0.40π,
# 0.60π and 0.92π), and each has a bimodal true posterior, one mode per label that could have made it.
MARK_Z = (-1.0, 1.0)
# [choice] Panel (b) marks f(z, y) at the prior's 5%, 15%, …, 95% quantiles of z, coloured by z: on the
# semi-circles both cohorts' curves lie on the same arc, and what tells the two functions apart is
# where along it each puts a given z (functional collapse: the two cohorts' markers coincide).
MARKER_Z = norm.ppf(np.linspace(0.05, 0.95, 10))[:, None]
# Per cohort: line colour, line style, marker, marker size (a larger circle around a smaller
# triangle, so that coinciding markers stay visible).
COHORT_STYLES = (("C0", "-", "o", 70), ("C3", "--", "^", 22))


def prior_nodes(grid: LatentGrid) -> tuple[np.ndarray, np.ndarray]:
    """The z nodes of a product (z, y) grid (those paired with the first label node) and their
    prior log-weights, renormalised to sum to one: the quadrature of p(x | y) for a fixed y."""
    sel = grid.y == grid.y[0]
    return grid.z[sel], grid.log_w[sel] - logsumexp(grid.log_w[sel])


def marginal_posterior(x, fz, grid: LatentGrid, sigma2) -> tuple[np.ndarray, np.ndarray]:
    """p(z | x) with the label marginalised, p(z | x) ∝ Σ_y p(y) N(x; f(z, y), σ² I) p(z), on a 1-D
    z grid: the posterior of the grid's (z, y) nodes (``fz``: f at the nodes) summed over the nodes
    that share a z. Returns the distinct z nodes (sorted) and the posterior mass at each, (N, n_z),
    rows summing to one (divide by the node spacing for a density)."""
    if grid.z.shape[1] != 1:
        raise ValueError(f"marginal_posterior needs a 1-D latent, got {grid.z.shape[1]}-D nodes")
    joint = quadrature.posterior(np.atleast_2d(np.asarray(x, dtype=np.float64)), fz, grid.log_w, sigma2)
    z, index = np.unique(grid.z[:, 0], return_inverse=True)
    post = np.zeros((joint.shape[0], len(z)))
    np.add.at(post, (slice(None), index), joint)
    return z, post


class LearnedM2(LearnedModel):
    """The selected M2 model of an evaluation file: f_θ(z, y), σ², the unlabelled encoder's q(z|x)
    (:meth:`LearnedModel.q`) and the file's metrics."""

    def __init__(self, evaluation_path):
        super().__init__(evaluation_path)
        if self.model.labels is None:
            raise ValueError(f"{evaluation_path}: not a semi-supervised (M2) model")
        self._decode = learned_decoder(self.model)

    def f(self, z, y) -> np.ndarray:
        return np.asarray(self._decode(z, y), dtype=np.float64)

    @property
    def title(self) -> str:
        return METHOD_NAMES.get(self.attrs["method"], self.attrs["method"])

    def metric(self, key: str) -> str:
        value = self.attrs["metrics"].get(key)
        return "n/a" if value is None else f"{value:.3g}"


class SemiComparison:
    """The truth of one semi-supervised set and the models compared with it (None: not evaluated),
    with what their panels share: the x grid, the (z, y) quadrature grid, the cohorts, the marked x,
    and f, σ² and f at the grid's nodes per source (index 0: the truth, then the models)."""

    def __init__(self, data_path, surrogate_path, evaluation_paths, style: dict):
        self.style = _style(style)
        self.truth = SyntheticSet(data_path, surrogate_path, self.style["z_grid_points"])
        gt = self.truth.gt
        if not gt.label or gt.latent_dim != 1 or gt.data_dim != 2:
            raise ValueError(f"{gt.name}: semi-supervised figures need a labelled set with a 1-D latent and 2-D x")
        self.dataset = gt.name
        self.cohorts = label_cohorts(DataSet(data_path))
        self.models = [LearnedM2(path) if path else None for path in evaluation_paths]
        for model in self.models:
            if model is not None and model.attrs["dataset"] != gt.name:
                raise ValueError(f"a model of {model.attrs['dataset']} cannot be compared with {gt.name}")
        grid = self.grid = self.truth.grid
        self.gx, self.gy, self.points = _x_grid(self.truth, self.style["grid_points"])
        self.z_nodes, self.z_log_w = prior_nodes(grid)
        self.f = [self.truth.f] + [m.f if m else None for m in self.models]
        self.sigma2 = [self.truth.noise_variance] + [m.sigma2 if m else None for m in self.models]
        self.fz = [self.truth.fz] + [m.f(grid.z, grid.y) if m else None for m in self.models]
        z_mark = np.array(MARK_Z)[:, None]
        self.marked = np.concatenate([self.truth.f(z_mark, np.full(len(z_mark), y)) for _, y in self.cohorts])

    def px(self, i: int) -> np.ndarray:
        """p(x) of source ``i`` on the x grid."""
        return np.exp(log_density(self.points, self.fz[i], self.grid.log_w, self.sigma2[i])).reshape(self.gx.shape)

    def pxy(self, i: int, y: float) -> np.ndarray:
        """p(x | y) of source ``i`` on the x grid."""
        fz = self.f[i](self.z_nodes, np.full(len(self.z_nodes), y))
        return np.exp(log_density(self.points, fz, self.z_log_w, self.sigma2[i])).reshape(self.gx.shape)

    def posterior(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """p(z | x) of source ``i`` at the marked x, y marginalised."""
        return marginal_posterior(self.marked, self.fz[i], self.grid, self.sigma2[i])

    def function_panel(self, ax, i: int, title: str):
        """f(z, y) of source ``i``: a line over z ∈ [−3, 3] per cohort, with markers at ``MARKER_Z``
        coloured by z. Returns the markers' colour mappable and the drawn points (for shared limits)."""
        z_line = np.linspace(-3, 3, self.style["curve_points"])[:, None]
        drawn, sc = [], None
        for (name, y), (color, style, marker, size) in zip(self.cohorts, COHORT_STYLES):
            line = self.f[i](z_line, np.full(len(z_line), y))
            ax.plot(line[:, 0], line[:, 1], color=color, linestyle=style, lw=1.2, label=f"f(z, {name})", zorder=1)
            marks = self.f[i](MARKER_Z, np.full(len(MARKER_Z), y))
            sc = ax.scatter(marks[:, 0], marks[:, 1], c=MARKER_Z[:, 0], cmap=LATENT_CMAP, marker=marker, s=size,
                            edgecolors=color, linewidths=0.8, vmin=MARKER_Z.min(), vmax=MARKER_Z.max(), zorder=3)
            drawn.append(line)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        legend_below(ax)
        ax.set_title(title)
        return sc, np.concatenate(drawn)


def _shared_limits(axes, drawn, margin: float = 0.08) -> None:
    """One x/y range for all ``axes``: the bounding box of every drawn point, padded."""
    points = np.concatenate(drawn)
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = margin * np.maximum(hi - lo, 1e-6)
    for ax in axes:
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])


def _check_key(number: int, evaluation_path, expected) -> None:
    attrs = _attrs(evaluation_path)
    found = (attrs["experiment"], attrs["dataset"], attrs["method"])
    if found != tuple(expected):
        raise ValueError(f"Figure {number} shows {tuple(expected)}; {evaluation_path} holds {found}")


def semi_figure(number: int, out_paths, evaluation_path, data_path, surrogate_path, style: dict) -> None:
    """One of Figures 17–22 (``SEMI_FIGURES[number]`` must match the evaluation file): (a) true p(x)
    and learned p_θ(x) with the starred x; (b) true and learned f(z, y) per cohort (title: the
    f-separation ratio, 0 = functional collapse); (c) true and learned p(x | y) per cohort; (d) true
    posteriors p(z | x) at the starred x, y marginalised; (e) the learned model's, with q(z | x)."""
    _check_key(number, evaluation_path, SEMI_FIGURES[number])
    cmp = SemiComparison(data_path, surrogate_path, [evaluation_path], style)
    learned = cmp.models[0]
    (name0, _), (name1, _) = cmp.cohorts
    fig, axes = plt.subplot_mosaic([["a"] * 3 + ["A"] * 3 + ["b"] * 3 + ["B"] * 3,
                                    ["c0"] * 3 + ["C0"] * 3 + ["c1"] * 3 + ["C1"] * 3,
                                    ["d"] * 6 + ["e"] * 6], figsize=(17, 12.5))
    p_true, p_learned = cmp.px(0), cmp.px(1)
    vmax = max(p_true.max(), p_learned.max())
    _density_map(axes["a"], cmp.gx, cmp.gy, p_true, vmax, marked=cmp.marked, what="true p(x)")
    axes["a"].set_title(f"(a) true p(x); σ² = {cmp.truth.noise_variance:.3g}")
    _density_map(axes["A"], cmp.gx, cmp.gy, p_learned, vmax, marked=cmp.marked, what="learned $p_θ(x)$")
    axes["A"].set_title(f"(a) learned $p_θ(x)$; σ² = {np.mean(learned.sigma2):.3g}, "
                        f"smooth kNN {learned.metric('smooth_knn_px')}")

    _, true_drawn = cmp.function_panel(axes["b"], 0, "(b) true f(z, y) per cohort;\n"
                                       "markers: z at its prior's 5%, 15%, …, 95% quantiles")
    sc, learned_drawn = cmp.function_panel(axes["B"], 1, "(b) learned $f_θ(z, y)$ per cohort; f-separation ratio "
                                           f"{learned.metric('f_separation_ratio')}\n(learned/true; 0: functional "
                                           "collapse, 1: as the truth)")
    _shared_limits([axes["b"], axes["B"]], [true_drawn, learned_drawn])
    fig.colorbar(sc, ax=axes["B"], label="z (markers)")

    maps = {(k, name): cmp.pxy(k, y) for k in (0, 1) for name, y in cmp.cohorts}
    vmax = max(m.max() for m in maps.values())
    for (true_key, learned_key), name in zip((("c0", "C0"), ("c1", "C1")), (name0, name1)):
        _density_map(axes[true_key], cmp.gx, cmp.gy, maps[(0, name)], vmax, what=f"true p(x | {name})")
        axes[true_key].set_title(f"(c) true p(x | {name})")
        _density_map(axes[learned_key], cmp.gx, cmp.gy, maps[(1, name)], vmax, what=f"learned $p_θ(x | {name})$")
        axes[learned_key].set_title(f"(c) learned $p_θ(x | {name})$; smooth kNN "
                                    f"{learned.metric(f'smooth_knn_pxy:{name}')}")

    z, post = cmp.posterior(0)
    _posterior_curves(axes["d"], z, post)
    legend_right(axes["d"])
    axes["d"].set_title("(d) posteriors p(z|x) under the true f, y marginalised, at the starred x")
    z, post = cmp.posterior(1)
    _posterior_curves(axes["e"], z, post, learned.q(cmp.marked), label="x{}: $p_θ(z|x)$")
    legend_right(axes["e"])
    axes["e"].set_title("(e) posteriors under the learned $f_θ$, y marginalised (solid), and q(z|x) from the "
                        "unlabelled encoder (dashed)")
    attrs = learned.attrs
    fig.suptitle(f"Figure {number}: semi-supervised M2 trained with {learned.title} on the "
                 f"{DATASET_NAMES.get(cmp.dataset, cmp.dataset)} example (experiment {attrs['experiment']}, "
                 f"version {attrs['version']}); starred x1–x4 = f_GT(z, y) at z = "
                 f"{', '.join(f'{z:g}' for z in MARK_Z)} for {name0}, then {name1}")
    fig.tight_layout()
    save_figure(fig, out_paths, cmp.style["dpi"])


def figure6(out_paths, evaluations, data_path, surrogate_path, style: dict) -> None:
    """Figure 6: functional collapse on the Discrete Semi-Circle. Columns: the truth, IWAE, the VAE
    (``evaluations``: the files of ``FIGURE6_KEYS`` in order, None where one was not evaluated); rows:
    f(z, y) per cohort, p(x), p(x | y) for each cohort."""
    for path, key in zip(evaluations, FIGURE6_KEYS):
        if path is not None:
            _check_key(6, path, key)
    if not any(evaluations):
        raise ValueError(f"Figure 6 needs at least one of the evaluations {FIGURE6_KEYS}")
    cmp = SemiComparison(data_path, surrogate_path, evaluations, style)
    columns = [0] + [i + 1 for i in range(len(evaluations))]
    n_rows = 2 + len(cmp.cohorts)
    fig, axes = plt.subplots(n_rows, len(columns), figsize=(4.2 * len(columns), 3.6 * n_rows), squeeze=False)
    heads = ["true"] + [SHORT_NAMES[key[2]] for key in FIGURE6_KEYS]
    drawn, shown, sc = [], [], None
    for col, head in zip(columns, heads):
        if col and cmp.models[col - 1] is None:
            for ax in axes[:, col]:
                ax.text(0.5, 0.5, "not evaluated", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
            axes[0, col].set_title(f"{head}: no evaluation")
            continue
        model = cmp.models[col - 1] if col else None
        note = f"; f-separation ratio {model.metric('f_separation_ratio')}" if model else ""
        sc, points = cmp.function_panel(axes[0, col], col, f"{head}: f(z, y) per cohort{note}")
        drawn.append(points)
        shown.append(axes[0, col])
    _shared_limits(shown, drawn)
    fig.colorbar(sc, ax=axes[0, -1], label="z of the markers\n(prior 5%, 15%, …, 95% quantiles)")
    rows = [(1, "p(x)", "smooth_knn_px", None)] + [(2 + r, f"p(x | {name})", f"smooth_knn_pxy:{name}", y)
                                                    for r, (name, y) in enumerate(cmp.cohorts)]
    for row, what, metric, y in rows:
        maps = {col: cmp.px(col) if y is None else cmp.pxy(col, y) for col in columns
                if not col or cmp.models[col - 1] is not None}
        vmax = max(m.max() for m in maps.values())
        for col, density in maps.items():
            _density_map(axes[row, col], cmp.gx, cmp.gy, density, vmax, what=f"{heads[col]} {what}")
            model = cmp.models[col - 1] if col else None
            extra = f"; smooth kNN {model.metric(metric)}" if model else ""
            axes[row, col].set_title(f"{heads[col]}: {what}{extra}")
    fig.suptitle("Figure 6: semi-supervised M2 on the Discrete Semi-Circle, the truth vs IWAE vs the VAE; "
                 "functional collapse is f(z, y=0) ≈ f(z, y=1) (f-separation ratio ≈ 0)\n(columns: true, IWAE, VAE; "
                 f"rows: f(z, y), p(x), p(x|y) per cohort; experiment {EXPERIMENT}, version "
                 f"{cmp.truth.attrs['version']}; one colour scale per row)")
    fig.tight_layout(rect=(0, 0, 1, 0.975))  # room for the two-line suptitle
    save_figure(fig, out_paths, cmp.style["dpi"])


def plot_semi_figure(number: int, out_paths, evaluations, data, surrogates, style: dict) -> None:
    """The CLI's entry: Figure 6 or 17–22 from lists of files, each recognised by its attributes."""
    by_key = {(a["experiment"], a["dataset"], a["method"]): p for p, a in ((p, _attrs(p)) for p in evaluations)}
    data, surrogates = ({_attrs(p)["dataset"]: p for p in paths} for paths in (data, surrogates or []))
    keys = FIGURE6_KEYS if number == 6 else (SEMI_FIGURES[number],)
    dataset = keys[0][1]
    if dataset not in data:
        raise ValueError(f"Figure {number} needs the data file of {dataset}")
    if number == 6:
        return figure6(out_paths, [by_key.get(key) for key in keys], data[dataset], surrogates.get(dataset), style)
    if keys[0] not in by_key:
        raise ValueError(f"Figure {number} needs the evaluation {keys[0]}")
    return semi_figure(number, out_paths, by_key[keys[0]], data[dataset], surrogates.get(dataset), style)


# Workflow helpers: workflow/rules/semi_figures.smk binds them to the config's helpers with
# functools.partial, so that the rules file holds rules only.


def figure_keys(number: int, configured) -> list[tuple[str, str, str]]:
    """The (experiment, data set, method) of the evaluations Figure ``number`` draws that
    ``configured(experiment, dataset, method)`` accepts."""
    keys = FIGURE6_KEYS if number == 6 else (SEMI_FIGURES[number],)
    return [key for key in keys if configured(*key)]


def workflow_inputs(configured, evaluation_file, data_file, surrogate_file, wildcards) -> dict:
    """Input files of Figure ``wildcards.number`` (version 0), from the workflow's path helpers:
    ``evaluation_file(experiment, dataset, method)``, ``data_file(dataset, version)`` and
    ``surrogate_file(dataset)`` (empty for a set without one)."""
    keys = figure_keys(int(wildcards.number), configured)
    datasets = list(dict.fromkeys(dataset for _, dataset, _ in keys))
    return {"evaluations": [evaluation_file(*key) for key in keys],
            "data": [data_file(dataset, 0) for dataset in datasets],
            "surrogates": [path for path in map(surrogate_file, datasets) if path]}


def workflow_outputs(configured) -> list[str]:
    """The figures (PNG and PDF) with at least one configured evaluation: targets for rule all."""
    numbers = [n for n in SEMI_FIGURE_NUMBERS if figure_keys(n, configured)]
    return [f"results/figures/figure{n}.{ext}" for n in numbers for ext in ("png", "pdf")]
