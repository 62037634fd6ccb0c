"""Packaging: a non-editable install works outside the repository, and outputs honour the umask.

The wheel test builds an sdist from a copy of the sources, a wheel from that sdist (as ``python -m
build`` does), installs the wheel with ``--no-deps`` into a fresh virtual environment, and runs the
command-line interface from a folder outside the repository. The dependencies come from the
project's environment through a ``.pth`` line in the new environment, which puts them *after* the
new environment's own site-packages and does not run the project's editable-install hook, so the
``fmvae`` imported is the wheel's. No network is needed (``--no-build-isolation``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import REPO
from fmvae import store


def _run(cmd, cwd, **kw):
    result = subprocess.run([str(c) for c in cmd], check=False, cwd=cwd, capture_output=True, text=True, timeout=300, **kw)
    assert result.returncode == 0, f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src-copy"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("src", "workflow/schemas"):  # what the Dockerfile and containers/fmvae.def copy
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    dist = tmp / "dist"
    _run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"], cwd=src)
    (sdist,) = dist.glob("fmvae-*.tar.gz")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, sdist], cwd=tmp)
    (wheel,) = dist.glob("fmvae-*.whl")
    return wheel


def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    wheel = _build_wheel(tmp_path)

    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src" / "fmvae").rglob("*.py")}
    assert modules <= names, f"modules missing from the wheel (pyproject.toml packages): {sorted(modules - names)}"
    assert {"fmvae/schemas/config.schema.yaml", "fmvae/report/paper_numbers.csv"} <= names

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], cwd=tmp_path)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp_path).stdout.strip())
    (site / "project_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    work = tmp_path / "elsewhere"
    (work / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "smoke.yaml", work / "config" / "smoke.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"

    probe = "import fmvae, fmvae.config as c; print(fmvae.__file__); print(c.load_schema()['properties']['seed']['default'])"
    where = _run([python, "-c", probe], cwd=work, env=env).stdout.split()
    assert Path(where[0]).resolve().is_relative_to(env_dir.resolve()), f"imported {where[0]}, not the wheel's fmvae"

    result = _run([env_dir / "bin" / "fmvae", "validate-config", "config/smoke.yaml"], cwd=work, env=env)
    assert "config/smoke.yaml: valid" in result.stdout

    # `table sec5` with no evaluations: eq. 6's closed-form rows beside paper_numbers.csv's values,
    # written through atomic_path under umask 002.
    _run(
        [env_dir / "bin" / "fmvae", "table", "sec5", "--out-csv", "sec5.csv", "--out-md", "sec5.md"],
        cwd=work,
        env=env,
        preexec_fn=lambda: os.umask(0o002),
    )
    text = (work / "sec5.csv").read_text()
    assert "closed_form,ground_truth,neg_elbo_plus_const" in text and ",0.532," in text
    assert stat.S_IMODE((work / "sec5.csv").stat().st_mode) == 0o664


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, mask, mode):
    with _umask(mask):
        with store.atomic_path(tmp_path / "out" / "table.csv") as tmp:
            tmp.write_text("a,b\n1,2\n")
        with store.write_h5(tmp_path / "out" / "data.h5") as f:
            f["x"] = np.arange(3)
    assert stat.S_IMODE((tmp_path / "out" / "table.csv").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "out" / "data.h5").stat().st_mode) == mode
    assert (tmp_path / "out" / "table.csv").read_text() == "a,b\n1,2\n"
    with h5py.File(tmp_path / "out" / "data.h5", "r") as f:
        assert list(f["x"][:]) == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["data.h5", "table.csv"]  # no temporary left


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError), store.atomic_path(tmp_path / "table.csv") as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
