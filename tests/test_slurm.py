"""The cluster path for real: a single-node SLURM on 127.0.0.1 (tests/cluster/slurm.py, Debian's
slurm-wlm and munge), the workflow submitted through both shipped profiles, compared with the
session's local smoke run; and a job cancelled with scancel mid-run, retried, completing.

The cluster-generic route runs the whole smoke workflow (its default target, every rule): data,
surrogate fits, φ_GT, training, evaluation, the adversarial and checks jobs, separability, and the
local rules (downloads, tables, figures, REPRODUCTION.md). At the same time the slurm-plugin route
runs a slice with every kind of job the plugin submits (SLICE: a surrogate fit, the data group
with a simulation and a real-data split behind a local download, a φ_GT + training fit group, an
evaluate group, the adversarial job), which keeps CI within its time (the plugin starts Snakemake
twice per job and backs its status checks off, so the whole workflow through it cost ~20 minutes).
The SLURM jobs each route submits are checked against the job kinds of its own dry run
(workflow/profiles/count_jobs.py), every HDF5 file and table against the local run's, and (whole
route) every figure and table of the local run is there. The slurm route sets cluster.gpu, so its
training and adversarial jobs ask for one of the node's two GPUs (gpu GRES on /dev/null and
/dev/zero); the code falls back to the CPU. Runs are time-bound with `timeout -s INT`: SIGINT makes Snakemake
cancel its SLURM jobs, SIGTERM would leave them running.

Needs root and apt-get (or slurm-wlm and munge installed); skipped otherwise.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, SmokeRun, copy_workflow, snakemake_env
from fmvae import store

_spec = importlib.util.spec_from_file_location("fmvae_test_slurm", Path(__file__).parent / "cluster" / "slurm.py")
slurm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(slurm)
_spec = importlib.util.spec_from_file_location("fmvae_count_jobs", REPO / "workflow" / "profiles" / "count_jobs.py")
count_jobs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(count_jobs)

UNAVAILABLE = slurm.unavailable_reason()  # checked before the session's local smoke run is made
pytestmark = [pytest.mark.slurm, pytest.mark.workflow,
              pytest.mark.skipif(UNAVAILABLE is not None, reason=f"no local SLURM: {UNAVAILABLE}")]

ROUTE_TIMEOUT = 3600  # seconds, per route (both run at once): a guard against hangs, not a timing test
COMPARED = ["data", "surrogates", "gt_encoders", "runs", "evaluation", "adversarial", "checks"]  # HDF5 folders
IGNORED_ATTRS = {"seconds", "train_seconds"}  # wall times: of a training job (and a φ_GT fit), of an evaluation's training parts
IGNORED_COLUMNS = {"fit_seconds"}  # wall time of a φ_GT fit (results/tables/gt_encoder_gaps.csv)
# The whole-workflow route batches more per SLURM job than the profile does (grouping is a site knob,
# set here on the command line): each job starts Snakemake once, ~8-15 s on the 2-core node, so the
# profile's 49 jobs cost ~10 minutes of start-ups alone. Every rule still runs in a SLURM job.
WHOLE_GROUPING = ["--groups", "simulate_dataset=data", "prepare_uci=data", "fit_gt_encoder=fit", "train=fit",
                  "evaluate=evaluate", "fit_surrogate=surrogates",
                  "--group-components", "data=100", "fit=10", "evaluate=64", "surrogates=9"]
# What the slurm-plugin route builds: one job of every kind it submits (see the module docstring).
SLICE = ["results/evaluation/unsupervised/circle/v0/vae.h5", "results/adversarial/circle/v0.h5",
         "results/data/titanic/split0.h5"]


@pytest.fixture(scope="module")
def cluster():
    with pytest.MonkeyPatch.context() as mp:
        # Hermetic: no site settings (SBATCH_PARTITION, ...) or another cluster's SLURM_CONF.
        for name in [n for n in os.environ if n.startswith(("SBATCH_", "SLURM_", "SQUEUE_", "SRUN_", "SACCT_"))]:
            mp.delenv(name)
        c = slurm.Cluster()
        mp.setenv("SLURM_CONF", str(c.conf))
        c.lock()
        try:
            c.up(log=lambda msg: print(msg, file=sys.stderr))
            yield c
        finally:
            c.down(log=lambda msg: None)
            c.unlock()


@pytest.fixture(scope="module")
def local(smoke_run: SmokeRun) -> SmokeRun:
    if smoke_run.result.returncode != 0:
        pytest.fail("the local smoke run failed (see test_workflow.py):\n" + smoke_run.result.stderr[-3000:])
    return smoke_run


@dataclasses.dataclass
class Route:
    name: str
    work: Path
    returncode: int
    seconds: float
    log: str
    planned: Counter  # SLURM submissions by kind (group or rule name) in the route's own dry run


def prepare(work_root: Path, name: str, local: SmokeRun) -> Path:
    """A copy of the workflow with the local run's local.yaml (downloads from 127.0.0.1)."""
    work = copy_workflow(work_root / name)
    shutil.copy2(local.work / "local.yaml", work / "local.yaml")
    return work


