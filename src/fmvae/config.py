"""Configuration: loading, validation against the JSON Schema, defaults, and per-job slices.

The schema is ``workflow/schemas/config.schema.yaml``, shipped in the package as ``fmvae.schemas``
(see pyproject.toml) and read with :mod:`importlib.resources`; the Snakefile and the CLI both call
:func:`validate_config`, so a bad key or value stops a run before any job starts, with a message
naming the key and the allowed values. Jobs receive only their *slice* of the config (for example
:func:`synthetic_spec`), so a change to one data set's settings reruns only what depends on it.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import zlib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import yaml

from fmvae.data import groundtruth

# The folder workflow/schemas/ of the source tree is the package fmvae.schemas (pyproject.toml,
# [tool.setuptools] package-dir), so the one schema file serves Snakemake's layout and the installed
# package alike; it is read as package data, never through the repository's folders.
SCHEMA_PACKAGE = "fmvae.schemas"
SCHEMA_FILE = "config.schema.yaml"


class ConfigError(ValueError):
    """The configuration does not satisfy the schema; the message lists every problem."""


def load_schema() -> dict:
    """The configuration schema shipped with the package (``workflow/schemas/config.schema.yaml``)."""
    try:
        package = resources.files(SCHEMA_PACKAGE)
    except ModuleNotFoundError as err:  # an editable install made before workflow/schemas/ was a package
        raise ModuleNotFoundError(
            f"{SCHEMA_PACKAGE} (workflow/schemas/) is not importable; reinstall the package: "
            "pip install -c constraints.txt -e ."
        ) from err
    return yaml.safe_load(package.joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def fill_defaults(instance, schema: dict):
    """Insert schema defaults for missing keys, recursively (``properties``, ``patternProperties``
    and object-valued ``additionalProperties``)."""
    if not isinstance(instance, dict) or schema.get("type") not in (None, "object"):
        return instance
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            fill_defaults(instance[key], sub)
    for pattern_schema in schema.get("patternProperties", {}).values():
        for key in instance:
            if key not in schema.get("properties", {}):
                fill_defaults(instance[key], pattern_schema)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra.get("type") == "object":
        for key in instance:
            if key not in schema.get("properties", {}):
                fill_defaults(instance[key], extra)
    return instance


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        known = set(allowed)
        unknown = sorted(k for k in error.instance if k not in known and not any(
            re.search(p, k) for p in patterns))
        allowed_text = ", ".join(allowed) if allowed else " | ".join(patterns)
        return "; ".join(f"{where}.{k}: unknown key; allowed keys: {allowed_text}" if where != "(top level)"
                         else f"{k}: unknown key; allowed keys: {allowed_text}" for k in unknown)
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not allowed; allowed values: {', '.join(map(repr, error.validator_value))}"
    return f"{where}: {error.message}"


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a copy of ``config`` with defaults filled in; raise :class:`ConfigError` if invalid."""
    schema = schema or load_schema()
    config = fill_defaults(copy.deepcopy(dict(config)), schema)
    validator = jsonschema.Draft7Validator(schema)
    problems = [_describe(e) for e in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))]
    problems += _cross_checks(config) if not problems else []
    if problems:
        raise ConfigError(f"Invalid configuration ({len(problems)} problem{'s' * (len(problems) > 1)}):\n"
                          + "\n".join(f"  - {p}" for p in problems))
    return config


def _cross_checks(config: dict) -> list[str]:
    problems = []
    real = config["data"]["real"]
    for name, entry in real["datasets"].items():
        if entry["source"] not in real["base_urls"]:
            problems.append(f"data.real.datasets.{name}.source: {entry['source']!r} is not allowed; "
                            f"allowed values: {', '.join(map(repr, real['base_urls']))} (keys of data.real.base_urls)")
    linear = config["data"]["synthetic"].get("linear_cholesky")
    if linear is not None:
        sigma2 = linear.get("sigma2", groundtruth.get("linear_cholesky").sigma2)
        if sigma2 <= linear["B"]:
            problems.append(f"data.synthetic.linear_cholesky.sigma2: {sigma2} must exceed B = {linear['B']} "
                            "(eq. 6 adds noise of variance σ² − B)")
    problems += _experiment_checks(config)
    return problems


