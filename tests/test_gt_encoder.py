"""φ_GT: the supervised pre-fit closes the gap that the ELBO fit alone leaves on a Spiral-Dots-like
staircase; the recorded log p(x) under θ_GT is the truth (independent importance sampling, the
closed form of eq. 6, the exact class sum of M2); the gap warning; the gap table; old readers."""

from __future__ import annotations

import csv
import logging
import math

import h5py
import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal, norm

from fmvae import config as cfg
from fmvae.cli import main
from fmvae.data import groundtruth
from fmvae.data.simulate import save_surrogate, write_synthetic
from fmvae.nn import BatchedMLP
from fmvae.report.gt_gaps import COLUMNS
from fmvae.train import gt_encoder
from fmvae.train.protocol import DataSet, build_model, fit_gt_encoder, read_gt_encoder

WIDTH = 32


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small networks: one torch thread is many times faster than two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def staircase(steps: int = 5, slope: float = 50.0) -> BatchedMLP:
    """A Spiral-Dots-like θ_GT as a ReLU network: f(z) = P_0 + Σ_k (P_{k+1} − P_k) clip(a(z − c_k), 0, 1),
    flat steps at dots P_k on a spiral joined by steep ramps (|f'| ≈ 50–300, posterior sd ≈ 1e-3)."""
    k = np.arange(steps + 1)
    dots = np.stack([(1 + k) * np.cos(1.2 * k), (1 + k) * np.sin(1.2 * k)], 1)
    centres = norm.ppf((np.arange(steps) + 1) / (steps + 1))
    arrays = {"W0": np.zeros((1, WIDTH)), "b0": np.zeros((1, WIDTH)), "W1": np.eye(WIDTH), "b1": np.zeros((1, WIDTH)),
              "W2": np.zeros((WIDTH, 2)), "b2": dots[:1]}
    for i in range(steps):
        arrays["W0"][0, 2 * i: 2 * i + 2] = slope
        arrays["b0"][0, 2 * i], arrays["b0"][0, 2 * i + 1] = -slope * centres[i], -slope * centres[i] - 1
        arrays["W2"][2 * i], arrays["W2"][2 * i + 1] = dots[i + 1] - dots[i], dots[i] - dots[i + 1]
    net = BatchedMLP(1, [1, WIDTH, WIDTH, 2], 0.0)
    net.load_arrays({key: torch.tensor(v, dtype=torch.float32)[None] for key, v in arrays.items()})
    return net


def data_spec(dataset: str, **extra) -> dict:
    return {"dataset": dataset, "seed": 0, "versions": 1, "n_train": 1000, "n_val": 300, "n_test": 10,
            "sigma2": groundtruth.get(dataset).sigma2, "params": dict(groundtruth.get(dataset).params), **extra}


def fit_spec(dataset: str, negative_slope: float = 0.0, restarts: int = 2, epochs: int = 5, **settings) -> dict:
    return {"dataset": dataset, "seed": 0, "restarts": restarts,
            "training": {"device": "cpu", "hidden": [WIDTH, WIDTH], "negative_slope": negative_slope, "batch_size": 100,
                         "lr": 1e-3, "checkpoint_every_s": 300, "log_every_epochs": 0, "epochs": epochs},
            "gt_encoder": {"prefit_epochs": 100, "prefit_batch_size": 200, "val_draws": 100, **settings}}


@pytest.fixture(scope="module")
def staircase_set(tmp_path_factory):
    """Data simulated from the staircase θ_GT, and φ_GT fitted with and without the pre-fit."""
    folder = tmp_path_factory.mktemp("staircase")
    surrogate, data = folder / "surrogate.h5", folder / "v0.h5"
    save_surrogate(surrogate, groundtruth.get("spiral_dots"), staircase(), {"mse": 0.0})
    write_synthetic(data, data_spec("spiral_dots"), 0, surrogate)
    fits = {init: fit_gt_encoder(fit_spec("spiral_dots", epochs=20, init=init), data, 0, surrogate, folder / f"{init}.h5")
            for init in ("random", "posterior", "true_z")}
    return {"folder": folder, "data": data, "surrogate": surrogate, "fits": fits}


