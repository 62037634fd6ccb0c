"""Tests for ``fmvae diagnose`` (fmvae.diagnose): malformed CSV files fail with an error that names the
problem (column, line), the reports are written and self-contained, and on the paper's own sets
exported to CSV the verdicts are the paper's: no warning on Circle (an MFG-VAE learns it well,
Appendix E.2), a warning on Spiral Dots (it does not, Section 5.3 and E.1)."""

from __future__ import annotations

import base64
import json
import re
import time

import numpy as np
import pytest

from fmvae import cli, diagnose
from fmvae.data.groundtruth import get
from fmvae.data.simulate import simulate_version

pytestmark = pytest.mark.usefixtures("one_thread")

# Tiny training for the tests of input handling and reports (seconds, no verdict expected).
TINY = {"epochs": 3, "restarts": 2, "hidden": [8], "iwae_samples": 2, "batch_size": 50, "log_every_epochs": 0,
        "checks": {"grid_points": 201, "refine_steps": 5, "quadrature_points": 401, "loglik_samples": 20},
        "separability": {"epochs": 20, "folds": 2, "hidden": [8]}}


def write_csv(path, header, rows) -> str:
    path.write_text("\n".join([",".join(header), *(",".join(str(c) for c in row) for row in rows)]) + "\n")
    return str(path)


def paper_set(name: str, path, n: int = 2000, seed: int = 0, label: bool = False) -> str:
    """``n`` points of one of the paper's sets, x = f(z) + ε from its analytic f (no surrogate), as a CSV."""
    gt = get(name)
    spec = {"dataset": name, "seed": seed, "n_train": n, "n_val": 0, "n_test": 0, "params": gt.params,
            "sigma2": gt.sigma2, "label_fraction": 0.5}
    arrays = simulate_version(spec, 0, None)["train"]
    rows = [[f"{a:.6f}", f"{b:.6f}"] for a, b in arrays["x"]]
    if label:  # a label that x determines: the upper and the lower half
        rows = [row + ["upper" if float(row[1]) > 0 else "lower"] for row in rows]
    return write_csv(path, ["x1", "x2", *(["side"] if label else [])], rows)


def good_rows(n: int = 120) -> list[list]:
    rng = np.random.default_rng(0)
    return [[f"{a:.4f}", f"{b:.4f}"] for a, b in rng.standard_normal((n, 2))]


@pytest.mark.parametrize(("case", "pattern"), [
    ("non_numeric", r"column 'b' is not numeric: line 5 has 'seven'"),
    ("missing", r"column 'a' has a missing value \(''\) on line 9"),
    ("missing_na", r"column 'b' has a missing value \('NA'\) on line 3"),
    ("constant", r"column 'c' is constant \(2\.5 in every row\)"),
    ("too_few", r"40 data rows, too few: the training split needs at least one batch, which takes at least 84 rows"),
    ("ragged", r"line 4 has 3 fields, the header has 2"),
    ("no_label", r"no label column 'y'; columns: a, b"),
])
def test_a_malformed_csv_is_an_error_that_names_the_problem(tmp_path, case, pattern):
    rows, header, label = good_rows(), ["a", "b"], None
    if case == "non_numeric":
        rows[3][1] = "seven"  # data row 4 is line 5 (the header is line 1)
    elif case in ("missing", "missing_na"):
        rows[{"missing": 7, "missing_na": 1}[case]][{"missing": 0, "missing_na": 1}[case]] = \
            "" if case == "missing" else "NA"
    elif case == "constant":
        header, rows = ["a", "b", "c"], [row + ["2.5"] for row in rows]
    elif case == "too_few":
        rows = rows[:40]  # batches of 50 need 50 training rows: 84 rows at 60% training
    elif case == "ragged":
        rows[2] = rows[2] + ["1"]
    elif case == "no_label":
        label = "y"
    path = write_csv(tmp_path / "data.csv", header, rows)
    with pytest.raises(diagnose.DiagnoseError, match=pattern):
        diagnose.diagnose(path, label, TINY)
    with pytest.raises(SystemExit, match=f"error: .*{pattern}"):  # the command says the same
        cli.main(["diagnose", path, "--batch-size", "50", *(["--label-column", label] if label else [])])