def _experiment_checks(config: dict) -> list[str]:
    from fmvae import methods

    problems = []
    synthetic, real = list(config["data"]["synthetic"]), real_names(config)
    for name, entry in config.get("experiments", {}).items():
        where = f"experiments.{name}"
        restarts = {**config["training"]["restarts"], **entry.get("restarts", {})}
        for dataset in entry["datasets"]:
            if dataset not in synthetic + real:
                problems.append(f"{where}.datasets: {dataset!r} is not allowed; allowed values: "
                                f"{', '.join(map(repr, synthetic + real))} (keys of data.synthetic and data.real.datasets)")
                continue
            labelled = dataset in real or bool(groundtruth.get(dataset).label)
            for method in entry["methods"]:
                if _resolves(method) and methods.get(method).semi_supervised and not labelled:
                    problems.append(f"{where}.methods.{method}: a semi-supervised method needs a labelled data set; "
                                    f"{dataset} has no labels")
            if dataset in real:
                if restarts["ground_truth"] > 0:
                    problems.append(f"{where}.restarts.ground_truth: {dataset} is a real set with no ground truth; set it to 0")
                if not isinstance(entry["sigma2"], list):
                    problems.append(f"{where}.sigma2: {dataset} is a real set with no true σ²; give a list of fixed "
                                    "values (paper: [0.01, 0.5])")
            k = experiment_latent_dim(entry, dataset)
            if k is None and dataset in real:
                problems.append(f"{where}.latent_dim: {dataset} is a real set; give its K")
            elif k is not None and restarts["ground_truth"] > 0 and dataset in synthetic:
                true_k = groundtruth.get(dataset).latent_dim
                if k != true_k and k != [true_k]:
                    problems.append(f"{where}.latent_dim: {k} differs from {dataset}'s true K "
                                    f"{true_k}, so no restart can start at the ground truth; set "
                                    f"{where}.restarts.ground_truth to 0")
        for method, grid in entry["methods"].items():
            try:
                expected = set(methods.get(method).hyper)
            except ValueError as err:
                problems.append(f"{where}.methods.{method}: {err}")
                continue
            if set(grid) != expected:
                problems.append(f"{where}.methods.{method}: hyper-parameters {sorted(grid)} given; "
                                f"{method} needs exactly {sorted(expected) or 'none'}")
            for key in ("S", "R"):
                if any(v != int(v) or v < 1 for v in grid.get(key, [])):
                    problems.append(f"{where}.methods.{method}.{key}: must be whole numbers ≥ 1")
            if any(v <= 0 for v in grid.get("T", [])):
                problems.append(f"{where}.methods.{method}.T: must be positive")
            if method not in methods.METHODS and set(grid) == expected:  # an outside method: probe its contract
                try:
                    methods.check_contract(method, {k: values[0] for k, values in grid.items()})
                except ValueError as err:
                    problems.append(f"{where}.methods.{method}: {err}")
        if restarts["ground_truth"] + restarts["random"] < 1:
            problems.append(f"{where}.restarts: needs at least one restart")
    return problems


def _resolves(method: str) -> bool:
    """Whether a config's method name names a method (the error is reported once, below)."""
    try:
        _methods().get(method)
    except ValueError:
        return False
    return True


def experiment_latent_dim(entry: dict, dataset: str) -> int | list[int] | None:
    """An experiment's K for one data set (``latent_dim``: one K, or K per data set; a list is a
    grid of K values searched like the other hyper-parameters); None: the true K."""
    k = entry.get("latent_dim")
    return k.get(dataset) if isinstance(k, dict) else k


