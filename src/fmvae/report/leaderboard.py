"""The leaderboard: every method ranked on the paper's pathologies (docs/workflow.md, "Leaderboard").

One row per method (its ``paper_name``, so the M2 versions of VAE, IWAE and LIN join their
unsupervised rows) and one column per pathology, each cell the mean ± std over versions of the
evaluation files of the experiment that tests it:

* **p(x) misestimated** (Table 2; Section 6's counter-examples): the smooth-kNN statistic of learned
  against true p(x) (lower is better) and the test log-likelihood (higher is better) on Figure-8,
  Clusters, Circle and Absolute-Value (experiment ``unsupervised``);
* **σ² biased** (Section 8): the learned σ² on Spiral Dots over the true one (1 is unbiased;
  experiment ``spiral_learned``);
* **K preferred** (Table 1): test −ELBO at K = 1 minus the smallest test −ELBO at K > 1, per 5-D set
  (experiments ``signal_noise_K1``…``K3``): above 0, the ELBO prefers a K other than the truth
  [choice: the ELBO for every method, as Table 1 and REPRODUCTION.md read it];
* **functional collapse** (Tables 3–4): on the discrete and continuous semi-circles, smooth kNN of
  p(x), the mean smooth kNN of p(x|y) over the label cohorts, and the f-separation (experiment
  ``semi_synthetic``; its M2 methods);
* **seconds per model**: training wall time of a method's stacks over the models they held, summed
  over every experiment above (an amortised cost: a stack trains its models together).

A method absent from an experiment has an empty cell there. The K-preference cell pairs the three
experiments' evaluations by version.
"""

from __future__ import annotations

import math
from collections import defaultdict

import h5py
import numpy as np

from fmvae import methods, store
from fmvae.report.tables import write_csv

PX_DATASETS = ("figure8", "clusters", "circle", "absolute_value")
K_DATASETS = ("figure8_5d", "clusters_5d")
SEMI_DATASETS = ("discrete_semicircle", "continuous_semicircle")
K_EXPERIMENTS = {"signal_noise_K1": 1, "signal_noise_K2": 2, "signal_noise_K3": 3}
EXPERIMENTS = ("unsupervised", "spiral_learned", *K_EXPERIMENTS, "semi_synthetic")
REFERENCE = ("VAE", "IWAE", "LIN")  # the paper's methods, listed first


def _columns() -> list[tuple[str, str, str]]:
    """(column, what it measures, which way is better: ``lower``, ``higher`` or ``one``), in order."""
    cols = [(f"smooth_knn_px:{d}", f"smooth kNN of p(x), {d} (lower is better)", "lower") for d in PX_DATASETS]
    cols += [(f"test_loglik:{d}", f"test log-likelihood, {d} (higher is better)", "higher") for d in PX_DATASETS]
    cols += [("sigma2_ratio:spiral_dots", "learned σ² / true σ² on Spiral Dots (1 is unbiased)", "one")]
    cols += [(f"k_preference:{d}", f"test −ELBO at K = 1 minus the best K > 1, {d} (> 0: prefers K > 1)", "lower")
             for d in K_DATASETS]
    for d in SEMI_DATASETS:
        cols += [(f"smooth_knn_px:{d}", f"smooth kNN of p(x), {d} (lower is better)", "lower"),
                 (f"smooth_knn_pxy:{d}", f"mean smooth kNN of p(x|y), {d} (lower is better)", "lower"),
                 (f"f_separation:{d}", f"f-separation, {d} (near 0: collapsed)", "higher")]
    return cols + [("seconds_per_model", "training seconds per model (amortised over its stacks)", "lower")]


COLUMNS = _columns()


def _pxy(metrics: dict) -> float:
    values = [v for k, v in metrics.items() if k.startswith("smooth_knn_pxy:")]
    return float(np.mean(values)) if values else math.nan


def collect(evaluation_paths) -> dict[str, dict[str, list[float]]]:
    """{method: {column: per-version values}} from evaluation files (others are ignored)."""
    cells: dict = defaultdict(lambda: defaultdict(list))
    by_k: dict = defaultdict(dict)  # (method, dataset, version) -> {K: test −ELBO}
    seconds: dict = defaultdict(lambda: [0.0, 0])
    for path in evaluation_paths:
        with h5py.File(path, "r") as f:
            attrs = store.read_attrs(f)
        experiment, dataset, m = attrs["experiment"], attrs["dataset"], attrs["metrics"]
        if experiment not in EXPERIMENTS:
            continue
        method = methods.get(attrs["method"]).paper_name or attrs["method"]
        row = cells[method]
        if experiment == "unsupervised" and dataset in PX_DATASETS:
            row[f"smooth_knn_px:{dataset}"].append(m["smooth_knn_px"])
            row[f"test_loglik:{dataset}"].append(m["test_loglik"])
        elif experiment == "spiral_learned":
            row["sigma2_ratio:spiral_dots"].append(m["sigma2"] / attrs["true_sigma2"])
        elif experiment in K_EXPERIMENTS and dataset in K_DATASETS:
            by_k[(method, dataset, attrs["version"])][K_EXPERIMENTS[experiment]] = m["test_neg_elbo"]
        elif experiment == "semi_synthetic" and dataset in SEMI_DATASETS:
            row[f"smooth_knn_px:{dataset}"].append(m["smooth_knn_px"])
            row[f"smooth_knn_pxy:{dataset}"].append(_pxy(m))
            row[f"f_separation:{dataset}"].append(m["f_separation"])
        if "train_seconds" in attrs:
            seconds[method][0] += attrs["train_seconds"]
            seconds[method][1] += attrs["models"]
    for (method, dataset, _), values in sorted(by_k.items()):
        if 1 in values and len(values) > 1:
            cells[method][f"k_preference:{dataset}"].append(values[1] - min(v for k, v in values.items() if k > 1))
    for method, (total, models) in seconds.items():
        if models:
            cells[method]["seconds_per_model"].append(total / models)
    return {m: dict(c) for m, c in cells.items()}


