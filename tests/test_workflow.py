"""Workflow tests: the real Snakemake rules on the smoke config, end to end, in a temporary folder;
the paper config's DAG; a bad config stopping the run before any job; the lint."""

import h5py
import pytest

from conftest import copy_workflow, snakemake
from fmvae import store

pytestmark = pytest.mark.workflow


def test_smoke_workflow_end_to_end(smoke_run):
    work, result = smoke_run.work, smoke_run.result  # one local smoke run per session (conftest.py)
    assert result.returncode == 0, result.stderr[-4000:]
    results = work / "results"
    synthetic = ["figure8", "circle", "absolute_value", "clusters", "spiral_dots", "discrete_semicircle",
                 "continuous_semicircle", "figure8_5d", "clusters_5d", "linear_cholesky"]
    real = ["diabetic_retinopathy", "contraceptive", "titanic"]
    for name in synthetic:
        for version in (0, 1):
            path = results / "data" / name / f"v{version}.h5"
            with h5py.File(path) as f:
                attrs = store.read_attrs(f)
                assert set(f) == {"train", "val", "test"}
                assert f["train"]["x"].shape[0] == 200 and f["val"]["x"].shape[0] == 100
                assert ("y" in f["train"]) == (name in {"discrete_semicircle", "continuous_semicircle"})
            assert attrs["dataset"] == name and attrs["version"] == version and attrs["sigma2"] > 0
            assert attrs["config"]["n_train"] == 200
        assert (results / "figures" / "data" / f"{name}.png").stat().st_size > 1000
    surrogates = sorted(p.stem for p in (results / "surrogates").glob("*.h5"))
    assert surrogates == sorted(set(synthetic) - {"linear_cholesky"})
    for name in real:
        for split in (0, 1):
            with h5py.File(results / "data" / name / f"split{split}.h5") as f:
                assert f["train"]["y_observed"].dtype == bool and store.read_attrs(f)["split"] == split
        assert (results / "figures" / "data" / f"{name}.png").stat().st_size > 1000
    for n in (2, 3, 4):
        assert (results / "figures" / f"figure{n}.png").stat().st_size > 1000
        assert (results / "figures" / f"figure{n}.pdf").read_bytes()[:4] == b"%PDF"
    # Training, selection and the tables (every method of the smoke experiments, one version each).
    for method in ("vae", "iwae", "lin"):
        with h5py.File(results / "runs" / "unsupervised" / "clusters" / "v0" / method / "part0.h5") as f:
            attrs = store.read_attrs(f)
            assert len(attrs["models"]) == 2 and {m["init"] for m in attrs["models"]} == {"ground_truth", "random"}
            assert f["curve"].shape == (2, 2) and f["params/decoder/W0"].shape == (2, 1, 50)
        with h5py.File(results / "evaluation" / "unsupervised" / "clusters" / "v0" / f"{method}.h5") as f:
            attrs = store.read_attrs(f)
            assert {"smooth_knn_px", "test_neg_elbo", "test_neg_elbo_se", "test_loglik", "test_loglik_defensive_is",
                    "test_loglik_quadrature", "sigma2_refit", "sigma2_refit_test"} <= set(attrs["metrics"])
            assert attrs["estimators"]["test_loglik"] == "quadrature"  # K = 1
            assert {r["name"] for r in attrs["invariants"]} >= {"elbo <= log p(x) [quadrature]", "elbo <= iwae_check"}
            assert [r["init"] for r in attrs["restarts"]] == ["ground_truth", "random"]
            assert sum(r["selected"] for r in attrs["restarts"]) == 1
    table2 = (results / "tables" / "table2.csv").read_text().splitlines()
    assert table2[0] == "table,dataset,method,setting,metric,mean,std,n,paper_mean,paper_std"
    assert len(table2) == 1 + 4 * 3 and any(line.startswith("table2,clusters,IWAE,,smooth_knn_px,") and
                                            line.endswith(",1,0.057,0.028") for line in table2)
    assert "sigma2_learned_jointly" in (results / "tables" / "sec8.md").read_text()
    assert "global_optimum" in (results / "tables" / "sec5.csv").read_text()
    # Table 1: K = 1, 2, 3 on the 5-D sets; the K = 2 models have 2-D latents and learned 5-D σ².
    with h5py.File(results / "evaluation" / "signal_noise_K2" / "figure8_5d" / "v0" / "vae.h5") as f:
        assert f["params/decoder/W0"].shape == (1, 2, 50) and f["params/log_sigma2"].shape == (1, 5)
        assert store.read_attrs(f)["selected"]["init"] == "random"
    table1 = (results / "tables" / "table1.csv").read_text().splitlines()
    # 2 data sets × 3 K × (3 methods × (−ELBO, MI, σ²) + IWAE's own bound)
    assert len(table1) == 1 + 2 * 3 * (3 * 3 + 1)
    assert any(line.startswith("table1,clusters_5d,VAE,K=2,avg_mi_x_zi,") and line.endswith(",1,1.425,0.019")
               for line in table1)
    for n in (23, 24):
        assert (results / "figures" / f"figure{n}.png").stat().st_size > 1000
    reproduction = (results / "REPRODUCTION.md").read_text()
    assert "| Table 1 | the ELBO (VAE) prefers K > 1" in reproduction and "| Tables 3–4 |" in reproduction
    assert "| Bounds | every bound is a lower bound" in reproduction
    # The audit tables: every restart of every selected grid point, and every evaluation's invariants.
    restarts = (results / "tables" / "restarts.csv").read_text().splitlines()
    assert restarts[0].startswith("experiment,dataset,version,method,slug,restart,init,selected,")
    assert any(",unsupervised,clusters,0,vae,," in f",{line}" for line in restarts[1:])
    invariants = (results / "tables" / "invariants.csv").read_text().splitlines()
    assert invariants[0] == "experiment,dataset,version,method,name,lhs,rhs,slack,holds"
    assert any(line.startswith("semi_synthetic,discrete_semicircle,0,m2_iwae,m2_iwae <= log p(x) [quadrature],")
               for line in invariants)
    checks = (results / "tables" / "checks.csv").read_text().splitlines()  # 4 data sets × (3 methods + ground truth)
    assert checks[0].startswith("experiment,dataset,version,method,") and len(checks) == 1 + 4 * 4
    assert "| clusters | vae | 1 |" in (results / "tables" / "checks.md").read_text()
    assert (results / "figures" / "figure7.png").stat().st_size > 1000  # Appendix F: Figure 7 and its table
    figure7 = (results / "tables" / "figure7.csv").read_text().splitlines()
    assert figure7[0] == table2[0] and any(
        line.startswith("figure7,circle,VAE,mismatched_K2_sigma2_learned,projection_distance,") for line in figure7)
    # Semi-supervised M2 (Tables 3-6): packed labelled data, α/γ grids, σ² grids and K per real set.
    with h5py.File(results / "runs" / "semi_synthetic" / "discrete_semicircle" / "v0" / "m2_vae" / "part0.h5") as f:
        attrs = store.read_attrs(f)  # α ∈ {0, 1} × (1 ground-truth + 1 random restart)
        assert [m["slug"] for m in attrs["models"]] == ["alpha0-gamma1"] * 2 + ["alpha1-gamma1"] * 2
        assert f["params/decoder/W0"].shape == (4, 1 + 2, 50) and f["params/classifier/W3"].shape == (4, 50, 2)
    with h5py.File(results / "evaluation" / "semi_real" / "contraceptive" / "v0" / "m2_iwae.h5") as f:
        attrs = store.read_attrs(f)
        assert attrs["selected"]["slug"] in {"S3-alpha1-gamma1-sigma20.01", "S3-alpha1-gamma1-sigma20.5"}
        assert f["params/encoder/W0"].shape == (1, 9, 20) and f["params/classifier/W3"].shape == (1, 20, 3)
        assert {"smooth_knn_pxy:cohort1", "smooth_knn_pxy:cohort3", "f_separation"} <= set(attrs["metrics"])
    with h5py.File(results / "evaluation" / "semi_real" / "titanic" / "v0" / "m2_vae.h5") as f:
        candidates = store.read_attrs(f)["candidates"]  # K ∈ {1, 2} searched: one training part per K
        assert {c["slug"].split("-")[2] for c in candidates} == {"K1", "K2"}
        assert all("val_smooth_knn" in c for c in candidates)
    assert sorted(p.name for p in (results / "runs" / "semi_real" / "titanic" / "v0" / "m2_vae").glob("*.h5")) == [
        "part0.h5", "part1.h5"]
    table4 = (results / "tables" / "table4.csv").read_text()
    for line in ("table4,discrete_semicircle,VAE,y=0,smooth_knn_pxy,", "table4,continuous_semicircle,LIN,y=3.5,",
                 "table4,discrete_semicircle,IWAE,,f_separation_ratio,"):
        assert line in table4
    assert len((results / "tables" / "table3.csv").read_text().splitlines()) == 1 + 2 * 3
    table6 = (results / "tables" / "table6.csv").read_text()
    assert "table6,contraceptive,VAE,cohort3,smooth_knn_pxy," in table6 and ",1,3.722,0.488" in table6
    assert len((results / "tables" / "table5.csv").read_text().splitlines()) == 1 + 3 * 2
    for n in (6, 17, 18, 19, 20, 21, 22):
        assert (results / "figures" / f"figure{n}.pdf").read_bytes()[:4] == b"%PDF"
    separability = (results / "tables" / "separability.csv").read_text().splitlines()
    assert len(separability) == 1 + 5
    assert not [p for p in results.rglob(".*") if p.is_file()], "temporary files left behind"
    assert (results / "logs" / "fit_surrogate" / "figure8.log").read_text().count("round 1") >= 1
    again = snakemake(work, "-n", "--configfile", "config/smoke.yaml", "local.yaml")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_paper_config_builds_its_dag(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    result = snakemake(work, "-n", "--configfile", "config/paper.yaml", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "simulate_dataset" in output and "fit_surrogate" in output and "prepare_uci" in output


def test_bad_config_stops_before_any_job(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    (work / "bad.yaml").write_text("data:\n  synthetic:\n    circle: {sigma: 0.1}\n  real: {standardize: zscore}\n")
    result = snakemake(work, "--cores", "1", "--configfile", "bad.yaml", timeout=300)
    assert result.returncode != 0
    assert "data.synthetic.circle.sigma: unknown key; allowed keys:" in result.stderr
    assert "data.real.standardize: 'zscore' is not allowed; allowed values: 'train', 'none'" in result.stderr
    assert not (work / "results").exists()
