"""The surrogate fit reaches the paper's MSE < 1e-4 and its stored weights reproduce that MSE."""

import numpy as np
import pytest
import torch

from fmvae import config as cfg
from fmvae.data import groundtruth
from fmvae.data.simulate import load_surrogate, save_surrogate
from fmvae.data.surrogate import SurrogateNotConverged, _draw, fit_surrogate, per_model_mse


def settings(**overrides):
    base = cfg.validate_config({})["data"]["surrogate"]
    return {**base, "restarts": 2, "batch_size": 512, "steps": 2000, "lbfgs_iterations": 0,
            "eval_points": 20000, "max_rounds": 1, "log_every": 0, **overrides}


def test_circle_surrogate_reaches_paper_target_and_round_trips(tmp_path):
    gt = groundtruth.get("circle")
    fit = fit_surrogate(gt, {}, settings(), seed=0)
    assert fit.mse < 1e-4
    assert fit.restart_mse.shape == (2,) and fit.model.n_models == 1  # the best restart is kept
    path = tmp_path / "circle.h5"
    save_surrogate(path, gt, fit.model, {"mse": fit.mse})
    model, attrs = load_surrogate(path)
    assert attrs["mse"] == pytest.approx(fit.mse) and attrs["input_layout"] == "z"
    # MSE on an independent fresh sample agrees with the stored one (same order of magnitude, < target).
    z = np.random.default_rng(99).standard_normal((50000, 1))
    inputs = torch.as_tensor(z, dtype=torch.float32)
    targets = torch.as_tensor(gt.mean(z), dtype=torch.float32)
    fresh = per_model_mse(model, inputs, targets)[0]
    assert fresh < 1e-4 and fresh < 5 * fit.mse + 1e-6


def test_semi_supervised_surrogate_takes_z_and_one_hot_label():
    gt = groundtruth.get("discrete_semicircle")
    fit = fit_surrogate(gt, {}, settings(steps=50, restarts=1, mse_target=10.0), seed=1)
    assert fit.model.sizes[0] == 3  # z plus a one-hot label of 2 classes


def test_unreachable_target_is_an_error_or_a_recorded_warning(caplog):
    tiny = settings(steps=20, restarts=1, mse_target=1e-8, max_rounds=2)
    with pytest.raises(SurrogateNotConverged, match="raise surrogate.steps"):
        fit_surrogate(groundtruth.get("spiral_dots"), {}, {**tiny, "on_target_missed": "error"}, seed=0)
    fit = fit_surrogate(groundtruth.get("spiral_dots"), {}, {**tiny, "on_target_missed": "warn"}, seed=0)
    assert fit.mse > 1e-8 and fit.rounds == 2
    assert "above the target" in caplog.text


def test_lbfgs_finish_stops_at_the_first_check_below_target(caplog):
    caplog.set_level("INFO", logger="fmvae.data.surrogate")
    gt = groundtruth.get("circle")
    quick = settings(steps=300, lbfgs_iterations=1000, lbfgs_check_every=100, lbfgs_history=20)
    fit = fit_surrogate(gt, {}, quick, seed=0)
    checks = [r.getMessage() for r in caplog.records if "L-BFGS" in r.getMessage()]
    assert fit.mse < 1e-4 and fit.rounds == 1
    assert 1 <= len(checks) < 10 and checks[-1].startswith("circle round 1 L-BFGS")


def test_widened_lbfgs_sample_is_weighted_back_to_the_prior():
    gt = groundtruth.get("continuous_semicircle")  # decoder input (z, y), both standard normal
    inputs, _, weights = _draw(gt, {}, np.random.default_rng(0), 200000, widen=2.0)
    assert inputs.abs().max() > 6  # the tails are populated ...
    moments = (weights[:, None] * inputs**2).mean(dim=0)  # ... and the weights restore N(0, 1)
    assert weights.mean() == pytest.approx(1.0) and moments.tolist() == pytest.approx([1.0, 1.0], rel=0.03)
