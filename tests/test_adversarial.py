"""Appendix F / Figure 7 (fmvae.adversarial): the true classifier's labels, the constrained attack on
hand-made classifiers, the metric definitions on a hand-made case, the projections of a
ground-truth-initialised model, and the whole version → figure and table path on tiny settings."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from fmvae import adversarial as adv
from fmvae import cli
from fmvae import config as cfg
from fmvae.data import groundtruth
from fmvae.data.simulate import save_surrogate, write_synthetic
from fmvae.nn import BatchedMLP
from fmvae.report import adversarial_figure
from fmvae.report.tables import COLUMNS
from fmvae.train.protocol import DataSet


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def line(margin=0.0, max_distance=math.inf) -> adv.TrueManifold:
    """The manifold x₂ = 0, x₁ = z ∈ [−2, 2], labelled 1[z > 0]."""
    z = np.linspace(-2, 2, 4001)
    return adv.TrueManifold(z, np.stack([z, 0 * z], 1), (z > 0).astype(int), margin, max_distance)


def test_true_classifier_labels_by_nearest_point_with_margin_and_distance():
    truth = line(margin=0.1, max_distance=0.5)
    x = np.array([[0.5, 0.3], [-0.5, -0.3], [0.05, 0.2], [-0.08, 0.0], [0.5, 0.8], [0.3, -0.49]])
    np.testing.assert_array_equal(truth.classify(x), [1, 0, -1, -1, -1, 1])
    np.testing.assert_allclose(truth.project(x[:2]), [[0.5, 0.0], [-0.5, 0.0]], atol=1e-3)
    np.testing.assert_allclose(np.abs(truth.tangent[truth.nearest(x[:1])]), [[1.0, 0.0]])
    circle = adv.TrueManifold.from_decoder(groundtruth.get("circle").f, 5.0, 20001, 0.0)
    # Circle, y = 1[z > 0]: the lower half (angle 2πΦ(z) > π); nearest point = radial projection.
    np.testing.assert_array_equal(circle.classify([[0.3, -0.5], [-1.4, 0.2], [0.7, 0.6]]), [1, 0, 0])


# Learned classifiers for the line: logit = 10 (x₁ + slope·x₂ + offset). Each agrees with the true
# one on the manifold (x₂ = 0) outside the band |x₁| < margin, but not off it. For a point (t, 0) of
# true label 1, the cheapest flip that keeps the label costs ``cost(t)``: to the learned boundary's
# nearest point (through the origin), or, when that lies in the band, down the band's edge x₁ = m.
CASES = {
    "through_origin": (1.0, 0.0, 0.0, 0.3, lambda t: t / math.sqrt(2)),
    # The gradient points across the true boundary: the attack must slide along it (the step's
    # component normal to the manifold); plain bisection would stall at the band's edge.
    "offset": (0.3, 0.05, 0.1, 0.8, lambda t: np.hypot(t - 0.1, (0.1 + 0.05) / 0.3)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_attack_flips_the_learned_classifier_within_budget_but_never_the_true_one(case, norm):
    slope, offset, margin, epsilon, cost = CASES[case]
    truth = line(margin=margin)
    t = np.linspace(margin + 0.01, 1.0, 60)
    x = np.stack([t, 0 * t], 1)
    y = np.ones(len(t), dtype=int)

    def logit(p):
        return 10 * (p[:, 0] + slope * p[:, 1] + offset)

    tangent = lambda p: truth.tangent[truth.nearest(p)]
    x_adv = adv.pgd_attack(x, y, logit, truth.classify, tangent, epsilon, steps=100, norm=norm)
    budget = np.abs(x_adv - x).max(1) if norm == "linf" else np.linalg.norm(x_adv - x, axis=1)
    assert budget.max() <= epsilon + 1e-5
    np.testing.assert_array_equal(truth.classify(x_adv), y)  # the true label is never changed
    flipped = logit(torch.as_tensor(x_adv)).numpy() < 0
    within = cost(t) < 0.85 * epsilon  # reachable in the L2 ball, hence in the larger L∞ ball too
    assert within.sum() >= 10 and flipped[within].all(), t[within][~flipped[within]]
    if norm == "l2":
        assert not flipped[cost(t) > 1.05 * epsilon].any()


def test_attack_metrics_on_a_hand_made_case():
    y = [1, 1, 1, 1, 0, 0, -1]  # the last point has no true label: never eligible
    clean = [1, 1, 1, 0, 0, 0, 1]  # point 3 is misclassified already: not eligible
    adv_pred = [0, 0, 1, 0, 1, 0, 0]
    true_adv = [1, 1, 1, 1, 0, 0, -1]
    projected = [1, 0, 0, 0, 0, 0, 0]
    m = adv.attack_metrics(y, clean, adv_pred, true_adv, projected)
    # Eligible 0, 1, 2, 4, 5; valid (flipped, true label kept) 0, 1, 4; after projection 1 stays wrong.
    assert m == {"eligible": 5, "valid_examples": 3, "attack_success": 3 / 5,
                 "attack_success_after_projection": 1 / 3}
    true_adv[1] = 0  # the perturbation changed the true label: not a valid adversarial example
    m = adv.attack_metrics(y, clean, adv_pred, true_adv, projected)
    assert m["valid_examples"] == 2 and m["attack_success_after_projection"] == 0.0
    none = adv.attack_metrics([1, 0], [1, 0], [1, 0], [1, 0], [0, 1])
    assert none["attack_success"] == 0 and math.isnan(none["attack_success_after_projection"])


# A hand-made θ_GT in the network family of the models (one hidden layer): f(z) = (z, 0.5 z), exactly,
# from leaky(z) − leaky(−z) = 1.01 z; the true posterior is Gaussian, so an MFG encoder can match it.
HIDDEN = [16]


def linear_surrogate() -> BatchedMLP:
    net = BatchedMLP(1, [1, *HIDDEN, 2], negative_slope=0.01)
    w0, w1 = np.zeros((1, 1, HIDDEN[0])), np.zeros((1, HIDDEN[0], 2))
    w0[0, 0, :2] = [1.0, -1.0]
    w1[0, :2] = np.array([[1.0, 0.5], [-1.0, -0.5]]) / 1.01
    net.load_arrays({"W0": w0, "b0": np.zeros((1, 1, HIDDEN[0])), "W1": w1, "b1": np.zeros((1, 1, 2))})
    return net


def f_line(z):
    return np.stack([z, 0.5 * z], 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adversarial")
    config = cfg.validate_config({
        "data": {"n_train": 1000, "n_val": 200, "n_test": 300, "versions": 2},
        "training": {"hidden": HIDDEN, "device": "cpu", "log_every_epochs": 0, "lr": 0.01},
        "adversarial": {"versions": 2, "label_threshold": 0.0, "z_bound": 4.0, "manifold_points": 4001,
                        "classifier": {"steps": 300},
                        "well_specified": {"restarts": 1, "encoder_epochs": 60, "epochs": 0},
                        "mismatched": {"restarts": 1, "epochs": 10},
                        "attack": {"steps": 30}, "grid_points": 5, "boundary_grid_points": 30}})
    surrogate = tmp / "surrogate.h5"
    save_surrogate(surrogate, groundtruth.get("circle"), linear_surrogate(), {"mse": 0.0})
    spec = adv.adversarial_spec(config)
    out = {"surrogate": surrogate, "spec": spec, "results": []}
    for version in range(2):
        data = tmp / f"v{version}.h5"
        write_synthetic(data, cfg.synthetic_spec(config, "circle"), version, surrogate)
        out.setdefault("data", []).append(data)
        result = tmp / f"result_v{version}.h5"
        assert cli.main(["--threads", "1", "adversarial", str(version), "--spec", cfg.to_json(spec),
                         "--data", str(data), "--surrogate", str(surrogate), "--out", str(result)]) == 0
        out["results"].append(result)
    return out


def test_ground_truth_model_projects_onto_the_true_manifold(files):
    """The well-specified model (θ_GT, σ² at the truth, encoder fitted to it) moves points on the true
    manifold little and brings points pushed off it (2σ along the normal) back onto it."""
    data = DataSet(files["data"][0])
    models = adv.train_models(files["spec"], data, files["surrogate"], 0)
    sigma = math.sqrt(data.noise_variance)
    on = f_line(np.linspace(-1.5, 1.5, 31))
    off = on + 2 * sigma * np.array([-0.5, 1.0]) / math.sqrt(1.25)
    well, _ = models["well_specified"]
    assert np.linalg.norm(adv.project(well, on) - on, axis=1).mean() < 0.4 * sigma
    assert np.linalg.norm(adv.project(well, off) - on, axis=1).mean() < 0.4 * sigma
    mismatched, _ = models["mismatched"]
    assert mismatched.latent_dim == 2 and torch.exp(mismatched.log_sigma2).max() < data.noise_variance


def test_version_file_figure_and_table(files, tmp_path):
    attrs, arrays = adv.read_result(files["results"][0])
    assert set(attrs["metrics"]) == {"none", *adv.DEFENCES}
    assert arrays["projection/mismatched/grid"].shape == arrays["grid/x"].shape == (25, 2)
    assert arrays["boundary/learned_probability"].shape == (900,)
    valid = arrays["test/valid"].astype(bool)
    assert attrs["metrics"]["none"]["valid_examples"] == valid.sum()
    np.testing.assert_array_equal(arrays["test/true_adv"][valid], arrays["test/y"][valid])
    assert attrs["metrics"]["mismatched"]["sigma2"] < attrs["noise_variance"]
    assert attrs["metrics"]["well_specified"]["sigma2"] == pytest.approx(attrs["noise_variance"])
    outs = [tmp_path / "figure7.png", tmp_path / "figure7.pdf"]
    table = [tmp_path / "figure7.csv", tmp_path / "figure7.md"]
    assert cli.main(["figure7", "--results", *map(str, files["results"]), "--style", '{"dpi": 40}',
                     "--out", *map(str, outs), "--out-csv", str(table[0]), "--out-md", str(table[1])]) == 0
    assert outs[0].stat().st_size > 1000 and outs[1].read_bytes()[:4] == b"%PDF"
    with open(table[0]) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    by = {(r["method"], r["setting"], r["metric"]): r for r in rows}
    row = by[("VAE", "mismatched_K2_sigma2_learned", "projection_distance")]
    assert row["table"] == "figure7" and row["dataset"] == "circle" and row["n"] == "2" and row["paper_mean"] == ""
    values = [adv.read_result(p)[0]["metrics"]["mismatched"]["projection_distance"] for p in files["results"]]
    assert float(row["mean"]) == pytest.approx(np.mean(values), rel=1e-3)
    assert ("VAE", "well_specified_K1_sigma2_true", "sigma2") in by
    assert "| circle | true_manifold | nearest_point | projection_distance |" in table[1].read_text()
    assert adversarial_figure.table_rows(files["results"][:1])[0]["values"] == [attrs["metrics"]["none"]["attack_success"]]
