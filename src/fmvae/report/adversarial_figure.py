"""Figure 7 and its table (Appendix F) from the per-version files of :mod:`fmvae.adversarial`.

The figure (version 0) has one panel per defence: (a) the nearest point of the true manifold (the
paper's Figure 7a, the ideal projection), (b) the well-specified VAE (K = 1, σ² at the truth) and
(c) the mismatched VAE (K = 2, small learned σ²; the paper's Figure 7b). Each panel shows the true
manifold (blue) with its classifier's label-1 region (blue dashed; grey where it gives no label), the learned
classifier's boundary (orange), a uniform grid of x with a grey segment from every grid point to its
projection M(x) (black dot), and a few valid adversarial examples: the star x, the red arrow to
x' = x + η and the black arrow to M(x'), ending in a green dot where the learned classifier gives
M(x') the true label (the attack is defeated) and a red cross where it does not.

The table has one row per (defence, metric) with mean ± std over versions, in the columns of
:mod:`fmvae.report.tables` (the paper reports no numbers for Figure 7, so ``paper_mean`` is empty).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.patches import Patch

from fmvae.adversarial import DEFENCES, read_result
from fmvae.report.plotting import plt, save_figure
from fmvae.report.tables import finish, write_rows

DEFAULT_STYLE = {"dpi": 150}
EXAMPLES = 3  # valid adversarial examples drawn per panel: evenly spaced among version 0's, in test order
TITLES = {"true_manifold": "(a) true manifold, nearest point M*(x)",
          "well_specified": "(b) well-specified VAE: K = 1, σ² fixed at the truth",
          "mismatched": "(c) mismatched VAE: K = {k}, σ² learned (per dimension)"}
# Table rows: (defence key in the file, method, setting, metrics).
ROWS = [("none", "none", "no_projection", ("attack_success", "valid_examples", "clean_accuracy")),
        ("true_manifold", "true_manifold", "nearest_point",
         ("attack_success_after_projection", "projection_distance", "clean_accuracy_after_projection")),
        ("well_specified", "VAE", "well_specified_K1_sigma2_true",
         ("attack_success_after_projection", "projection_distance", "clean_accuracy_after_projection", "sigma2",
          "val_elbo")),
        ("mismatched", "VAE", "mismatched_K{k}_sigma2_learned",
         ("attack_success_after_projection", "projection_distance", "clean_accuracy_after_projection", "sigma2",
          "val_elbo"))]


def table_rows(result_paths) -> list[dict]:
    """One row per (defence, metric) with its values over the versions (NaN values left out: a
    conditional rate is undefined in a version without valid adversarial examples)."""
    results = [read_result(p)[0] for p in result_paths]
    if not results:
        raise ValueError("Figure 7's table needs at least one result file")
    datasets = {r["dataset"] for r in results}
    if len(datasets) != 1:
        raise ValueError(f"Figure 7's results mix data sets: {sorted(datasets)}")
    k = results[0]["latent_dim"]["mismatched"]
    rows = []
    for key, method, setting, metrics in ROWS:
        for metric in metrics:
            values = [r["metrics"][key][metric] for r in results]
            values = [v for v in values if v is not None and not math.isnan(v)]
            if values:
                rows.append({"table": "figure7", "dataset": results[0]["dataset"], "method": method,
                             "setting": setting.format(k=k), "metric": metric, "values": values})
    return rows


def write_table(result_paths, csv_path, md_path) -> list[dict]:
    """``results/tables/figure7.csv`` and ``.md`` (same columns and Markdown as the paper's tables)."""
    return write_rows(finish(table_rows(result_paths)), csv_path, md_path, "figure7",
                      "Appendix F: attack success after projection and mean ‖M(x) − x‖ "
                      "(definitions: README, \"Figure 7\").")


def _examples(valid: np.ndarray, count: int = EXAMPLES) -> np.ndarray:
    index = np.flatnonzero(valid)
    if len(index) <= count:
        return index
    return index[np.linspace(0, len(index) - 1, count).round().astype(int)]


def _panel(ax, attrs: dict, arrays: dict, defence: str) -> None:
    dense = arrays["boundary/x"]
    n = round(math.sqrt(len(dense)))
    gx, gy = dense[:, 0].reshape(n, n), dense[:, 1].reshape(n, n)
    learned = arrays["boundary/learned_probability"].reshape(n, n)
    true = arrays["boundary/true_label"].reshape(n, n)
    ax.contourf(gx, gy, learned, levels=[0, 0.5, 1], colors=["#dbe9f6", "#fde3c8"], alpha=0.6)
    ax.contourf(gx, gy, (true == -1).astype(float), levels=[0.5, 1.5], colors=["0.6"], alpha=0.3)
    ax.contour(gx, gy, (true == 1).astype(float), levels=[0.5], colors=["tab:blue"], linestyles="--", linewidths=1)
    ax.contour(gx, gy, learned, levels=[0.5], colors=["tab:orange"], linewidths=1.5)
    curve = arrays["curve/true"]
    ax.plot(curve[:, 0], curve[:, 1], color="tab:blue", lw=2.5, alpha=0.6)
    if defence == "well_specified":
        learned_curve = arrays["curve/well_specified"]
        ax.plot(learned_curve[:, 0], learned_curve[:, 1], color="black", lw=0.8)
    grid, projected = arrays["grid/x"], arrays[f"projection/{defence}/grid"]
    ax.add_collection(LineCollection(np.stack([grid[:, :2], projected[:, :2]], axis=1), colors="0.45", linewidths=0.5))
    ax.scatter(grid[:, 0], grid[:, 1], s=4, color="0.45", linewidths=0)
    ax.scatter(projected[:, 0], projected[:, 1], s=5, color="black", linewidths=0, zorder=3)
    x, x_adv, y = arrays["test/x"], arrays["test/x_adv"], arrays["test/y"]
    m_adv, label_adv = arrays[f"projection/{defence}/adv"], arrays[f"projection/{defence}/learned_adv"]
    for i in _examples(arrays["test/valid"]):
        ax.annotate("", xy=x_adv[i, :2], xytext=x[i, :2], arrowprops={"arrowstyle": "->", "color": "red", "lw": 1.5},
                    zorder=5)
        ax.annotate("", xy=m_adv[i, :2], xytext=x_adv[i, :2], arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.2},
                    zorder=5)
        ax.scatter(*x[i, :2], marker="*", s=140, color="gold", edgecolors="black", zorder=6)
        defeated = label_adv[i] == y[i]
        ax.scatter(*m_adv[i, :2], marker="o" if defeated else "X", s=45, color="tab:green" if defeated else "red",
                   edgecolors="black", linewidths=0.5, zorder=6)
    metrics = attrs["metrics"][defence]
    title = TITLES[defence].format(k=attrs["latent_dim"]["mismatched"])
    sigma2 = f", mean σ² = {metrics['sigma2']:.2g}" if "sigma2" in metrics else ""
    ax.set_title(f"{title}{sigma2}\nattack success after projection {metrics['attack_success_after_projection']:.2f} "
                 f"(of {metrics['valid_examples']}); mean ‖M(x) − x‖ = {metrics['projection_distance']:.3f}")
    ax.set_xlim(gx.min(), gx.max())
    ax.set_ylim(gy.min(), gy.max())
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")


