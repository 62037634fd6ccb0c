"""The paper's tables from evaluation files: one CSV row per reported number, plus Markdown.

CSV columns: those of the paper's ``paper_numbers.csv`` (table, dataset, method, setting, metric,
mean, std) plus ``n`` (versions the mean is over) and ``paper_mean``, ``paper_std`` (empty where
the paper reports no number). Names follow that file. Each table is a list of row rules in
``TABLES``: which experiment's evaluations feed it, which metric, and under which name.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources

import h5py
import numpy as np

from fmvae import methods, store
from fmvae.data.groundtruth import LINEAR_A_GT
from fmvae.metrics import linear_gaussian
from fmvae.store import atomic_path

COLUMNS = ["table", "dataset", "method", "setting", "metric", "mean", "std", "n", "paper_mean", "paper_std"]


@dataclass(frozen=True)
class RowRule:
    experiment: str  # the config's experiment name whose evaluations feed the row
    source: str  # key of the evaluation's metrics; ``prefix:*`` takes every ``prefix:<setting>`` key
    metric: str  # the metric's name in the table (paper_numbers.csv)
    setting: str = ""
    methods: tuple[str, ...] = ()  # only these methods (registry names); empty: every method

    def matches(self, metrics: dict) -> list[tuple[str, float]]:
        """(setting, value) of each metric this rule takes from one evaluation's metrics."""
        if self.source.endswith(":*"):
            prefix = self.source[:-1]
            return [(key[len(prefix):], value) for key, value in metrics.items() if key.startswith(prefix)]
        return [(self.setting, metrics[self.source])] if self.source in metrics else []


def _table1() -> list[RowRule]:
    """Table 1: test −ELBO and avg_i I(x; z_i) per K (one experiment per K), IWAE's own bound with its
    training S beside its ELBO (labelled ``test_neg_iwae_bound``), and the learned σ² (mean over D)."""
    rules = []
    for k in (1, 2, 3):
        experiment, setting = f"signal_noise_K{k}", f"K={k}"
        rules += [RowRule(experiment, "test_neg_elbo", "test_neg_elbo", setting),
                  RowRule(experiment, "avg_mi_x_zi", "avg_mi_x_zi", setting),
                  RowRule(experiment, "test_neg_objective", "test_neg_iwae_bound", setting, ("iwae",)),
                  RowRule(experiment, "sigma2", "sigma2", setting)]
    return rules


TABLES = {
    # Table 1: the ELBO prefers more latent dimensions (and smaller σ²) on the 5-D sets; IWAE does not.
    "table1": _table1(),
    # Table 2: smooth kNN of learned vs true p(x); Circle and Absolute-Value (the counter-examples) too.
    "table2": [RowRule("unsupervised", "smooth_knn_px", "smooth_knn_px")],
    # Section 8: Spiral-Dots σ², fixed at the truth then refitted in closed form, or learned jointly.
    "sec8": [RowRule("spiral_fixed", "sigma2_refit", "sigma2", "sigma2_fixed_then_refit"),
             RowRule("spiral_learned", "sigma2", "sigma2", "sigma2_learned_jointly")],
    # Section 5.2: eq. 6 trained from the ground truth (Monte-Carlo −ELBO + const on test data, and
    # the closed form at the learned A with the best mean-field q).
    "sec5": [RowRule("linear", "neg_elbo_plus_const", "neg_elbo_plus_const", "trained_from_ground_truth"),
             RowRule("linear", "neg_elbo_plus_const_closed_form", "neg_elbo_plus_const", "trained_closed_form")],
    # Tables 3-4 (Section 7): semi-supervised M2 on the semi-circle sets, smooth kNN of p(x) and of
    # p(x|y) per cohort against the truth; Table 4 adds the functional-collapse measure (learned
    # over true mean ‖f(z, a) − f(z, b)‖: 0 = collapsed) and q(y|x)'s balanced accuracy.
    "table3": [RowRule("semi_synthetic", "smooth_knn_px", "smooth_knn_px")],
    "table4": [RowRule("semi_synthetic", "smooth_knn_pxy:*", "smooth_knn_pxy"),
               RowRule("semi_synthetic", "f_separation_ratio", "f_separation_ratio"),
               RowRule("semi_synthetic", "classifier_balanced_accuracy", "classifier_balanced_accuracy")],
    # Tables 5-6: the three real sets against their test splits (cohorts: the classes).
    "table5": [RowRule("semi_real", "smooth_knn_px", "smooth_knn_px")],
    "table6": [RowRule("semi_real", "smooth_knn_pxy:*", "smooth_knn_pxy"),
               RowRule("semi_real", "f_separation", "f_separation"),
               RowRule("semi_real", "classifier_balanced_accuracy", "classifier_balanced_accuracy")],
}


