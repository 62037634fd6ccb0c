"""Semi-supervised figures (6, 17–22) on tiny M2 models trained and evaluated here, on both semi-circle
sets: the files are written (through the library and the CLI); and the y-marginalised posterior of
the figures' panels (d) and (e) against closed forms."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

from fmvae import cli
from fmvae import config as cfg
from fmvae.data import groundtruth
from fmvae.data.simulate import save_surrogate, write_synthetic
from fmvae.evaluation import evaluate
from fmvae.metrics.quadrature import LatentGrid, latent_grid
from fmvae.nn import BatchedMLP
from fmvae.report import semi_figures as sf
from fmvae.train.protocol import train_part

STYLE = {"dpi": 30, "grid_points": 30, "z_grid_points": 401, "curve_points": 50}
DISCRETE, CONTINUOUS = "discrete_semicircle", "continuous_semicircle"
# What is trained: enough for Figure 6 (IWAE, VAE), 17 and 19 on the discrete set, 20 on the continuous.
TRAINED = {DISCRETE: ["m2_vae", "m2_iwae"], CONTINUOUS: ["m2_vae"]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Both semi-circle sets (from random surrogates), M2 models trained one epoch with one random
    restart, through the real training and evaluation code."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("semi_figures")
    config = cfg.validate_config({
        "data": {"n_train": 200, "n_val": 50, "n_test": 100, "versions": 1},
        "training": {"epochs": 1, "hidden": [8], "restarts": {"ground_truth": 0, "random": 1}, "device": "cpu",
                     "log_every_epochs": 0},
        "evaluation": {"smooth_knn": {"model_samples": 20, "draws": 1}, "loglik_samples": 3},
        "experiments": {"semi_synthetic": {"datasets": [DISCRETE, CONTINUOUS], "versions": 1, "methods": {
            "m2_vae": {"alpha": [1], "gamma": [1]}, "m2_iwae": {"S": [2], "alpha": [1], "gamma": [1]}}}}})
    out = {"data": {}, "surrogate": {}, "evaluation": {}}
    for dataset, methods in TRAINED.items():
        gt = groundtruth.get(dataset)
        surrogate = out["surrogate"][dataset] = tmp / f"{dataset}_surrogate.h5"
        save_surrogate(surrogate, gt, BatchedMLP(1, [gt.decoder_input_dim, 16, 2],
                                                 generator=torch.Generator().manual_seed(0)), {"mse": 0.5})
        data = out["data"][dataset] = tmp / f"{dataset}.h5"
        write_synthetic(data, cfg.synthetic_spec(config, dataset), 0, surrogate)
        for method in methods:
            spec = cfg.evaluation_spec(config, "semi_synthetic", dataset, method)
            part = tmp / f"{dataset}_{method}_part0.h5"
            train_part(spec, data, 0, 0, part)
            evaluate(spec, data, 0, [part], tmp / f"{dataset}_{method}.h5", surrogate_path=surrogate)
            out["evaluation"][dataset, method] = tmp / f"{dataset}_{method}.h5"
    return out


def assert_written(paths):
    for path in paths:
        assert path.stat().st_size > 1000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:4] == b"%PDF"


def outputs(tmp_path, number):
    return [tmp_path / f"figure{number}.png", tmp_path / f"figure{number}.pdf"]


@pytest.mark.parametrize("number", [17, 19, 20])
def test_model_figures_are_written(files, tmp_path, number):
    _, dataset, method = sf.SEMI_FIGURES[number]
    outs = outputs(tmp_path, number)
    sf.semi_figure(number, outs, files["evaluation"][dataset, method], files["data"][dataset],
                   files["surrogate"][dataset], STYLE)
    assert_written(outs)


def test_a_figure_refuses_another_model(files, tmp_path):
    with pytest.raises(ValueError, match="Figure 19 shows"):
        sf.semi_figure(19, outputs(tmp_path, 19), files["evaluation"][DISCRETE, "m2_vae"], files["data"][DISCRETE],
                       files["surrogate"][DISCRETE], STYLE)


def test_figure6_and_the_cli(files, tmp_path):
    """Figure 6 through the CLI from every file (each recognised by its attributes), then with the IWAE
    column missing; Figure 20 through the CLI."""
    style = cfg.to_json(STYLE)
    common = [option for kind in ("evaluation", "data", "surrogate")
              for option in (f"--{kind}s" if kind == "evaluation" else f"--{kind}", *map(str, files[kind].values()))]
    for number in (6, 20):
        outs = outputs(tmp_path, number)
        assert cli.main(["--threads", "1", "plot-model-figure", str(number), *common, "--style", style,
                         "--out", *map(str, outs)]) == 0
        assert_written(outs)
    outs = outputs(tmp_path / "vae_only", 6)
    outs[0].parent.mkdir()
    vae_only = ([files["evaluation"][DISCRETE, "m2_vae"]], [files["data"][DISCRETE]], [files["surrogate"][DISCRETE]])
    sf.plot_semi_figure(6, outs, *vae_only, STYLE)
    assert_written(outs)
    with pytest.raises(ValueError, match="needs the evaluation"):
        sf.plot_semi_figure(18, outs, *vae_only, STYLE)


def test_semi_figure_numbers():
    assert sorted(sf.SEMI_FIGURE_NUMBERS) == [6, 17, 18, 19, 20, 21, 22]
    assert {key[1] for key in sf.FIGURE6_KEYS} == {DISCRETE}
    assert [sf.SEMI_FIGURES[n][2] for n in (17, 18, 19)] == ["m2_vae", "m2_lin", "m2_iwae"]


SIGMA2 = 0.05


def test_marginal_posterior_discrete_labels_is_the_closed_form_mixture():
    """f(z, y) = z + c_y, z ~ N(0, 1), y uniform on {0, 1}, x | z, y ~ N(f, σ²): p(z | x) is the
    mixture Σ_y p(y | x) N(z; (x − c_y)/(1 + σ²), σ²/(1 + σ²)), p(y | x) ∝ N(x; c_y, 1 + σ²)."""
    c = np.array([-1.0, 1.5])
    grid = latent_grid(SimpleNamespace(prior="normal", latent_dim=1, label="bernoulli", n_classes=2), 4001)
    fz = grid.z + c[grid.y][:, None]
    x = np.array([[-2.0], [0.2], [0.25], [3.0]])
    z, post = sf.marginal_posterior(x, fz, grid, SIGMA2)
    assert post.shape == (len(x), 4001)
    np.testing.assert_allclose(post.sum(1), 1.0)
    weights = norm.pdf(x, c, np.sqrt(1 + SIGMA2))
    weights /= weights.sum(1, keepdims=True)
    expected = sum(weights[:, [k]] * norm.pdf(z[None], (x - c[k]) / (1 + SIGMA2), np.sqrt(SIGMA2 / (1 + SIGMA2)))
                   for k in range(2))
    density = post / (z[1] - z[0])
    np.testing.assert_allclose(density, expected, atol=2e-3 * expected.max())
    assert (weights.min(1)[1:3] > 0.2).all()  # the middle points' posteriors are truly bimodal


def test_marginal_posterior_continuous_label_is_the_closed_form_gaussian():
    """f(z, y) = z + a·y with y ~ N(0, 1) integrated on a y axis of the grid: p(z | x) = N(x/v, 1 − 1/v),
    v = 1 + a² + σ² (z, x jointly Gaussian). The grid's y axis spans [−6, 6] here, so that no x's
    posterior needs labels beyond it (the figures' grid stops at ±3.5, where f_GT(z, y) saturates)."""
    a = 0.5
    nodes = np.linspace(-6, 6, 801)
    log_w = norm.logpdf(nodes) - logsumexp(norm.logpdf(nodes))
    n_y = 241
    y_nodes = np.linspace(-6, 6, n_y)
    y_log_w = norm.logpdf(y_nodes) - logsumexp(norm.logpdf(y_nodes))
    grid = LatentGrid(np.tile(nodes, n_y)[:, None], np.repeat(y_nodes, len(nodes)),
                      (log_w[None, :] + y_log_w[:, None]).ravel())
    fz = grid.z + a * grid.y[:, None]
    x = np.array([[-1.5], [0.0], [2.0]])
    z, post = sf.marginal_posterior(x, fz, grid, SIGMA2)
    v = 1 + a ** 2 + SIGMA2
    expected = norm.pdf(z[None], x / v, np.sqrt(1 - 1 / v))
    np.testing.assert_allclose(post / (z[1] - z[0]), expected, atol=2e-3 * expected.max())


def test_prior_nodes_are_the_z_prior():
    grid = latent_grid(SimpleNamespace(prior="normal", latent_dim=1, label="normal"), 101, n_y=11)
    z, log_w = sf.prior_nodes(grid)
    assert z.shape == (101, 1)
    assert np.exp(log_w).sum() == pytest.approx(1.0)
    np.testing.assert_allclose(np.exp(log_w) / (z[1, 0] - z[0, 0]), norm.pdf(z[:, 0]), atol=1e-6)


def test_workflow_file_lists_follow_the_configured_evaluations():
    """Figure 6 needs either of its two evaluations, Figures 17–22 their own; the inputs come from the
    workflow's path helpers, a set without a surrogate file gives none."""
    def configured(*methods):
        return lambda experiment, dataset, method: (experiment, dataset) == ("semi_synthetic", DISCRETE) \
            and method in methods

    assert sf.workflow_outputs(lambda *key: False) == []
    assert sf.workflow_outputs(configured("m2_vae")) == [f"results/figures/figure{n}.{ext}" for n in (6, 17)
                                                         for ext in ("png", "pdf")]
    inputs = sf.workflow_inputs(configured("m2_vae", "m2_iwae"), lambda e, d, m: f"{e}/{d}/{m}.h5",
                                lambda d, v: f"{d}/v{v}.h5", lambda d: [], SimpleNamespace(number="6"))
    assert inputs == {"evaluations": [f"semi_synthetic/{DISCRETE}/m2_iwae.h5", f"semi_synthetic/{DISCRETE}/m2_vae.h5"],
                      "data": [f"{DISCRETE}/v0.h5"], "surrogates": []}
