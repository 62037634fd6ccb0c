"""Faults: a training job killed mid-run (SIGKILL of its process) leaves no output that looks
complete, and re-running the workflow resumes it from its checkpoint to the same models as a run
that was never interrupted."""

import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import yaml

from conftest import snakemake_env

pytestmark = pytest.mark.workflow

TARGET = "results/runs/unsupervised/circle/v0/vae/part0.h5"
# Long enough to be killed mid-run, with a checkpoint at every epoch end. The smoke run's other
# outputs are reused as they are (--rerun-triggers mtime: only the deleted file is rebuilt).
LONG = {"experiments": {"unsupervised": {"epochs": 1500}}, "training": {"checkpoint_every_s": 1e-6}}


def start(work, *extra):
    return subprocess.Popen([sys.executable, "-m", "snakemake", TARGET, "--cores", "1", "--rerun-triggers", "mtime",
                             "--configfile", "config/smoke.yaml", "local.yaml", "long.yaml", *extra], cwd=work, env=snakemake_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def copy_of(smoke_run, dest):
    assert smoke_run.result.returncode == 0, smoke_run.result.stderr[-3000:]
    shutil.copytree(smoke_run.work, dest, symlinks=True)  # copy2 keeps the mtimes
    (dest / TARGET).unlink()
    (dest / "long.yaml").write_text(yaml.safe_dump(LONG))
    return dest


def params(path) -> dict:
    with h5py.File(path) as f:
        out = {}
        f["params"].visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return {**out, "curve": f["curve"][()]}


def test_a_killed_training_job_resumes_from_its_checkpoint_to_the_uninterrupted_result(smoke_run, tmp_path):
    uninterrupted = copy_of(smoke_run, tmp_path / "a")
    done = start(uninterrupted)
    assert done.wait(timeout=900) == 0, done.stdout.read()[-3000:]

    killed = copy_of(smoke_run, tmp_path / "b")
    run = start(killed)
    checkpoint = killed / (TARGET + ".ckpt")
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists(), "no checkpoint appeared"
    time.sleep(1.0)
    job = subprocess.run(["pgrep", "-f", "fmvae --threads 1 train .*\"circle\""], capture_output=True, text=True,
                         check=False)
    pids = [int(p) for p in job.stdout.split()]
    assert pids, "the training process was not found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert run.wait(timeout=120) != 0  # Snakemake notices the failed job
    assert not (killed / TARGET).exists() and checkpoint.exists()  # nothing that looks complete

    resumed = start(killed)
    log_text = resumed.stdout.read()
    assert resumed.wait(timeout=900) == 0, log_text[-3000:]
    train_log = (killed / "results/logs/train/unsupervised/circle/v0/vae/part0.log").read_text()
    assert "resumed from" in train_log
    assert not checkpoint.exists()
    a, b = params(uninterrupted / TARGET), params(killed / TARGET)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=key)