def snakemake_args(extra_configs: list[str], args: list[str]) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--configfile", "config/smoke.yaml", "local.yaml", *extra_configs, *args]


def start(work: Path, extra_configs: list[str], args: list[str], timeout: int) -> subprocess.Popen:
    """Snakemake on the smoke config (plus ``extra_configs``) in ``work``, killed with SIGINT after
    ``timeout`` seconds (Snakemake then cancels its SLURM jobs); output in work/snakemake.log."""
    with open(work / "snakemake.log", "w") as log:
        return subprocess.Popen(["timeout", "-s", "INT", "-k", "30", str(timeout),
                                 *snakemake_args(extra_configs, args)],
                                cwd=work, env=snakemake_env(), stdout=log, stderr=subprocess.STDOUT)


def planned_submissions(work: Path, extra_configs: list[str], args: list[str]) -> Counter:
    """SLURM submissions by kind in a dry run of the same command: one per group job (by group name),
    one per job of a rule that is not a localrule (by rule name)."""
    dry = subprocess.run(snakemake_args(extra_configs, ["-n", *args]), cwd=work, env=snakemake_env(),
                         capture_output=True, text=True, timeout=300, check=False)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    groups, remote, _ = count_jobs.count(dry.stdout + dry.stderr, count_jobs.local_rules())
    return Counter({name: len(jobs) for name, jobs in groups.items()}) + remote


@pytest.fixture(scope="module")
def routes(local, cluster, tmp_path_factory) -> dict[str, Route]:
    """The two routes at once: --executor slurm (profile workflow/profiles/slurm, GPU on) on SLICE
    and cluster-generic (workflow/profiles/slurm-generic, GPU off) on the whole smoke workflow."""
    root = tmp_path_factory.mktemp("slurm")
    common = ["--cores", "2", "--latency-wait", "10"]  # --cores: per-group CPU limit (node: 2)
    works = {"slurm": prepare(root, "slurm", local), "generic": prepare(root, "generic", local)}
    (works["slurm"] / "gpu.yaml").write_text("cluster: {gpu: true}\n")
    commands = {
        "slurm": (["gpu.yaml"], ["--profile", "workflow/profiles/slurm",
                                 "--slurm-init-seconds-before-status-checks", "1", *common, *SLICE]),
        "generic": ([], ["--profile", "workflow/profiles/slurm-generic", "--seconds-between-status-checks", "2",
                         *common, *WHOLE_GROUPING]),
    }
    planned = {name: planned_submissions(works[name], *commands[name]) for name in works}
    begin = time.monotonic()
    procs = {name: start(works[name], *commands[name], ROUTE_TIMEOUT) for name in works}
    ended = {}
    while len(ended) < len(procs) and time.monotonic() - begin < ROUTE_TIMEOUT + 60:
        ended.update({name: time.monotonic() - begin for name, p in procs.items()
                      if name not in ended and p.poll() is not None})
        time.sleep(0.5)
    out = {}
    for name, proc in procs.items():
        proc.wait(timeout=60)
        out[name] = Route(name, works[name], proc.returncode, ended.get(name, time.monotonic() - begin),
                          (works[name] / "snakemake.log").read_text(errors="replace"), planned[name])
    print(f"\nlocal smoke run {local.seconds:.0f} s; the SLURM routes at once (slurm: a slice, generic: the whole workflow): "
          + ", ".join(f"{r.name} {r.seconds:.0f} s ({sum(r.planned.values())} SLURM jobs)" for r in out.values()),
          file=sys.stderr)
    return out