def paper_numbers() -> dict:
    text = resources.files("fmvae.report").joinpath("paper_numbers.csv").read_text()
    return {(r["table"], r["dataset"], r["method"], r["setting"], r["metric"]): r for r in csv.DictReader(io.StringIO(text))}


def _closed_form_rows() -> list[dict]:
    """Eq. 6's two closed-form numbers, computed (ground truth and the global optimum)."""
    at_truth = linear_gaussian.neg_elbo_plus_const(LINEAR_A_GT)
    optimum, _ = linear_gaussian.global_optimum()
    return [{"table": "sec5", "dataset": "linear_cholesky", "method": "closed_form", "setting": setting,
             "metric": "neg_elbo_plus_const", "values": [value]}
            for setting, value in (("ground_truth", at_truth), ("global_optimum", optimum))]


def collect(name: str, evaluation_paths) -> list[dict]:
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    found: dict[tuple, list[float]] = {}
    for path in evaluation_paths:
        with h5py.File(path, "r") as f:
            attrs = store.read_attrs(f)
        for rule in TABLES[name]:
            if rule.experiment != attrs["experiment"] or (rule.methods and attrs["method"] not in rule.methods):
                continue
            method = methods.get(attrs["method"]).paper_name or attrs["method"]
            for setting, value in rule.matches(attrs["metrics"]):
                found.setdefault((attrs["dataset"], method, setting, rule.metric), []).append(value)
    rows = [{"table": name, "dataset": d, "method": m, "setting": s, "metric": metric, "values": v}
            for (d, m, s, metric), v in sorted(found.items())]
    return (_closed_form_rows() if name == "sec5" else []) + rows


def finish(rows: list[dict]) -> list[dict]:
    paper = paper_numbers()
    out = []
    for row in rows:
        values = np.asarray(row.pop("values"), dtype=float)
        ref = paper.get((row["table"], row["dataset"], row["method"], row["setting"], row["metric"]), {})
        out.append({**row, "mean": f"{values.mean():.4g}", "std": f"{values.std(ddof=1):.3g}" if len(values) > 1 else "",
                    "n": len(values), "paper_mean": ref.get("mean", ""), "paper_std": ref.get("std", "")})
    return out


def markdown(rows: list[dict]) -> str:
    head = ["data set", "method", "setting", "metric", "ours (mean ± std)", "n", "paper (mean ± std)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ours = r["mean"] + (f" ± {r['std']}" if r["std"] else "")
        paper = (r["paper_mean"] + (f" ± {r['paper_std']}" if r["paper_std"] else "")) if r["paper_mean"] else "–"
        lines.append(f"| {r['dataset']} | {r['method']} | {r['setting'] or '–'} | {r['metric']} | {ours} | {r['n']} | {paper} |")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], columns: list[str], path) -> None:
    """``rows`` as a CSV with ``columns`` (other keys ignored), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_rows(rows: list[dict], csv_path, md_path, title: str, preamble: str = "") -> list[dict]:
    """Finished rows as the CSV (``COLUMNS``) and the Markdown table, each written atomically."""
    write_csv(rows, COLUMNS, csv_path)
    with atomic_path(md_path) as tmp:
        tmp.write_text(f"# {title}\n\n" + (preamble + "\n\n" if preamble else "") + markdown(rows))
    return rows


def write_table(name: str, evaluation_paths, csv_path, md_path) -> list[dict]:
    return write_rows(finish(collect(name, evaluation_paths)), csv_path, md_path, name)
