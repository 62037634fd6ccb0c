"""The φ_GT gap table: how close each ground-truth encoder comes to the truth.

One row per φ_GT file (data set and version), from the numbers :func:`fmvae.train.gt_encoder.fit_gt_encoder`
stores: the initialisation, the restarts and the selected one, its validation ELBO (mean over points
of a many-draw average, with its Monte Carlo standard error), log p(x) under θ_GT on the same points
and its estimator, and the per-point gap log p(x) − ELBO (mean, median, 95th percentile, fraction of
points above 5 nats), and the fit's wall time. Written as CSV and Markdown
(``results/tables/gt_encoder_gaps.{csv,md}``), each atomically, as the paper's tables are.
"""

from __future__ import annotations

import h5py

from fmvae import store
from fmvae.report.tables import write_csv
from fmvae.store import atomic_path

COLUMNS = ["dataset", "version", "init", "restarts", "selected", "val_elbo", "val_elbo_se", "log_px", "log_px_method",
           "gap_mean", "gap_median", "gap_p95", "gap_frac_above_5", "gap_warning", "fit_seconds"]
HEAD = ["data set", "version", "init", "restarts", "selected", "val ELBO", "log p(x)", "mean gap", "median gap",
        "p95 gap", "> 5 nats", "fit s"]


def _number(value, digits: str = ".4g") -> str:
    return "" if value is None or value == "" else format(float(value), digits)


def row(path) -> dict:
    """The table row of one φ_GT file; a file written before the gaps were recorded has them empty."""
    with h5py.File(path, "r") as f:
        attrs = store.read_attrs(f)
    selected = int(attrs["selected"])
    val = list(attrs["val_elbo"]) if hasattr(attrs["val_elbo"], "__len__") else [attrs["val_elbo"]]
    se = attrs.get("val_elbo_se")
    seconds = attrs.get("seconds")
    return {
        "dataset": attrs["dataset"], "version": int(attrs["version"]), "init": attrs.get("init", "random"),
        "restarts": len(val), "selected": selected, "val_elbo": _number(val[selected]),
        "val_elbo_se": _number(se[selected], ".2g") if se is not None else "",
        "log_px": _number(attrs.get("log_px")), "log_px_method": attrs.get("log_px_method", ""),
        "gap_mean": _number(attrs.get("gap_mean")), "gap_median": _number(attrs.get("gap_median")),
        "gap_p95": _number(attrs.get("gap_p95")), "gap_frac_above_5": _number(attrs.get("gap_frac_above_5"), ".3f"),
        "gap_warning": _number(attrs.get("gap_warning"), "g"),
        "fit_seconds": _number(seconds["total"] if isinstance(seconds, dict) else seconds, ".1f"),
    }


def collect(paths) -> list[dict]:
    return sorted((row(p) for p in paths), key=lambda r: (r["dataset"], r["version"]))


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for r in rows:
        elbo = r["val_elbo"] + (f" ± {r['val_elbo_se']}" if r["val_elbo_se"] else "")
        log_px = (r["log_px"] or "–") + (f" ({r['log_px_method']})" if r["log_px_method"] else "")
        flag = " ⚠" if r["gap_mean"] and r["gap_warning"] and float(r["gap_mean"]) > float(r["gap_warning"]) else ""
        cells = [r["dataset"], r["version"], r["init"], r["restarts"], r["selected"], elbo, log_px,
                 (r["gap_mean"] or "–") + flag, r["gap_median"] or "–", r["gap_p95"] or "–",
                 r["gap_frac_above_5"] or "–", r["fit_seconds"] or "–"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


PREAMBLE = ("φ_GT, the encoder of the ground-truth restarts (decoder frozen at θ_GT, σ² at the truth), on the "
            "validation points: the selected restart's ELBO (nats per point, ± its Monte Carlo standard error), "
            "log p(x) under θ_GT (quadrature for K = 1, closed form for eq. 6, importance sampling otherwise), and the "
            "per-point gap log p(x) − ELBO. ⚠: mean gap above training.gt_encoder.gap_warning.")


def write_gap_table(paths, csv_path, md_path) -> list[dict]:
    rows = collect(paths)
    write_csv(rows, COLUMNS, csv_path)
    with atomic_path(md_path) as tmp:
        tmp.write_text("# gt_encoder_gaps\n\n" + PREAMBLE + "\n\n" + markdown(rows))
    return rows
