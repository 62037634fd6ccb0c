"""Tests for the Section 9 practitioner checks (fmvae.checks): the residual normality test on
synthetic manifolds with known f (Gaussian noise: no warning; heavy-tailed or mixture noise, or a
misestimated manifold: warning), its calibration under the null, the log-likelihood gap's warning
rule, and the ``fmvae check`` command on small evaluation files."""

from __future__ import annotations

import csv
import math

import h5py
import numpy as np
import pytest
import torch

from fmvae import checks, cli, store
from fmvae import config as cfg
from fmvae.nn import BatchedVAE

SETTINGS = {**checks.checks_spec(cfg.validate_config({})), "seed": 0}


pytestmark = pytest.mark.usefixtures("one_thread")


def circle(z: torch.Tensor) -> torch.Tensor:
    """The Circle's f (docs/methods.md §1): (cos 2πΦ(z), sin 2πΦ(z)); z (n, 1) -> (n, 2)."""
    angle = 2 * math.pi * torch.special.ndtr(z[:, 0])
    return torch.stack([torch.cos(angle), torch.sin(angle)], 1)


def half_circle(z: torch.Tensor) -> torch.Tensor:
    """A misestimated manifold: only the upper half of the circle."""
    angle = math.pi * torch.special.ndtr(z[:, 0])
    return torch.stack([torch.cos(angle), torch.sin(angle)], 1)


def surface(z: torch.Tensor) -> torch.Tensor:
    """A curved 2-D surface in 3-D: (z1, z2, 0.5 sin z1)."""
    return torch.stack([z[:, 0], z[:, 1], 0.5 * torch.sin(z[:, 0])], 1)


def sample(f, n, latent_dim, sigma, noise, seed):
    rng = np.random.default_rng(seed)
    z = torch.as_tensor(rng.standard_normal((n, latent_dim)), dtype=torch.float32)
    fz = f(z).numpy()
    shape = fz.shape
    if noise == "gaussian":
        eps = rng.standard_normal(shape)
    elif noise == "student3":  # heavy tails, scaled to unit variance
        eps = rng.standard_t(3, shape) / math.sqrt(3.0)
    elif noise == "mixture":  # 85% N(0, 1), 15% N(0, 4²), scaled to unit variance
        wide = rng.random(shape[0])[:, None] < 0.15
        eps = rng.standard_normal(shape) * np.where(wide, 4.0, 1.0) / math.sqrt(0.85 + 0.15 * 16)
    else:
        raise ValueError(noise)
    return torch.as_tensor(fz + sigma * eps, dtype=torch.float32)


def test_gaussian_noise_around_the_true_manifold_does_not_warn():
    x = sample(circle, 2000, 1, 0.1, "gaussian", seed=1)
    result = checks.residual_normality(x, circle, 1, 0.01, SETTINGS, seed=0)
    assert result["normal_dims"] == 1 and not result["residual_warning"], result
    assert result["residual_var_ratio"] == pytest.approx(1.0, abs=0.1)
    x = sample(surface, 2000, 2, 0.1, "gaussian", seed=2)
    result = checks.residual_normality(x, surface, 2, 0.01, {**SETTINGS, "z_bound": 4.0, "grid_points_2d": 161}, seed=0)
    assert result["normal_dims"] == 1 and not result["residual_warning"], result


@pytest.mark.parametrize("noise", ["student3", "mixture"])
def test_non_gaussian_noise_warns(noise):
    x = sample(circle, 2000, 1, 0.1, noise, seed=3)
    result = checks.residual_normality(x, circle, 1, 0.01, SETTINGS, seed=0)
    assert result["residual_warning"] and result["residual_pvalue"] < 1e-6, result
    x = sample(surface, 2000, 2, 0.1, noise, seed=4)
    result = checks.residual_normality(x, surface, 2, 0.01, {**SETTINGS, "z_bound": 4.0, "grid_points_2d": 161}, seed=0)
    assert result["residual_warning"], result


def test_a_misestimated_manifold_warns():
    x = sample(circle, 2000, 1, 0.1, "gaussian", seed=5)
    result = checks.residual_normality(x, half_circle, 1, 0.01, SETTINGS, seed=0)
    assert result["residual_warning"] and result["residual_var_ratio"] > 2, result


