"""``fmvae diagnose``: the paper's Section 9 checks (docs/methods.md §5) on a user's own CSV file.

What :func:`diagnose` does with a CSV of numeric features (a header row, one row per point):

1. **Read and standardise.** Every column but the optional label column is a feature; each must be
   numeric in every row, with no missing value (an empty cell, ``NA``, ``NaN``, ``null``, ``none``
   or ``?``) and not constant; the error names the column and the line. Features are standardised
   with the data's own mean and standard deviation (over all rows) [choice: the data's, not the
   training split's, so that the three splits share one scale whatever the seed]. The label column may
   be text or numbers; a row with an empty label is unlabelled (a semi-supervised set), and only the
   labelled rows enter the separability check.
2. **Split.** A seeded permutation of the rows: the first ``train_fraction`` (default 60%) for
   training, the next ``val_fraction`` (20%) for selecting the restart, the rest (20%) for the checks
   (:data:`DEFAULTS`). The training split must hold one batch (``batch_size`` rows).
3. **Train.** ``restarts`` MFG-VAEs as one :class:`fmvae.nn.BatchedVAE` stack and ``restarts`` IWAEs
   (``iwae_samples`` importance samples) as another, each with the paper's architecture (leaky-ReLU
   MLPs, ``hidden`` widths, Adam ``lr``, batches of ``batch_size``), K = ``latent_dim`` and σ²
   learned per feature from ``sigma2_init`` unless ``sigma2`` fixes it [choice: a user seldom knows
   σ²; guideline 2 of the paper says so, and the report repeats it]. Every restart is random; the
   restart with the best validation bound (the ELBO for the VAE, the IWAE bound for the IWAE) is
   kept, diverged ones excluded.
4. **Check** (``checks`` settings: the config schema's defaults, :func:`fmvae.checks.checks_spec`),
   on the test split:

   * residual normality off the selected VAE's learned manifold (:func:`fmvae.checks.residual_normality`;
     guideline 4(i)): warns when the normal coordinates of x − f_θ(z*) are not Gaussian;
   * the IWAE-over-VAE log-likelihood gap with its paired standard error
     (:func:`fmvae.checks.per_point_loglik`, :func:`fmvae.checks.loglik_gap`; guideline 4(ii)): warns
     when the richer family explains held-out data significantly better;
   * with a label column, class separability (:func:`fmvae.separability.separability`, a
     cross-validated classifier of y|x on the labelled rows; guideline 1).

:func:`write_report` writes ``report.html`` (self-contained: images as base64 PNG), ``report.md``
(beside its PNG figures), ``result.json`` (every number) and the figures: samples of each selected
model against the data for pairs of features, and a normal QQ plot of the residual's normal
coordinates. Defaults keep a 2 000-row, 2-column CSV at a few minutes on one CPU thread.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
import re
import time
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fmvae.config import derive_seed

if TYPE_CHECKING:
    import torch

    from fmvae.nn import BatchedVAE

# torch and the modules built on it are imported where they are used: the CLI imports this module for
# DEFAULTS (its --help) whatever the command, and torch alone costs about 2 s to import.

log = logging.getLogger(__name__)

# Sizes and the split; ``fmvae diagnose --help`` lists them (the CLI's options take these defaults).
DEFAULTS = {
    "latent_dim": 1,  # K [choice]: the paper's "very low-dimensional latent space" (guideline 3), where MFG fails
    "restarts": 3,  # random restarts per family, one stack each
    "epochs": 1000,  # 12 000 steps on 1 200 training rows: measured, what Circle needs to pass (300: false warnings)
    "hidden": [50, 50, 50],  # the paper's 3×50 (synthetic data)
    "negative_slope": 0.01,
    "batch_size": 100,  # the paper's
    "lr": 1e-3,  # the paper's
    "iwae_samples": 20,  # S of the IWAE (the paper's largest)
    "sigma2": None,  # None: σ² learned per feature; a number: fixed, in standardised units
    # initial σ² when learned, standardised units [choice]: 1 (the data's variance) starts at the collapsed Gaussian
    # fit and stays there; from 0.1 the VAE's σ² comes down slowly (Circle, 600 epochs: 3 of 6 seeds still at
    # 0.03-0.04 against the truth's 0.02, false gap warnings); from 0.01 it rises to its value quickly
    "sigma2_init": 0.01,
    "train_fraction": 0.6,
    "val_fraction": 0.2,  # the rest (0.2) is the test split
    "seed": 0,
    "log_every_epochs": 100,
    "separability": {},  # overrides of the separability settings (fmvae.separability.defaults)
    "checks": {},  # overrides of the checks settings (the config schema's ``checks`` section)
}
MISSING = {"", "na", "n/a", "nan", "null", "none", "?"}
MAX_PAIRS = 6  # feature pairs drawn: every pair of the first four features
MAX_QQ = 4  # normal coordinates drawn in the QQ plot

GUIDELINES = {
    "residual": ("Guideline 4(i)", ("If performing some topological analysis is intractable, determine if a richer variational "
                 "family is needed by checking if the manifold was misestimated: find the f_θ(z) closest to each x, compute "
                 "R = x − f_θ(z), and test R for normality. If p(R) is not Gaussian, the manifold may have been misestimated.")),
    "gap": ("Guideline 4(ii)", ("Check whether the density was misestimated by an MFG-VAE: whether the log-likelihood "
            "increases significantly when using a rich variational family.")),
    "separability": ("Guideline 1", ("On semi-supervised tasks, before selecting a variational class, check to see if classes "
                     "are not easily separable. If they are not (a simple neural network predicts y|x with low balanced "
                     "accuracy), use a rich variational family for q(z|x) in the unlabelled data objective (U in eq. 11); "
                     "use an MFG family otherwise.")),
}
NOTES = [
    ("Guideline 2", ("Set the noise variance σ² using domain expertise, or by hyper-parameter selection with an unbiased "
     "low-variance log-likelihood estimator. Here σ² was {sigma2_how}; the learned values are listed above.")),
    ("Guideline 3", ("Investigate the topology of the data before choosing a variational family: if the data lie on a "
     "manifold in distorted Euclidean space (e.g. the Figure-8 example) or are clustered (the Clusters example), use a "
     "rich variational family if you need a very low-dimensional latent space. The scatter plots under Figures are a first look.")),
    ("Guideline 5", ("Whenever using a rich variational family, apply regularisation to the decoder's weights to prevent "
     "overfitting.")),
]


class DiagnoseError(ValueError):
    """The CSV or the settings cannot be diagnosed; the message says why (column, line)."""


# --------------------------------------------------------------------------------------------
# Input


def settings_from(overrides: dict | None = None) -> dict:
    """:data:`DEFAULTS` updated with ``overrides`` (None values keep the default, except ``sigma2``);
    unknown keys and bad values are errors."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise DiagnoseError(f"unknown diagnose setting(s): {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    s = {**DEFAULTS, **{k: v for k, v in overrides.items() if v is not None or k == "sigma2"}}
    problems = [f"{key} must be >= 1" for key in ("latent_dim", "restarts", "epochs", "batch_size", "iwae_samples")
                if int(s[key]) < 1]
    if not s["hidden"] or any(int(h) < 1 for h in s["hidden"]):
        problems.append("hidden must be a non-empty list of positive widths")
    if not (0 < s["train_fraction"] and 0 < s["val_fraction"] and s["train_fraction"] + s["val_fraction"] < 1):
        problems.append("train_fraction and val_fraction must be positive and sum to less than 1 (the rest is the test split)")
    if s["sigma2"] is not None and not float(s["sigma2"]) > 0:
        problems.append("sigma2 must be > 0 (or None: learned)")
    if not float(s["sigma2_init"]) > 0 or not float(s["lr"]) > 0:
        problems.append("sigma2_init and lr must be > 0")
    if problems:
        raise DiagnoseError("bad diagnose settings: " + "; ".join(problems))
    return s


def _cell_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_table(path, label_column: str | None = None, min_rows: int = 1) -> dict:
    """Features (N, D) float64 in the CSV's units, their column names and the labels (N,; '' for an
    unlabelled row; None without ``label_column``). Errors
    (:class:`DiagnoseError`) name the column and line of a non-numeric or missing value, a constant
    column, and fewer than ``min_rows`` rows."""
    path = Path(path)
    if not path.is_file():
        raise DiagnoseError(f"{path}: no such CSV file")
    with open(path, newline="") as f:
        lines = [(i + 1, row) for i, row in enumerate(csv.reader(f)) if any(cell.strip() for cell in row)]
    if not lines:
        raise DiagnoseError(f"{path}: empty file (a header row naming the columns is needed)")
    header = [h.strip() for h in lines[0][1]]
    body = lines[1:]
    if label_column is not None and label_column not in header:
        raise DiagnoseError(f"{path}: no label column {label_column!r}; columns: {', '.join(header)}")
    for line, row in body:
        if len(row) != len(header):
            raise DiagnoseError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
    features = [j for j, name in enumerate(header) if name != label_column]
    if not features:
        raise DiagnoseError(f"{path}: no feature columns besides the label {label_column!r}")
    x = np.empty((len(body), len(features)))
    for i, (line, row) in enumerate(body):
        for c, j in enumerate(features):
            cell = row[j].strip()
            if cell.lower() in MISSING:
                raise DiagnoseError(f"{path}: column {header[j]!r} has a missing value ({cell!r}) on line {line}; "
                                    "fill it in or drop the row")
            value = _cell_number(cell)
            if value is None or not math.isfinite(value):
                raise DiagnoseError(f"{path}: column {header[j]!r} is not numeric: line {line} has {cell!r}; every "
                                    "column except the label column (--label-column) must hold numbers")
            x[i, c] = value
    if len(body) < min_rows:
        raise DiagnoseError(f"{path}: {len(body)} data rows, too few: the training split needs at least one batch, "
                            f"which takes at least {min_rows} rows (or a smaller --batch-size)")
    for c, j in enumerate(features):
        if np.ptp(x[:, c]) == 0:
            raise DiagnoseError(f"{path}: column {header[j]!r} is constant ({x[0, c]:g} in every row); drop it")
    labels = None if label_column is None else np.array([row[header.index(label_column)].strip() for _, row in body])
    return {"x": x, "columns": [header[j] for j in features], "labels": labels}


def minimum_rows(settings: dict) -> int:
    """Rows a CSV needs for its training split to hold one batch."""
    return math.ceil(settings["batch_size"] / settings["train_fraction"])


def split_rows(n: int, settings: dict) -> dict[str, np.ndarray]:
    """Row indices of the train, val and test splits: a seeded permutation cut by the fractions."""
    order = np.random.default_rng(derive_seed(settings["seed"], "diagnose", "split")).permutation(n)
    n_train, n_val = int(settings["train_fraction"] * n), int(settings["val_fraction"] * n)
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


# --------------------------------------------------------------------------------------------
# Training


def _single(stack: BatchedVAE, index: int, settings: dict) -> BatchedVAE:
    """Model ``index`` of a stack as a one-model stack."""
    import torch

    from fmvae.nn import BatchedVAE

    model = BatchedVAE(1, stack.data_dim, stack.latent_dim, settings["hidden"], settings["negative_slope"], seeds=[0],
                       sigma2_init=torch.ones(1, stack.data_dim), learn_sigma2=False)
    model.load_arrays({k: v[index:index + 1] for k, v in stack.state_arrays().items()})
    return model.eval()


def train_family(family: str, x: dict[str, torch.Tensor], settings: dict) -> dict:
    """``restarts`` models of ``family`` (``vae`` or ``iwae``) trained as one stack; the one with the
    best validation bound is selected. Returns the selected one-model stack (``model``) and the
    per-restart record."""
    import torch

    from fmvae import methods
    from fmvae.nn import BatchedVAE
    from fmvae.train.loop import Trainer, evaluate_objective

    method = methods.get(family)
    m, dim = settings["restarts"], x["train"].shape[1]
    seeds = [derive_seed(settings["seed"], "diagnose", family, r) for r in range(m)]
    learned = settings["sigma2"] is None
    sigma2 = torch.full((m, 1), float(settings["sigma2_init"] if learned else settings["sigma2"]))
    stack = BatchedVAE(m, dim, settings["latent_dim"], settings["hidden"], settings["negative_slope"], seeds=seeds,
                       sigma2_init=sigma2, learn_sigma2=learned)
    hyper = {name: np.full(m, settings["iwae_samples"]) for name in method.hyper}
    training = {k: settings[k] for k in ("epochs", "batch_size", "lr", "log_every_epochs")}
    trainer = Trainer(stack, method, hyper, training, seeds=[s + 1 for s in seeds], name=f"diagnose {family}")
    result = trainer.run(x["train"], x["val"])
    val = evaluate_objective(stack, method, hyper, x["val"], seeds=[s + 2 for s in seeds])
    usable = ~result.diverged & np.isfinite(val)
    if not usable.any():
        raise DiagnoseError(f"every {family} restart diverged; try a smaller --lr or more restarts")
    chosen = int(np.flatnonzero(usable)[np.argmax(val[usable])])
    model = _single(stack, chosen, settings)
    log.info("diagnose %s: restart %d selected (validation bound %.4f; all: %s), %.1f s", family, chosen, val[chosen],
             ", ".join(f"{v:.4f}" for v in val), result.seconds)
    return {"model": model, "selected": chosen, "val_bound": val.tolist(), "diverged": result.diverged.tolist(),
            "final_loss": result.curve[:, -1].tolist(), "seconds": result.seconds,
            "sigma2": torch.exp(model.log_sigma2[0]).detach().double().numpy().tolist()}


# --------------------------------------------------------------------------------------------
# The checks


def checks_settings(settings: dict) -> dict:
    """The checks' settings: the config schema's defaults (``checks``, ``evaluation.quadrature_points``),
    the seed, and ``settings['checks']``'s overrides."""
    from fmvae import checks
    from fmvae.config import validate_config

    base = checks.checks_spec(validate_config({}))
    unknown = sorted(set(settings["checks"]) - set(base))
    if unknown:
        raise DiagnoseError(f"unknown checks setting(s): {', '.join(unknown)}; known: {', '.join(base)}")
    return {**base, "seed": settings["seed"], **settings["checks"]}


def residual_coordinates(model: BatchedVAE, x: torch.Tensor, settings: dict, seed: int) -> np.ndarray:
    """The residual's whitened normal coordinates Nᵀ(x − f_θ(z*))/σ (N, D − K) that
    :func:`fmvae.checks.residual_normality` tests (the same closest points: same settings and seed),
    for the QQ plot."""
    import torch

    from fmvae import checks

    decode = checks._model_decode(model)
    sigma2 = torch.exp(model.log_sigma2[0]).detach().double().numpy()
    scale = torch.as_tensor(np.sqrt(sigma2), dtype=torch.float32)
    with torch.no_grad():
        mean, _ = model.encode(x[None])
    z = checks.closest_points(x, decode, model.latent_dim, sigma2, settings, seed, mean[0])
    residual = ((x - checks._decode_chunks(decode, z)) / scale).double().numpy()
    basis = checks.normal_basis(checks._jacobian(decode, z, scale))
    return np.einsum("ndj,nd->nj", basis, residual)


def diagnose(csv_path, label_column: str | None = None, settings: dict | None = None) -> dict:
    """Every step of the module docstring on one CSV. Returns a result dict: the input, the splits,
    each family's training record, ``residual``, ``gap``, ``separability`` (None without labels),
    ``warnings`` (check, guideline, message), ``warning`` (any) and ``arrays`` for the figures (not
    JSON: data and model samples in the CSV's units, the residual's normal coordinates)."""
    import torch

    from fmvae import checks, separability
    from fmvae.evaluation import sample_x
    from fmvae.metrics.loglik import best_log_likelihood

    started = time.perf_counter()
    settings = settings_from(settings)
    check = checks_settings(settings)
    table = read_table(csv_path, label_column, minimum_rows(settings))
    x_raw = table["x"]
    n, dim = x_raw.shape
    mean, std = x_raw.mean(0), x_raw.std(0)
    xs = torch.as_tensor((x_raw - mean) / std, dtype=torch.float32)
    rows = split_rows(n, settings)
    x = {name: xs[torch.as_tensor(index)] for name, index in rows.items()}
    log.info("diagnose %s: %d rows, %d features (%s); %d train / %d validation / %d test; K = %d", csv_path, n, dim,
             ", ".join(table["columns"]), *(len(rows[k]) for k in ("train", "val", "test")), settings["latent_dim"])
    sep_result = None
    if label_column is not None:
        labelled = table["labels"] != ""
        try:
            sep_settings = separability.settings_from({"seed": settings["seed"], **settings["separability"]})
            sep_result = separability.separability(xs.double().numpy()[labelled], table["labels"][labelled], sep_settings,
                                                   name=Path(csv_path).stem)
        except separability.SeparabilityError as err:
            raise DiagnoseError(f"{csv_path}: label column {label_column!r}: {err}") from None
        sep_result["n_unlabelled"] = int((~labelled).sum())
    trained = {family: train_family(family, x, settings) for family in ("vae", "iwae")}
    vae, iwae = trained["vae"]["model"], trained["iwae"]["model"]
    seed = derive_seed(settings["seed"], "diagnose", "checks")
    with torch.no_grad():
        encoder_mean, _ = vae.encode(x["test"][None])
    sigma2 = torch.exp(vae.log_sigma2[0]).detach().double().numpy()
    residual = checks.residual_normality(x["test"], checks._model_decode(vae), vae.latent_dim, sigma2, check, seed,
                                         extra=encoder_mean[0])
    coords = residual_coordinates(vae, x["test"], check, seed) if residual["normal_dims"] else np.zeros((len(x["test"]), 0))
    estimator, ll_vae = best_log_likelihood(vae, x["test"], check, seed + 1)
    _, ll_iwae = best_log_likelihood(iwae, x["test"], check, seed + 1)
    gap = {"estimator": estimator, **checks.loglik_gap(ll_vae[0], ll_iwae[0], check["gap_threshold"], check["gap_z"])}
    warnings = []
    if residual["residual_warning"]:
        warnings.append({"check": "residual", "message": (
            f"the residual off the VAE's learned manifold is not Gaussian (p = {residual['residual_pvalue']:.3g} < "
            f"{check['alpha']:g}): the manifold may have been misestimated by the MFG-VAE; consider a richer "
            "variational family")})
    if gap["gap_warning"]:
        warnings.append({"check": "gap", "message": (
            f"the IWAE explains held-out data better than the MFG-VAE by {gap['loglik_gap']:.3f} ± "
            f"{gap['loglik_gap_se']:.3f} nats per point (> {check['gap_threshold']:g} and {gap['loglik_gap_z']:.1f} "
            f"standard errors > {check['gap_z']:g}): the MFG-VAE misestimates the density; use a richer variational family")})
    if sep_result is not None and sep_result["warn"]:
        warnings.append({"check": "separability", "message": (
            f"the classes are not easily separable (balanced accuracy {sep_result['balanced_accuracy']:.3f}, normalised "
            f"entropy {sep_result['normalised_entropy']:.3f}): in a semi-supervised model use a rich variational family "
            "for q(z|x) in the unlabelled objective")})
    for w in warnings:
        w["guideline"], w["guideline_text"] = GUIDELINES[w["check"]]
    generator = torch.Generator().manual_seed(seed + 2)
    samples = {family: sample_x(trained[family]["model"], n, generator)[0].double().numpy() * std + mean
               for family in ("vae", "iwae")}
    result = {
        "csv": str(csv_path), "columns": table["columns"], "label_column": label_column, "n_rows": n,
        "feature_mean": mean.tolist(), "feature_std": std.tolist(),
        "splits": {k: len(v) for k, v in rows.items()},
        "settings": {k: v for k, v in settings.items()}, "checks_settings": check,
        "vae": {k: v for k, v in trained["vae"].items() if k != "model"},
        "iwae": {k: v for k, v in trained["iwae"].items() if k != "model"},
        "residual": residual, "gap": gap, "separability": sep_result,
        "warnings": warnings, "warning": bool(warnings),
        "arrays": {"x": x_raw, "vae_samples": samples["vae"], "iwae_samples": samples["iwae"], "residual_coords": coords},
    }
    result["seconds"] = time.perf_counter() - started
    log.info("diagnose %s: %s in %.1f s", csv_path, "WARNING: " + "; ".join(w["check"] for w in warnings) if warnings
             else "no warning", result["seconds"])
    return result


# --------------------------------------------------------------------------------------------
# Figures


def feature_pairs(dim: int) -> list[tuple[int, int]]:
    """The feature pairs drawn: every pair of the first four features (at most :data:`MAX_PAIRS`)."""
    return list(combinations(range(min(dim, 4)), 2))[:MAX_PAIRS]


def plot_marginals(result: dict, path, dpi: int = 120) -> None:
    """Per feature pair (rows): the data, samples of the selected MFG-VAE and of the selected IWAE
    (as many as the data's rows), in the CSV's units on shared axes; one feature: histograms."""
    from fmvae.report.plotting import legend_right, plt, save_figure

    arrays, columns = result["arrays"], result["columns"]
    panels = [("data", arrays["x"], "0.3"), ("MFG-VAE samples", arrays["vae_samples"], "C0"),
              ("IWAE samples", arrays["iwae_samples"], "C1")]
    if len(columns) == 1:
        fig, ax = plt.subplots(figsize=(4.0, 2.6))
        bins = np.histogram_bin_edges(np.concatenate([p[1][:, 0] for p in panels]), 60)
        for label, values, color in panels:
            ax.hist(values[:, 0], bins=bins, density=True, histtype="step", color=color, label=label)
        ax.set_xlabel(columns[0])
        ax.set_ylabel("density")
        legend_right(ax)
        save_figure(fig, [path], dpi)
        return
    pairs = feature_pairs(len(columns))
    fig, axes = plt.subplots(len(pairs), 3, figsize=(8.4, 2.7 * len(pairs)), squeeze=False)
    for row, (i, j) in enumerate(pairs):
        both = np.concatenate([p[1][:, [i, j]] for p in panels])
        lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
        pad = 0.08 * (hi - lo)
        for ax, (label, values, color) in zip(axes[row], panels):
            ax.scatter(values[:, i], values[:, j], s=3, color=color, alpha=0.5, linewidths=0)
            ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
            ax.set_xlabel(columns[i])
            ax.set_ylabel(columns[j])
            ax.set_title(f"{label} ({len(values)})")
    fig.tight_layout()
    save_figure(fig, [path], dpi)


def plot_qq(result: dict, path, dpi: int = 120) -> None:
    """Normal QQ plot of each of the first :data:`MAX_QQ` normal coordinates of the selected VAE's
    residual (test split): under a correct model they lie on the line y = x."""
    from scipy.stats import norm

    from fmvae.report.plotting import plt, save_figure

    coords = result["arrays"]["residual_coords"]
    shown = min(coords.shape[1], MAX_QQ)
    pvalues = result["residual"]["residual_pvalues"]
    fig, axes = plt.subplots(1, shown, figsize=(2.8 * shown, 2.8), squeeze=False)
    for j, ax in enumerate(axes[0]):
        values = np.sort(coords[:, j])
        theory = norm.ppf((np.arange(1, len(values) + 1) - 0.5) / len(values))
        reach = max(np.abs(theory).max(), np.abs(values).max())
        ax.plot([-reach, reach], [-reach, reach], color="0.6", lw=0.8, zorder=1)
        ax.scatter(theory, values, s=5, color="C0", linewidths=0, zorder=2)
        ax.set_xlabel("N(0, 1) quantile")
        ax.set_ylabel(f"normal coordinate {j + 1} of (x − f(z*))/σ")
        ax.set_title(f"K² p = {pvalues[j]:.3g}")
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    save_figure(fig, [path], dpi)


# --------------------------------------------------------------------------------------------
# Reports


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def report_blocks(result: dict, figures: dict[str, str]) -> list[tuple]:
    """The report as blocks, rendered by :func:`to_markdown` and :func:`to_html`: ("h1"/"h2"/"p", text),
    ("list", items), ("table", head, rows), ("img", file name, caption). Text may hold **bold**."""
    from fmvae import separability

    res, gap, sep, check = result["residual"], result["gap"], result["separability"], result["checks_settings"]
    s = result["settings"]
    name = Path(result["csv"]).name
    blocks = [("h1", f"Section 9 diagnosis of {name}")]
    if result["warning"]:
        blocks.append(("p", (f"**Verdict: WARNING** ({len(result['warnings'])} of the checks warn). An MFG-VAE with a "
                            f"{s['latent_dim']}-dimensional latent shows signs of the failure modes of Yacoby, Pan & "
                            "Doshi-Velez on these data.")))
    else:
        blocks.append(("p", (f"**Verdict: no warning.** None of the checks finds that an MFG-VAE with a "
                            f"{s['latent_dim']}-dimensional latent misestimates these data (the checks are not perfect: "
                            "the paper notes that many factors independent of the ELBO's optima can hurt a model).")))
    if result["warnings"]:
        blocks.append(("h2", "Warnings and the guidelines they come from"))
        blocks.append(("list", [f"**{w['check']}**: {w['message']}. *From the paper's Section 9, {w['guideline']}*: "
                                f"\"{w['guideline_text']}\"" for w in result["warnings"]]))
    rows = [["residual normality off the learned manifold (VAE)", "Guideline 4(i)",
             (f"p = {_fmt(res['residual_pvalue'], 3)} over {res['normal_dims']} normal coordinate(s) of {res['n_points']} "
             f"test points; mean squared normal coordinate {_fmt(res['residual_var_ratio'], 3)} (1 under a correct model)"),
             f"warn when p < {check['alpha']:g}",
             "not applicable (K ≥ D)" if not res["normal_dims"] else ("**warning**" if res["residual_warning"] else "pass")],
            ["IWAE-over-VAE log-likelihood gap (test split)", "Guideline 4(ii)",
             (f"log p(x): VAE {gap['loglik']:.4f}, IWAE {gap['loglik_reference']:.4f} nats per point; gap "
             f"{gap['loglik_gap']:.4f} ± {_fmt(gap['loglik_gap_se'], 3)} (z = {_fmt(gap['loglik_gap_z'], 3)}; "
             f"estimator {gap['estimator']})"),
             f"warn when gap > {check['gap_threshold']:g} nats and z > {check['gap_z']:g}",
             "**warning**" if gap["gap_warning"] else "pass"]]
    if sep is not None:
        rows.append(["class separability of y|x", "Guideline 1",
                     (f"balanced accuracy {sep['balanced_accuracy']:.3f} ± {sep['balanced_accuracy_std']:.3f} (chance "
                     f"{sep['chance']:.3f}, {sep['folds']}-fold cross-validation over {sep['n_labelled']} labelled rows, "
                     f"{sep['n_unlabelled']} unlabelled); mean predictive entropy / log C {sep['normalised_entropy']:.3f}"),
                     "warn when balanced accuracy < {min_balanced_accuracy:g} or entropy / log C > "
                     "{max_normalised_entropy:g}".format(**separability.settings_from(s["separability"])),
                     "**warning**" if sep["warn"] else "pass"])
    else:
        rows.append(["class separability of y|x", "Guideline 1", "no label column given (--label-column)", "–", "not run"])
    blocks += [("h2", "Checks"), ("table", ["check", "from", "numbers", "rule", "result"], rows)]
    blocks.append(("h2", "Figures"))
    if "marginals" in figures:
        blocks.append(("img", figures["marginals"], ("Learned vs data: the data (all rows) beside as many samples of the "
                       "selected MFG-VAE and of the selected IWAE, for pairs of features, in the CSV's units. A misestimated "
                       "p(x) shows as samples where the data have none, or missing clusters (guideline 3: look at the "
                       "topology).")))
    if "qq" in figures:
        blocks.append(("img", figures["qq"], ("Normal QQ plot of the residual's normal coordinates, whitened by the "
                       "learned σ (test split, selected VAE): on the line under a correct model; curvature or heavy tails "
                       "say that p(R) is not Gaussian (guideline 4(i)).")))
    blocks.append(("h2", "Models"))
    sigma2_how = "learned per feature" if s["sigma2"] is None else f"fixed at {s['sigma2']:g} (standardised units)"
    model_rows = []
    for family, label in (("vae", "MFG-VAE"), ("iwae", f"IWAE (S = {s['iwae_samples']})")):
        t = result[family]
        model_rows.append([label, str(len(t["val_bound"])), str(t["selected"]),
                           ", ".join(f"{v:.4f}" for v in t["val_bound"]), str(sum(t["diverged"])),
                           ", ".join(f"{v:.4g}" for v in t["sigma2"]), f"{t['seconds']:.1f}"])
    blocks.append(("table", ["family", "restarts", "selected", "validation bound per restart (nats per point)", "diverged",
                             "σ² of the selected (standardised units)", "training (s)"], model_rows))
    blocks.append(("p", (f"Each family: {s['restarts']} random restarts trained as one stack, K = {s['latent_dim']}, "
                        f"leaky-ReLU MLPs {'×'.join(map(str, s['hidden']))}, Adam lr {s['lr']:g}, batches of "
                        f"{s['batch_size']}, {s['epochs']} epochs, σ² {sigma2_how}; the restart with the best validation "
                        "bound (ELBO, IWAE bound) is selected.")))
    splits = result["splits"]
    blocks.append(("h2", "Data"))
    blocks.append(("p", f"{result['n_rows']} rows; split by a seeded permutation (seed {s['seed']}) into {splits['train']} "
                        f"training ({s['train_fraction']:g}), {splits['val']} validation ({s['val_fraction']:g}) and "
                        f"{splits['test']} test rows. Features standardised with the data's own mean and standard "
                        "deviation" + (f"; label column {result['label_column']!r}." if result["label_column"] else ".")))
    blocks.append(("table", ["feature", "mean", "standard deviation"],
                   [[c, f"{m:.4g}", f"{d:.4g}"] for c, m, d in zip(result["columns"], result["feature_mean"],
                                                                    result["feature_std"])]))
    blocks.append(("h2", "The paper's other guidelines"))
    blocks.append(("list", [f"*{g}*: " + text.format(sigma2_how=sigma2_how) for g, text in NOTES]))
    blocks.append(("p", f"Computed by `fmvae diagnose` in {result['seconds']:.0f} s; every number is in result.json."))
    return blocks


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out.append(f"# {block[1]}")
        elif kind == "h2":
            out.append(f"## {block[1]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            head, rows = block[1], block[2]
            out.append("\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                                 + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]))
        elif kind == "img":
            out.append(f"![{Path(block[1]).stem}]({block[1]})\n\n*{block[2]}*")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """Escape, then **bold**, *italic* and `code` as HTML."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}"
         "th{background:#f3f3f3}img{max-width:100%}figure{margin:1.5em 0}figcaption{font-size:.9em;color:#555}")


def to_html(blocks: list[tuple], images: dict[str, bytes]) -> str:
    """One self-contained page: ``images`` (file name -> PNG bytes) embedded as base64 data URIs."""
    title = next(b[1] for b in blocks if b[0] == "h1")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
           f"<style>{STYLE}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "p"):
            out.append(f"<{kind}>{_inline_html(block[1])}</{kind}>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            head, rows = block[1], block[2]
            out.append("<table><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in rows)
                       + "</table>")
        elif kind == "img":
            data = base64.b64encode(images[block[1]]).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(block[1])}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_inline_html(block[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "arrays"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


def write_report(result: dict, out_dir, dpi: int = 120) -> dict[str, Path]:
    """Write ``report.html`` (self-contained), ``report.md``, ``result.json`` and the figures
    (``marginals.png``, ``residual_qq.png`` when the residual test applies) into ``out_dir``."""
    from fmvae.store import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {"marginals": "marginals.png"}
    plot_marginals(result, out_dir / figures["marginals"], dpi)
    if result["arrays"]["residual_coords"].shape[1]:
        figures["qq"] = "residual_qq.png"
        plot_qq(result, out_dir / figures["qq"], dpi)
    blocks = report_blocks(result, figures)
    paths = {"html": out_dir / "report.html", "markdown": out_dir / "report.md", "json": out_dir / "result.json",
             **{k: out_dir / v for k, v in figures.items()}}
    images = {v: (out_dir / v).read_bytes() for v in figures.values()}
    for key, text in (("html", to_html(blocks, images)), ("markdown", to_markdown(blocks)),
                      ("json", json.dumps(_jsonable(result), indent=2) + "\n")):
        with atomic_path(paths[key]) as tmp:
            Path(tmp).write_text(text)
    return paths
