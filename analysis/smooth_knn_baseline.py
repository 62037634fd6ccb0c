"""What a perfect model scores: the smooth kNN statistic of held-out *data* against the test split.

Table 5 compares model samples with each real set's test split by the smooth kNN statistic
(docs/methods.md §4). Its scale depends on the data set: on data with many exact duplicate rows
(Titanic's test splits hold 13–14 distinct rows), every test point's nearest neighbour is a copy of itself, so any
sample from a continuous density (which never repeats a row) scores high however good the density.
This script measures, per real set and split, the statistic of

* the training split against the test split (a perfect model's samples, at the split's size);
* 2000 points resampled with replacement from the training split (the model samples' size; the
  resampling itself repeats rows);
* the training split plus N(0, 0.05²) noise (a near-perfect continuous density);
* 2000 draws of a diagonal Gaussian fitted to the training split (a poor continuous density).

Run from the repository root after the workflow has prepared the real sets:

    python analysis/smooth_knn_baseline.py [--splits 0 1 2] [--alpha 10]

It prints a Markdown table; docs/methods.md §4 quotes it. With ``--cohorts`` it prints a second
table: the same baselines for Table 6's p(x|y), per class (the test points of class y against the
training points of class y), beside the whole split's, so that a reader sees how the statistic's
scale moves between p(x) and p(x|y) for a model that is as good as the data itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np

from fmvae.metrics.smooth_knn import smooth_knn_statistic

SETS = ("diabetic_retinopathy", "contraceptive", "titanic")


def baselines(train: np.ndarray, test: np.ndarray, alpha: float, rng: np.random.Generator) -> dict[str, float]:
    gaussian = rng.standard_normal((2000, train.shape[1])) * train.std(0) + train.mean(0)
    return {"train vs test": smooth_knn_statistic(train, test, alpha),
            "2000 resampled train": smooth_knn_statistic(train[rng.integers(0, len(train), 2000)], test, alpha),
            "train + N(0, 0.05²)": smooth_knn_statistic(train + 0.05 * rng.standard_normal(train.shape), test, alpha),
            "fitted diagonal Gaussian": smooth_knn_statistic(gaussian, test, alpha)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("results/data"))
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--alpha", type=float, default=10.0, help="evaluation.smooth_knn.alpha")
    parser.add_argument("--cohorts", action="store_true", help="also the per-class baselines of p(x|y)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name in SETS:
        values: dict[str, list[float]] = {}
        for split in args.splits:
            with h5py.File(args.data / name / f"split{split}.h5", "r") as f:
                train, test = f["train"]["x"][()], f["test"]["x"][()]
            for key, value in baselines(train, test, args.alpha, rng).items():
                values.setdefault(key, []).append(value)
        distinct = len(np.unique(test, axis=0))
        cells = " | ".join(f"{np.mean(v):.2f} ± {np.std(v):.2f}" for v in values.values())
        rows.append(f"| {name} | {train.shape[1]} | {len(test)} ({distinct} distinct) | {cells} |")
    print("| data set | D | test rows | " + " | ".join(values) + " |")
    print("|---" * (3 + len(values)) + "|")
    print("\n".join(rows))
    if args.cohorts:
        print()
        print(cohort_table(args.data, args.splits, args.alpha, rng))


def cohort_table(data: Path, splits, alpha: float, rng: np.random.Generator) -> str:
    """Markdown: per real set, each baseline on the whole test split (p(x)) and its mean over the
    classes (p(x|y), as Table 6 averages its cohorts), mean ± std over the splits."""
    rows = []
    for name in SETS:
        whole: dict[str, list[float]] = {}
        cohorts: dict[str, list[float]] = {}
        for split in splits:
            with h5py.File(data / name / f"split{split}.h5", "r") as f:
                train, test = f["train"]["x"][()], f["test"]["x"][()]
                y_train, y_test = f["train"]["y"][()], f["test"]["y"][()]
            for key, value in baselines(train, test, alpha, rng).items():
                whole.setdefault(key, []).append(value)
            per_class: dict[str, list[float]] = {}
            for c in np.unique(y_test):
                for key, value in baselines(train[y_train == c], test[y_test == c], alpha, rng).items():
                    per_class.setdefault(key, []).append(value)
            for key, values in per_class.items():
                cohorts.setdefault(key, []).append(float(np.mean(values)))
        for key, values in whole.items():
            rows.append(f"| {name} | {key} | {np.mean(values):.2f} ± {np.std(values):.2f} | "
                        f"{np.mean(cohorts[key]):.2f} ± {np.std(cohorts[key]):.2f} |")
    return "\n".join(["| data set | samples | p(x): whole test split | p(x|y): mean over classes |",
                       "|---|---|---|---|", *rows])


if __name__ == "__main__":
    main()
