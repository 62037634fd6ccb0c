"""Methods from outside the package (docs/adding-a-method.md): by import path or entry point, their
contract probed at config validation, and the worked example, IWAE with DReG gradients
(examples/dreg), against IWAE: the same bound and decoder gradients, unbiased encoder gradients of
lower variance; then through the workflow on the smoke config."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, copy_workflow, snakemake, snakemake_env
from fmvae import config as cfg
from fmvae import methods, store
from fmvae.nn import BatchedVAE
from fmvae.objectives import iwae

EXAMPLE = REPO / "examples" / "dreg" / "src"
DREG = "fmvae_dreg:make_method"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def example_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    methods.get.cache_clear()
    yield
    methods.get.cache_clear()


def _model(m=2, seed=0):
    torch.manual_seed(seed)
    return BatchedVAE(m, 2, 1, [16, 16], 0.01, seeds=list(range(1, m + 1)), sigma2_init=torch.full((m, 1), 0.05),
                      learn_sigma2=True).double()


def _batch(m=2, n=16, samples=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, 2, generator=g, dtype=torch.float64), torch.randn(m, n, samples, 1, generator=g,
                                                                               dtype=torch.float64)


def _grads(model, objective, x, eps, hyper):
    model.zero_grad()
    objective(model, x, eps, hyper).mean(1).sum().backward()
    return ({n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("decoder") or "sigma" in n},
            torch.cat([p.grad.flatten(1) for p in model.encoder_parameters()], 1))


def test_a_method_by_import_path_is_named_by_its_config_key():
    method = methods.get(DREG)
    assert method.name == DREG and method.paper_name == "IWAE-DReG" and method.hyper == ("S",)
    assert method.samples({"S": 7}) == 7 and method.elbo_method == "vae" and callable(method.objective_fn)


def test_a_method_by_entry_point(tmp_path, monkeypatch):
    info = tmp_path / "fmvae_dreg-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fmvae-dreg\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[{methods.ENTRY_POINT_GROUP}]\ndreg = {DREG}\nbroken = fmvae_dreg:nothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert methods.get("dreg").objective_fn is methods.get(DREG).objective_fn
    with pytest.raises(ValueError, match=r"'broken'.*fails to load"):
        methods.get("broken")
    with pytest.raises(ValueError, match=r"unknown method 'nope'.*dreg"):
        methods.get("nope")


def test_dreg_has_the_iwae_bound_and_decoder_gradients():
    model, (x, eps) = _model(), _batch()
    hyper = {"S": torch.tensor([20, 5])}  # the second model uses its first 5 draws only
    dreg = methods.get(DREG).objective_fn
    assert torch.allclose(dreg(model, x, eps, hyper), iwae(model, x, eps, hyper), atol=1e-12)
    (dec_iwae, _), (dec_dreg, _) = _grads(model, iwae, x, eps, hyper), _grads(model, dreg, x, eps, hyper)
    for name in dec_iwae:
        assert torch.allclose(dec_iwae[name], dec_dreg[name], atol=1e-10), name


def _fitted_model(steps=200):
    """One model fitted by IWAE (S = 20) for ``steps`` Adam steps to x = (tanh z, z²/2) + noise."""
    model = _model(m=1)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(1, 256, 1, generator=g, dtype=torch.float64)
    x = torch.cat([torch.tanh(z), 0.5 * z ** 2], -1) + 0.1 * torch.randn(1, 256, 2, generator=g, dtype=torch.float64)
    opt, hyper = torch.optim.Adam(model.parameters(), lr=3e-3), {"S": torch.tensor([20])}
    for _ in range(steps):
        opt.zero_grad()
        (-iwae(model, x, torch.randn(1, 256, 20, 1, generator=g, dtype=torch.float64), hyper).mean()).backward()
        opt.step()
    return model, x[:, :16]


def test_dregs_encoder_gradient_is_unbiased_and_less_noisy_than_iwaes():
    """On a model fitted for 200 steps, over 300 noise draws at S = 20: the mean encoder gradients
    agree within Monte Carlo error, and DReG's variance is lower (Tucker et al.: the IWAE encoder
    gradient's signal-to-noise ratio falls with S). Measured: DReG/IWAE variance 0.004 after 200
    steps, 0.002 after 1000, 0.015 after 3000."""
    model, x = _fitted_model()
    hyper, dreg = {"S": torch.tensor([20])}, methods.get(DREG).objective_fn
    draws = {"iwae": [], "dreg": []}
    for seed in range(300):
        eps = torch.randn(1, x.shape[1], 20, 1, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
        draws["iwae"].append(_grads(model, iwae, x, eps, hyper)[1][0])
        draws["dreg"].append(_grads(model, dreg, x, eps, hyper)[1][0])
    a, b = torch.stack(draws["iwae"]), torch.stack(draws["dreg"])
    se = torch.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
    z = (a.mean(0) - b.mean(0)) / se
    assert float(z.abs().max()) < 4.5 and float((z.abs() > 3).float().mean()) < 0.02  # unbiased
    assert float(b.var(0).sum()) < 0.1 * float(a.var(0).sum())


def _module(objective_body: str, method: str = "Method('m', f, 'standard')") -> str:
    """Source of a user's method module whose objective ``f`` runs ``objective_body``."""
    return (f"from fmvae.methods import Method\ndef f(model, x, eps, hyper):\n    {objective_body}\n"
            f"def make_method():\n    return {method}\n")


