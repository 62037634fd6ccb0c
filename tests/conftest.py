"""Shared fixtures and helpers: the repository root, the shared folder, a local HTTP server, and
the workflow helpers (a copy of the workflow in a temporary folder, Snakemake as a subprocess, the
smoke workflow run once per test session)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from fmvae import runtime

runtime.flush_denormals()  # as every fmvae command does, before torch starts its threads

REPO = Path(__file__).resolve().parents[1]
# The device of the engine tests marked `gpu` (benchmarks/gpu_check.sh sets FMVAE_TEST_DEVICE=cuda).
TEST_DEVICE = os.environ.get("FMVAE_TEST_DEVICE", "cpu")
SHARED_UCI = REPO.parent / "shared" / "data" / "uci"


class _HttpServers:
    """Serve folders on 127.0.0.1; call with a folder, get its base URL."""

    def __init__(self):
        self.servers = []

    def __call__(self, folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    def close(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def http_folder():
    """Serve folders on 127.0.0.1; call with a folder, get its base URL. Servers stop after the test."""
    servers = _HttpServers()
    yield servers
    servers.close()


@pytest.fixture(scope="session")
def session_http_folder():
    """As http_folder, but the servers live for the whole test session."""
    servers = _HttpServers()
    yield servers
    servers.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# Workflow helpers ------------------------------------------------------------------------------


def snakemake_env(env=None) -> dict:
    """``env`` (default: this process's) with this interpreter's folder first on PATH, so the rules'
    ``fmvae`` command is the one under test."""
    return {**(env or os.environ), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def snakemake(workdir, *args, timeout=2400, env=None):
    """Run Snakemake in ``workdir`` with this interpreter's environment (fmvae on PATH)."""
    env = snakemake_env(env)
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


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


@dataclasses.dataclass
class SmokeRun:
    """The smoke workflow run locally once per session: its folder, the Snakemake result, wall time.
    Tests read it and copy from it; none may change it."""
    work: Path
    result: subprocess.CompletedProcess
    seconds: float


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, session_http_folder) -> SmokeRun:
    """`snakemake --cores 2 --configfile config/smoke.yaml local.yaml` in a copy of the workflow,
    with the downloads served from 127.0.0.1 (local.yaml, in the run's folder)."""
    root = tmp_path_factory.mktemp("smoke")
    work = copy_workflow(root / "wf")
    (work / "local.yaml").write_text(yaml.safe_dump(real_data_source(root, session_http_folder)))
    start = time.monotonic()
    result = snakemake(work, "--cores", "2", "--configfile", "config/smoke.yaml", "local.yaml")
    return SmokeRun(work, result, time.monotonic() - start)


@pytest.fixture
def one_thread():
    """Many small matrices: one torch thread is faster than the pool on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
