"""Simulation: sizes, noise, determinism (byte-identical files), HDF5 round trip and attributes."""

import hashlib

import h5py
import numpy as np
import pytest
import torch

from fmvae import config as cfg
from fmvae import store
from fmvae.data import groundtruth
from fmvae.data.simulate import save_surrogate, simulate_version, write_synthetic
from fmvae.nn import BatchedMLP


def spec(name, **overrides):
    config = cfg.validate_config({"data": {"n_train": 300, "n_val": 50, "n_test": 60, "versions": 3}})
    return {**cfg.synthetic_spec(config, name), **overrides}


@pytest.fixture
def surrogate_file(tmp_path):
    """A (random, untrained) surrogate network for the circle, enough to test the plumbing."""
    gt = groundtruth.get("circle")
    model = BatchedMLP(1, [1, 50, 50, 50, 2], generator=torch.Generator().manual_seed(0))
    path = tmp_path / "circle_surrogate.h5"
    save_surrogate(path, gt, model, {"mse": 0.5})
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_config_and_seed_give_bit_identical_files(tmp_path, surrogate_file):
    for name, sur in [("circle", surrogate_file), ("linear_cholesky", None)]:
        a, b, c = tmp_path / f"{name}_a.h5", tmp_path / f"{name}_b.h5", tmp_path / f"{name}_c.h5"
        write_synthetic(a, spec(name), 1, sur)
        write_synthetic(b, spec(name), 1, sur)
        write_synthetic(c, spec(name), 2, sur)
        assert digest(a) == digest(b)
        assert digest(a) != digest(c)
        other_seed = tmp_path / f"{name}_d.h5"
        write_synthetic(other_seed, spec(name, seed=12345), 1, sur)
        assert not np.array_equal(store.read_split(a, "train")["x"], store.read_split(other_seed, "train")["x"])


def test_hdf5_layout_and_attributes(tmp_path, surrogate_file):
    path = tmp_path / "v0.h5"
    s = spec("circle")
    write_synthetic(path, s, 0, surrogate_file)
    with h5py.File(path) as f:
        assert set(f) == {"train", "val", "test"}
        attrs = store.read_attrs(f)
        for split, n in [("train", 300), ("val", 50), ("test", 60)]:
            assert f[split]["x"].shape == (n, 2) and f[split]["z"].shape == (n, 1) and f[split]["fz"].shape == (n, 2)
            assert "y" not in f[split]
    assert attrs["dataset"] == "circle" and attrs["version"] == 0 and attrs["sigma2"] == 0.01
    assert attrs["config"] == s and attrs["package_version"] and isinstance(attrs["seed"], int)
    assert attrs["surrogate_mse"] == 0.5
    # the noise-free mean is the surrogate's output, and x = fz + noise
    train = store.read_split(path, "train")
    assert not np.allclose(train["fz"], groundtruth.circle(train["z"]), atol=1e-2)


def test_no_temporary_files_are_left_behind(tmp_path, surrogate_file):
    write_synthetic(tmp_path / "out" / "v0.h5", spec("circle"), 0, surrogate_file)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["v0.h5"]


def test_a_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "v0.h5"
    with pytest.raises(ValueError):
        write_synthetic(target, spec("circle"), 0, surrogate_path=None)  # circle needs its surrogate
    with pytest.raises(ValueError), store.write_h5(target) as f:
        f.attrs["x"] = 1
        raise ValueError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_noise_variance_and_linear_covariance():
    s = spec("linear_cholesky", n_train=40000)
    arrays = simulate_version(s, 0, None)["train"]
    residual = arrays["x"] - arrays["fz"]
    np.testing.assert_allclose(residual.var(axis=0), 0.004, rtol=0.05)  # σ² − B
    A = groundtruth.LINEAR_A_GT
    np.testing.assert_allclose(np.cov(arrays["x"].T), A @ A.T + 0.01 * np.eye(2), rtol=0.05, atol=0.01)
    np.testing.assert_allclose(arrays["fz"], groundtruth.linear_cholesky(arrays["z"]))


@pytest.mark.parametrize("name,discrete", [("discrete_semicircle", True), ("continuous_semicircle", False)])
def test_semi_supervised_labels_and_observed_mask(name, discrete):
    gt = groundtruth.get(name)
    model = BatchedMLP(1, [gt.decoder_input_dim, 8, 2], generator=torch.Generator().manual_seed(0))
    s = spec(name, n_train=1000)
    arrays = simulate_version(s, 0, model)
    mask = arrays["train"]["y_observed"]
    assert mask.dtype == bool and "y_observed" not in arrays["val"] and "y_observed" not in arrays["test"]
    assert abs(mask.sum() - 100) <= 2  # 10% (stratified: rounded per class)
    y = arrays["train"]["y"]
    if discrete:
        assert set(np.unique(y)) == {0, 1}
        assert all(mask[y == c].sum() >= 1 for c in (0, 1))
    else:
        assert y.dtype.kind == "f"