def figure7(result_path, out_paths, style: dict) -> None:
    """Figure 7 from one version's file (the workflow passes version 0)."""
    style = {**DEFAULT_STYLE, **style}
    attrs, arrays = read_result(result_path)
    fig, axes = plt.subplots(1, len(DEFENCES), figsize=(5.2 * len(DEFENCES), 5.6))
    for ax, defence in zip(axes, DEFENCES):
        _panel(ax, attrs, arrays, defence)
    handles = [plt.Line2D([], [], color="tab:blue", lw=2.5, alpha=0.6, label="true manifold"),
               plt.Line2D([], [], color="tab:blue", ls="--", label="true classifier's boundary"),
               plt.Line2D([], [], color="tab:orange", lw=1.5, label="learned classifier's boundary"),
               Patch(color="0.6", alpha=0.3, label="no true label (band around a switch, or too far)"),
               plt.Line2D([], [], color="red", label="adversarial perturbation η"),
               plt.Line2D([], [], color="black", label="projection M(x + η)"),
               plt.Line2D([], [], color="0.45", marker=".", lw=0.5, label="grid x → M(x)"),
               plt.Line2D([], [], marker="o", color="tab:green", ls="", label="attack defeated"),
               plt.Line2D([], [], marker="X", color="red", ls="", label="attack survives")]
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False)
    attack = attrs["config"]["attack"]
    fig.suptitle(f"Figure 7: projection onto the true vs the learned manifold as a defence ({attrs['dataset']}, "
                 f"version {attrs['version']}; y = 1[z > {attrs['config']['label_threshold']:g}], "
                 f"{attack['norm'].upper()} budget ε = {attack['epsilon']:g}; "
                 f"{attrs['metrics']['none']['valid_examples']} valid adversarial examples)")
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    save_figure(fig, out_paths, style["dpi"])