def _order(cells: dict) -> list[str]:
    return [m for m in REFERENCE if m in cells] + sorted(m for m in cells if m not in REFERENCE)


def _cell(values: list[float]) -> tuple[str, str, int]:
    """(mean, std, n) formatted; the std is empty for one value."""
    if not values:
        return "", "", 0
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.4g}", (f"{a.std(ddof=1):.3g}" if len(a) > 1 else ""), len(a)


def rows(cells: dict) -> list[dict]:
    """One long-format row per (method, column) with a value: method, column, mean, std, n."""
    out = []
    for method in _order(cells):
        for column, _, _ in COLUMNS:
            mean, std, n = _cell(cells[method].get(column, []))
            if n:
                out.append({"method": method, "column": column, "mean": mean, "std": std, "n": n})
    return out


def _present(cells: dict) -> list[tuple[str, str]]:
    """(column, what) of the columns some method has a value in."""
    return [(c, what) for c, what, _ in COLUMNS if any(cells[m].get(c) for m in cells)]


def markdown(cells: dict) -> str:
    """The leaderboard as Markdown: one row per method, one column per pathology, and a legend."""
    present = _present(cells)
    lines = ["# Leaderboard: methods on the paper's pathologies", "",
             "Mean ± std over versions (n where fewer than the others); empty: not run.", "",
             "| method | " + " | ".join(c for c, _ in present) + " |", "|---|" + "---|" * len(present)]
    most = {c: max(len(cells[m].get(c, [])) for m in cells) for c, _ in present}
    for method in _order(cells):
        out = []
        for column, _ in present:
            mean, std, n = _cell(cells[method].get(column, []))
            out.append((f"{mean} ± {std}" if std else mean) + (f" (n = {n})" if 0 < n < most[column] else ""))
        lines.append(f"| {method} | " + " | ".join(out) + " |")
    lines += ["", "| column | what |", "|---|---|"] + [f"| {c} | {what} |" for c, what in present]
    return "\n".join(lines) + "\n"


def figure(cells: dict, path, dpi: int = 150) -> None:
    """One small bar chart per pathology column: each method's mean with its std as an error bar."""
    import matplotlib.pyplot as plt

    from fmvae.report import plotting

    present = _present(cells)
    order = _order(cells)
    cols = 4
    rows_ = max(1, math.ceil(len(present) / cols))
    fig, axes = plt.subplots(rows_, cols, figsize=(3.2 * cols, 2.6 * rows_), squeeze=False, layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (column, what) in zip(axes.flat, present):
        values = [cells[m].get(column, []) for m in order]
        means = [np.mean(v) if v else np.nan for v in values]
        stds = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
        ax.bar(range(len(order)), means, yerr=stds, capsize=3, color=[colours[i % len(colours)] for i in range(len(order))])
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
        ax.set_title(what.replace(" (", "\n("), fontsize=8)
    for ax in list(axes.flat)[len(present):]:
        ax.set_visible(False)
    fig.suptitle("Methods on the paper's pathologies (mean ± std over versions)")
    plotting.save_figure(fig, [path], dpi)


def standing(cells: dict, method: str) -> list[dict]:
    """Where ``method`` stands in each column it has a value in: its mean, its rank among the
    methods with a value there (1 = best, by the column's direction) and the best other method."""
    out = []
    for column, what, better in COLUMNS:
        means = {m: float(np.mean(c[column])) for m, c in cells.items() if c.get(column)}
        if method not in means:
            continue
        key = {"lower": lambda v: v, "higher": lambda v: -v, "one": lambda v: abs(math.log(v))}[better]
        ranked = sorted(means, key=lambda m: key(means[m]))
        best_other = next((m for m in ranked if m != method), None)
        out.append({"column": column, "what": what, "mean": means[method], "rank": ranked.index(method) + 1,
                    "of": len(ranked), "best_other": best_other, "best_other_mean": means.get(best_other)})
    return out


def read_means(csv_path) -> dict[str, dict[str, list[float]]]:
    """The leaderboard CSV's means as cells ({method: {column: [mean]}}), for :func:`standing`."""
    import csv

    cells: dict = defaultdict(dict)
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            cells[row["method"]][row["column"]] = [float(row["mean"])]
    return dict(cells)


def write_leaderboard(evaluation_paths, csv_path, md_path, png_path, dpi: int = 150) -> dict:
    """The leaderboard's CSV (long format), Markdown and figure, each written atomically."""
    cells = collect(evaluation_paths)
    write_csv(rows(cells), ["method", "column", "mean", "std", "n"], csv_path)
    with store.atomic_path(md_path) as tmp:
        tmp.write_text(markdown(cells))
    figure(cells, png_path, dpi)
    return cells
