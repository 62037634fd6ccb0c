"""Figures of trained models (Figures 1, 5, 8–16) on tiny models trained and evaluated here: the files
are written, the learned density integrates to one, Figure 1's model samples have the model's
correlation."""

import numpy as np
import pytest
import torch

from fmvae import config as cfg
from fmvae.data import groundtruth
from fmvae.data.simulate import save_surrogate, write_synthetic
from fmvae.evaluation import evaluate, load_evaluated_model
from fmvae.nn import BatchedMLP
from fmvae.report import model_figures as mf
from fmvae.report.data_figures import SyntheticSet
from fmvae.train.protocol import train_part

STYLE = {"dpi": 30, "grid_points": 30, "z_grid_points": 401, "curve_points": 50}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Circle (from a random surrogate) and eq. 6 data; VAE and IWAE on the circle, the VAE on eq. 6,
    one epoch each, through the real training and evaluation code."""
    tmp = tmp_path_factory.mktemp("model_figures")
    config = cfg.validate_config({
        "data": {"n_train": 200, "n_val": 50, "n_test": 2000, "versions": 1},
        "training": {"epochs": 1, "hidden": [8], "restarts": {"ground_truth": 0, "random": 1}, "device": "cpu",
                     "log_every_epochs": 0},
        "evaluation": {"smooth_knn": {"model_samples": 20, "draws": 1}, "loglik_samples": 3, "sigma2_refit_draws": 1},
        "experiments": {"unsupervised": {"datasets": ["circle"], "methods": {"vae": {}, "iwae": {"S": [2]}}},
                        "linear": {"datasets": ["linear_cholesky"], "methods": {"vae": {}}}}})
    surrogate = tmp / "circle_surrogate.h5"
    save_surrogate(surrogate, groundtruth.get("circle"),
                   BatchedMLP(1, [1, 16, 2], generator=torch.Generator().manual_seed(0)), {"mse": 0.5})
    out = {"surrogate": surrogate}
    for experiment, dataset, methods in [("unsupervised", "circle", ["vae", "iwae"]),
                                         ("linear", "linear_cholesky", ["vae"])]:
        data = out[dataset] = tmp / f"{dataset}.h5"
        write_synthetic(data, cfg.synthetic_spec(config, dataset), 0, surrogate if dataset == "circle" else None)
        for method in methods:
            spec = cfg.evaluation_spec(config, experiment, dataset, method)
            train_part(spec, data, 0, 0, tmp / f"{dataset}_{method}_part0.h5")
            evaluate(spec, data, 0, [tmp / f"{dataset}_{method}_part0.h5"], tmp / f"{dataset}_{method}.h5")
            out[(dataset, method)] = tmp / f"{dataset}_{method}.h5"
    return out


def assert_written(paths):
    for path in paths:
        assert path.stat().st_size > 1000
    assert paths[1].read_bytes()[:4] == b"%PDF"


def test_model_figure_and_figure5_are_written(files, tmp_path):
    outs = [tmp_path / "figure8.png", tmp_path / "figure8.pdf"]
    mf.model_figure(8, outs, files[("circle", "vae")], files["circle"], files["surrogate"], STYLE)
    assert_written(outs)
    with pytest.raises(ValueError, match="Figure 9 shows"):
        mf.model_figure(9, outs, files[("circle", "vae")], files["circle"], files["surrogate"], STYLE)
    outs = [tmp_path / "figure5.png", tmp_path / "figure5.pdf"]
    mf.plot_model_figure(5, outs, [files[("circle", "vae")], files[("circle", "iwae")]], [files["circle"]],
                         [files["surrogate"]], STYLE)
    assert_written(outs)


def test_learned_density_integrates_to_one(files):
    learned = mf.LearnedModel(files[("circle", "vae")])
    grid = SyntheticSet(files["circle"], files["surrogate"], 1001).grid
    fz = learned.f(grid.z)
    sigma = np.sqrt(learned.sigma2)
    lo, hi = fz.min(axis=0) - 8 * sigma, fz.max(axis=0) + 8 * sigma
    axes = [np.linspace(a, b, 300) for a, b in zip(lo, hi)]
    points = np.stack([m.ravel() for m in np.meshgrid(*axes)], axis=1)
    log_p = mf.log_density(points, fz, grid.log_w, learned.sigma2)
    cell = np.prod([a[1] - a[0] for a in axes])
    assert np.exp(log_p).sum() * cell == pytest.approx(1.0, abs=0.01)
    from fmvae.metrics.quadrature import log_marginal
    np.testing.assert_allclose(log_p[::997], log_marginal(points[::997], fz, grid.log_w, learned.sigma2), atol=1e-8)


def test_figure1_model_samples_have_the_model_correlation(files, tmp_path):
    outs = [tmp_path / "figure1.png", tmp_path / "figure1.pdf"]
    rho_true, rho_model = mf.figure1(outs, files[("linear_cholesky", "vae")], files["linear_cholesky"], STYLE)
    assert_written(outs)
    model, _ = load_evaluated_model(files[("linear_cholesky", "vae")])
    with torch.no_grad():
        L = model.decoder.cholesky()[0].double().numpy()
        cov = L @ L.T + np.diag(np.exp(model.log_sigma2[0].double().numpy()))
    expected = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
    n = 2000  # the test split: as many model samples as data points
    assert rho_model == pytest.approx(expected, abs=4 * (1 - expected ** 2) / np.sqrt(n) + 1e-3)
    A = groundtruth.LINEAR_A_GT
    cov_true = A @ A.T + 0.01 * np.eye(2)
    assert rho_true == pytest.approx(cov_true[0, 1] / np.sqrt(cov_true[0, 0] * cov_true[1, 1]), abs=0.05)
