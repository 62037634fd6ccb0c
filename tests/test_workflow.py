"""Workflow tests: the real Snakemake rules on the smoke config, end to end, in a temporary folder;
the paper config's DAG; a bad config stopping the run before any job; the lint."""

import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import pytest
import yaml

from fmvae import store
from conftest import REPO, SHARED_UCI

pytestmark = pytest.mark.workflow


def snakemake(workdir, *args, timeout=1200):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout)


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ["Snakefile", "environment.yml"]:
        shutil.copy(REPO / name, dest / name)
    for name in ["workflow", "config"]:
        shutil.copytree(REPO / name, dest / name)
    return dest


def real_data_source(tmp_path: Path, http_folder) -> dict:
    """Config that points the downloads at a local server: the published files when
    ../shared/data/uci exists, otherwise small fixture files in the same formats."""
    if SHARED_UCI.exists():
        base = http_folder(SHARED_UCI)
        files = {"diabetic_retinopathy": ("messidor_features.arff", "messidor_features.arff",
                                          (SHARED_UCI / "messidor_features.arff").read_bytes(), "arff"),
                 "contraceptive": ("cmc.data", "cmc.data", (SHARED_UCI / "cmc.data").read_bytes(), "csv"),
                 "titanic": ("titanic.zip", "titanic.dat", (SHARED_UCI / "titanic.dat").read_bytes(), "keel")}
    else:
        www = tmp_path / "www"
        www.mkdir()
        arff = "@relation dr\n@attribute a numeric\n@attribute b numeric\n@attribute Class {0,1}\n@data\n" + "\n".join(
            f"{i % 7},{i % 5 * 0.5},{i % 2}" for i in range(90))
        csv = "\n".join(f"{i % 9},{i % 4},{i % 3 + 1}" for i in range(90))
        keel = "@relation titanic\n@attribute Class real\n@inputs Class\n@outputs Survived\n@data\n" + "\n".join(
            f"{i % 4 * 0.5},{1.0 if i % 3 else -1.0}" for i in range(90))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("titanic.dat", keel)
        (www / "dr.arff").write_text(arff)
        (www / "cmc.data").write_text(csv)
        (www / "titanic.zip").write_bytes(buffer.getvalue())
        base = http_folder(www)
        files = {"diabetic_retinopathy": ("dr.arff", "messidor_features.arff", arff.encode(), "arff"),
                 "contraceptive": ("cmc.data", "cmc.data", csv.encode(), "csv"),
                 "titanic": ("titanic.zip", "titanic.dat", keel.encode(), "keel")}
    return {"data": {"real": {"base_urls": {"uci": base, "keel": base}, "datasets": {
        name: {"source": "uci", "archive": archive, "member": member,
               "sha256": hashlib.sha256(data).hexdigest(), "format": fmt}
        for name, (archive, member, data, fmt) in files.items()}}}}


def test_smoke_workflow_end_to_end(tmp_path, http_folder):
    work = copy_workflow(tmp_path / "wf")
    (work / "local.yaml").write_text(yaml.safe_dump(real_data_source(tmp_path, http_folder)))
    result = snakemake(work, "--cores", "2", "--configfile", "config/smoke.yaml", "local.yaml")
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
            assert {"smooth_knn_px", "test_neg_elbo", "test_loglik_is", "test_loglik_quadrature"} <= set(attrs["metrics"])
    table2 = (results / "tables" / "table2.csv").read_text().splitlines()
    assert table2[0] == "table,dataset,method,setting,metric,mean,std,n,paper_mean,paper_std"
    assert len(table2) == 1 + 4 * 3 and any(line.startswith("table2,clusters,IWAE,,smooth_knn_px,") and
                                            line.endswith(",1,0.057,0.028") for line in table2)
    assert "sigma2_learned_jointly" in (results / "tables" / "sec8.md").read_text()
    assert "global_optimum" in (results / "tables" / "sec5.csv").read_text()
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


def test_lint_is_clean(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    result = snakemake(work, "--lint", timeout=300)
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, result.stdout[-3000:]