def load_config(paths: str | Path | Iterable[str | Path], overrides: dict | None = None) -> dict:
    """Load one or more YAML files (later ones update earlier ones, deeply), then validate."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    merged: dict = {}
    for path in paths:
        with open(path) as f:
            deep_update(merged, yaml.safe_load(f) or {})
    deep_update(merged, overrides or {})
    return validate_config(merged)


def deep_update(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def derive_seed(base: int, *keys) -> int:
    """A stable 32-bit seed from the base seed and names/indices (independent of Python's hash)."""
    words = [int(base)] + [zlib.crc32(str(k).encode()) for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def synthetic_names(config: dict) -> list[str]:
    return list(config["data"]["synthetic"])


def real_names(config: dict) -> list[str]:
    return list(config["data"]["real"]["datasets"])


def synthetic_spec(config: dict, name: str) -> dict:
    """Everything that determines the files of synthetic set ``name``: sizes, σ², f's parameters."""
    data = config["data"]
    entry = data["synthetic"][name]
    gt = groundtruth.get(name)
    params = {k: entry[k] for k in gt.params if k in entry}
    spec = {
        "dataset": name,
        "seed": config["seed"],
        "versions": entry.get("versions", data["versions"]),
        "n_train": entry.get("n_train", data["n_train"]),
        "n_val": entry.get("n_val", data["n_val"]),
        "n_test": entry.get("n_test", data["n_test"]),
        "sigma2": entry.get("sigma2", gt.sigma2),
        "params": {**gt.params, **params},
    }
    if gt.label:
        spec["label_fraction"] = data["label_fraction"]
    return spec


def surrogate_spec(config: dict, name: str) -> dict:
    """Everything that determines the surrogate of ``name`` (not the sizes or σ²)."""
    return {"dataset": name, "seed": config["seed"],
            "params": synthetic_spec(config, name)["params"], "fit": config["data"]["surrogate"]}


def real_spec(config: dict, name: str) -> dict:
    real = config["data"]["real"]
    entry = real["datasets"][name]
    return {
        "dataset": name,
        "seed": config["seed"],
        "splits": real["splits"],
        "label_fraction": real["label_fraction"],
        "standardize": real["standardize"],
        "url": real["base_urls"][entry["source"]].rstrip("/") + "/" + entry["archive"].lstrip("/"),
        "member": entry["member"],
        "sha256": entry["sha256"],
        "format": entry["format"],
        "timeout_s": real["timeout_s"],
    }


def to_json(spec: dict) -> str:
    """Canonical JSON (sorted keys), as stored in file attributes and passed to the CLI."""
    return json.dumps(spec, sort_keys=True)


def experiment_names(config: dict) -> list[str]:
    return list(config.get("experiments", {}))


def experiment_spec(config: dict, experiment: str, dataset: str, method: str) -> dict:
    """Everything that determines the training of one (experiment, data set, method): the grid,
    restarts, σ² treatment and the trainer's settings. Changing another method's grid or a plot
    option leaves this slice, and so these jobs, untouched."""
    entry = config["experiments"][experiment]
    training = config["training"]
    restarts = {**training["restarts"], **entry.get("restarts", {})}
    grid_axes = dict(entry["methods"][method])
    if isinstance(entry["sigma2"], list):  # a grid of fixed σ² values (the real sets)
        grid_axes["sigma2"] = entry["sigma2"]
    latent_dim = experiment_latent_dim(entry, dataset)
    if isinstance(latent_dim, list):  # K as a grid axis (each training job holds one K)
        grid_axes["K"], latent_dim = latent_dim, None
    names = sorted(grid_axes)
    grid = [dict(zip(names, values)) for values in itertools.product(*(grid_axes[n] for n in names))] or [{}]
    return {
        "experiment": experiment, "dataset": dataset, "method": method, "seed": config["seed"],
        "grid": grid, "restarts": restarts, "sigma2": entry["sigma2"], "selection": entry["selection"],
        **({"latent_dim": latent_dim} if latent_dim is not None else {}),  # absent: the true K
        "training": {**{k: training[k] for k in ("device", "streams", "negative_slope", "batch_size", "lr",
                                                   "sigma2_init_random", "checkpoint_every_s", "log_every_epochs")},
                     "hidden": entry.get("hidden", training["hidden"]),
                     "epochs": entry.get("epochs", training["epochs"]), **training["lin"],
                     # M2 only, so that an M2 setting does not rerun the unsupervised jobs
                     **({"m2": training["m2"]} if _methods().get(method).semi_supervised else {})},
        "models_per_job": entry.get("models_per_job", training["models_per_job"]),
    }


def _methods():
    from fmvae import methods  # imported late: fmvae.methods is a leaf, config is imported everywhere

    return methods


GT_ENCODER_PREFIT_KEYS = ("prefit_loss", "prefit_epochs", "prefit_lr", "prefit_batch_size", "prefit_tolerance")


def gt_encoder_spec(config: dict, dataset: str) -> dict:
    """Everything that determines φ_GT of ``dataset``: restarts, the trainer's settings, and the
    ``training.gt_encoder`` settings (without the pre-fit's when ``init`` is random, so changing
    them does not rerun a fit that does not use them; quadrature settings only for a 1-D latent)."""
    training = config["training"]
    gt = training["gt_encoder"]
    gt_settings = {k: v for k, v in gt.items() if k not in ("restarts", "epochs")
                   and not (gt["init"] == "random" and k in GT_ENCODER_PREFIT_KEYS)}
    if groundtruth.get(dataset).latent_dim != 1:
        gt_settings.pop("quadrature", None)
    return {"dataset": dataset, "seed": config["seed"], "restarts": gt["restarts"],
            "training": {**{k: training[k] for k in ("device", "streams", "hidden", "negative_slope", "batch_size", "lr",
                                                       "checkpoint_every_s", "log_every_epochs")},
                         "epochs": gt["epochs"],
                         **({"m2": training["m2"]} if groundtruth.get(dataset).label else {})},
            "gt_encoder": gt_settings}


def experiment_versions(config: dict, experiment: str, dataset: str) -> int:
    """Versions of a synthetic set (or splits of a real one) an experiment uses."""
    available = (config["data"]["real"]["splits"] if dataset in real_names(config)
                 else synthetic_spec(config, dataset)["versions"])
    return min(available, config["experiments"][experiment].get("versions", available))


def evaluation_spec(config: dict, experiment: str, dataset: str, method: str) -> dict:
    return {**experiment_spec(config, experiment, dataset, method), "evaluation": config["evaluation"]}
