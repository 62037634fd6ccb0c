"""The documentation is true to what exists: every relative link resolves (file and heading), every
`fmvae` and `snakemake` command line in a code block parses with the real argument parsers, the
configuration reference agrees with the schema, and the README stays short."""

import re
import shlex

import pytest

from conftest import REPO
from fmvae import cli, config_reference
from fmvae import config as cfg

DOCS = sorted([REPO / "README.md", REPO / "config" / "README.md", REPO / "benchmarks" / "README.md",
               *(REPO / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)  # every fenced block, with its tag
SHELL = ("bash", "sh", "")  # shell blocks, tagged or not


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path) -> set[str]:
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def links():
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if not re.match(r"^[a-z]+:", target):
                yield doc, target


def command_lines(program: str):
    """Each command line of ``program`` in the docs' code blocks (continuations joined, comments,
    prompts and placeholders handled)."""
    for doc in DOCS:
        for tag, block in BLOCK.findall(doc.read_text()):
            if tag not in SHELL:
                continue
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                while words:  # one command per `&&`-separated part
                    part = words[:words.index("&&")] if "&&" in words else words
                    words = words[len(part) + 1:]
                    if part and part[0] == program:
                        yield doc.relative_to(REPO), [re.sub(r"<([a-z ]+)>", r"\1", w) for w in part[1:]]


def test_the_docs_exist():
    names = {p.name for p in (REPO / "docs").glob("*.md")}
    assert {"methods.md", "formats.md", "cluster.md", "cli.md", "benchmark.md", "adding-a-method.md"} <= names


@pytest.mark.parametrize(("doc", "target"), list(links()), ids=lambda v: str(v))
def test_every_relative_link_resolves(doc, target):
    path, _, anchor = target.partition("#")
    resolved = (doc.parent / path).resolve() if path else doc
    assert resolved.exists(), f"{doc.relative_to(REPO)}: link {target!r} points at nothing"
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors(resolved), f"{doc.relative_to(REPO)}: no heading #{anchor} in {path or doc.name}"


def test_every_fmvae_example_parses():
    examples = list(command_lines("fmvae"))
    assert len(examples) >= 15, "the CLI page lost its examples"
    parser = cli.build_parser()
    for doc, argv in examples:
        optional = [w for w in argv if not (w.startswith("[") or w.endswith("]"))]
        try:
            parser.parse_args(optional)
        except SystemExit:
            pytest.fail(f"{doc}: `fmvae {' '.join(argv)}` does not parse")


def test_every_snakemake_example_parses():
    from snakemake.cli import get_argument_parser

    examples = list(command_lines("snakemake"))
    assert len(examples) >= 5
    parser = get_argument_parser()
    for doc, argv in examples:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{doc}: `snakemake {' '.join(argv)}` does not parse")


def test_the_old_cluster_option_is_not_recommended():
    """Snakemake 9 rejects --cluster; the docs name it only as what a former user replaces."""
    for doc, argv in command_lines("snakemake"):
        assert "--cluster" not in argv, f"{doc}: {argv}"


def test_the_configuration_reference_matches_the_schema():
    text = (REPO / "config" / "README.md").read_text()
    assert config_reference.generated_section(text) == config_reference.render(cfg.load_schema()), (
        "config/README.md is out of date: run `fmvae config-reference --write config/README.md`")


def test_the_configuration_reference_lists_every_default_key():
    """Every key the schema fills in by default appears in the reference (by its path)."""
    listed = {row[0] for row in config_reference.rows(cfg.load_schema())}
    defaults = cfg.validate_config({})
    missing = []
    for section in ("training", "evaluation", "checks", "figures"):
        for key in defaults[section]:
            if not any(path.startswith(f"{section}.{key}") for path in listed):
                missing.append(f"{section}.{key}")
    assert not missing


def test_readme_is_short():
    assert len((REPO / "README.md").read_bytes()) <= 8 * 1024
