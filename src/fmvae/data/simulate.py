"""Simulation of the synthetic benchmark sets from their (surrogate) ground-truth decoders.

One call makes one version: z (and y) from the prior, f(z) from the surrogate where the paper fits
one (Appendix G/H) or from the analytic f otherwise (eq. 6), x = f(z) + ε, then the train/val/test
split and, for semi-supervised sets, the mask of observed training labels.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import torch

from fmvae import store
from fmvae.config import derive_seed, to_json
from fmvae.data.groundtruth import GroundTruth, get
from fmvae.nn import BatchedMLP

SPLITS = ("train", "val", "test")


def save_surrogate(path, gt: GroundTruth, model: BatchedMLP, attrs: dict) -> None:
    """Store a one-model surrogate: weights ``decoder/W{i}`` (fan_in × fan_out) and ``decoder/b{i}``."""
    with store.write_h5(path, {"dataset": gt.name, "input_layout": gt.input_layout,
                               "sizes": list(model.sizes), "negative_slope": model.negative_slope,
                               **attrs}) as f:
        store.write_arrays(f.create_group("decoder", track_order=True),
                           {k: v[0].numpy() for k, v in model.state_arrays().items()})


def load_surrogate(path) -> tuple[BatchedMLP, dict]:
    with h5py.File(path, "r") as f:
        attrs = store.read_attrs(f)
        model = BatchedMLP(1, attrs["sizes"], attrs["negative_slope"])
        model.load_arrays({k: f["decoder"][k][()][None] for k in f["decoder"]})
    return model, attrs


def decoder_mean(gt: GroundTruth, params: dict, surrogate: BatchedMLP | None):
    """f(z, y) as the data were generated: the surrogate if there is one, else the analytic f."""
    if surrogate is None:
        return lambda z, y=None: gt.mean(z, y, **params)

    def f(z, y=None):
        with torch.no_grad():
            inputs = torch.as_tensor(gt.decoder_input(z, y), dtype=torch.float32)
            return surrogate(inputs)[0].double().numpy()

    return f


def observed_mask(rng: np.random.Generator, y: np.ndarray, fraction: float, discrete: bool) -> np.ndarray:
    """Mark ``fraction`` of the labels as observed.

    Discrete labels: stratified, round(fraction·n_c) per class and at least one, so every class has
    labelled examples [choice]. Continuous labels: a simple random subset of round(fraction·n).
    """
    mask = np.zeros(len(y), dtype=bool)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if discrete else [np.arange(len(y))]
    for members in groups:
        count = min(len(members), max(1, round(fraction * len(members))))
        mask[rng.choice(members, size=count, replace=False)] = True
    return mask


def simulate_version(spec: dict, version: int, surrogate: BatchedMLP | None) -> dict[str, dict[str, np.ndarray]]:
    """Arrays of one version, by split: x, z, fz and (semi-supervised) y, y_observed (train)."""
    gt = get(spec["dataset"])
    rng = np.random.default_rng(derive_seed(spec["seed"], spec["dataset"], "simulate", version))
    sizes = [spec["n_train"], spec["n_val"], spec["n_test"]]
    z, y = gt.sample_latents(rng, sum(sizes))
    fz = decoder_mean(gt, spec["params"], surrogate)(z, y)
    noise_var = gt.noise_variance(spec["sigma2"], spec["params"])
    x = fz + np.sqrt(noise_var) * rng.standard_normal(fz.shape)
    bounds = np.cumsum([0, *sizes])
    out = {}
    for name, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
        arrays = {"x": x[lo:hi], "z": z[lo:hi], "fz": fz[lo:hi]}
        if y is not None:
            arrays["y"] = y[lo:hi]
        out[name] = arrays
    if y is not None:
        out["train"]["y_observed"] = observed_mask(rng, out["train"]["y"], spec["label_fraction"],
                                                   discrete=gt.label == "bernoulli")
    return out


def write_synthetic(path: str | os.PathLike, spec: dict, version: int, surrogate_path=None) -> None:
    """Simulate version ``version`` of ``spec['dataset']`` and write it atomically to ``path``."""
    gt = get(spec["dataset"])
    surrogate = None
    attrs = {}
    if gt.surrogate:
        if surrogate_path is None:
            raise ValueError(f"{gt.name} is generated from its surrogate: pass the surrogate file")
        surrogate, sattrs = load_surrogate(surrogate_path)
        attrs["surrogate_mse"] = sattrs["mse"]
    if not 0 <= version < spec["versions"]:
        raise ValueError(f"{gt.name}: version {version} outside 0..{spec['versions'] - 1}")
    arrays = simulate_version(spec, version, surrogate)
    attrs.update({
        "dataset": gt.name, "version": version,
        "seed": derive_seed(spec["seed"], spec["dataset"], "simulate", version),
        "sigma2": spec["sigma2"], "noise_variance": gt.noise_variance(spec["sigma2"], spec["params"]),
        "latent_dim": gt.latent_dim, "data_dim": gt.data_dim, "label": gt.label or "",
        "reference": gt.reference, "generator": "surrogate" if gt.surrogate else "analytic",
        "config": to_json(spec),
    })
    with store.write_h5(path, attrs) as f:
        for split, group_arrays in arrays.items():
            store.write_arrays(f.create_group(split, track_order=True), group_arrays)
