"""The paper's Section 9 class-separability check (docs/methods.md §5, guideline 1): before choosing a
variational family for a semi-supervised model, train a small classifier for y|x. Low balanced
accuracy, or a high mean predictive entropy E_{p(x,y)} H[p(y|x)], says that x|y = 0 and x|y = 1 lie
on roughly the same manifold, and warns that an MFG family in the unlabelled objective will cause
functional collapse (Section 7: the paper expects this of both semi-circle sets and of the three
real sets, chosen for their class overlap).

What is computed, for one labelled set (x_n, y_n), n = 1..N, with C classes:

* **Labels.** A practitioner has only the labels observed, so from our data files the check uses
  the training points whose label is observed (``train/y_observed``) and nothing else [choice]; a
  file without that mask uses every training label (with a logged note). Continuous labels (the
  continuous semi-circle set, y ~ N(0, 1), file attribute ``label == "normal"``) are binarised at
  0, class 0 for y < 0 and class 1 for y ≥ 0 [choice]: guideline 1 asks for a classifier, and
  y ≥ 0 / y < 0 are the two halves of the label's distribution.
* **Cross-validation.** Stratified k-fold over the labelled points (``folds``; reduced, with a
  logged note, to the size of the smallest class when that class has fewer points; an error when
  it has fewer than 2), so the check works on a user's own small labelled set. Every point is
  predicted once, by the model that did not see it.
* **Classifier.** Per fold, a leaky-ReLU MLP (``hidden`` units, ``negative_slope``) on features
  standardised with that fold's training mean and standard deviation, trained by Adam (``lr``) on
  the cross-entropy, full-batch (``batch_size`` 0) or on mini-batches, for at most ``epochs``
  epochs. Early stopping [choice]: a stratified ``validation_fraction`` of the fold's training
  points is held out, and the parameters with the lowest validation loss are kept (training stops
  after ``patience`` epochs without improvement; ``patience`` 0 trains all ``epochs`` and keeps the
  last parameters). Without early stopping an MLP on a small set grows over-confident, and its
  held-out entropy would understate the overlap. ``class_weight: balanced`` [choice] weights each
  class equally in the loss (the posterior under a uniform class prior), so that the classifier
  targets balanced accuracy, and the entropy of identical class distributions is log C whatever
  the class sizes; ``none`` is the plain cross-entropy (the posterior under the empirical prior).
  The k fold models are trained as one batched computation (:class:`fmvae.nn.BatchedMLP`, one
  model per fold, each with its own random stream), seeded from ``seed`` and the data set's name.
* **Report.** Balanced accuracy (mean per-class recall: the majority-class predictor scores 1/C,
  whatever the class sizes), mean ± std over the folds; chance 1/C; the mean predictive entropy of
  the held-out predictions in nats and normalised by log C (1: uniform, 0: certain); the number of
  labelled points per class. ``warn`` when the balanced accuracy is below
  ``min_balanced_accuracy`` or the normalised entropy above ``max_normalised_entropy`` [choice].

Settings are a dict; every key's default is the config schema's (the ``separability`` section of
workflow/schemas/config.schema.yaml, read by :func:`defaults`), so a CSV check outside the workflow
runs with the same settings as the workflow's.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from fmvae import store
from fmvae.checks import format_cell
from fmvae.config import derive_seed, fill_defaults, load_schema
from fmvae.nn import BatchedMLP
from fmvae.store import atomic_path

log = logging.getLogger(__name__)

@functools.cache
def defaults() -> dict:
    """Every setting's default: the schema's ``separability`` section, and seed 0 (the workflow
    passes the config's base seed)."""
    return {**fill_defaults({}, load_schema()["properties"]["separability"]), "seed": 0}


# Section 7 / Appendix E.3: the paper built (semi-circles) or chose (the real sets) these for their
# class overlap, so it expects the check to warn on each.
PAPER_EXPECTS = {name: "warning" for name in ("discrete_semicircle", "continuous_semicircle",
                                              "diabetic_retinopathy", "contraceptive", "titanic")}

COLUMNS = ["dataset", "source", "labels", "n_labelled", "n_classes", "class_counts", "folds", "balanced_accuracy",
           "balanced_accuracy_std", "chance", "mean_entropy_nats", "normalised_entropy", "warn", "paper_expects"]


class SeparabilityError(ValueError):
    """The input cannot be checked (missing file, no labels, a class too small); the message says why."""


def settings_from(spec: dict | None = None) -> dict:
    """:func:`defaults` updated with ``spec``; unknown keys and bad values are errors."""
    spec = dict(spec or {})
    unknown = sorted(set(spec) - set(defaults()))
    if unknown:
        raise SeparabilityError(f"unknown separability setting(s): {', '.join(unknown)}; known: {', '.join(defaults())}")
    settings = {**defaults(), **spec}
    problems = []
    if not settings["hidden"] or any(int(h) < 1 for h in settings["hidden"]):
        problems.append("hidden: a non-empty list of positive widths")
    for key, least in (("epochs", 1), ("folds", 2)):
        if int(settings[key]) < least:
            problems.append(f"{key}: >= {least}")
    if int(settings["batch_size"]) < 0 or int(settings["patience"]) < 0:
        problems.append("batch_size and patience: >= 0")
    if not 0 <= float(settings["validation_fraction"]) < 1:
        problems.append("validation_fraction: in [0, 1)")
    if not float(settings["lr"]) > 0:
        problems.append("lr: > 0")
    if settings["class_weight"] not in ("balanced", "none"):
        problems.append("class_weight: balanced or none")
    if problems:
        raise SeparabilityError("bad separability settings: " + "; ".join(problems))
    return settings


def separability_spec(config: dict) -> dict:
    """The settings the workflow passes: the config's ``separability`` section (if any) over
    :func:`defaults`, with the config's base seed unless the section sets its own."""
    section = dict(config.get("separability") or {})
    section.setdefault("seed", config.get("seed", defaults()["seed"]))
    return settings_from(section)


# The workflow's inputs: version 0 of the semi-supervised synthetic sets, split 0 of the real sets.
SEMI_SUPERVISED_SYNTHETIC = ("discrete_semicircle", "continuous_semicircle")
OUTPUTS = ("results/tables/separability.csv", "results/tables/separability.md")


def workflow_data_files(synthetic, real) -> list[str]:
    """Data files the workflow checks, of the configured sets (``synthetic``, ``real``: their names)."""
    return [f"results/data/{name}/v0.h5" for name in SEMI_SUPERVISED_SYNTHETIC if name in synthetic] + [
        f"results/data/{name}/split0.h5" for name in real]


def workflow_outputs(synthetic, real) -> list[str]:
    """The workflow's two tables, or none when no semi-supervised set is configured."""
    return list(OUTPUTS) if workflow_data_files(synthetic, real) else []


# --------------------------------------------------------------------------------------------
# Labelled sets


@dataclass
class LabelledSet:
    """Features x (N, D), class indices y (N,) in 0..C−1, and where they came from."""

    name: str
    x: np.ndarray
    y: np.ndarray
    source: str
    labels: str  # how the labels were chosen, for the table
    class_names: list[str]


def class_indices(y, continuous: bool = False) -> tuple[np.ndarray, list[str]]:
    """Class indices 0..C−1 of labels ``y`` and the class names; continuous labels are binarised
    at 0 (class 0: y < 0, class 1: y ≥ 0) [choice, see the module docstring]."""
    y = np.asarray(y)
    if continuous:
        return (y >= 0).astype(np.int64), ["y<0", "y>=0"]
    values, index = np.unique(y, return_inverse=True)
    return index.astype(np.int64).reshape(-1), [str(v) for v in values]


def read_h5(path) -> LabelledSet:
    """The observed training labels of one of our data files (``v<k>.h5`` or ``split<k>.h5``)."""
    path = Path(path)
    if not path.is_file():
        raise SeparabilityError(f"{path}: no such data file")
    try:
        with h5py.File(path, "r") as f:
            attrs = store.read_attrs(f)
            if "train" not in f or "x" not in f["train"]:
                raise SeparabilityError(f"{path}: no train/x (not one of fmvae's data files)")
            train = f["train"]
            if "y" not in train:
                raise SeparabilityError(f"{path}: has no labels (train/y); the check needs a labelled set")
            x, y = train["x"][()], train["y"][()]
            if "y_observed" in train:
                observed = train["y_observed"][()].astype(bool)
                labels = "observed training labels"
            else:
                observed = np.ones(len(y), dtype=bool)
                labels = "all training labels"
                log.info("%s: no train/y_observed; using every training label", path)
    except OSError as err:
        raise SeparabilityError(f"{path}: cannot read it as HDF5 ({err})") from None
    name = str(attrs.get("dataset") or path.parent.name)
    continuous = attrs.get("label") == "normal"
    y_index, class_names = class_indices(y[observed], continuous)
    if continuous:
        labels += ", binarised at 0"
    x = np.asarray(x, dtype=np.float64)
    x = (x[:, None] if x.ndim == 1 else x)[observed]
    return LabelledSet(name, x, y_index, str(path), labels, class_names)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_csv(path, label_column: str | None = None) -> LabelledSet:
    """A user's labelled CSV: a header row, the label in ``label_column`` (default: the last
    column), every other column whose values in the labelled rows are all numbers is a feature
    (other columns are skipped, with a logged note). Rows with an empty label are unlabelled and
    ignored. Labels are class names (any text). Features are standardised over the labelled rows
    (the classifier standardises again per fold, which changes nothing)."""
    path = Path(path)
    if not path.is_file():
        raise SeparabilityError(f"{path}: no such CSV file")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise SeparabilityError(f"{path}: empty file (a header row is needed)")
    header = [h.strip() for h in rows[0]]
    label_column = header[-1] if label_column is None else label_column
    if label_column not in header:
        raise SeparabilityError(f"{path}: no column {label_column!r}; columns: {', '.join(header)}")
    target = header.index(label_column)
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    short = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if short:
        raise SeparabilityError(f"{path}: line(s) {', '.join(map(str, short[:5]))} do not have {len(header)} fields")
    labelled = [r for r in body if r[target].strip()]
    if not labelled:
        raise SeparabilityError(f"{path}: no labelled rows (column {label_column!r} is empty everywhere)")
    features, skipped = [], []
    for j, name in enumerate(header):
        if j == target:
            continue
        values = [_number(r[j].strip()) for r in labelled]
        if any(v is None or not math.isfinite(v) for v in values):
            skipped.append(name)
        else:
            features.append(values)
    if skipped:
        log.info("%s: skipped non-numeric or incomplete column(s): %s", path, ", ".join(skipped))
    if not features:
        raise SeparabilityError(f"{path}: no numeric feature columns besides the label {label_column!r}")
    x = np.asarray(features, dtype=np.float64).T
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    y, class_names = class_indices([r[target].strip() for r in labelled])
    return LabelledSet(path.stem, x, y, str(path), f"column {label_column!r}", class_names)


# --------------------------------------------------------------------------------------------
# Cross-validated classifier


def stratified_folds(y: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index (N,) of each point: each class shuffled and dealt round-robin over the folds,
    from a random starting fold, so every fold gets ⌊n_c/k⌋ or ⌈n_c/k⌉ points of class c."""
    fold = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        fold[members] = (np.arange(len(members)) + rng.integers(folds)) % folds
    return fold


def _validation_mask(y: np.ndarray, train: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A stratified ``fraction`` of the training points ``train`` (bool, N) for early stopping;
    every class keeps at least one point for training."""
    out = np.zeros(len(y), dtype=bool)
    if fraction <= 0:
        return out
    for c in np.unique(y[train]):
        members = rng.permutation(np.flatnonzero(train & (y == c)))
        out[members[:min(round(fraction * len(members)), len(members) - 1)]] = True
    return out


def _weights(y: np.ndarray, mask: np.ndarray, n_classes: int, balanced: bool) -> np.ndarray:
    """Per-point loss weights (M, N) summing to 1 per model over its ``mask`` (M, N)."""
    w = mask.astype(np.float64)
    if balanced:
        onehot = np.eye(n_classes)[y]  # (N, C)
        counts = w @ onehot  # (M, C)
        present = (counts > 0).sum(1, keepdims=True)
        w = w * (1.0 / np.maximum(counts, 1) / np.maximum(present, 1))[:, y]
    total = w.sum(1, keepdims=True)
    return w / np.where(total > 0, total, 1.0)


def _cross_entropy(net: BatchedMLP, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-model weighted cross-entropy (M,) of inputs x (M, n, D), labels y (n,), weights w (M, n)."""
    logp = torch.log_softmax(net(x), dim=-1)
    return -(w * logp.gather(-1, y.expand(x.shape[0], -1)[..., None])[..., 0]).sum(1)


def cross_validate(x, y, settings: dict, seed: int, n_classes: int | None = None) -> dict:
    """Stratified k-fold held-out predictions of the MLP classifier of class indices ``y`` from
    features ``x`` (module docstring). Returns ``folds`` (used), ``probabilities`` (N, C) of each
    point from the model that did not see it, ``fold`` (N,) and ``epochs`` trained per fold."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n, dim = x.shape
    n_classes = int(n_classes or y.max() + 1)
    folds = int(settings["folds"])
    rng = np.random.default_rng(seed)
    fold = stratified_folds(y, folds, rng)
    test = fold[None, :] == np.arange(folds)[:, None]  # (M, N)
    train = ~test
    val = np.stack([_validation_mask(y, train[m], float(settings["validation_fraction"]), rng) for m in range(folds)])
    fit = train & ~val
    # Features standardised with each fold's fitting points: inputs (M, N, D).
    mean = np.stack([x[fit[m]].mean(0) for m in range(folds)])
    std = np.stack([x[fit[m]].std(0) for m in range(folds)])
    xs = torch.as_tensor((x[None] - mean[:, None]) / np.where(std > 0, std, 1.0)[:, None], dtype=torch.float32)
    yt = torch.as_tensor(y)
    balanced = settings["class_weight"] == "balanced"
    w_fit = torch.as_tensor(_weights(y, fit, n_classes, balanced), dtype=torch.float32)
    w_val = torch.as_tensor(_weights(y, val, n_classes, balanced), dtype=torch.float32)
    has_val = torch.as_tensor(val.any(1))
    net = BatchedMLP(folds, [dim, *map(int, settings["hidden"]), n_classes], float(settings["negative_slope"]),
                     seeds=[derive_seed(seed, "fold", m) for m in range(folds)])
    optimiser = torch.optim.Adam(net.parameters(), lr=float(settings["lr"]))
    batch = int(settings["batch_size"]) or n
    patience = int(settings["patience"])
    # Early stopping per model, as masks: a stopped model's slice keeps training with the others
    # (Adam is elementwise, so models never interact), but its kept parameters no longer change.
    watch = has_val & (patience > 0)  # models whose parameters are chosen by validation loss
    best_loss = torch.full((folds,), math.inf)
    best = [p.detach().clone() for p in net.parameters()]
    since = torch.zeros(folds, dtype=torch.long)
    stopped = torch.zeros(folds, dtype=torch.bool)
    epochs = torch.zeros(folds, dtype=torch.long)
    generator = torch.Generator().manual_seed(int(seed))
    for _ in range(int(settings["epochs"])):
        order = torch.randperm(n, generator=generator) if batch < n else torch.arange(n)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            w = w_fit[:, idx]
            w = w / w.sum(1, keepdim=True).clamp_min(1e-30)  # each model's share of this batch
            optimiser.zero_grad(set_to_none=True)
            _cross_entropy(net, xs[:, idx], yt[idx], w).sum().backward()
            optimiser.step()
        epochs += (~stopped).long()
        with torch.no_grad():
            loss = _cross_entropy(net, xs, yt, w_val) if bool(watch.any()) else best_loss
            improved = ~stopped & (~watch | (loss < best_loss))  # unwatched models keep their latest parameters
            best_loss = torch.where(improved, loss, best_loss)
            since = torch.where(improved, torch.zeros_like(since), since + 1)
            for keep, p in zip(best, net.parameters()):
                keep[improved] = p.detach()[improved]
            stopped |= watch & (since >= patience)
        if bool(stopped.all()):
            break
    with torch.no_grad():
        for keep, p in zip(best, net.parameters()):
            p.copy_(keep)
        probs = torch.softmax(net(xs).double(), dim=-1).numpy()  # (M, N, C)
    return {"folds": folds, "fold": fold, "probabilities": probs[fold, np.arange(n)], "epochs": epochs.tolist()}


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean over the classes present in ``y_true`` of the recall (fraction of the class predicted as it)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def entropy(probabilities) -> np.ndarray:
    """Entropy in nats of each row of ``probabilities`` (N, C)."""
    p = np.asarray(probabilities, dtype=np.float64)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)


def separability(x, y, settings: dict | None = None, seed: int | None = None, name: str = "") -> dict:
    """The check on features ``x`` (N, D) and class labels ``y`` (N,) (any values: their distinct
    values are the classes; binarise continuous labels first with :func:`class_indices`).

    Returns ``n_labelled``, ``n_classes``, ``class_counts`` (per class, in the order of the sorted
    values), ``folds``, ``balanced_accuracy`` and ``balanced_accuracy_std`` (over folds),
    ``fold_balanced_accuracy``, ``chance`` (1/C), ``mean_entropy_nats``, ``normalised_entropy``
    (mean entropy / log C) and ``warn``. ``seed`` defaults to one derived from ``settings['seed']``
    and ``name``."""
    settings = settings_from(settings)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    y_index, _ = class_indices(y)
    if x.ndim != 2 or len(x) != len(y_index):
        raise SeparabilityError(f"{name or 'input'}: x has shape {x.shape} but y has {len(y_index)} labels")
    if len(y_index) == 0:
        raise SeparabilityError(f"{name or 'input'}: no labelled points")
    if not np.isfinite(x).all():
        raise SeparabilityError(f"{name or 'input'}: features contain NaN or infinite values")
    counts = np.bincount(y_index)
    n_classes = len(counts)
    if n_classes < 2:
        raise SeparabilityError(f"{name or 'input'}: all {len(y_index)} labelled points are of one class; "
                                "the check needs at least two classes")
    folds = int(settings["folds"])
    if counts.min() < folds:
        if counts.min() < 2:
            raise SeparabilityError(f"{name or 'input'}: a class has only {counts.min()} labelled point (class counts "
                                    f"{counts.tolist()}); cross-validation needs at least 2 per class")
        log.warning("%s: the smallest class has %d labelled points, fewer than %d folds: using %d folds",
                    name or "input", counts.min(), folds, counts.min())
        folds = int(counts.min())
    seed = derive_seed(settings["seed"], "separability", name) if seed is None else int(seed)
    cv = cross_validate(x, y_index, {**settings, "folds": folds}, seed, n_classes)
    predicted = cv["probabilities"].argmax(1)
    per_fold = [balanced_accuracy(y_index[cv["fold"] == m], predicted[cv["fold"] == m]) for m in range(folds)]
    h = entropy(cv["probabilities"])
    out = {"n_labelled": len(y_index), "n_classes": n_classes, "class_counts": counts.tolist(), "folds": folds,
           "balanced_accuracy": float(np.mean(per_fold)), "balanced_accuracy_std": float(np.std(per_fold, ddof=1)),
           "fold_balanced_accuracy": per_fold, "chance": 1.0 / n_classes, "mean_entropy_nats": float(h.mean()),
           "normalised_entropy": float(h.mean() / math.log(n_classes)), "epochs": cv["epochs"]}
    out["warn"] = bool(out["balanced_accuracy"] < settings["min_balanced_accuracy"]
                       or out["normalised_entropy"] > settings["max_normalised_entropy"])
    return out


def check_set(data: LabelledSet, settings: dict) -> dict:
    """:func:`separability` on one labelled set: a row with ``COLUMNS``."""
    result = separability(data.x, data.y, settings, name=data.name)
    row = {"dataset": data.name, "source": data.source, "labels": data.labels,
           "paper_expects": PAPER_EXPECTS.get(data.name, ""), **result,
           "class_counts": ", ".join(f"{c}: {k}" for c, k in zip(data.class_names, result["class_counts"]))}
    log.info("%s: %d labelled points (%s), %d folds: balanced accuracy %.3f ± %.3f (chance %.3f), mean entropy %.3f "
             "nats (%.3f of log C), epochs per fold %s%s", data.name, row["n_labelled"], row["class_counts"], row["folds"],
             row["balanced_accuracy"], row["balanced_accuracy_std"], row["chance"], row["mean_entropy_nats"],
             row["normalised_entropy"], row["epochs"], " -> WARNING" if row["warn"] else "")
    return row


def check_files(h5_paths=(), csv_paths=(), settings: dict | None = None, label_column: str | None = None) -> list[dict]:
    """One row per input: our HDF5 data files (observed training labels) and users' CSV files."""
    settings = settings_from(settings)
    sets = [read_h5(p) for p in h5_paths] + [read_csv(p, label_column) for p in csv_paths]
    if not sets:
        raise SeparabilityError("no input: give data files (--data) and/or CSV files (--csv)")
    return [check_set(s, settings) for s in sets]


# --------------------------------------------------------------------------------------------
# Table


def markdown(rows: list[dict], settings: dict) -> str:
    head = ["data set", "labels", "n labelled", "classes (points)", "folds", "balanced accuracy (mean ± std)", "chance",
            "mean entropy (nats)", "entropy / log C", "warn", "paper expects"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["dataset"], r["labels"], str(r["n_labelled"]), r["class_counts"], str(r["folds"]),
            f"{r['balanced_accuracy']:.3f} ± {r['balanced_accuracy_std']:.3f}", f"{r['chance']:.3f}",
            f"{r['mean_entropy_nats']:.3f}", f"{r['normalised_entropy']:.3f}", "**yes**" if r["warn"] else "no",
            r["paper_expects"] or "–"]) + " |")
    hidden = "-".join(map(str, settings["hidden"]))
    stop = (f"early stopping on a stratified {settings['validation_fraction']:g} of each fold's training points "
            f"(patience {settings['patience']} epochs, at most {settings['epochs']})" if settings["patience"] > 0
            else f"{settings['epochs']} epochs")
    batches = f"batches of {settings['batch_size']}" if settings["batch_size"] else "full batch"
    notes = (f"\nClassifier: leaky-ReLU MLP ({hidden} hidden units), Adam lr {settings['lr']:g}, {batches}, {stop}, "
             f"class weights {settings['class_weight']}; stratified {settings['folds']}-fold cross-validation over the "
             "labelled points (balanced accuracy: mean ± std over folds; entropy: mean over every held-out prediction). "
             f"Warning when balanced accuracy < {settings['min_balanced_accuracy']:g} or entropy / log C > "
             f"{settings['max_normalised_entropy']:g}: the classes overlap, and an MFG family in the unlabelled "
             "objective risks functional collapse (Section 9, guideline 1; use a richer family). Our data files: "
             "only the observed training labels; continuous labels binarised at 0.\n")
    return "\n".join(lines) + "\n" + notes


def write(rows: list[dict], settings: dict, csv_path=None, md_path=None) -> None:
    """The CSV (``COLUMNS``) and the Markdown table, each written atomically."""
    settings = settings_from(settings)
    if csv_path is not None:
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: format_cell(r.get(k, "")) for k in COLUMNS} for r in rows)
    if md_path is not None:
        with atomic_path(md_path) as tmp:
            Path(tmp).write_text("# Class separability (Section 9, guideline 1)\n\n" + markdown(rows, settings))
