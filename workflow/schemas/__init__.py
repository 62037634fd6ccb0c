"""The configuration schema as package data: this folder is installed as ``fmvae.schemas``.

pyproject.toml maps the package ``fmvae.schemas`` onto this folder (``[tool.setuptools]
package-dir``), so ``config.schema.yaml`` has one copy, where Snakemake's layout and the workflow
catalog expect it, and still ships in the wheel; ``fmvae.config.load_schema`` reads it with
``importlib.resources``. This file makes the folder a regular package, which an editable install
needs to find it.
"""
