"""The README's two commands are the ones that exist: .ci/run runs the README's test command."""

import re

from conftest import REPO


def commands():
    readme = (REPO / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", readme, flags=re.DOTALL)


def test_readme_has_the_run_and_test_commands():
    blocks = commands()
    run, test = blocks[0], blocks[1]
    assert "python3.11 -m venv .venv" in run and "snakemake" in run
    assert "python3.11 -m venv .venv" in test and "pytest" in test


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert commands()[1].strip() in ci
