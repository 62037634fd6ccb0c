"""Tests for the Section 9 class-separability check (fmvae.separability): known answers on
Gaussian classes (well separated: balanced accuracy ≈ 1 and low entropy, no warning; identical:
chance and entropy ≈ log C, warning), imbalance (balanced accuracy is not fooled by the majority
class), three classes, binarised continuous labels, the CSV and HDF5 readers, the workflow's file
lists and the ``fmvae separability`` command end to end."""

from __future__ import annotations

import csv
import logging
import math

import h5py
import numpy as np
import pytest

from fmvae import cli
from fmvae import separability as sep

pytestmark = pytest.mark.usefixtures("one_thread")

# The default classifier, trained for fewer epochs so the tests stay fast.
FAST = {"epochs": 400}


def gaussian_classes(sizes, offsets, dim=2, seed=0):
    """Points of class c ~ N(offsets[c] e_1, I) for each class size in ``sizes``."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.standard_normal((n, dim)) + np.r_[offset, np.zeros(dim - 1)]
                        for n, offset in zip(sizes, offsets)])
    y = np.repeat(np.arange(len(sizes)), sizes)
    return x, y


def test_well_separated_classes_are_separable_and_do_not_warn():
    x, y = gaussian_classes([100, 100], [0.0, 8.0])
    r = sep.separability(x, y, FAST, seed=1)
    assert r["balanced_accuracy"] > 0.98
    assert r["normalised_entropy"] < 0.1
    assert r["mean_entropy_nats"] == pytest.approx(r["normalised_entropy"] * math.log(2))
    assert r["chance"] == 0.5 and r["n_classes"] == 2 and r["class_counts"] == [100, 100] and r["folds"] == 5
    assert len(r["fold_balanced_accuracy"]) == 5 and not r["warn"]


def test_identical_classes_sit_at_chance_with_entropy_near_log_c_and_warn():
    x, y = gaussian_classes([100, 100], [0.0, 0.0])
    r = sep.separability(x, y, FAST, seed=1)
    assert abs(r["balanced_accuracy"] - 0.5) < 0.12
    assert r["normalised_entropy"] > 0.9
    assert r["warn"]


def test_balanced_accuracy_is_not_fooled_by_the_majority_class():
    y = np.r_[np.zeros(90, int), np.ones(10, int)]
    assert sep.balanced_accuracy(y, np.zeros(100, int)) == 0.5  # accuracy would be 0.9
    assert sep.balanced_accuracy(y, y) == 1.0
    # Identical classes, 180 vs 20: with either loss weighting the check reports chance, not 0.9.
    x, y = gaussian_classes([180, 20], [0.0, 0.0])
    for weighting in ("balanced", "none"):
        r = sep.separability(x, y, {**FAST, "class_weight": weighting}, seed=1)
        assert abs(r["balanced_accuracy"] - 0.5) < 0.12, weighting
        assert r["warn"] and r["class_counts"] == [180, 20]
    # Balanced weights give the posterior under a uniform prior: entropy ≈ log C whatever the sizes.
    assert sep.separability(x, y, FAST, seed=1)["normalised_entropy"] > 0.9
    # ... and an imbalanced but separable set does not warn.
    x, y = gaussian_classes([180, 20], [0.0, 8.0])
    r = sep.separability(x, y, FAST, seed=1)
    assert r["balanced_accuracy"] > 0.97 and not r["warn"]


def test_three_classes():
    x, y = gaussian_classes([60, 60, 60], [0.0, 8.0, 16.0])
    labels = np.array(["a", "b", "c"])[y]  # any label values: their distinct values are the classes
    r = sep.separability(x, labels, FAST, seed=1)
    assert r["n_classes"] == 3 and r["chance"] == pytest.approx(1 / 3) and r["class_counts"] == [60, 60, 60]
    assert r["balanced_accuracy"] > 0.95 and r["normalised_entropy"] < 0.15 and not r["warn"]
    x, y = gaussian_classes([60, 60, 60], [0.0, 0.0, 0.0])
    r = sep.separability(x, y, FAST, seed=1)
    assert abs(r["balanced_accuracy"] - 1 / 3) < 0.12 and r["normalised_entropy"] > 0.9 and r["warn"]


def test_continuous_labels_are_binarised_at_zero():
    y = np.array([-1.5, -0.1, 0.0, 0.2, 3.0])
    classes, names = sep.class_indices(y, continuous=True)
    assert classes.tolist() == [0, 0, 1, 1, 1] and names == ["y<0", "y>=0"]
    # x carries the sign of y: separable once binarised.
    rng = np.random.default_rng(0)
    y = rng.standard_normal(200)
    x = np.c_[np.sign(y) * 3 + 0.3 * rng.standard_normal(200), rng.standard_normal(200)]
    r = sep.separability(x, sep.class_indices(y, continuous=True)[0], FAST, seed=1)
    assert r["n_classes"] == 2 and r["balanced_accuracy"] > 0.97


def test_results_are_deterministic_given_the_seed():
    x, y = gaussian_classes([40, 40], [0.0, 1.0])
    settings = {"epochs": 100, "hidden": [8]}
    a, b = sep.separability(x, y, settings, seed=3), sep.separability(x, y, settings, seed=3)
    assert a == b


def test_small_classes_reduce_the_folds_or_fail_clearly(caplog):
    x, y = gaussian_classes([30, 3], [0.0, 8.0])
    with caplog.at_level(logging.WARNING, logger="fmvae.separability"):
        r = sep.separability(x, y, {"epochs": 50, "hidden": [8]}, seed=1)
    assert r["folds"] == 3 and "using 3 folds" in caplog.text
    with pytest.raises(sep.SeparabilityError, match="only 1 labelled point"):
        sep.separability(*gaussian_classes([30, 1], [0.0, 8.0]), FAST)
    with pytest.raises(sep.SeparabilityError, match="one class"):
        sep.separability(np.zeros((10, 2)), np.zeros(10), FAST)
    with pytest.raises(sep.SeparabilityError, match="no labelled points"):
        sep.separability(np.zeros((0, 2)), np.zeros(0), FAST)
    with pytest.raises(sep.SeparabilityError, match="unknown separability setting"):
        sep.settings_from({"epoch": 3})
    with pytest.raises(sep.SeparabilityError, match="folds: >= 2"):
        sep.settings_from({"folds": 1})


def test_stratified_folds_share_every_class_evenly():
    y = np.repeat([0, 1, 2], [10, 7, 23])
    fold = sep.stratified_folds(y, 5, np.random.default_rng(0))
    for c in range(3):
        per_fold = np.bincount(fold[y == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1


def test_csv_reader(tmp_path):
    path = tmp_path / "cohorts.csv"
    path.write_text("age,group,site,weight\n"
                    "30,a,north,60\n"
                    "40,b,south,80\n"
                    "50,,east,70\n"  # unlabelled: ignored
                    "60,a,west,90\n"
                    "\n")
    data = sep.read_csv(path, "group")
    assert data.name == "cohorts" and data.class_names == ["a", "b"]
    assert data.y.tolist() == [0, 1, 0]
    assert data.x.shape == (3, 2)  # age and weight; the text column 'site' is skipped
    np.testing.assert_allclose(data.x.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(data.x.std(0), 1)
    default = sep.read_csv(path)  # label: the last column (weight), features: age
    assert default.x.shape == (4, 1) and len(default.class_names) == 4
    with pytest.raises(sep.SeparabilityError, match="no column 'label'"):
        sep.read_csv(path, "label")
    with pytest.raises(sep.SeparabilityError, match="no such CSV"):
        sep.read_csv(tmp_path / "missing.csv")


def write_data_file(path, name, x, y, observed, label="bernoulli"):
    """A data file with fmvae's layout: train/val/test groups with x and y, train/y_observed."""
    with h5py.File(path, "w") as f:
        f.attrs["dataset"] = name
        f.attrs["label"] = label
        f.attrs["version"] = 0
        for split in ("train", "val", "test"):
            f.create_dataset(f"{split}/x", data=x)
            f.create_dataset(f"{split}/y", data=y)
        f.create_dataset("train/y_observed", data=observed)


