"""Figures that need only the data and the ground truth: one per data set, and the paper's
Figures 2, 3 and 4. Densities and posteriors are exact quadrature over the latent
(:mod:`fmvae.metrics.quadrature`) under the decoder that generated the data (the surrogate)."""

from __future__ import annotations

import h5py
import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.patheffects import withStroke

from fmvae import store
from fmvae.data import groundtruth
from fmvae.data.simulate import decoder_mean, load_surrogate
from fmvae.metrics import quadrature
from fmvae.report.plotting import DENSITY_PER_X_AREA, DENSITY_PER_XZ, density_colorbar, legend_right, plt, save_figure, scatter_by_count

DENSITY_CMAP = "Greys"
DENSITY_GAMMA = 0.5  # colour ∝ density^γ, so thin, peaked densities (Spiral Dots) stay visible
LATENT_CMAP = "rainbow"
# Quadrature nodes per latent axis for 2-D latents, and the z × y grid of continuous labels: kept
# small so that a density over a 2-D x grid stays a few seconds.
NODES_2D_LATENT = 81
NODES_Z_WITH_Y, NODES_Y = 401, 51


def _prior_quantile_z(gt, n: int) -> np.ndarray:
    """z values spread over the prior (normal: [−3, 3]; uniform: [0, 1]) for drawing f(z)."""
    return (np.linspace(0, 1, n) if gt.prior == "uniform" else np.linspace(-3, 3, n))[:, None]


class SyntheticSet:
    """A synthetic data file with its ground truth: attributes, data, f and the quadrature grid."""

    def __init__(self, data_path, surrogate_path=None, z_grid_points: int = 4001):
        with h5py.File(data_path, "r") as f:
            self.attrs = store.read_attrs(f)
        self.x = store.read_split(data_path, "train")["x"]
        self.gt = groundtruth.get(self.attrs["dataset"])
        surrogate = load_surrogate(surrogate_path)[0] if surrogate_path else None
        if self.gt.surrogate and surrogate is None:
            raise ValueError(f"{self.gt.name}: pass its surrogate file to draw the true density")
        self.f = decoder_mean(self.gt, self.attrs["config"]["params"], surrogate)
        self.noise_variance = self.attrs["noise_variance"]
        if self.gt.latent_dim == 2:
            self.grid = quadrature.latent_grid(self.gt, NODES_2D_LATENT)
        elif self.gt.label == "normal":
            self.grid = quadrature.latent_grid(self.gt, NODES_Z_WITH_Y, n_y=NODES_Y)
        else:
            self.grid = quadrature.latent_grid(self.gt, z_grid_points)
        self.fz = self.f(self.grid.z, self.grid.y)

    def limits(self, margin: float = 0.1):
        lo, hi = np.percentile(self.x[:, :2], [0.1, 99.9], axis=0)
        pad = margin * (hi - lo)
        return lo - pad, hi + pad

    def density_panel(self, ax, grid_points: int, curve_points: int, marked=None):
        """p(x) (first two coordinates) as a heat map with its colour bar below, f(z) overlaid, coloured
        by z (markers per label value, with legend labels for the caller to place). Returns the
        colour mappable of z."""
        lo, hi = self.limits()
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], grid_points), np.linspace(lo[1], hi[1], grid_points))
        points = np.stack([gx.ravel(), gy.ravel()], axis=1)
        density = np.exp(quadrature.log_marginal(points, self.fz[:, :2], self.grid.log_w, self.noise_variance))
        mesh = ax.pcolormesh(gx, gy, density.reshape(gx.shape), cmap=DENSITY_CMAP, shading="auto", rasterized=True,
                             norm=PowerNorm(DENSITY_GAMMA, vmin=0))
        what = "$p(x_1, x_2)$" if self.gt.data_dim > 2 else "p(x)"
        density_colorbar(ax.figure, mesh, ax, f"true {what} ({DENSITY_PER_X_AREA})")
        gt = self.gt
        if gt.latent_dim == 2:
            rng = np.random.default_rng(0)
            z = rng.standard_normal((curve_points, 2))
            curves = [(z, None, "o", "")]
        else:
            z = _prior_quantile_z(gt, curve_points)
            ys = {"bernoulli": [0, 1], "normal": [-3.5, 0.0, 3.5]}.get(gt.label, [None])
            markers = ["o", "s", "^"]
            curves = [(z, None if y is None else np.full(len(z), y), markers[i], "" if y is None else f"y={y:g}")
                      for i, y in enumerate(ys)]
        for z, y, marker, label in curves:
            fz = self.f(z, y)
            sc = ax.scatter(fz[:, 0], fz[:, 1], c=z[:, 0], cmap=LATENT_CMAP, s=3, marker=marker, label=label or None,
                            linewidths=0)
        if marked is not None:
            marked = np.asarray(marked)
            ax.scatter(marked[:, 0], marked[:, 1], marker="*", s=140, c="gold", edgecolors="black", zorder=5)
            for i, (a, b) in enumerate(marked):
                ax.annotate(str(i + 1), (a, b), xytext=(5, 5), textcoords="offset points", fontsize=8)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        return sc

    def posterior_panel(self, ax, marked):
        """True posteriors p(z|x) under the generating decoder at the marked points (1-D z)."""
        post = quadrature.posterior(np.asarray(marked, dtype=float), self.fz[:, :2], self.grid.log_w,
                                    self.noise_variance)
        z = self.grid.z[:, 0]
        dz = z[1] - z[0]
        for i, p in enumerate(post):
            ax.plot(z, p / dz, label=f"x{i + 1} = ({marked[i][0]:.2f}, {marked[i][1]:.2f})")
        ax.set_xlim(-4, 4)
        ax.set_xlabel("z")
        ax.set_ylabel("$p(z \\mid x)$ (density per unit z)")
        legend_right(ax)