def test_null_calibration_and_why_normal_coordinates():
    """Under a correct model the p-values are roughly uniform: 30 data sets, few below 0.1 (binomial
    mean 3; 8 or more has probability 0.005). Ambient coordinates would reject on a circle."""
    small = {**SETTINGS, "grid_points": 2001, "refine_steps": 20}
    pvalues = [checks.residual_normality(sample(circle, 400, 1, 0.1, "gaussian", seed=100 + s), circle, 1, 0.01,
                                         small, seed=s)["residual_pvalue"] for s in range(30)]
    assert sum(p < 0.1 for p in pvalues) < 8, pvalues
    from scipy import stats

    x = sample(circle, 2000, 1, 0.1, "gaussian", seed=1)
    z = checks.closest_points(x, circle, 1, 0.01, SETTINGS)
    ambient = ((x - circle(z)) / 0.1).numpy()
    assert stats.normaltest(ambient[:, 0]).pvalue < 1e-6  # a scale mixture ε_r cos θ, not Gaussian


def test_closest_points_and_normal_basis():
    z_true = torch.linspace(-2, 2, 50)[:, None]
    angle = 2 * math.pi * torch.special.ndtr(z_true[:, 0])
    x = 1.05 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)  # 0.05 outside the circle, radially
    z = checks.closest_points(x, circle, 1, 0.01, SETTINGS)
    assert torch.allclose(z, z_true, atol=2e-3)
    # D − K = 1: the normal is the tangent turned by +90° (det[J | n] > 0), here pointing inwards.
    basis = checks.normal_basis(np.array([[[1.0], [0.0]], [[0.0], [2.0]]]))
    assert np.allclose(basis[:, :, 0], [[0.0, 1.0], [-1.0, 0.0]])
    jac = np.random.default_rng(0).standard_normal((5, 4, 2))
    basis = checks.normal_basis(jac)
    assert basis.shape == (5, 4, 2)
    assert np.allclose(np.einsum("ndj,ndk->njk", basis, basis), np.eye(2)) and np.allclose(np.einsum("ndj,ndk->njk", basis, jac), 0)
    assert (np.linalg.det(np.concatenate([jac, basis], 2)) > 0).all()


def test_latent_dim_at_least_data_dim_is_not_applicable():
    x = torch.randn(100, 2)
    result = checks.residual_normality(x, lambda z: z, 2, 1.0, SETTINGS)
    assert math.isnan(result["residual_pvalue"]) and not result["residual_warning"] and result["normal_dims"] == 0


def test_search_by_samples_for_three_latent_dimensions():
    """K = 3 in D = 4: candidates from p(z) plus a per-point candidate (as the encoder mean would be)."""
    def f(z):
        return torch.cat([z, 0.3 * (z ** 2).sum(1, keepdim=True)], 1)

    rng = np.random.default_rng(0)
    z = torch.as_tensor(rng.standard_normal((1000, 3)), dtype=torch.float32)
    x = f(z) + 0.1 * torch.as_tensor(rng.standard_normal((1000, 4)), dtype=torch.float32)
    settings = {**SETTINGS, "search_samples": 5000, "refine_steps": 100, "refine_lr": 0.01}
    result = checks.residual_normality(x, f, 3, 0.01, settings, extra=z + 0.05 * torch.randn(1000, 3))
    assert result["normal_dims"] == 1 and not result["residual_warning"]
    assert result["residual_var_ratio"] == pytest.approx(1.0, abs=0.15)


