"""Style and lint gates, run from the repository root with the pinned tools (constraints.txt): ruff's
default rules and snakefmt on the Snakefile and workflow/rules ([tool.ruff] and [tool.snakefmt] in
pyproject.toml), and Snakemake's own linter on the rules. Each fails with the tool's report, so
unformatted or newly flagged code shows up here."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import REPO, snakemake_env


def run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=snakemake_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def report(result: subprocess.CompletedProcess) -> str:
    return f"{' '.join(result.args)} exited {result.returncode}:\n{(result.stdout + result.stderr)[-6000:]}"


def tool(name: str) -> str:
    """The tool installed beside this interpreter (the test extra), else the one on PATH."""
    path = shutil.which(name, path=snakemake_env()["PATH"])
    if path is None:
        pytest.fail(f"{name} is not installed: pip install -c constraints.txt -e '.[test]'")
    return path


def test_ruff_check_is_clean():
    result = run([tool("ruff"), "check", "--no-cache", "."])
    assert result.returncode == 0, report(result)


def test_snakefmt_check_is_clean():
    result = run([tool("snakefmt"), "--check", "Snakefile", "workflow/"])
    assert result.returncode == 0, report(result)


def test_snakemake_lint_is_clean():
    for configs in [[], ["--configfile", "config/smoke.yaml"]]:  # the default config, and the smoke config's rules
        result = run([sys.executable, "-m", "snakemake", "--lint", *configs])
        assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, report(result)
