"""The compute plan: its training jobs agree with the workflow's DAG; the estimate's arithmetic."""

import math

import pytest

from conftest import REPO
from fmvae import config as cfg
from fmvae import plan


def test_training_jobs_match_the_dag_and_count_models_and_steps():
    config = cfg.load_config(REPO / "config" / "smoke.yaml")
    jobs = plan.training_jobs(config)
    counts = plan.dag_job_counts([REPO / "config" / "smoke.yaml"], REPO / "Snakefile")
    assert counts["train"] == sum(j["rule"] == "train" for j in jobs)
    assert counts["fit_gt_encoder"] == sum(j["rule"] == "fit_gt_encoder" for j in jobs)
    steps = config["training"]["epochs"] * (config["data"]["n_train"] // config["training"]["batch_size"])
    iwae = next(j for j in jobs if j["experiment"] == "unsupervised" and j["method"] == "iwae")
    assert iwae["models"] == 2 and iwae["steps_per_model"] == steps  # 1 + 1 restarts, S = 3
    assert iwae["vae_step_equivalents"] == pytest.approx(2 * steps * (plan.IWAE_BASE + plan.IWAE_PER_SAMPLE * 3))


def test_throughput_is_interpolated_log_log_and_clamped():
    bench = {"rows": [{"models": 1, "batched_model_steps_per_s": 1000.0},
                      {"models": 100, "batched_model_steps_per_s": 10000.0}]}
    assert plan.throughput_at(bench, 1) == pytest.approx(1000)
    assert plan.throughput_at(bench, 10) == pytest.approx(math.sqrt(1000 * 10000))
    assert plan.throughput_at(bench, 1000) == pytest.approx(10000)
    jobs = [{"models": 10, "vae_step_equivalents": 3162.2776601683795 * 7}]
    assert plan.estimate_seconds(jobs, bench) == pytest.approx(7)


def test_priorities_start_the_costliest_chains_first():
    config = cfg.load_config(REPO / "config" / "config.yaml")
    jobs = [j for j in plan.training_jobs(config) if j["rule"] == "train"]
    priority = plan.priorities(config)
    # every training job ranks by its own estimated cost
    for job in jobs:
        assert priority["train"][(job["experiment"], job["dataset"], job["method"])] == pytest.approx(
            job["vae_step_equivalents"] / 1e6)
    # a data set's chain outranks each training job on it and ranks by the training it feeds
    for dataset, value in priority["dataset"].items():
        mine = [j["vae_step_equivalents"] / 1e6 for j in jobs if j["dataset"] == dataset]
        assert value == pytest.approx(sum(mine)) and value >= max(mine)
    ranked = sorted(priority["dataset"], key=priority["dataset"].get, reverse=True)
    assert set(ranked[:2]) == {"discrete_semicircle", "continuous_semicircle"}  # M2 with IWAE and LIN
