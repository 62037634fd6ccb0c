"""The compute plan of a configuration: jobs per rule, models, optimiser steps and a time estimate.

Jobs per rule come from Snakemake's own dry run of the whole workflow in an empty directory (so
they are the DAG's numbers, not a re-derivation). Models and optimiser steps come from the training
protocol (:func:`fmvae.train.protocol.parts`): per training job, its models × epochs × steps
per epoch (⌊n_train / batch⌋), plus φ_GT's restarts. A time estimate converts them with a
throughput measurement of ``benchmarks/throughput.py`` (batched model-steps per second at the job's
number of models, interpolated log-log between the measured rows).

Relative costs of a step [choice, stated so the estimate can be checked]: an IWAE step with S
samples costs ``IWAE_BASE + IWAE_PER_SAMPLE`` · S VAE steps (one encoder pass, S decoder passes;
measured with subnormals flushed, 10 models, one thread, medians of 2 rounds on 2026-12-04:
1.59 / 3.37 / 6.58 VAE steps at S = 3 / 10 / 20, fitted by 0.6 + 0.3 S; before the flush it was
about (1 + S)/2, 5.3 at S = 10, because IWAE's backward pass multiplied subnormals); a LIN step costs
``lin_factor`` VAE steps (its aggressive inner loop; default 10, the ratio of the mean LIN to the
mean VAE training job measured in the default run on 2026-12-03: 10.3 on Figure-8, 3 versions, and
9.5 for M2 on the continuous semi-circle, 2 versions; an earlier run measured 4.4 — the ratio depends
on how long the slowest model of a stack stays aggressive. Both were measured while the inner loop
still stepped the whole stack; it now steps only the models still in it, which made those jobs
1.6-1.9x faster, and the factor has not been re-measured since); an M2 step costs ``M2_FACTOR`` times its
unsupervised counterpart (two bounds per point and three inference networks; measured 2.35× at 10
models on one thread with subnormals flushed, m2_vae against vae and m2_iwae against iwae at S = 10
alike; 2.2–2.7× before the flush); wider hidden layers cost (width / 50)² (the hidden products dominate).
The estimate is for the benchmark's network (3×50, D = 2) otherwise; wider inputs cost somewhat more.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from fmvae import config as cfg
from fmvae import methods
from fmvae.data import groundtruth
from fmvae.train.protocol import parts

LIN_FACTOR = 10.0
M2_FACTOR = 2.35
IWAE_BASE, IWAE_PER_SAMPLE = 0.6, 0.3
REAL_ROWS = {"diabetic_retinopathy": 1151, "contraceptive": 1473, "titanic": 2201}  # docs/methods.md §1


def train_size(config: dict, dataset: str) -> int:
    """Training points of a synthetic set, or of a real set's split (the first of three equal parts)."""
    if dataset in cfg.real_names(config):
        return math.ceil(REAL_ROWS[dataset] / 3)
    return cfg.synthetic_spec(config, dataset)["n_train"]


def step_cost(method: str, hyper: dict, lin_factor: float = LIN_FACTOR, width: int = 50) -> float:
    """Cost of one optimiser step of one model, in VAE steps (of the 3×50 network)."""
    registered = methods.get(method)
    if registered.samples_from:
        cost = IWAE_BASE + IWAE_PER_SAMPLE * hyper["S"]
    else:
        cost = lin_factor if registered.schedule == "lagging" else 1.0
    return cost * (M2_FACTOR if registered.semi_supervised else 1.0) * (width / 50) ** 2