def test_the_label_column_is_not_a_feature_and_may_be_text_or_empty(tmp_path):
    rows = [row + [("yes" if i % 3 else "no") if i % 5 else ""] for i, row in enumerate(good_rows(200))]
    table = diagnose.read_table(write_csv(tmp_path / "data.csv", ["a", "b", "y"], rows), "y")
    assert table["columns"] == ["a", "b"] and table["x"].shape == (200, 2)
    assert (table["labels"] == "").sum() == 40 and set(table["labels"]) == {"yes", "no", ""}
    # without --label-column it is a feature: its first empty cell, then its text, are errors
    with pytest.raises(diagnose.DiagnoseError, match=r"column 'y' has a missing value \(''\) on line 2"):
        diagnose.read_table(tmp_path / "data.csv")
    write_csv(tmp_path / "data.csv", ["a", "b", "y"], [row[:2] + [row[2] or "no"] for row in rows])
    with pytest.raises(diagnose.DiagnoseError, match="column 'y' is not numeric: line 2 has 'no'"):
        diagnose.read_table(tmp_path / "data.csv")


def test_the_split_is_seeded_and_covers_every_row_once():
    settings = diagnose.settings_from({"seed": 3})
    a, b = diagnose.split_rows(2000, settings), diagnose.split_rows(2000, settings)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [len(a[k]) for k in ("train", "val", "test")] == [1200, 400, 400]
    assert sorted(np.concatenate(list(a.values()))) == list(range(2000))
    assert not np.array_equal(a["test"], diagnose.split_rows(2000, diagnose.settings_from({"seed": 4}))["test"])


def test_bad_settings_are_errors():
    with pytest.raises(diagnose.DiagnoseError, match="unknown diagnose setting"):
        diagnose.settings_from({"epoch": 3})
    with pytest.raises(diagnose.DiagnoseError, match="sum to less than 1"):
        diagnose.settings_from({"train_fraction": 0.8, "val_fraction": 0.2})


def test_the_reports_are_written_and_self_contained(tmp_path):
    path = paper_set("circle", tmp_path / "circle.csv", n=300, label=True)
    out = tmp_path / "out"
    assert cli.main(["--threads", "1", "diagnose", path, "--label-column", "side", "--out", str(out), "--epochs", "3",
                     "--restarts", "2", "--hidden", "8", "--iwae-samples", "2", "--batch-size", "50",
                     "--log-every-epochs", "0"]) == 0
    assert {p.name for p in out.iterdir()} == {"report.html", "report.md", "result.json", "marginals.png", "residual_qq.png"}
    page = (out / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert all(base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for src in images)
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing outside the page
    result = json.loads((out / "result.json").read_text())
    assert result["splits"] == {"train": 180, "val": 60, "test": 60} and result["columns"] == ["x1", "x2"]
    assert result["separability"]["n_labelled"] == 300 and result["separability"]["n_classes"] == 2
    for key in ("residual_pvalue", "residual_warning"):
        assert key in result["residual"]
    for key in ("loglik", "loglik_reference", "loglik_gap", "loglik_gap_se", "gap_warning"):
        assert key in result["gap"]
    markdown = (out / "report.md").read_text()
    for text in ("Guideline 4(i)", "Guideline 4(ii)", "Guideline 1", "![", "marginals.png", "residual_qq.png",
                 f"{result['gap']['loglik_gap']:.4f}"):
        assert text in markdown and (text in page or text.startswith("!"))
    for w in result["warnings"]:  # each warning names its guideline in plain words
        assert w["guideline"] in markdown and w["guideline_text"][:40] in markdown


# --------------------------------------------------------------------------------------------
# Verdicts on the paper's sets

# Smaller than the command's defaults (3×50, S = 20, 1000 epochs: about 85 s per set), the same for both
# sets, about 22 s each. Measured with these settings on 2 000 rows, seeds 0-5: Circle passed 6 of 6 (gap
# z at most 2.2), Spiral Dots warned on both checks on every seed tried; with σ² starting at 0.1, 3 of 6
# Circle seeds warned falsely (the VAE's σ² still at 0.03-0.04 against the truth's 0.02).
VERDICT = {"epochs": 600, "hidden": [32, 32], "iwae_samples": 10, "log_every_epochs": 0}


@pytest.mark.parametrize(("name", "expect_warning"), [("circle", False), ("spiral_dots", True)])
def test_the_verdict_on_the_papers_sets(tmp_path, name, expect_warning):
    """Circle: the paper's MFG-VAE learns p(x) well (Appendix E.2), so no check may warn. Spiral Dots:
    it does not (Section 5.3, Appendix E.1, Figure 16), so a check must warn."""
    path = paper_set(name, tmp_path / f"{name}.csv")
    started = time.perf_counter()
    result = diagnose.diagnose(path, settings=VERDICT)
    seconds = time.perf_counter() - started
    summary = (f"{name}: {seconds:.0f} s, residual p {result['residual']['residual_pvalue']:.3g}, gap "
               f"{result['gap']['loglik_gap']:.4f} ± {result['gap']['loglik_gap_se']:.4f} nats, warnings "
               f"{[w['check'] for w in result['warnings']]}")
    print(summary)
    assert result["warning"] == expect_warning, summary
