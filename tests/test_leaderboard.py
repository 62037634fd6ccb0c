"""The leaderboard (fmvae.report.leaderboard): known answers on hand-made evaluation files."""

from __future__ import annotations

import math

import pytest

from fmvae import store
from fmvae.report import leaderboard


def _evaluation(tmp_path, experiment, dataset, method, version, metrics, seconds=10.0, models=5, true_sigma2=0.01):
    path = tmp_path / f"{experiment}-{dataset}-{method}-{version}.h5"
    with store.write_h5(path, {"experiment": experiment, "dataset": dataset, "method": method, "version": version,
                               "metrics": metrics, "models": models, "train_seconds": seconds,
                               "true_sigma2": true_sigma2}):
        pass
    return path


@pytest.fixture
def files(tmp_path):
    out = []
    for v, (knn, ll) in enumerate([(1.0, -2.0), (3.0, -4.0)]):
        out.append(_evaluation(tmp_path, "unsupervised", "figure8", "vae", v, {"smooth_knn_px": knn, "test_loglik": ll}))
        out.append(_evaluation(tmp_path, "unsupervised", "figure8", "iwae", v, {"smooth_knn_px": knn / 10, "test_loglik": ll}))
    out.append(_evaluation(tmp_path, "spiral_learned", "spiral_dots", "vae", 0, {"sigma2": 0.02}))
    for k, neg_elbo in ((1, 5.0), (2, 4.5), (3, 4.8)):  # VAE prefers K = 2 by 0.5 nats
        out.append(_evaluation(tmp_path, f"signal_noise_K{k}", "figure8_5d", "vae", 0, {"test_neg_elbo": neg_elbo}))
    out.append(_evaluation(tmp_path, "semi_synthetic", "discrete_semicircle", "m2_vae", 0,
                           {"smooth_knn_px": 2.0, "smooth_knn_pxy:cohort0": 10.0, "smooth_knn_pxy:cohort1": 20.0,
                            "f_separation": 0.1}, seconds=30.0, models=10))
    out.append(_evaluation(tmp_path, "semi_real", "titanic", "m2_vae", 0, {"smooth_knn_px": 99.0}))  # not ranked
    return out


def test_cells_are_means_over_versions_by_paper_name(files):
    cells = leaderboard.collect(files)
    assert set(cells) == {"VAE", "IWAE"}  # m2_vae joins VAE by its paper name; semi_real is not a column
    vae = cells["VAE"]
    assert vae["smooth_knn_px:figure8"] == [1.0, 3.0] and vae["test_loglik:figure8"] == [-2.0, -4.0]
    assert vae["sigma2_ratio:spiral_dots"] == [pytest.approx(2.0)]
    assert vae["k_preference:figure8_5d"] == [pytest.approx(0.5)]
    assert vae["smooth_knn_pxy:discrete_semicircle"] == [15.0] and vae["f_separation:discrete_semicircle"] == [0.1]
    # seconds per model over everything ranked: (2·10 + 10 + 3·10 + 30) s over (2·5 + 5 + 3·5 + 10) models
    assert vae["seconds_per_model"] == [pytest.approx(90 / 40)]
    assert "k_preference:figure8_5d" not in cells["IWAE"]


def test_the_tables_and_figure(files, tmp_path):
    csv, md, png = tmp_path / "l.csv", tmp_path / "l.md", tmp_path / "l.png"
    leaderboard.write_leaderboard(files, csv, md, png, dpi=60)
    text = md.read_text()
    assert "| VAE | 2 ± 1.41 |" in text and text.index("| VAE |") < text.index("| IWAE |")
    assert "k_preference:figure8_5d" in text and "clusters_5d" not in text  # only columns with a value
    lines = csv.read_text().splitlines()
    assert lines[0] == "method,column,mean,std,n" and "IWAE,smooth_knn_px:figure8,0.2,0.141,2" in lines
    assert png.stat().st_size > 5000
    assert not math.isnan(float(lines[1].split(",")[2]))


@pytest.mark.parametrize("source", ["evaluations", "csv"])
def test_standing_ranks_by_each_columns_direction(files, tmp_path, source):
    cells = leaderboard.collect(files)
    if source == "csv":  # what fmvae bench ranks from: the rule's CSV
        leaderboard.write_leaderboard(files, tmp_path / "l.csv", tmp_path / "l.md", tmp_path / "l.png", dpi=40)
        cells = leaderboard.read_means(tmp_path / "l.csv")
    iwae = {r["column"]: r for r in leaderboard.standing(cells, "IWAE")}
    assert iwae["smooth_knn_px:figure8"]["rank"] == 1 and iwae["smooth_knn_px:figure8"]["best_other"] == "VAE"
    vae = {r["column"]: r for r in leaderboard.standing(cells, "VAE")}
    assert vae["smooth_knn_px:figure8"]["rank"] == 2 and vae["smooth_knn_px:figure8"]["of"] == 2
    assert vae["k_preference:figure8_5d"]["of"] == 1 and vae["k_preference:figure8_5d"]["best_other"] is None


def test_bench_adds_a_method_to_the_experiments_of_its_model(monkeypatch):
    from conftest import REPO
    from fmvae import bench, methods
    from fmvae import config as cfg

    monkeypatch.syspath_prepend(str(REPO / "examples" / "dreg" / "src"))
    methods.get.cache_clear()
    config = cfg.load_config([REPO / "config" / "config.yaml", REPO / "config" / "smoke.yaml"])
    extra = bench.overlay(config, "fmvae_dreg:make_method", {"S": [3]})
    assert set(extra["experiments"]) == {"unsupervised", "spiral_learned", "signal_noise_K1", "signal_noise_K2",
                                         "signal_noise_K3"}
    assert extra["experiments"]["unsupervised"]["methods"] == {**config["experiments"]["unsupervised"]["methods"],
                                                               "fmvae_dreg:make_method": {"S": [3]}}
    assert set(bench.overlay(config, "m2_iwae", {"S": [3], "alpha": [1], "gamma": [1]})["experiments"]) == {"semi_synthetic"}
    methods.get.cache_clear()