@pytest.mark.parametrize(("source", "message"), [
    ("def make_method():\n    return 3\n", "gives a int, not an fmvae.methods.Method"),
    (_module("return x.sum((1, 2))"), r"returns \(2,\) on a 2-model probe batch"),
    (_module("raise KeyError('S')"), "fails on a 2-model probe batch"),
    (_module("return x[..., 0].detach()"), "no gradient reaches"),
    (_module("return x", "Method('m', 'elbo', 'fast')"), "objective must be the objective function itself; schedule 'fast'"),
])
def test_a_broken_method_is_stopped_at_validation_with_its_name(tmp_path, monkeypatch, source, message):
    (tmp_path / "mylab_methods.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mylab_methods", None)
    config = cfg.load_config([REPO / "config" / "smoke.yaml"])
    config["experiments"]["unsupervised"]["methods"] = {"mylab_methods:make_method": {}}
    with pytest.raises(cfg.ConfigError) as error:
        cfg.validate_config(config)
    problems = str(error.value).splitlines()
    assert any(p.startswith("  - experiments.unsupervised.methods.mylab_methods:make_method: ") and re.search(message, p)
               for p in problems), problems


def test_missing_modules_and_attributes_are_named():
    with pytest.raises(ValueError, match="cannot import module 'no_such_lab.methods': ModuleNotFoundError"):
        methods.get("no_such_lab.methods:make_method")
    with pytest.raises(ValueError, match="module 'fmvae_dreg' has no attribute 'make_methd'"):
        methods.get("fmvae_dreg:make_methd")


@pytest.mark.workflow
def test_an_outside_method_trains_is_selected_evaluated_and_ranked_through_the_workflow(smoke_run, tmp_path):
    """The smoke run's folder, copied; `fmvae bench` names DReG by its import path: the workflow
    trains, selects and evaluates it on every leaderboard experiment of its model, Table 2 and the
    leaderboard have its rows, and its standing is printed."""
    assert smoke_run.result.returncode == 0, smoke_run.result.stderr[-3000:]
    work = tmp_path / "wf"
    shutil.copytree(smoke_run.work, work, symlinks=True)
    unsupervised = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())["experiments"]["unsupervised"]
    env = snakemake_env({**os.environ, "PYTHONPATH": str(EXAMPLE)})
    result = subprocess.run([str(Path(sys.executable).parent / "fmvae"), "bench", "--method", DREG, "--grid", '{"S": [3]}',
                             "--configfile", "config/smoke.yaml", "local.yaml", "--cores", "2"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert f"{DREG} on the leaderboard" in result.stdout and "smooth_knn_px:circle" in result.stdout
    for dataset in unsupervised["datasets"]:
        with h5py.File(work / "results" / "evaluation" / "unsupervised" / dataset / "v0" / f"{DREG}.h5") as f:
            attrs = store.read_attrs(f)
        assert attrs["method"] == DREG and math.isfinite(attrs["metrics"]["smooth_knn_px"]) and attrs["train_seconds"] > 0
    again = snakemake(work, "results/tables/table2.csv", "--cores", "2", "--configfile", "config/smoke.yaml", "local.yaml",
                      str(work / "results" / "bench" / "fmvae_dreg_make_method.yaml"), env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    table = pd.read_csv(work / "results" / "tables" / "table2.csv")
    assert set(table.loc[table["method"] == "IWAE-DReG", "dataset"]) == set(unsupervised["datasets"])
    board = (work / "results" / "bench" / "leaderboard.md").read_text()
    assert all(f"| {m} |" in board for m in ("VAE", "IWAE", "LIN", "IWAE-DReG"))
    assert (work / "results" / "bench" / "leaderboard.png").stat().st_size > 10000


def test_a_broken_outside_method_stops_the_workflow_before_any_job(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    (work / "bad.yaml").write_text(yaml.safe_dump({"experiments": {"unsupervised": {"methods": {"fmvae_dreg:nope": {}}}}}))
    result = snakemake(work, "-n", "--configfile", "config/smoke.yaml", "bad.yaml",
                       env={**os.environ, "PYTHONPATH": str(EXAMPLE)})
    assert result.returncode != 0
    assert "experiments.unsupervised.methods.fmvae_dreg:nope: method 'fmvae_dreg:nope': module 'fmvae_dreg' has no attribute 'nope'" in (
        result.stdout + result.stderr)