def kind_of(label: str, kinds) -> str:
    """The group or rule a SLURM job label ("<kind>_..." or "<kind>") belongs to: the longest match
    (``fit_surrogate_...`` is the rule fit_surrogate, ``fit_...`` the group fit)."""
    matches = [k for k in kinds if label == k or label.startswith(k + "_")]
    assert matches, f"{label!r} matches none of {sorted(kinds)}"
    return max(matches, key=len)


def queue(work: Path) -> list[dict]:
    """The test cluster's jobs (finished ones stay listed for MinJobAge) submitted from ``work``."""
    out = subprocess.run(["squeue", "--states=all", "--noheader", "-O", "JobID:|,Name:|,Comment:|,State:|,WorkDir:"],
                         capture_output=True, text=True, timeout=30, check=False).stdout
    jobs = []
    for line in out.splitlines():
        jobid, name, comment, state, workdir = (x.strip() for x in line.split("|")[:5])
        if Path(workdir) == work:
            tres = subprocess.run(["scontrol", "-o", "show", "job", jobid], capture_output=True, text=True,
                                  timeout=30, check=False).stdout
            jobs.append({"id": jobid, "name": name, "comment": comment, "state": state,
                         "gpus": "gres:gpu:1" in tres or "gres/gpu=1" in tres})
    return jobs


# -- comparison with the local run ------------------------------------------------------------


def same_value(a, b, where: str, problems: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) - IGNORED_ATTRS != set(b) - IGNORED_ATTRS:
            problems.append(f"{where}: keys {sorted(set(a) ^ set(b))} differ")
        for key in (set(a) & set(b)) - IGNORED_ATTRS:
            same_value(a[key], b[key], f"{where}.{key}", problems)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b) and not (
            _numeric(a) and _numeric(b)):
        for i, (x, y) in enumerate(zip(a, b)):
            same_value(x, y, f"{where}[{i}]", problems)
    elif _numeric(a) and _numeric(b):
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-5, atol=1e-7, equal_nan=True):
            problems.append(f"{where}: {np.ravel(x)[:4]} != {np.ravel(y)[:4]}")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not np.array_equal(a, b):
            problems.append(f"{where}: arrays differ")
    elif a != b:
        problems.append(f"{where}: {str(a)[:80]!r} != {str(b)[:80]!r}")


def _numeric(value) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return np.asarray(value).dtype.kind in "iuf" and np.asarray(value).size > 0
    except (ValueError, TypeError):
        return False


def compare_h5(path: Path, reference: Path, problems: list[str]) -> None:
    with h5py.File(path) as a, h5py.File(reference) as b:
        def visit(obj_a, obj_b, where):
            same_value(store.read_attrs(obj_a), store.read_attrs(obj_b), f"{where}@attrs", problems)
            if isinstance(obj_a, h5py.Dataset):
                same_value(obj_a[()], obj_b[()], where, problems)
                return
            if set(obj_a) != set(obj_b):
                problems.append(f"{where}: members {sorted(set(obj_a) ^ set(obj_b))} differ")
            for key in set(obj_a) & set(obj_b):
                visit(obj_a[key], obj_b[key], f"{where}/{key}")
        visit(a, b, str(path))