def test_the_pre_fit_closes_the_gap_the_elbo_fit_alone_leaves(staircase_set):
    random, posterior, true_z = (staircase_set["fits"][k] for k in ("random", "posterior", "true_z"))
    assert random["gap_mean"] > 100  # the ELBO fit alone leaves the outer dots on wrong steps
    assert posterior["gap_mean"] < 0.05 * random["gap_mean"]
    assert posterior["gap_median"] < 3.0
    assert true_z["gap_median"] < random["gap_median"]
    for fit in staircase_set["fits"].values():  # the selected restart is the best validation ELBO
        assert fit["selected"] == int(np.argmax(fit["val_elbo"]))
        assert np.all(fit["val_elbo_se"] > 0) and np.all(fit["val_elbo_se"] < 0.1 * fit["gap_mean"])


def _encoder(arrays: dict) -> BatchedMLP:
    sizes = [arrays["W0"].shape[0]] + [arrays[f"W{i}"].shape[1] for i in range(len(arrays) // 2)]
    net = BatchedMLP(1, sizes, 0.0)
    net.load_arrays({k: torch.as_tensor(v)[None] for k, v in arrays.items()})
    return net


def importance_sampled_log_px(x: np.ndarray, f, sigma2: float, proposal, samples: int = 4000, seed: int = 0):
    """log p(x) = log E_r[N(x; f(z), σ²) N(z; 0, 1)/r(z)], r = ½ N(μ(x), 4 s²(x)) + ½ N(0, 1)."""
    rng = np.random.default_rng(seed)
    mean, log_var = proposal
    sd = 2 * np.exp(0.5 * log_var)
    z = np.where(rng.random((len(x), samples)) < 0.5, mean[:, None] + sd[:, None] * rng.standard_normal((len(x), samples)),
                 rng.standard_normal((len(x), samples)))
    fz = f(z.reshape(-1, 1)).reshape(len(x), samples, -1)
    log_r = np.logaddexp(norm.logpdf(z, mean[:, None], sd[:, None]), norm.logpdf(z)) - math.log(2)
    log_w = (-0.5 * ((x[:, None] - fz) ** 2 / sigma2 + math.log(2 * math.pi * sigma2)).sum(-1) + norm.logpdf(z) - log_r)
    return np.logaddexp.reduce(log_w, axis=1) - math.log(samples)


def test_recorded_log_px_agrees_with_importance_sampling(staircase_set):
    path = staircase_set["folder"] / "posterior.h5"
    with h5py.File(path, "r") as f:
        recorded, gap = f["val_log_px"][()], f["val_gap"][()]
        per_point = f["val_elbo_per_point"][()]
        selected = int(f.attrs["selected"])
        assert f.attrs["log_px_method"] == "quadrature"
        assert f.attrs["log_px"] == pytest.approx(recorded.mean())
    with h5py.File(staircase_set["data"], "r") as f:
        x = f["val"]["x"][()]
    decoder = staircase()
    with torch.no_grad():
        out = _encoder(read_gt_encoder(path)["encoder"])(torch.as_tensor(x, dtype=torch.float32)[None])[0].double().numpy()

        def f(z):
            return decoder(torch.as_tensor(z, dtype=torch.float32)[None])[0].double().numpy()

        sampled = importance_sampled_log_px(x, f, 0.01, (out[:, 0], out[:, 1]))
    assert np.abs(recorded - sampled).mean() < 0.05
    assert abs(recorded.mean() - sampled.mean()) < 0.01
    np.testing.assert_allclose(gap, recorded - per_point[selected])
    assert (gap > -0.5).all()  # the ELBO is a lower bound (up to its Monte Carlo error per point)


@pytest.fixture(scope="module")
def linear_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("linear")
    data = folder / "v0.h5"
    write_synthetic(data, data_spec("linear_cholesky"), 0)
    return folder, data


def test_linear_log_px_is_the_closed_form_and_the_posterior_fit_reaches_the_mean_field_optimum(linear_set):
    from fmvae.metrics.linear_gaussian import objective_terms

    folder, data = linear_set
    summary = fit_gt_encoder(fit_spec("linear_cholesky", negative_slope=0.01, epochs=3, init="posterior"), data, 0,
                             None, folder / "posterior.h5")
    with h5py.File(folder / "posterior.h5", "r") as f:
        recorded = f["val_log_px"][()]
    with h5py.File(data, "r") as f:
        x = f["val"]["x"][()]
    L = groundtruth.linear_cholesky_matrix(groundtruth.LINEAR_A_GT, 0.006)
    truth = multivariate_normal(np.zeros(2), L @ L.T + 0.004 * np.eye(2)).logpdf(x)
    np.testing.assert_allclose(recorded, truth, rtol=1e-6, atol=1e-6)
    assert summary["log_px_method"] == "closed_form"
    _, pmo = objective_terms(groundtruth.LINEAR_A_GT)  # the gap of the best mean-field q: 0.532 nats
    assert pmo - 0.1 < summary["gap_mean"] < pmo + 0.15


def test_true_z_targets_are_the_true_z_with_the_laplace_variances(linear_set):
    """Eq. 6: the Laplace variance at any z is the mean-field optimum, 1/Λ_kk, Λ = I + LᵀΨ⁻¹L."""
    _, data = linear_set
    dataset = DataSet(data)
    with h5py.File(data, "r") as f:
        dataset.z = {"train": f["train"]["z"][()]}
    model = build_model(dataset, fit_spec("linear_cholesky")["training"], [{"init": "random", "seed": 1}], False, None,
                        None, torch.device("cpu"))
    model.decoder.set_models([0], {"A": torch.as_tensor(groundtruth.LINEAR_A_GT, dtype=torch.float32)})
    targets = gt_encoder.prefit_targets(model, dataset, "true_z", gt_encoder.settings_of({}))
    L = groundtruth.linear_cholesky_matrix(groundtruth.LINEAR_A_GT, 0.006)
    precision = np.eye(2) + L.T @ L / 0.004
    np.testing.assert_allclose(targets["encoder"].mean.numpy(), dataset.z["train"], rtol=1e-6)
    np.testing.assert_allclose(targets["encoder"].var.numpy(), np.broadcast_to(1 / np.diag(precision), (1000, 2)),
                               rtol=1e-4)
    posterior = gt_encoder.prefit_targets(model, dataset, "posterior", gt_encoder.settings_of({}))["encoder"]
    x = dataset.x["train"].double().numpy()
    np.testing.assert_allclose(posterior.mean.numpy(), x @ (L / 0.004) @ np.linalg.inv(precision).T, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(posterior.var.numpy()[0], np.diag(np.linalg.inv(precision)), rtol=1e-5)


def test_the_pre_fit_stops_at_its_tolerance_and_the_elbo_fit_decays_its_learning_rate(linear_set, tmp_path):
    _, data = linear_set
    spec = fit_spec("linear_cholesky", negative_slope=0.01, restarts=1, epochs=1, init="posterior", prefit_epochs=400)
    loose = fit_gt_encoder({**spec, "gt_encoder": {**spec["gt_encoder"], "prefit_tolerance": 10.0}}, data, 0, None,
                           tmp_path / "loose.h5")
    assert loose["prefit_steps"] == gt_encoder.CHECK_EVERY  # the first check stops it (2000 planned)
    strict = fit_gt_encoder({**spec, "gt_encoder": {**spec["gt_encoder"], "prefit_tolerance": 0.0}}, data, 0, None,
                            tmp_path / "strict.h5")
    assert strict["prefit_steps"] == 2000 and strict["prefit_loss"][0] < loose["prefit_loss"][0]
    weight = torch.nn.Parameter(torch.zeros(2, 3))
    opt = gt_encoder.CosineAdam([weight], 2, 1e-3, total=10)
    rates = []
    for _ in range(10):
        rates.append(opt.lr)
        weight.grad = torch.ones_like(weight)
        opt.step(torch.ones(2, dtype=torch.bool))
    np.testing.assert_allclose(rates, [1e-3 * 0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(10)], rtol=1e-6)
    assert opt.lr == 0.0
    resumed = gt_encoder.CosineAdam([weight], 2, 1e-3, total=10)
    resumed.load_state(opt.state())  # a resumed fit continues the schedule from its step count
    assert resumed.lr == 0.0


def test_a_mean_gap_above_the_threshold_logs_a_warning(linear_set, caplog):
    folder, data = linear_set
    spec = fit_spec("linear_cholesky", negative_slope=0.01, restarts=1, epochs=1, init="random", val_draws=100)

    def fit(threshold, name):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fmvae.train.gt_encoder"):
            summary = fit_gt_encoder({**spec, "gt_encoder": {**spec["gt_encoder"], "gap_warning": threshold}}, data, 0,
                                     None, folder / name)
        return summary, [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    summary, warnings = fit(1e6, "first.h5")
    gap = summary["gap_mean"]
    assert gap > 0.6 and not warnings  # one epoch from random: above the mean-field optimum (0.53)
    below, warnings = fit(1.05 * gap, "below.h5")  # the same fit (same seeds), a threshold just above its gap
    assert below["gap_mean"] == gap and not warnings
    _, warnings = fit(0.95 * gap, "above.h5")
    assert len(warnings) == 1 and "linear_cholesky v0" in warnings[0] and f"{gap:.3g} nats" in warnings[0]


def test_m2_log_px_sums_the_classes_exactly(tmp_path):
    """A discrete-label set with a random θ_GT on (z, one-hot y): the recorded log p(x) is
    log ½ Σ_y ∫ N(x; f(z, y), σ²) N(z; 0, 1) dz (independent fine even grid), and φ_GT's bound U lies below it."""
    gt = groundtruth.get("discrete_semicircle")
    net = BatchedMLP(1, [3, WIDTH, WIDTH, 2], 0.01, seeds=[5])
    with torch.no_grad():
        net.weights[-1].mul_(3.0)
    save_surrogate(tmp_path / "surrogate.h5", gt, net, {"mse": 0.0})
    write_synthetic(tmp_path / "v0.h5", data_spec("discrete_semicircle", label_fraction=0.1), 0, tmp_path / "surrogate.h5")
    spec = fit_spec("discrete_semicircle", negative_slope=0.01, epochs=2, init="posterior")
    spec["training"]["m2"] = {"discrete_y": "enumerate", "temperature": 2.2}
    summary = fit_gt_encoder(spec, tmp_path / "v0.h5", 0, tmp_path / "surrogate.h5", tmp_path / "phi.h5")
    with h5py.File(tmp_path / "phi.h5", "r") as f:
        recorded = f["val_log_px"][()]
        assert sorted(k for k in f if isinstance(f[k], h5py.Group)) == ["classifier", "encoder", "encoder_zy"]
    x = DataSet(tmp_path / "v0.h5").x["val"].double().numpy()
    z = np.linspace(-6, 6, 60001)
    log_w = norm.logpdf(z) + math.log(z[1] - z[0])
    per_class = []
    for c in range(2):
        inputs = np.concatenate([z[:, None], np.broadcast_to(np.eye(2)[c], (len(z), 2))], 1)
        with torch.no_grad():
            fz = net(torch.as_tensor(inputs, dtype=torch.float32)[None])[0].double().numpy()
        ll = -0.5 * ((x[:, None] - fz[None]) ** 2 / 0.01 + math.log(2 * math.pi * 0.01)).sum(-1)
        per_class.append(np.logaddexp.reduce(ll + log_w, axis=1) - math.log(2))
    np.testing.assert_allclose(recorded, np.logaddexp(*per_class), atol=2e-3)
    assert summary["log_px"] >= max(summary["val_elbo"]) - 3 * max(summary["val_elbo_se"])
    assert summary["gap_mean"] < 3.0


def test_m2_with_a_continuous_label_integrates_y_on_its_grid(tmp_path):
    """A continuous-label set with a random θ_GT on (z, y): the recorded log p(x) is the double
    integral over z and y (independent finer grid), and the fit's bound U lies below it."""
    gt = groundtruth.get("continuous_semicircle")
    net = BatchedMLP(1, [2, WIDTH, WIDTH, 2], 0.01, seeds=[6])
    with torch.no_grad():
        net.weights[-1].mul_(3.0)
    save_surrogate(tmp_path / "surrogate.h5", gt, net, {"mse": 0.0})
    write_synthetic(tmp_path / "v0.h5", data_spec("continuous_semicircle", label_fraction=0.1, sigma2=0.01), 0,
                    tmp_path / "surrogate.h5")
    spec = fit_spec("continuous_semicircle", negative_slope=0.01, epochs=2, init="posterior", prefit_epochs=40)
    spec["training"]["m2"] = {"discrete_y": "enumerate", "temperature": 2.2}
    summary = fit_gt_encoder(spec, tmp_path / "v0.h5", 0, tmp_path / "surrogate.h5", tmp_path / "phi.h5")
    with h5py.File(tmp_path / "phi.h5", "r") as f:
        recorded = f["val_log_px"][()]
    x = DataSet(tmp_path / "v0.h5").x["val"].double().numpy()
    z, y = np.linspace(-6.5, 6.5, 1001), np.linspace(-4.5, 4.5, 301)
    log_w = (norm.logpdf(z)[None, :] + norm.logpdf(y)[:, None]).ravel() + math.log((z[1] - z[0]) * (y[1] - y[0]))
    with torch.no_grad():
        inputs = np.stack([np.tile(z, len(y)), np.repeat(y, len(z))], 1)
        fz = net(torch.as_tensor(inputs, dtype=torch.float32)[None])[0].double().numpy()
    truth = np.concatenate([np.logaddexp.reduce(
        -0.5 * ((x[i:i + 50, None] - fz[None]) ** 2 / 0.01 + math.log(2 * math.pi * 0.01)).sum(-1) + log_w, axis=1)
        for i in range(0, len(x), 50)])
    np.testing.assert_allclose(recorded, truth, atol=5e-3)
    assert summary["log_px_method"] == "quadrature"
    assert summary["log_px"] >= max(summary["val_elbo"]) - 3 * max(summary["val_elbo_se"])


def test_read_gt_encoder_reads_the_networks_and_a_ground_truth_restart_starts_from_them(staircase_set):
    path = staircase_set["folder"] / "posterior.h5"
    encoder = read_gt_encoder(path)
    assert list(encoder) == ["encoder"]  # the per-point datasets and attributes are outside the groups
    data = DataSet(staircase_set["data"])
    training = fit_spec("spiral_dots")["training"]
    model = build_model(data, training, [{"init": "ground_truth", "seed": 1}], False,
                        {k: v[0] for k, v in staircase().state_arrays().items()}, encoder, torch.device("cpu"))
    np.testing.assert_array_equal(model.encoder.state_arrays()["W0"][0].numpy(), encoder["encoder"]["W0"])


def test_the_gap_table_command_writes_one_row_per_file(staircase_set, tmp_path):
    folder = staircase_set["folder"]
    files = [str(folder / f"{init}.h5") for init in ("random", "posterior")]
    out_csv, out_md = tmp_path / "gaps.csv", tmp_path / "gaps.md"
    assert main(["gt-gap-table", "--gt-encoders", *files, "--out-csv", str(out_csv), "--out-md", str(out_md)]) == 0
    with open(out_csv) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == COLUMNS
    for column in ("dataset", "version", "init", "restarts", "selected", "val_elbo", "log_px", "gap_mean",
                   "gap_median", "gap_p95", "gap_frac_above_5", "fit_seconds"):
        assert column in COLUMNS
    assert sorted(r["init"] for r in rows) == ["posterior", "random"]
    by_init = {r["init"]: r for r in rows}
    assert float(by_init["random"]["gap_mean"]) == pytest.approx(staircase_set["fits"]["random"]["gap_mean"], rel=1e-3)
    assert float(by_init["posterior"]["gap_mean"]) < float(by_init["random"]["gap_mean"])
    assert all(r["dataset"] == "spiral_dots" and r["restarts"] == "2" and float(r["fit_seconds"]) > 0 for r in rows)
    text = out_md.read_text()
    assert text.startswith("# gt_encoder_gaps") and text.count("| spiral_dots |") == 2 and "⚠" in text


def test_config_init_and_gap_settings(tmp_path):
    config = cfg.validate_config({})
    spec = cfg.gt_encoder_spec(config, "spiral_dots")
    assert spec["gt_encoder"]["init"] == "posterior" and "prefit_epochs" in spec["gt_encoder"]
    assert gt_encoder.settings_of(spec)["gap_warning"] == config["training"]["gt_encoder"]["gap_warning"]
    random = cfg.gt_encoder_spec(cfg.validate_config({"training": {"gt_encoder": {"init": "random"}}}), "spiral_dots")
    assert "prefit_epochs" not in random["gt_encoder"]  # a pre-fit setting does not rerun a random-init fit
    assert "quadrature" not in cfg.gt_encoder_spec(config, "linear_cholesky")["gt_encoder"]
    with pytest.raises(cfg.ConfigError, match="training.gt_encoder.init"):
        cfg.validate_config({"training": {"gt_encoder": {"init": "truth"}}})
    assert gt_encoder.settings_of({})["init"] == "posterior"  # an old spec reads as the defaults
