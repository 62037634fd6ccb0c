"""The container definitions and the conda environment install what the README installs.

The images themselves cannot be built on the project's machines (no container registry is
reachable); what runs inside them (`pip install -c constraints.txt .` from a copy of the package
files) is what tests/test_packaging.py does with the wheel. These tests check that the Dockerfile and
the Apptainer definition stay equal to each other and to the pins, and copy files that exist."""

import re

import yaml

from conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
APPTAINER = (REPO / "containers" / "fmvae.def").read_text()


def pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def pip_commands(text: str) -> list[str]:
    commands = [" ".join(c.split()) for c in re.findall(r"pip install ([^\n\\&]+)", text)]
    return [c.replace('"{{ TORCH_INDEX }}"', '"${TORCH_INDEX}"') for c in commands]


def test_both_definitions_run_the_same_installs():
    assert pip_commands(DOCKERFILE) == pip_commands(APPTAINER)
    commands = pip_commands(DOCKERFILE)
    assert len(commands) == 2 and all("-c constraints.txt" in c for c in commands)
    assert commands[1].endswith(" .") and "-e" not in commands[1].split(), "the image installs the package, not a link"


def test_both_definitions_default_to_the_cpu_torch():
    docker = re.search(r"ARG TORCH_INDEX=(\S+)", DOCKERFILE).group(1)
    apptainer = re.search(r"TORCH_INDEX=(\S+)", APPTAINER.split("\n%arguments", 1)[1]).group(1)
    assert docker == apptainer and docker.endswith("/whl/cpu")
    assert "torch" in pins()


def test_copied_files_exist_and_are_in_the_build_context():
    copied = [p for line in DOCKERFILE.splitlines() if line.startswith("COPY") for p in line.split()[1:-1]]
    files = [line.split()[0] for line in APPTAINER.split("\n%files", 1)[1].split("\n%post", 1)[0].splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert sorted(copied) == sorted(files)
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for path in copied:
        assert (REPO / path).exists(), path
        assert f"!{path.rstrip('/')}" in [line.rstrip("/") for line in ignore], f".dockerignore drops {path}"


def test_conda_environment_has_the_pins_and_no_relative_install():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    for name, version in pins().items():
        assert f"{name}=={version}" in pip, name
    assert not any(item.startswith("-e") for item in pip), "a relative -e . breaks under --sdm conda"
    deploy = REPO / "environment.post-deploy.sh"
    assert deploy.exists() and "pip install --no-deps" in deploy.read_text()


def test_the_snakefile_names_the_image():
    snakefile = (REPO / "Snakefile").read_text()
    assert re.search(r"^container: config\[\"container\"\]", snakefile, flags=re.MULTILINE)