def compare_csv(path: Path, reference: Path, problems: list[str]) -> None:
    a, b = pd.read_csv(path), pd.read_csv(reference)
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        problems.append(f"{path}: columns or rows differ")
        return
    for column in (c for c in a.columns if c not in IGNORED_COLUMNS):
        if pd.api.types.is_numeric_dtype(a[column]) and pd.api.types.is_numeric_dtype(b[column]):
            if not np.allclose(a[column], b[column], rtol=1e-5, atol=1e-7, equal_nan=True):
                problems.append(f"{path}:{column}: {a[column].tolist()} != {b[column].tolist()}")
        elif a[column].fillna("").astype(str).tolist() != b[column].fillna("").astype(str).tolist():
            problems.append(f"{path}:{column} differs")


def assert_same_as_local(route: Route, local: SmokeRun, whole: bool = True) -> int:
    """Every HDF5 file of the COMPARED folders and every table CSV equal to the local run's: the same
    files on both sides (``whole``) or a subset of the local run's (a slice); returns how many files
    were compared."""
    def files(work: Path) -> set[Path]:
        results = work / "results"
        found = {p for folder in COMPARED for p in (results / folder).rglob("*.h5")}
        return {p.relative_to(work) for p in found | set((results / "tables").glob("*.csv"))}

    mine, theirs = files(route.work), files(local.work)
    if whole:
        assert mine == theirs, f"{route.name}: files differ from the local run: {sorted(mine ^ theirs)[:20]}"
    else:
        assert mine <= theirs, f"{route.name}: files the local run does not have: {sorted(mine - theirs)[:20]}"
    problems: list[str] = []
    for rel in sorted(mine):
        compare = compare_csv if rel.suffix == ".csv" else compare_h5
        compare(route.work / rel, local.work / rel, problems)
    assert not problems, f"{route.name} differs from the local run:\n" + "\n".join(problems[:30])
    return len(mine)


def check_route(route: Route, local: SmokeRun, whole: bool = True) -> list[dict]:
    assert route.returncode == 0, f"{route.name} route failed ({route.returncode}):\n{route.log[-5000:]}"
    if whole:
        for folder in ["figures", "tables"]:
            expected = sorted(p.relative_to(local.work) for p in (local.work / "results" / folder).rglob("*.*"))
            assert expected and all((route.work / p).exists() for p in expected), f"{route.name}: {folder} missing"
        assert (route.work / "results/REPRODUCTION.md").exists()
        assert assert_same_as_local(route, local) >= 100  # every HDF5 file of the run, every table
    else:
        assert all((route.work / target).exists() for target in SLICE)
        assert assert_same_as_local(route, local, whole=False) >= 7  # the slice's surrogate, data, φ_GT, run, evaluation, attack
    jobs = queue(route.work)
    assert all(j["state"] == "COMPLETED" for j in jobs), jobs
    return jobs


def test_slurm_executor_runs_a_slice_of_every_job_kind_as_a_local_run_does(routes, local):
    route = routes["slurm"]
    jobs = check_route(route, local, whole=False)
    # The plugin comments a job "rule_<group or rule>_...": the SLURM jobs are exactly the dry run's
    # group jobs (data, fit = φ_GT with its training, evaluate) and non-local rules; no local rule.
    kinds = {j["id"]: kind_of(j["comment"].removeprefix("rule_"), route.planned) for j in jobs}
    assert Counter(kinds.values()) == route.planned, [j["comment"] for j in jobs]
    assert {"data", "fit", "evaluate", "fit_surrogate", "adversarial"} <= set(route.planned)
    gpu = {j["id"]: j["gpus"] for j in jobs}
    assert all(gpu[i] == (kind in ("fit", "adversarial")) for i, kind in kinds.items()), jobs  # cluster.gpu: true
    log = (route.work / "results/logs/train/unsupervised/circle/v0/vae/part0.log").read_text()
    assert "on cpu" in log  # the GPU was a GRES on /dev/null: the code fell back to the CPU