def test_h5_reader_uses_only_observed_labels_and_binarises_continuous_ones(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 2)), rng.standard_normal(50)
    observed = np.zeros(50, bool)
    observed[:20] = True
    write_data_file(tmp_path / "v0.h5", "continuous_semicircle", x, y, observed, label="normal")
    data = sep.read_h5(tmp_path / "v0.h5")
    assert data.name == "continuous_semicircle" and data.x.shape == (20, 2)
    assert data.y.tolist() == (y[:20] >= 0).astype(int).tolist()
    assert "binarised at 0" in data.labels
    with h5py.File(tmp_path / "unlabelled.h5", "w") as f:
        f.create_dataset("train/x", data=x)
    with pytest.raises(sep.SeparabilityError, match="has no labels"):
        sep.read_h5(tmp_path / "unlabelled.h5")


def test_workflow_files_follow_the_configured_sets():
    assert sep.workflow_data_files(["circle", "discrete_semicircle", "continuous_semicircle"], ["titanic"]) == [
        "results/data/discrete_semicircle/v0.h5", "results/data/continuous_semicircle/v0.h5",
        "results/data/titanic/split0.h5"]
    assert sep.workflow_outputs(["discrete_semicircle"], []) == [
        "results/tables/separability.csv", "results/tables/separability.md"]
    assert sep.workflow_outputs(["circle"], []) == []


