"""The paper's training protocol (docs/methods.md §3) on top of the batched trainer.

For one (experiment, data set, version, method) the *plan* lists every model: each grid point of
the method's hyper-parameters × restarts, ground-truth-initialised ones first (decoder = the
surrogate θ_GT, encoder = φ_GT), then random ones. A training job trains one *part* of the plan
(``models_per_job`` models, or all) as one stack. Each model's seeds derive from its identity
(experiment, data set, version, method, grid point, restart), never from its position in a part,
so chunking the plan differently does not change any model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import torch

from fmvae import methods, store
from fmvae.config import derive_seed, to_json
from fmvae.data.groundtruth import LINEAR_A_GT, get
from fmvae.data.simulate import load_surrogate
from fmvae.nn import BatchedVAE, Labels
from fmvae.objectives.semi_supervised import pack
from fmvae.train.loop import Trainer, evaluate_objective

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but torch sees no GPU; use 'auto' to fall back to CPU")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def model_plan(spec: dict, version: int) -> list[dict]:
    """Every model of one (experiment, data set, version, method), in a fixed order."""
    method = methods.get(spec["method"])
    plan = []
    for hyper in spec["grid"]:
        slug = method.slug(hyper)
        for init, count in (("ground_truth", spec["restarts"]["ground_truth"]), ("random", spec["restarts"]["random"])):
            for r in range(count):
                restart = r if init == "ground_truth" else spec["restarts"]["ground_truth"] + r
                key = (spec["experiment"], spec["dataset"], version, spec["method"], slug, restart)
                plan.append({"hyper": hyper, "slug": slug, "restart": restart, "init": init,
                             "seed": derive_seed(spec["seed"], *key)})
    return plan


def model_latent_dim(spec: dict, model: dict) -> int | None:
    """A model's K: its grid value (``K`` among its hyper-parameters), else the experiment's, else
    None (the data set's true K)."""
    return int(model["hyper"]["K"]) if "K" in model.get("hyper", {}) else spec.get("latent_dim")


def parts(spec: dict, version: int) -> list[list[dict]]:
    """The plan cut into training jobs of ``models_per_job`` models (0: as many as possible). Models
    of different K never share a job (their weights have different shapes)."""
    groups: dict = {}
    for model in model_plan(spec, version):
        groups.setdefault(model_latent_dim(spec, model), []).append(model)
    out = []
    for members in groups.values():
        per_job = spec["models_per_job"] or len(members)
        out += [members[i:i + per_job] for i in range(0, len(members), per_job)]
    return out


def part_count(spec: dict, version: int = 0) -> int:
    return len(parts(spec, version))


def part_models(spec: dict, version: int, part: int) -> list[dict]:
    cut = parts(spec, version)
    if not 0 <= part < len(cut):
        raise ValueError(f"part {part} outside 0..{len(cut) - 1}")
    return cut[part]


class DataSet:
    """One version of a synthetic set or one split of a real set: train/val/test x as float32
    tensors, the labels of labelled sets, and the file's attributes."""

    def __init__(self, path):
        with h5py.File(path, "r") as f:
            self.attrs = store.read_attrs(f)
            self.x = {split: torch.as_tensor(f[split]["x"][()], dtype=torch.float32) for split in ("train", "val", "test")}
            self.y = {split: torch.as_tensor(f[split]["y"][()], dtype=torch.float32)
                      for split in ("train", "val", "test") if "y" in f[split]}
            self.observed = torch.as_tensor(f["train"]["y_observed"][()]) if "y_observed" in f["train"] else None
        self.name = self.attrs["dataset"]
        self.real = "n_classes" in self.attrs  # the real sets have no ground truth
        self.gt = None if self.real else get(self.name)
        self.noise_variance = None if self.real else float(self.attrs["noise_variance"])
        self.data_dim = self.x["train"].shape[1]

    @property
    def labels(self) -> Labels | None:
        """The label of a labelled set (for M2), None for an unsupervised one."""
        if self.real:
            return Labels(int(self.attrs["n_classes"]))
        return {None: None, "bernoulli": Labels(self.gt.n_classes), "normal": Labels(0)}[self.gt.label]

    def inputs(self, split: str, semi_supervised: bool = False) -> torch.Tensor:
        """What a model trains or is evaluated on: x, or for M2 the packed [x, y, observed] with the
        training split's observed labels; validation and test labels count as unobserved, so the
        M2 objective there is the unlabelled bound U, a bound on log p(x) [choice]."""
        if not semi_supervised:
            return self.x[split]
        if self.labels is None:
            raise ValueError(f"{self.name} has no labels: semi-supervised methods need a labelled set")
        observed = self.observed if split == "train" else torch.zeros(len(self.x[split]), dtype=torch.bool)
        return pack(self.x[split], self.y[split], observed)

    @property
    def decoder(self) -> tuple[str, dict]:
        """The model's decoder family: the eq. 6 linear decoder for ``linear_cholesky``, else the MLP."""
        if self.name == "linear_cholesky":
            return "linear_cholesky", {"B": float(self.attrs["config"]["params"]["B"])}
        return "mlp", {}


def ground_truth_decoder(data: DataSet, surrogate_path) -> dict:
    """θ_GT as one model's decoder arrays: the surrogate's weights, or A_GT for eq. 6."""
    kind, _ = data.decoder
    if kind == "linear_cholesky":
        return {"A": torch.as_tensor(LINEAR_A_GT, dtype=torch.float32)}
    if surrogate_path is None:
        raise ValueError(f"{data.name}: ground-truth initialisation needs the surrogate file")
    surrogate, _ = load_surrogate(surrogate_path)
    return {k: v[0] for k, v in surrogate.state_arrays().items()}


def initial_sigma2(data: DataSet, model: dict, learn_sigma2: bool, training: dict) -> float:
    """σ² a model starts with: a grid value (``sigma2`` among its hyper-parameters, held fixed),
    the truth (fixed σ², or a ground-truth restart), or ``sigma2_init_random`` (learned σ²)."""
    if "sigma2" in model.get("hyper", {}):
        return float(model["hyper"]["sigma2"])
    if data.noise_variance is None:
        raise ValueError(f"{data.name} has no true σ²: give σ² values as the experiment's sigma2 grid")
    return data.noise_variance if model["init"] == "ground_truth" or not learn_sigma2 else training["sigma2_init_random"]


def build_model(data: DataSet, training: dict, plan: list[dict], learn_sigma2: bool,
                gt_decoder: dict | None, gt_encoder: dict | None, device, latent_dim: int | None = None,
                semi_supervised: bool = False) -> BatchedVAE:
    """The stack of ``plan``'s models (M2 models if ``semi_supervised``); ``latent_dim`` None means
    the data set's true K. ``gt_encoder`` maps each inference network's name to its arrays."""
    kind, options = data.decoder
    sigma2 = torch.tensor([initial_sigma2(data, m, learn_sigma2, training) for m in plan])[:, None]
    if latent_dim is None and data.gt is None:
        raise ValueError(f"{data.name}: a real data set needs the experiment's latent_dim")
    model = BatchedVAE(len(plan), data.data_dim, latent_dim or data.gt.latent_dim, training["hidden"],
                       training["negative_slope"], seeds=[m["seed"] for m in plan], sigma2_init=sigma2,
                       learn_sigma2=learn_sigma2, decoder=kind, decoder_options=options,
                       labels=data.labels.with_settings(training.get("m2")) if semi_supervised else None)
    at_truth = [i for i, m in enumerate(plan) if m["init"] == "ground_truth"]
    if at_truth:
        if gt_decoder is None or gt_encoder is None:
            raise ValueError("ground-truth restarts need the ground-truth decoder and encoder")
        for i in at_truth:
            _set_model(model.decoder, i, gt_decoder)
            for name, net in model.encoder_nets().items():
                _set_model(net, i, gt_encoder[name])
    return model.to(device)


def _set_model(net, index: int, arrays: dict) -> None:
    net.set_models([index], {k: torch.as_tensor(v) for k, v in arrays.items()})


def read_arrays(path, group: str, index: int | None = None) -> dict:
    """Arrays under ``group`` of an HDF5 file (one model's slice if ``index`` is given)."""
    with h5py.File(path, "r") as f:
        out = {}
        f[group].visititems(lambda name, obj: out.__setitem__(name, obj[()] if index is None else obj[index])
                            if isinstance(obj, h5py.Dataset) else None)
    return out


def read_gt_encoder(path) -> dict[str, dict]:
    """φ_GT of a ground-truth encoder file: each inference network's arrays by network name (one
    group per network, as :func:`fit_gt_encoder` writes them)."""
    with h5py.File(path, "r") as f:
        return {name: {k: v[()] for k, v in group.items()} for name, group in f.items() if isinstance(group, h5py.Group)}


def fit_gt_encoder(spec: dict, data_path, version: int, surrogate_path, out) -> dict:
    """φ_GT: encoders initialised by ``training.gt_encoder.init`` (random, or a supervised pre-fit
    to the truth), then trained by the ELBO with the decoder frozen at θ_GT and σ² at the truth;
    the restart with the best validation ELBO is kept (docs/methods.md §3), and its gap to log p(x) under
    θ_GT is recorded. On a labelled set the encoders are M2's (q(z|x), q(z|x, y), q(y|x)), trained
    by the M2 ELBO on the partly labelled training split with α = γ = 1 [choice: the paper does not
    say], and the validation bound is U. See :mod:`fmvae.train.gt_encoder`."""
    from fmvae.train import gt_encoder  # imported late: it builds on this module

    return gt_encoder.fit_gt_encoder(spec, data_path, version, surrogate_path, out)


def train_part(spec: dict, data_path, version: int, part: int, out, surrogate_path=None, gt_encoder_path=None) -> None:
    """Train one part of the plan as one stack and write its HDF5 (see README, "Training runs")."""
    data = DataSet(data_path)
    method = methods.get(spec["method"])
    device = pick_device(spec["training"]["device"])
    plan = part_models(spec, version, part)
    needs_truth = any(m["init"] == "ground_truth" for m in plan)
    gt_decoder = ground_truth_decoder(data, surrogate_path) if needs_truth else None
    gt_encoder = read_gt_encoder(gt_encoder_path) if needs_truth else None
    semi = method.semi_supervised
    model = build_model(data, spec["training"], plan, spec["sigma2"] == "learned", gt_decoder, gt_encoder, device,
                        model_latent_dim(spec, plan[0]), semi_supervised=semi)
    hyper = {name: np.array([m["hyper"][name] for m in plan]) for name in method.hyper}
    name = f"{spec['experiment']}/{data.name}/v{version}/{spec['method']} part {part}"
    log.info("%s: %d models on %s (%s)", name, len(plan), device,
             ", ".join(sorted({m["slug"] or "default" for m in plan})))
    checkpoint = Path(str(out) + ".ckpt")
    trainer = Trainer(model, method, hyper, spec["training"], seeds=[m["seed"] + 1 for m in plan], name=name)
    result = trainer.run(data.inputs("train", semi), data.inputs("val", semi), checkpoint=checkpoint)
    x_val = data.inputs("val", semi).to(device)
    eval_seeds = [m["seed"] + 2 for m in plan]
    val_objective = evaluate_objective(model, method, hyper, x_val, seeds=eval_seeds)
    elbo = methods.get(method.elbo_method)
    val_elbo = (val_objective if method.objective == elbo.objective  # same bound, same seeds: no second pass
                else evaluate_objective(model, elbo, {k: hyper[k] for k in elbo.hyper}, x_val, seeds=eval_seeds))
    diverged = result.diverged | ~np.isfinite(val_objective)
    if diverged.any():
        log.warning("%s: %d of %d models diverged (recorded, excluded from selection)", name,
                    int(diverged.sum()), len(plan))
    attrs = {"experiment": spec["experiment"], "dataset": data.name, "method": spec["method"], "version": version,
             "part": part, "models": plan, "steps_per_model": result.steps, "seconds": result.seconds,
             "device": str(device), "config": to_json(spec)}
    with store.write_h5(out, attrs) as f:
        params = f.create_group("params")
        for key, value in model.state_arrays().items():
            params.create_dataset(key, data=value.numpy(), track_times=False)
        store.write_arrays(f, {"curve": result.curve, "diverged": diverged, "diverged_epoch": result.diverged_epoch,
                               "aggressive_epochs": result.aggressive_epochs, "val_objective": val_objective,
                               "val_elbo": val_elbo})
    checkpoint.unlink(missing_ok=True)