def test_cluster_generic_runs_the_whole_workflow_as_a_local_run_does(routes, local):
    route = routes["generic"]
    jobs = check_route(route, local)
    # sbatch --job-name=smk-{name}: "<group>_<rules>" for a group job, the rule's name otherwise
    kinds = [kind_of(j["name"].removeprefix("smk-"), route.planned) for j in jobs]
    assert Counter(kinds) == route.planned, [j["name"] for j in jobs]
    assert not any(j["gpus"] for j in jobs)  # cluster.gpu: false (the default)


def test_status_script_reports_queue_failures(cluster, tmp_path):
    """The cluster-generic status command: running, then failed for a job cancelled in the queue,
    success for one that completed, failed for an id nobody knows."""
    status = [str(Path(copy_workflow(tmp_path / "wf") / "workflow/profiles/slurm-generic/status.py"))]

    def submit(*args):
        return subprocess.run(["sbatch", "--parsable", "--output=/dev/null", *args], capture_output=True,
                              text=True, check=True, cwd=tmp_path).stdout.strip()

    def ask(jobid):
        return subprocess.run([*status, jobid], capture_output=True, text=True, check=True).stdout.strip()

    long, short = submit("--wrap", "sleep 60"), submit("--wrap", "true")
    deadline = time.monotonic() + 60
    while ask(short) != "success" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ask(short) == "success"
    assert ask(long) == "running"
    subprocess.run(["scancel", long], check=True)
    deadline = time.monotonic() + 30
    while ask(long) == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ask(long) == "failed"
    assert ask("999999") == "failed"


def test_job_cancelled_with_scancel_is_retried(local, cluster, tmp_path):
    """A training job cancelled mid-run (node failure) is resubmitted (--retries 1) and the workflow
    completes. Its inputs come from the local run; longer training gives a window to cancel in."""
    work = prepare(tmp_path, "wf", local)
    for rel in ["results/data/clusters/v0.h5", "results/gt_encoders/clusters/v0.h5", "results/surrogates/clusters.h5"]:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local.work / rel, work / rel)
    (work / "slow.yaml").write_text("training: {epochs: 1000, log_every_epochs: 10}\n")
    target = "results/runs/unsupervised/clusters/v0/vae/part0.h5"
    log = work / "results/logs/train/unsupervised/clusters/v0/vae/part0.log"
    proc = start(work, ["slow.yaml"], ["--profile", "workflow/profiles/slurm", "--slurm-init-seconds-before-status-checks",
                                       "1", "--retries", "1", "--cores", "2", target], 300)
    cancelled, deadline = None, time.monotonic() + 240
    while cancelled is None and proc.poll() is None and time.monotonic() < deadline:
        running = [j for j in queue(work) if j["state"] == "RUNNING"]
        if running and log.exists() and "epoch" in log.read_text(errors="replace"):
            cancelled = running[0]["id"]
            subprocess.run(["scancel", cancelled], check=True)
        time.sleep(0.2)
    proc.wait(timeout=300)
    output = (work / "snakemake.log").read_text(errors="replace")
    assert cancelled is not None, "never saw the training job running:\n" + output[-3000:]
    assert proc.returncode == 0, output[-5000:]
    jobs = {j["id"]: j["state"] for j in queue(work)}
    assert jobs[cancelled] == "CANCELLED" and sorted(jobs.values()) == ["CANCELLED", "COMPLETED"], jobs
    assert "Trying to restart job" in output  # Snakemake saw the failure and resubmitted (attempt 2)
    with h5py.File(work / target) as f:
        attrs = store.read_attrs(f)
        assert f["curve"].shape[0] == 2 and len(attrs["models"]) == 2
    assert "epoch 1000/1000" in log.read_text()  # the second attempt trained from the start to the end
