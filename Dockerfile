# The image the workflow's jobs run in under `snakemake --sdm apptainer` (the Snakefile's
# `container:`), and a self-contained environment for running the workflow itself.
#
#   docker build -t fmvae:0.1.0 .                                   # CPU torch (the default)
#   docker build -t fmvae:0.1.0-cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
#   apptainer build fmvae.sif docker-daemon://fmvae:0.1.0           # the .sif the Snakefile names
#
# Without Docker, containers/fmvae.def builds the same image with Apptainer alone (docs/install.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# Which torch wheels: the CPU build by default; a CUDA index (cu126, cu128, ...) for GPU nodes.
# constraints.txt pins the version (torch==2.13.0 also matches the +cpu / +cu126 local builds).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

WORKDIR /opt/fmvae
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
# The config schema: the package fmvae.schemas is this folder (pyproject.toml, package-dir).
COPY workflow/schemas ./workflow/schemas
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" -c constraints.txt torch \
 && pip install --no-cache-dir -c constraints.txt . \
 && fmvae --help > /dev/null

# Jobs write results into the mounted working directory; keep files group-readable.
ENV PYTHONUNBUFFERED=1
WORKDIR /work
CMD ["fmvae", "--help"]