def training_jobs(config: dict, lin_factor: float = LIN_FACTOR) -> list[dict]:
    """One row per training job (and per φ_GT job): models, optimiser steps, VAE-step equivalents."""
    rows = []
    batch = config["training"]["batch_size"]
    gt_versions: dict[str, int] = {}  # φ_GT is fitted per version of a set some GT restart needs
    for experiment in cfg.experiment_names(config):
        entry = config["experiments"][experiment]
        for dataset in entry["datasets"]:
            n_train = train_size(config, dataset)
            for method in entry["methods"]:
                spec = cfg.experiment_spec(config, experiment, dataset, method)
                steps = spec["training"]["epochs"] * (n_train // batch)
                versions = cfg.experiment_versions(config, experiment, dataset)
                if spec["restarts"]["ground_truth"] > 0:
                    gt_versions[dataset] = max(gt_versions.get(dataset, 0), versions)
                for version in range(versions):
                    for models in parts(spec, version):
                        rows.append({"rule": "train", "experiment": experiment, "dataset": dataset,
                                     "method": method, "models": len(models), "steps_per_model": steps,
                                     "model_steps": len(models) * steps,
                                     "vae_step_equivalents": steps * sum(
                                         step_cost(method, m["hyper"], lin_factor, max(spec["training"]["hidden"]))
                                         for m in models)})
    gt = config["training"]["gt_encoder"]
    for dataset, versions in sorted(gt_versions.items()):
        steps = gt["epochs"] * (train_size(config, dataset) // batch)
        method = "m2_vae" if groundtruth.get(dataset).label else "vae"  # φ_GT of M2 on a labelled set
        for _ in range(versions):
            rows.append({"rule": "fit_gt_encoder", "experiment": "", "dataset": dataset, "method": method,
                         "models": gt["restarts"], "steps_per_model": steps, "model_steps": gt["restarts"] * steps,
                         "vae_step_equivalents": gt["restarts"] * steps * step_cost(method, {})})
    return rows


def priorities(config: dict) -> dict:
    """Scheduling priorities [choice]: when more jobs are ready than there are cores, Snakemake starts
    the one of highest priority first. A training job's priority is its estimated cost (VAE-step
    equivalents, :func:`training_jobs`), so the longest jobs start first; a data set's jobs (its
    surrogate fit, its simulation, its φ_GT fits) get the estimated cost of all training on that set,
    so the chain in front of the costliest experiments starts first instead of whenever the DAG's
    order reaches it. A two-thread surrogate fit still waits while one-thread jobs keep a core busy:
    Snakemake fills a single free core with the best job that fits. Evaluations keep Snakemake's
    default (0). Returns {"dataset": {name: priority}, "train": {(experiment, dataset,
    method): priority}}, in millions of VAE-step equivalents."""
    out: dict = {"dataset": {}, "train": {}}
    for job in training_jobs(config):
        if job["rule"] != "train":
            continue
        cost = job["vae_step_equivalents"] / 1e6
        key = (job["experiment"], job["dataset"], job["method"])
        out["train"][key] = max(out["train"].get(key, 0.0), cost)
        out["dataset"][job["dataset"]] = out["dataset"].get(job["dataset"], 0.0) + cost
    return out


def _with_own_bin_on_path() -> dict[str, str]:
    """The environment, with this interpreter's bin folder (where ``fmvae`` is installed) first on
    PATH: the Snakefile checks for the command, and ``.venv/bin/fmvae plan`` runs unactivated."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def dag_job_counts(configfiles, snakefile: Path) -> dict[str, int]:
    """Jobs per rule of the whole workflow from ``snakemake --dry-run`` in an empty directory."""
    with tempfile.TemporaryDirectory() as work:
        result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--quiet", "rules",
                                 "--snakefile", str(snakefile), "--directory", work,
                                 "--configfile", *[str(Path(c).resolve()) for c in configfiles]],
                                capture_output=True, text=True, env=_with_own_bin_on_path(), check=False)
    if result.returncode != 0:
        raise RuntimeError(f"snakemake --dry-run failed:\n{(result.stderr + result.stdout)[-2000:]}")
    counts = {}
    for line in (result.stdout + result.stderr).splitlines():
        match = re.fullmatch(r"\s*([A-Za-z_]\w*)\s+(\d+)\s*", line)
        if match and match.group(1) not in ("total", "job", "count"):
            counts[match.group(1)] = int(match.group(2))
    return counts


def throughput_at(benchmark: dict, models: int) -> float:
    """Batched model-steps per second at ``models`` models, log-log interpolated (clamped at the ends)."""
    rows = sorted(benchmark["rows"], key=lambda r: r["models"])
    m = np.log([r["models"] for r in rows])
    rate = np.log([r["batched_model_steps_per_s"] for r in rows])
    return float(np.exp(np.interp(math.log(models), m, rate)))


def estimate_seconds(jobs: list[dict], benchmark: dict) -> float:
    """Seconds to run every training job one after another on the benchmark's device."""
    return sum(job["vae_step_equivalents"] / throughput_at(benchmark, job["models"]) for job in jobs)


def report(configfiles, snakefile: Path, benchmarks: dict[str, Path], lin_factor: float = LIN_FACTOR,
           dag: bool = True) -> str:
    """The plan as Markdown: jobs per rule, training totals, and one time estimate per benchmark."""
    # As a run from the repository does: the Snakefile's own config/config.yaml, then the given files
    # on top of it (a dry run in another folder would not find config/config.yaml by itself).
    merged = [snakefile.parent / "config" / "config.yaml", *configfiles]
    config = cfg.load_config(merged)
    jobs = training_jobs(config, lin_factor)
    lines = [f"# Compute plan for {', '.join(map(str, configfiles))}", ""]
    if dag:
        counts = dag_job_counts(merged, snakefile)
        lines += ["| rule | jobs |", "|---|---|"] + [f"| {k} | {v} |" for k, v in counts.items()]
        lines += [f"| **total** | {sum(counts.values())} |", ""]
    lines += ["| rule | jobs | models | optimiser steps (model-steps) | VAE-step equivalents | models per job |",
              "|---|---|---|---|---|---|"]
    for rule in ("train", "fit_gt_encoder"):
        mine = [j for j in jobs if j["rule"] == rule]
        if mine:
            per_job = sorted({j["models"] for j in mine})
            lines.append(f"| {rule} | {len(mine)} | {sum(j['models'] for j in mine):,} | "
                         f"{sum(j['model_steps'] for j in mine):.3g} | {sum(j['vae_step_equivalents'] for j in mine):.3g} | "
                         f"{per_job[0]}–{per_job[-1]} |")
    lines.append("")
    for label, path in benchmarks.items():
        if path is None or not Path(path).exists():
            lines.append(f"- {label}: no throughput measurement ({path or 'none given'}); run "
                         f"`python benchmarks/throughput.py{' --device cuda' if 'GPU' in label else ''}` there first.")
            continue
        bench = json.loads(Path(path).read_text())
        seconds = estimate_seconds(jobs, bench)
        machine = bench["machine"]
        where = machine.get("gpu") or f"{machine['threads']} CPU thread(s)"
        lines.append(f"- {label}: {seconds / 3600:.1f} hours of training one job after another on {where} "
                     f"({path}); spread over P parallel workers, about {seconds / 3600:.1f}/P hours.")
    lines += ["", (f"Step costs: IWAE {IWAE_BASE} + {IWAE_PER_SAMPLE} S, LIN {lin_factor} VAE steps, M2 × {M2_FACTOR}, width w × (w/50)² "
                   "(see `fmvae.plan`).")]
    return "\n".join(lines) + "\n"