def test_gap_warns_only_above_the_threshold_and_when_significant():
    rng = np.random.default_rng(0)
    mfg = rng.normal(-1.0, 0.5, 2000)
    small = mfg + 0.01 + rng.normal(0, 0.05, 2000)  # significant but below the 0.02 threshold
    large = mfg + 0.05 + rng.normal(0, 0.05, 2000)  # significant and above it
    noisy = mfg + 0.05 + rng.normal(0, 5.0, 2000)  # above the threshold but not significant
    out = checks.loglik_gap(mfg, small, 0.02, 3.0)
    assert out["loglik_gap"] == pytest.approx(0.01, abs=0.005) and out["loglik_gap_z"] > 3 and not out["gap_warning"]
    out = checks.loglik_gap(mfg, large, 0.02, 3.0)
    assert out["gap_warning"] and out["loglik_gap_se"] == pytest.approx(0.05 / math.sqrt(2000), rel=0.1)
    assert not checks.loglik_gap(mfg, noisy, 0.02, 3.0)["gap_warning"]
    assert not checks.loglik_gap(large, mfg, 0.02, 3.0)["gap_warning"]  # the MFG model is the better one
    # Means only: the threshold alone decides.
    assert checks.loglik_gap(-1.00, -0.97, 0.02, 3.0)["gap_warning"]
    assert not checks.loglik_gap(-1.00, -0.99, 0.02, 3.0)["gap_warning"]
    with pytest.raises(ValueError, match="paired"):
        checks.loglik_gap(mfg, mfg[:10], 0.02, 3.0)


# ``fmvae check`` on small evaluation files --------------------------------------------------------


def write_data(path, n=300, seed=0):
    x = sample(circle, n, 1, 0.1, "gaussian", seed).numpy().astype(np.float64)
    with store.write_h5(path, {"dataset": "circle", "version": 0, "sigma2": 0.01, "latent_dim": 1, "data_dim": 2}) as f:
        for split in ("train", "val", "test"):
            f.create_group(split).create_dataset("x", data=x)


def write_evaluation(path, method, seed):
    training = cfg.validate_config({})["training"]
    model = BatchedVAE(1, 2, 1, training["hidden"], training["negative_slope"], seeds=[seed],
                       sigma2_init=torch.full((1, 2), 0.01), learn_sigma2=False)
    attrs = {"experiment": "unsupervised", "dataset": "circle", "method": method, "version": 0,
             "metrics": {"test_loglik_is": -1.0, "test_loglik_quadrature": -1.0 + 0.01 * seed},
             "config": {"training": {"hidden": training["hidden"], "negative_slope": training["negative_slope"]}},
             "decoder_options": {}}
    with store.write_h5(path, attrs) as f:
        params = f.create_group("params")
        for key, value in model.state_arrays().items():
            params.create_dataset(key, data=value.numpy())


def test_check_command_writes_the_table(tmp_path, capsys):
    write_data(tmp_path / "v0.h5")
    write_evaluation(tmp_path / "vae.h5", "vae", 1)
    write_evaluation(tmp_path / "iwae.h5", "iwae", 2)
    out_csv, out_md = tmp_path / "checks.csv", tmp_path / "checks.md"
    spec = cfg.to_json({**SETTINGS, "loglik_samples": 20, "grid_points": 1001, "refine_steps": 5})
    assert cli.main(["check", "--spec", spec, "--evaluations", str(tmp_path / "vae.h5"), str(tmp_path / "iwae.h5"),
                     "--data", str(tmp_path / "v0.h5"), "--out-csv", str(out_csv), "--out-md", str(out_md)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["method"] for r in rows] == ["vae", "iwae"] and rows[0]["reference_method"] == "iwae"
    assert set(rows[0]) == set(checks.COLUMNS) and rows[0]["loglik_gap"] and not rows[1]["loglik_gap"]
    assert float(rows[0]["loglik_gap_quadrature"]) == pytest.approx(0.01)
    assert rows[0]["warning"] in {"yes", "no"} and 0 <= float(rows[0]["residual_pvalue"]) <= 1
    text = out_md.read_text()
    assert "| circle | vae | 1 |" in text and "no warning" in text
    # Without outputs the summary is printed; without --spec the defaults apply.
    assert cli.main(["check", "--evaluations", str(tmp_path / "vae.h5"), "--data", str(tmp_path / "v0.h5")]) == 0
    assert "| circle | vae | 1 |" in capsys.readouterr().out


def test_missing_data_file_is_named(tmp_path):
    write_evaluation(tmp_path / "vae.h5", "vae", 1)
    write_data(tmp_path / "v0.h5")
    with h5py.File(tmp_path / "v0.h5", "a") as f:
        f.attrs["version"] = 3
    with pytest.raises(ValueError, match="no data file given for circle version 0"):
        checks.practitioner_checks([tmp_path / "vae.h5"], [tmp_path / "v0.h5"], SETTINGS)
