"""``fmvae bench``: rank one method on the paper's pathologies at a stated scale.

The method (built in, an entry point, or ``package.module:attribute``; docs/adding-a-method.md) is
added, with its grid, to every leaderboard experiment of the chosen configuration whose model it
fits (an unsupervised method to ``unsupervised``, ``spiral_learned`` and ``signal_noise_K*``; an M2
method to ``semi_synthetic``), beside the reference methods already there; Snakemake then builds
``results/bench/leaderboard.md`` (training only what is missing) and the method's standing in
each column is printed. The scale is the configuration's: ``config/smoke.yaml`` for minutes,
the default for the paper's data sizes and restarts.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import yaml

from fmvae import config as cfg
from fmvae import methods
from fmvae.report import leaderboard

log = logging.getLogger(__name__)

TARGETS = ("results/bench/leaderboard.md", "results/bench/leaderboard.csv", "results/bench/leaderboard.png")


def overlay(config: dict, method: str, grid: dict) -> dict:
    """The config to merge on top of ``config``: ``method`` with ``grid`` added to each leaderboard
    experiment whose methods share its model (``vae`` or ``m2``). Raises ValueError if none does."""
    model = methods.get(method).model
    added = {}
    for experiment in leaderboard.EXPERIMENTS:
        entry = config.get("experiments", {}).get(experiment)
        if entry is None or any(methods.get(m).model != model for m in entry["methods"]):
            continue
        added[experiment] = {"methods": {**entry["methods"], method: grid}}
    if not added:
        raise ValueError(f"no leaderboard experiment ({', '.join(leaderboard.EXPERIMENTS)}) of this configuration "
                         f"trains {model!r} models like {method!r}")
    return {"experiments": added}


def run(method: str, grid: dict, configfiles, cores: str = "all", workdir: Path = Path("."),
        extra_args=()) -> list[dict]:
    """Build the leaderboard with ``method`` added (see :func:`overlay`) and return its standing."""
    workdir = Path(workdir)
    snakefile = workdir / "Snakefile"
    if not snakefile.exists():
        raise FileNotFoundError(f"{snakefile} not found: run fmvae bench in the workflow's folder (or give --directory)")
    files = [workdir / "config" / "config.yaml", *[Path(c) for c in configfiles]]
    extra = overlay(cfg.load_config(files), method, grid)
    cfg.load_config(files, extra)  # validates the method and its grid (the contract probe) before any job
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", method)
    path = workdir / "results" / "bench" / f"{slug}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(extra, sort_keys=False))
    command = [sys.executable, "-m", "snakemake", *TARGETS, "--cores", str(cores), *extra_args,
               "--configfile", *[str(Path(c).resolve()) for c in configfiles], str(path.resolve())]  # last: it takes nargs
    log.info("bench %s: %s", method, " ".join(command))
    subprocess.run(command, cwd=workdir, check=True)
    cells = leaderboard.read_means(workdir / TARGETS[1])  # what the rule computed from its evaluation files
    return leaderboard.standing(cells, methods.get(method).paper_name or method)


def format_standing(method: str, rows: list[dict]) -> str:
    lines = [f"{method} on the leaderboard (rank 1 = best of the methods with a value):"]
    for r in rows:
        other = (f"; best other: {r['best_other']} {r['best_other_mean']:.4g}" if r["best_other"] else "")
        lines.append(f"  {r['column']}: {r['mean']:.4g}, rank {r['rank']} of {r['of']}{other}")
    return "\n".join(lines)
