#!/usr/bin/env bash
# Run by Snakemake (--sdm conda) inside the new environment of environment.yml, in Snakemake's
# working directory: install the checkout's package (not editable, dependencies already present).
# Assumes the working directory is the repository root, as in every command of the docs.
set -euo pipefail
if [ ! -f pyproject.toml ] || ! grep -q '^name = "fmvae"' pyproject.toml; then
    echo "environment.post-deploy.sh: run Snakemake from the fmvae repository root (found no fmvae pyproject.toml in $PWD)" >&2
    exit 1
fi
pip install --no-deps --no-build-isolation .