def plot_dataset(data_path, out_png, style: dict, surrogate_path=None) -> None:
    """The figure of one data set: synthetic, p(x) with f(z) overlaid coloured by z; real, the
    training split projected on its first two principal components, coloured by label."""
    style = {"dpi": 150, "grid_points": 200, "z_grid_points": 4001, "curve_points": 2000, **style}
    with h5py.File(data_path, "r") as f:
        attrs = store.read_attrs(f)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    if "split" in attrs:
        _real_panel(ax, data_path, attrs)
    else:
        data = SyntheticSet(data_path, surrogate_path, style["z_grid_points"])
        sc = data.density_panel(ax, style["grid_points"], style["curve_points"])
        fig.colorbar(sc, ax=ax, label="$z_1$ (colour of f(z))" if data.gt.latent_dim > 1 else "z (colour of f(z))")
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            legend = fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles),
                                title="f(z, y), one marker per label value", markerscale=3)
            for handle in legend.legend_handles:  # grey: the marker tells the label value, the colour z
                handle.set_array(None)
                handle.set_color("0.3")
        note = " (first two of 5 coordinates)" if data.gt.data_dim > 2 else ""
        ax.set_title(f"{data.gt.name}: true p(x){note}, f(z) coloured by z\n{data.gt.reference}, "
                     f"σ²={attrs['sigma2']:g}")
    save_figure(fig, [out_png], style["dpi"])


def _real_panel(ax, data_path, attrs) -> None:
    train = store.read_split(data_path, "train")
    x = train["x"] - train["x"].mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    proj = x @ vt[:2].T
    values = np.asarray(attrs["label_values"]).ravel()
    labels = {c: f"cohort{c + 1} (label {values[c]:g}, n={(train['y'] == c).sum()})" for c in range(attrs["n_classes"])}
    markers = scatter_by_count(ax, proj, train["y"], labels)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    note = (f"\n{len(proj)} points on {len(np.unique(markers.points, axis=0))} distinct positions: one marker per "
            "position and cohort, area ∝ count, cohorts side by side") if markers.aggregated else ""
    ax.set_title(f"{attrs['dataset']} split {attrs['split']}: training data, first two principal components{note}")


def _joint_1d(gt, sigma2, x_values, n_z: int):
    """Joint density p(x, z) on a (x, z) grid and p(z|x) for a 1-D latent and 1-D x."""
    grid = quadrature.latent_grid(gt, n_z, bound=3.5)
    fz = gt.mean(grid.z)
    z = grid.z[:, 0]
    dz = z[1] - z[0]
    prior_density = np.exp(grid.log_w) / dz
    joint = np.exp(quadrature.log_likelihood_grid(x_values[:, None], fz, sigma2)) * prior_density[None, :]
    return z, joint


def _joint_panel(ax, z, x_values, joint, cuts, colors):
    """The joint p(x, z) as a heat map (colour bar on the right) with the dotted cross-sections x = cut."""
    mesh = ax.pcolormesh(z, x_values, joint, cmap=DENSITY_CMAP, shading="auto", rasterized=True, vmin=0)
    density_colorbar(ax.figure, mesh, ax, f"p(x, z) ({DENSITY_PER_XZ})", location="right")
    for cut, color in zip(cuts, colors):
        # a white halo keeps the dotted line visible on the dark and the light parts of the map
        ax.axhline(cut, color=color, linestyle=":", linewidth=1.5, path_effects=[withStroke(linewidth=3, foreground="white")])
    ax.set_xlabel("z")
    ax.set_ylabel("x")


def _posterior_lines(ax, z, x_values, joint, cuts, colors):
    """p(z | x) at the cross-sections (legend entries for the caller to place)."""
    for cut, color in zip(cuts, colors):
        row = joint[np.argmin(np.abs(x_values - cut))]
        ax.plot(z, row / np.trapezoid(row, z), color=color, label=f"x = {cut:g}")
    ax.set_xlabel("z")
    ax.set_ylabel("$p(z \\mid x)$ (density per unit z)")


