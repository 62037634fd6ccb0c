"""``results/REPRODUCTION.md``: each claim of the paper, our numbers beside the paper's, and whether
the claim holds at the scale that was run — computed from the result tables, never typed in.

A claim is a function of the tables (``{name: rows}`` as read from ``results/tables/<name>.csv``)
that returns a :class:`Verdict`. A claim whose tables were not produced reads "not run". The tests
for "holds" are stated in each claim's ``rule`` text, which the file prints beside the verdict.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fmvae.store import atomic_path


@dataclass
class Verdict:
    holds: bool | None  # None: not run (its tables are missing)
    ours: str
    paper: str
    diagnosis: str = ""  # on "no": the per-restart rows (results/tables/restarts.csv) that explain it


# σ² of Section 8 counts as reproduced within the paper's mean ± 3 of its standard deviations or ± 25 %
# of its mean, whichever is wider [choice: the paper's spread over 5 versions is small, ours is over
# the configured versions]
SIGMA2_BAND_STDS, SIGMA2_BAND_FRACTION = 3.0, 0.25


def sigma2_band(paper_mean: float, paper_std: float) -> tuple[float, float]:
    half = max(SIGMA2_BAND_STDS * (0.0 if math.isnan(paper_std) else paper_std), SIGMA2_BAND_FRACTION * paper_mean)
    return paper_mean - half, paper_mean + half


def restart_diagnosis(tables, experiments, datasets, limit: int = 6) -> str:
    """The restarts behind a failed claim: per (experiment, data set, version, method), the selected
    restart and, when another restart of its grid point has a better p(x) statistic, that one."""
    rows = [r for r in tables.get("restarts", []) if r["experiment"] in experiments and r["dataset"] in datasets]
    out = []
    for r in (r for r in rows if r["selected"] == "yes"):
        peers = [p for p in rows if all(p[k] == r[k] for k in ("experiment", "dataset", "version", "method", "slug"))]
        scored = [p for p in peers if p["smooth_knn_px"] != ""]
        best = min(scored, key=lambda p: float(p["smooth_knn_px"])) if scored else r
        text = (f"{r['dataset']} v{r['version']} {r['method']}: selected {r['init']} r{r['restart']} "
                f"(val {float(r['val_objective']):.3f}, p(x) {r['smooth_knn_px']}, σ² {r['sigma2']})")
        if best is not r and best["restart"] != r["restart"]:
            text += (f", better p(x): {best['init']} r{best['restart']} (val {float(best['val_objective']):.3f}, "
                     f"p(x) {best['smooth_knn_px']}, σ² {best['sigma2']})")
        out.append(text)
    if not out:
        return "no per-restart rows"
    return "; ".join(out[:limit]) + (f"; … {len(out) - limit} more in results/tables/restarts.md" if len(out) > limit else "")


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str
    rule: str  # how "holds" is decided, in words
    tables: tuple[str, ...]
    check: Callable[[dict], Verdict]


def read_tables(paths) -> dict[str, list[dict]]:
    tables = {}
    for path in paths:
        with open(path, newline="") as f:
            tables[Path(path).stem] = list(csv.DictReader(f))
    return tables


def _value(tables, table, dataset, method, metric, setting=""):
    """(mean, std, paper_mean, paper_std) of one row as floats (NaN where empty); None if absent."""
    for row in tables.get(table, []):
        if (row["dataset"], row["method"], row["metric"], row["setting"]) == (dataset, method, metric, setting):
            return tuple(float(row[k]) if row[k] != "" else float("nan")
                         for k in ("mean", "std", "paper_mean", "paper_std"))
    return None


def _fmt(mean, std=float("nan")) -> str:
    return f"{mean:.3g}" if math.isnan(std) else f"{mean:.3g} ± {std:.2g}"


def _table2_ordering(tables) -> Verdict:
    ours, paper, holds = [], [], True
    for dataset in ("clusters", "figure8"):
        values = {m: _value(tables, "table2", dataset, m, "smooth_knn_px") for m in ("IWAE", "LIN", "VAE")}
        if any(v is None for v in values.values()):
            return Verdict(None, "missing rows", "")
        holds &= values["IWAE"][0] < min(values["VAE"][0], values["LIN"][0])
        ours.append(f"{dataset}: " + ", ".join(f"{m} {_fmt(v[0], v[1])}" for m, v in values.items()))
        paper.append(f"{dataset}: " + ", ".join(f"{m} {_fmt(v[2], v[3])}" for m, v in values.items()))
    return Verdict(holds, "; ".join(ours), "; ".join(paper),
                   "" if holds else restart_diagnosis(tables, ("unsupervised",), ("clusters", "figure8")))


def _counter_examples(tables) -> Verdict:
    ours, holds = [], True
    for dataset in ("circle", "absolute_value"):
        vae, iwae = (_value(tables, "table2", dataset, m, "smooth_knn_px") for m in ("VAE", "IWAE"))
        if vae is None or iwae is None:
            return Verdict(None, "missing rows", "")
        spread = (vae[1] if vae[1] == vae[1] else 0) + (iwae[1] if iwae[1] == iwae[1] else 0)
        holds &= vae[0] <= iwae[0] + spread
        ours.append(f"{dataset}: VAE {_fmt(vae[0], vae[1])}, IWAE {_fmt(iwae[0], iwae[1])}")
    return Verdict(holds, "; ".join(ours), "VAE as good as IWAE (Section 6; no numbers)",
                   "" if holds else restart_diagnosis(tables, ("unsupervised",), ("circle", "absolute_value")))


def _spiral_sigma2(tables) -> Verdict:
    refit = _value(tables, "sec8", "spiral_dots", "VAE", "sigma2", "sigma2_fixed_then_refit")
    learned = _value(tables, "sec8", "spiral_dots", "VAE", "sigma2", "sigma2_learned_jointly")
    if refit is None or learned is None:
        return Verdict(None, "missing rows", "")
    bands = [sigma2_band(v[2], v[3]) for v in (refit, learned)]
    in_band = [lo <= v[0] <= hi for v, (lo, hi) in zip((refit, learned), bands)]
    holds = 0.01 < refit[0] < learned[0] and all(in_band)
    ours = (f"fixed then refitted {_fmt(refit[0], refit[1])}, learned {_fmt(learned[0], learned[1])}; truth 0.01; "
            "bands " + ", ".join(f"[{lo:.4g}, {hi:.4g}]" for lo, hi in bands))
    return Verdict(holds, ours, f"fixed then refitted {_fmt(refit[2], refit[3])}, learned {_fmt(learned[2], learned[3])}",
                   "" if holds else restart_diagnosis(tables, ("spiral_fixed", "spiral_learned"), ("spiral_dots",)))


def _eq6(tables) -> Verdict:
    truth = _value(tables, "sec5", "linear_cholesky", "closed_form", "neg_elbo_plus_const", "ground_truth")
    optimum = _value(tables, "sec5", "linear_cholesky", "closed_form", "neg_elbo_plus_const", "global_optimum")
    trained = _value(tables, "sec5", "linear_cholesky", "VAE", "neg_elbo_plus_const", "trained_closed_form")
    if None in (truth, optimum, trained):
        return Verdict(None, "missing rows", "")
    computed = round(truth[0], 3) == round(truth[2], 3) and round(optimum[0], 3) == round(optimum[2], 3)
    holds = computed and abs(trained[0] - optimum[0]) < abs(trained[0] - truth[0])
    return Verdict(holds, f"at the truth {truth[0]:.4f}, optimum {optimum[0]:.4f}, trained {_fmt(trained[0], trained[1])}",
                   f"at the truth {_fmt(truth[2])}, optimum {_fmt(optimum[2])}")


def _table1_larger_k(tables) -> Verdict:
    ours, paper, holds = [], [], True
    for dataset in ("figure8_5d", "clusters_5d"):
        for method in ("VAE", "IWAE"):
            values = [_value(tables, "table1", dataset, method, "test_neg_elbo", f"K={k}") for k in (1, 2, 3)]
            if any(v is None for v in values):
                return Verdict(None, "missing rows", "")
            prefers_larger = min(v[0] for v in values[1:]) < values[0][0]
            holds &= prefers_larger if method == "VAE" else not prefers_larger
            ours.append(f"{dataset} {method} " + " / ".join(_fmt(v[0], v[1]) for v in values))
            paper.append(f"{dataset} {method} " + " / ".join(_fmt(v[2], v[3]) for v in values))
    experiments = tuple(f"signal_noise_K{k}" for k in (1, 2, 3))
    return Verdict(holds, "; ".join(ours), "; ".join(paper),
                   "" if holds else restart_diagnosis(tables, experiments, ("figure8_5d", "clusters_5d")))


def _cohort_mean(tables, table, dataset, method) -> tuple[float, float] | None:
    """Mean over the cohorts of (our, the paper's) smooth kNN of p(x|y); None without rows."""
    rows = [r for r in tables.get(table, []) if (r["dataset"], r["method"], r["metric"]) == (dataset, method, "smooth_knn_pxy")]
    if not rows:
        return None
    paper = [float(r["paper_mean"]) for r in rows if r["paper_mean"] != ""]
    return (sum(float(r["mean"]) for r in rows) / len(rows), sum(paper) / len(paper) if paper else float("nan"))


def _functional_collapse(tables) -> Verdict:
    dataset = "discrete_semicircle"
    px = {m: _value(tables, "table3", dataset, m, "smooth_knn_px") for m in ("VAE", "IWAE")}
    pxy = {m: _cohort_mean(tables, "table4", dataset, m) for m in ("VAE", "IWAE")}
    ratio = {m: _value(tables, "table4", dataset, m, "f_separation_ratio") for m in ("VAE", "IWAE")}
    if any(v is None for d in (px, pxy, ratio) for v in d.values()):
        return Verdict(None, "missing rows", "")
    holds = px["VAE"][0] < px["IWAE"][0] and pxy["VAE"][0] > pxy["IWAE"][0] and ratio["VAE"][0] < ratio["IWAE"][0]
    ours = "; ".join(f"{m}: p(x) {_fmt(px[m][0], px[m][1])}, p(x|y) {pxy[m][0]:.3g}, f-separation ratio "
                     f"{ratio[m][0]:.2g}" for m in ("VAE", "IWAE"))
    paper = "; ".join(f"{m}: p(x) {_fmt(px[m][2], px[m][3])}, p(x|y) {pxy[m][1]:.3g}" for m in ("VAE", "IWAE"))
    return Verdict(holds, ours, paper, "" if holds else restart_diagnosis(tables, ("semi_synthetic",), (dataset,)))


REAL_SETS = ("diabetic_retinopathy", "contraceptive", "titanic")


def _real_conditionals(tables) -> Verdict:
    ours, paper, holds = [], [], True
    for dataset in REAL_SETS:
        px, pxy = _value(tables, "table5", dataset, "VAE", "smooth_knn_px"), _cohort_mean(tables, "table6", dataset, "VAE")
        if px is None or pxy is None:
            return Verdict(None, "missing rows", "")
        holds &= pxy[0] > px[0]
        ours.append(f"{dataset}: p(x) {_fmt(px[0], px[1])}, p(x|y) {pxy[0]:.3g}")
        paper.append(f"{dataset}: p(x) {_fmt(px[2], px[3])}, p(x|y) {pxy[1]:.3g}")
    return Verdict(holds, "; ".join(ours), "; ".join(paper),
                   "" if holds else restart_diagnosis(tables, ("semi_real",), REAL_SETS))


CLAIMS = [
    Claim("Table 2", "VAE and LIN misestimate p(x) on Clusters and Figure-8 far more than IWAE",
          "IWAE's mean smooth-kNN statistic is below both VAE's and LIN's on both sets", ("table2",), _table2_ordering),
    Claim("Circle / Absolute-Value", "where the posterior is simple the VAE learns p(x) as well as IWAE",
          "VAE's mean is at most IWAE's mean plus the sum of their standard deviations on both sets", ("table2",),
          _counter_examples),
    Claim("Spiral-Dots σ²", "the ELBO overestimates the noise σ² (truth 0.01), fixed-then-refitted or learned",
          "both estimates exceed 0.01, the jointly learned one more, and each lies within its band: the paper's "
          f"mean ± max({SIGMA2_BAND_STDS:g} × its std, {SIGMA2_BAND_FRACTION:.0%} of its mean)", ("sec8",),
          _spiral_sigma2),
    Claim("eq. 6", "trained from the ground truth, the ELBO moves to its global optimum (−ELBO 0.196, not 0.532)",
          "the computed closed forms at the truth and at the optimum equal the paper's to three decimals, and the "
          "trained closed-form −ELBO is nearer the optimum than the truth", ("sec5",), _eq6),
    Claim("Table 1", "the ELBO (VAE) prefers K > 1 over the true K = 1; IWAE does not",
          "VAE's test −ELBO at K = 2 or 3 is below K = 1, and IWAE's is not, on both 5-D sets", ("table1",),
          _table1_larger_k),
    Claim("Tables 3–4", "functional collapse on the Discrete Semi-Circle: the VAE learns p(x) better than IWAE but "
          "p(x|y) worse, its f(z, y) nearly the same for both y",
          "on discrete_semicircle, VAE's smooth kNN of p(x) is below IWAE's, VAE's mean over the two cohorts of "
          "p(x|y) is above IWAE's, and VAE's f-separation ratio is below IWAE's", ("table3", "table4"),
          _functional_collapse),
    Claim("Tables 5–6", "on the real sets the semi-supervised VAE recovers p(x|y) worse than p(x)",
          "on every real set, VAE's mean smooth kNN of p(x|y) over the cohorts is above its p(x) statistic",
          ("table5", "table6"), _real_conditionals),
]


def _bounds_are_bounds(tables) -> Verdict:
    rows = tables["invariants"]
    violated = [r for r in rows if r["holds"] != "yes"]
    models = {tuple(r[k] for k in ("experiment", "dataset", "version", "method")) for r in rows}
    diagnosis = "; ".join(f"{r['experiment']}/{r['dataset']} v{r['version']} {r['method']}: {r['name']} "
                          f"({float(r['lhs']):.4f} > {float(r['rhs']):.4f} + {float(r['slack']):.4f})" for r in violated[:8])
    return Verdict(not violated, f"{len(rows) - len(violated)} of {len(rows)} checks hold on {len(models)} models",
                   "(a property of the method, not a number of the paper)",
                   diagnosis + (f"; … {len(violated) - 8} more in results/tables/invariants.md" if len(violated) > 8 else ""))


def _gt_encoder_near_optimum(tables) -> Verdict:
    rows = tables["gt_encoder_gaps"]
    above = [r for r in rows if float(r["gap_mean"]) > float(r["gap_warning"])]
    gaps = [float(r["gap_mean"]) for r in rows]
    ours = (f"mean gap per set and version {min(gaps):.3g} to {max(gaps):.3g} nats per point over {len(rows)} fits"
            if rows else "no φ_GT fits")
    diagnosis = "; ".join(f"{r['dataset']} v{r['version']}: {float(r['gap_mean']):.3g} (median {r['gap_median']}, "
                          f"{r['gap_frac_above_5']} of points above 5 nats)" for r in above)
    return Verdict(not above, ours, "(the protocol's assumption: φ_GT is the best encoder for θ_GT)", diagnosis)


CLAIMS.append(Claim(
    "φ_GT", "a ground-truth initialisation starts near the optimum",
    "every φ_GT's mean gap log p(x) − ELBO on validation points (results/tables/gt_encoder_gaps.csv) is at most "
    "its warning threshold (training.gt_encoder.gap_warning)", ("gt_encoder_gaps",), _gt_encoder_near_optimum))
CLAIMS.append(Claim(
    "Bounds", "every bound is a lower bound on log p(x) of the model that is evaluated",
    "every invariant of results/tables/invariants.csv holds: each method's bound and the ELBO at most the best "
    "log-likelihood (quadrature for K = 1, else defensive importance sampling), ELBO at most IWAE_S, importance "
    "sampling at most and near the quadrature, each within 3 Monte Carlo standard errors plus the tolerance",
    ("invariants",), _bounds_are_bounds))


def reproduction_markdown(tables: dict[str, list[dict]]) -> str:
    lines = ["# Reproduction summary", "",
             "Each claim of the paper with our numbers (mean ± std over versions) beside the paper's, and whether",
             "it holds at the scale that was run. Computed from `results/tables/*.csv` by `fmvae.report.reproduction`.",
             "Where a claim does not hold, the last column names the restarts behind it",
             "(`results/tables/restarts.md`) or the violated invariants (`results/tables/invariants.md`).",
             "", "| claim | statement | ours | paper | holds? | decided by | diagnosis |", "|---|---|---|---|---|---|---|"]
    for claim in CLAIMS:
        verdict = claim.check(tables) if all(t in tables for t in claim.tables) else Verdict(None, "", "")
        word = "not run" if verdict.holds is None else ("yes" if verdict.holds else "**no**")
        lines.append(f"| {claim.name} | {claim.statement} | {verdict.ours or '–'} | {verdict.paper or '–'} | "
                     f"{word} | {claim.rule} | {verdict.diagnosis or '–'} |")
    return "\n".join(lines) + "\n"


def write_reproduction(table_paths, out) -> str:
    text = reproduction_markdown(read_tables(table_paths))
    with atomic_path(out) as tmp:
        Path(tmp).write_text(text)
    return text