def test_separability_spec_takes_the_config_section_and_seed():
    assert sep.separability_spec({"seed": 7}) == {**sep.defaults(), "seed": 7}
    assert sep.separability_spec({"seed": 7, "separability": {"folds": 3}})["folds"] == 3


def test_cli_end_to_end(tmp_path, capsys):
    x, y = gaussian_classes([60, 60], [0.0, 8.0])
    observed = np.ones(120, bool)
    observed[::4] = False  # 90 observed labels
    write_data_file(tmp_path / "separated.h5", "separated", x, y, observed)
    x, y = gaussian_classes([60, 60], [0.0, 0.0], seed=1)
    write_data_file(tmp_path / "overlap.h5", "discrete_semicircle", x, y, observed)
    out_csv, out_md = tmp_path / "tables" / "separability.csv", tmp_path / "tables" / "separability.md"
    spec = '{"epochs": 300, "seed": 1}'
    args = ["--threads", "1", "separability", "--data", str(tmp_path / "separated.h5"), str(tmp_path / "overlap.h5"),
            "--spec", spec]
    assert cli.main([*args, "--out-csv", str(out_csv), "--out-md", str(out_md)]) == 0
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["dataset"] for r in rows] == ["separated", "discrete_semicircle"]
    assert list(rows[0]) == sep.COLUMNS
    assert rows[0]["n_labelled"] == "90" and rows[0]["class_counts"] == "0: 45, 1: 45" and rows[0]["chance"] == "0.5"
    assert float(rows[0]["balanced_accuracy"]) > 0.97 and rows[0]["warn"] == "no"
    assert float(rows[1]["normalised_entropy"]) > 0.8 and rows[1]["warn"] == "yes"
    assert rows[1]["paper_expects"] == "warning"
    md = out_md.read_text()
    assert "| separated | observed training labels | 90 |" in md and "**yes**" in md
    assert not list(out_csv.parent.glob(".*"))  # no temporary files left behind
    # Without outputs the table is printed; a CSV input works the same way.
    data = tmp_path / "mine.csv"
    with open(data, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "cohort"])
        writer.writerows([*x.round(4).tolist()[i], ["u", "v"][y[i]]] for i in range(len(y)))
    capsys.readouterr()
    assert cli.main(["separability", "--csv", str(data), "--label-column", "cohort", "--spec", spec]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| data set |") and "| mine | column 'cohort' | 120 | u: 60, v: 60 |" in printed


def test_cli_reports_bad_input_clearly(tmp_path):
    with pytest.raises(SystemExit, match="missing.h5: no such data file"):
        cli.main(["separability", "--data", str(tmp_path / "missing.h5")])
    with pytest.raises(SystemExit, match="no input"):
        cli.main(["separability"])
    x = np.zeros((10, 2))
    write_data_file(tmp_path / "none.h5", "none", x, np.zeros(10, int), np.zeros(10, bool))
    with pytest.raises(SystemExit, match="no labelled points"):
        cli.main(["separability", "--data", str(tmp_path / "none.h5")])
    with pytest.raises(SystemExit, match="unknown separability setting"):
        cli.main(["separability", "--data", str(tmp_path / "none.h5"), "--spec", '{"epoch": 1}'])