def figure2(outputs, style: dict, **_) -> None:
    """Figure 2: three decoders with one p(x) but different posteriors (z ~ U(0, 1))."""
    sigma2, cuts, n = style["figure2_sigma2"], style["figure2_cross_sections"], style["grid_points"]
    x_values = np.linspace(-0.25, 0.55, n)
    colors = [f"C{i}" for i in range(len(cuts))]
    fig, axes = plt.subplots(2, 4, figsize=(13, 6))
    titles = ["$(z-0.5)^2$", "$0.25 z^2$", "$1[z<0.5](2z-0.5)^2 + 1[z\\geq0.5](2z-1.5)^2$"]
    for col, name in enumerate(["figure2_variant1", "figure2_variant2", "figure2_variant3"]):
        gt = groundtruth.get(name)
        z, joint = _joint_1d(gt, sigma2, x_values, 2 * n)
        _joint_panel(axes[0, col], z, x_values, joint, cuts, colors)
        axes[0, col].set_title(f"Variant {col + 1}: f(z) = {titles[col]}")
        _posterior_lines(axes[1, col], z, x_values, joint, cuts, colors)
        axes[0, 3].plot(np.trapezoid(joint, z, axis=1), x_values, label=f"Variant {col + 1}",
                        linestyle=["-", "--", ":"][col])
    axes[0, 3].set_xlabel("$p(x)$ (density per unit x)")
    axes[0, 3].set_ylabel("x")
    axes[0, 3].set_title("the three marginals p(x) coincide")
    # The legends go in the free bottom-right panel, off the curves: the marginals' (panel above)
    # and the cross-sections' (the dotted lines of the joints, the posteriors of the bottom row).
    key = axes[1, 3]
    key.axis("off")
    marginals = key.legend(*axes[0, 3].get_legend_handles_labels(), loc="upper left", title="marginals p(x) (above)")
    key.add_artist(marginals)
    key.legend(*axes[1, 0].get_legend_handles_labels(), loc="lower left",
               title="cross-sections x (dotted above;\nposteriors p(z | x) left)")
    fig.suptitle(f"Figure 2: non-identifiability; z ~ U(0,1), x|z ~ N(f(z), {sigma2:g})")
    fig.tight_layout(w_pad=2.0)
    save_figure(fig, outputs, style["dpi"])


def figure3(outputs, style: dict, **_) -> None:
    """Figure 3: eq. 7, f(z) = ⌊z⌋: rapid changes in f give multi-modal posteriors."""
    sigma2, cuts, n = style["figure3_sigma2"], style["figure3_cross_sections"], style["grid_points"]
    gt = groundtruth.get("floor_steps")
    x_values = np.linspace(-4.5, 3.5, n)
    z, joint = _joint_1d(gt, sigma2, x_values, 4 * n)
    colors = [f"C{i}" for i in range(len(cuts))]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    _joint_panel(axes[0], z, x_values, joint, cuts, colors)
    axes[0].set_title(f"joint p(x, z), f(z) = ⌊z⌋, σ² = {sigma2:g}")
    _posterior_lines(axes[1], z, x_values, joint, cuts, colors)
    legend_right(axes[1], title="cross-section")
    axes[1].set_title("posteriors at the dotted cross-sections")
    fig.suptitle("Figure 3: rapid changes in f lead to multi-modal posteriors (eq. 7)")
    fig.tight_layout(w_pad=2.0)
    save_figure(fig, outputs, style["dpi"])


def figure4(outputs, style: dict, data=(), surrogates=()) -> None:
    """Figure 4: Figure-8 and Clusters: p(x) with f(z) coloured by z, and the true posteriors at
    the starred points."""
    if len(data) != 2 or len(surrogates) != 2:
        raise ValueError("Figure 4 needs the figure8 and clusters data files and their surrogates")
    fig, axes = plt.subplots(2, 2, figsize=(9, 8))
    for row, (data_path, surrogate_path) in enumerate(zip(data, surrogates)):
        data_set = SyntheticSet(data_path, surrogate_path, style["z_grid_points"])
        marked = style["figure4_points"][data_set.gt.name]
        sc = data_set.density_panel(axes[row, 0], style["grid_points"], style["curve_points"], marked=marked)
        fig.colorbar(sc, ax=axes[row, 0], label="z (colour of f(z))")
        axes[row, 0].set_title(f"{data_set.gt.name}: p(x), f(z) coloured by z")
        data_set.posterior_panel(axes[row, 1], marked)
        axes[row, 1].set_title("true posteriors at the starred points")
    fig.suptitle("Figure 4: benchmarks on which the MFG-VAE's ELBO compromises p(x)")
    fig.tight_layout()
    save_figure(fig, outputs, style["dpi"])


PAPER_FIGURES = {2: figure2, 3: figure3, 4: figure4}
