"""Config validation: the shipped configs are valid; bad keys and values give clear messages."""

import subprocess
import sys

import pytest

from conftest import REPO
from fmvae import config as cfg


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(name):
    config = cfg.load_config(REPO / "config" / name)
    assert set(cfg.synthetic_names(config)) == {
        "figure8", "circle", "absolute_value", "clusters", "spiral_dots", "discrete_semicircle",
        "continuous_semicircle", "figure8_5d", "clusters_5d", "linear_cholesky"}
    assert cfg.real_names(config) == ["diabetic_retinopathy", "contraceptive", "titanic"]


def test_defaults_are_the_paper_values():
    config = cfg.validate_config({})
    spec = cfg.synthetic_spec(config, "clusters")
    assert (spec["versions"], spec["n_train"], spec["n_val"], spec["n_test"], spec["sigma2"]) == (5, 5000, 2000, 2000, 0.2)
    assert config["data"]["surrogate"]["mse_target"] == 1e-4 and config["data"]["surrogate"]["hidden"] == [50, 50, 50]
    assert config["data"]["real"]["splits"] == 5 and config["data"]["real"]["label_fraction"] == 0.1


def test_per_dataset_overrides_only_touch_that_dataset():
    config = cfg.validate_config({"data": {"synthetic": {"circle": {"n_train": 10}, "figure8": {}}}})
    assert cfg.synthetic_spec(config, "circle")["n_train"] == 10
    assert cfg.synthetic_spec(config, "figure8")["n_train"] == 5000
    assert cfg.synthetic_names(config) == ["circle", "figure8"]


def test_unknown_key_names_the_key_and_the_allowed_keys():
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate_config({"data": {"synthetic": {"circle": {"n_trian": 10}}}})
    message = str(err.value)
    assert "data.synthetic.circle.n_trian: unknown key" in message and "n_train" in message and "sigma2" in message


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(cfg.ConfigError, match=r"data.synthetic.circel: unknown key; allowed keys: .*circle"):
        cfg.validate_config({"data": {"synthetic": {"circel": {}}}})


def test_bad_enum_value_lists_the_allowed_values():
    with pytest.raises(cfg.ConfigError, match=r"data.real.standardize: 'zscore' is not allowed; allowed values: 'train', 'none'"):
        cfg.validate_config({"data": {"real": {"standardize": "zscore"}}})


def test_out_of_range_values_and_all_problems_reported_together():
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate_config({"data": {"versions": 0, "surrogate": {"mse_target": -1}}})
    message = str(err.value)
    assert "2 problems" in message and "data.versions: 0 is less than the minimum of 1" in message
    assert "data.surrogate.mse_target" in message


def test_cross_checks():
    with pytest.raises(cfg.ConfigError, match="source: 'ftp' is not allowed; allowed values: 'uci', 'keel'"):
        cfg.validate_config({"data": {"real": {"datasets": {"titanic": {
            "source": "ftp", "archive": "t.zip", "member": "t.dat", "sha256": "0" * 64, "format": "keel"}}}}})
    with pytest.raises(cfg.ConfigError, match="must exceed B"):
        cfg.validate_config({"data": {"synthetic": {"linear_cholesky": {"sigma2": 0.005}}}})


def test_derive_seed_is_stable_and_distinct():
    assert cfg.derive_seed(1, "circle", 0) == cfg.derive_seed(1, "circle", 0)
    assert len({cfg.derive_seed(1, "circle", v) for v in range(50)}) == 50
    assert cfg.derive_seed(1, "circle", 0) != cfg.derive_seed(2, "circle", 0)


def test_cli_reports_a_bad_config_and_exits_nonzero(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  real:\n    splits: -1\n")
    result = subprocess.run([sys.executable, "-m", "fmvae.cli", "validate-config", str(bad)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "data.real.splits: -1 is less than the minimum of 1" in result.stderr


def test_experiment_checks_name_the_entry_and_what_is_allowed():
    bad = {"experiments": {"e": {"datasets": ["circle", "moons"],
                                 "methods": {"iwae": {"K": [3]}, "lin": {"T": [0.1], "R": [2.5]}, "flow": {}},
                                 "restarts": {"ground_truth": 0, "random": 0}}}}
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate_config(bad)
    text = str(err.value)
    assert "experiments.e.datasets: 'moons' is not allowed; allowed values: 'figure8'" in text
    assert "experiments.e.methods.iwae: hyper-parameters ['K'] given; iwae needs exactly ['S']" in text
    assert "experiments.e.methods.lin.R: must be whole numbers" in text
    assert "experiments.e.methods.flow: unknown method 'flow'; built in: vae, iwae, lin" in text
    assert "experiments.e.restarts: needs at least one restart" in text


def test_experiment_slices_fill_defaults_and_expand_the_grid():
    config = cfg.validate_config({"experiments": {"e": {"datasets": ["clusters"],
                                                    "methods": {"lin": {"T": [0.05, 0.1], "R": [5, 10]}}}}})
    spec = cfg.experiment_spec(config, "e", "clusters", "lin")
    assert spec["sigma2"] == "fixed" and spec["selection"] == "val_loss"
    assert spec["grid"] == [{"R": 5, "T": 0.05}, {"R": 5, "T": 0.1}, {"R": 10, "T": 0.05}, {"R": 10, "T": 0.1}]
    assert spec["restarts"] == {"ground_truth": 5, "random": 5} and spec["training"]["epochs"] == 100


def test_a_latent_dimension_other_than_the_truth_allows_random_restarts_only():
    entry = {"datasets": ["figure8_5d"], "methods": {"vae": {}}, "sigma2": "learned", "latent_dim": 2}
    with pytest.raises(cfg.ConfigError, match="latent_dim: 2 differs from figure8_5d's true K 1"):
        cfg.validate_config({"experiments": {"e": entry}})
    config = cfg.validate_config({"experiments": {"e": {**entry, "restarts": {"ground_truth": 0, "random": 3}},
                                                  "t": {**entry, "latent_dim": 1}}})
    assert cfg.experiment_spec(config, "e", "figure8_5d", "vae")["latent_dim"] == 2
    assert cfg.experiment_spec(config, "t", "figure8_5d", "vae")["latent_dim"] == 1  # the truth: GT restarts allowed


def test_real_sets_need_a_sigma2_grid_a_latent_dim_and_random_restarts():
    entry = {"datasets": ["titanic"], "methods": {"m2_vae": {"alpha": [0], "gamma": [1]}}}
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate_config({"experiments": {"e": entry}})
    text = str(err.value)
    assert "experiments.e.restarts.ground_truth: titanic is a real set with no ground truth" in text
    assert "experiments.e.sigma2: titanic is a real set with no true σ²" in text
    assert "experiments.e.latent_dim: titanic is a real set; give its K" in text
    with pytest.raises(cfg.ConfigError, match="m2_vae: a semi-supervised method needs a labelled data set; circle"):
        cfg.validate_config({"experiments": {"e": {**entry, "datasets": ["circle"]}}})


def test_a_latent_dimension_grid_gives_one_training_job_per_k():
    from fmvae.train.protocol import model_latent_dim, part_count, part_models

    entry = {"datasets": ["titanic", "contraceptive"], "methods": {"m2_vae": {"alpha": [0, 1], "gamma": [1]}},
             "sigma2": [0.01, 0.5], "latent_dim": {"titanic": [1, 2], "contraceptive": 5},
             "restarts": {"ground_truth": 0, "random": 3}, "models_per_job": 5}
    config = cfg.validate_config({"experiments": {"e": entry}})
    spec = cfg.experiment_spec(config, "e", "titanic", "m2_vae")
    assert "latent_dim" not in spec and len(spec["grid"]) == 2 * 2 * 2 and {g["K"] for g in spec["grid"]} == {1, 2}
    # 12 models per K, in jobs of at most 5 that never mix K: 5 + 5 + 2 per K.
    parts = [part_models(spec, 0, p) for p in range(part_count(spec, 0))]
    assert [len(p) for p in parts] == [5, 5, 2, 5, 5, 2]
    assert [{model_latent_dim(spec, m) for m in p} for p in parts] == [{1}] * 3 + [{2}] * 3
    assert len({m["slug"] for p in parts for m in p}) == 8 and parts[0][0]["slug"] == "alpha0-gamma1-K1-sigma20.01"
    assert cfg.experiment_spec(config, "e", "contraceptive", "m2_vae")["latent_dim"] == 5
