"""Appendix F (Figure 7): a manifold-projection defence against adversarial perturbations needs the
true observation noise and latent dimensionality.

Setup (paper eq. 32, with the documented choices of the config's ``adversarial`` section):

* **Data and labels.** One version of a synthetic set with a 1-D latent (default: Circle), x = f_GT(z)
  + ε, labelled y = 1[z > z₀] by its generating z [choice: the paper's y ~ Cat(g_ψ ∘ f_GT(z)) with
  g_ψ a threshold along the curve]; the label is a function of the noise-free point f_GT(z).
* **True classifier** c*(x): the label of the nearest point of the true manifold {f_GT(z)} (a dense
  grid of z on [−b, b] under the surrogate θ_GT, searched with a KD-tree): the paper's "true
  classifier only defined on the manifold", extended off it by nearest-point projection. It gives
  *no label* (−1) where the nearest point lies within ``margin``·σ of a differently labelled part of
  the curve (a band around each label switch, where no label is certain under the noise) or where x
  is farther than ``max_distance``·σ from the curve (where the nearest point is no plausible
  denoising: on Circle, near the centre every point of the circle is about as close).
* **Learned classifier** c(x) = 1[logit(x) > 0]: a small leaky-ReLU MLP trained by full-batch Adam
  on the noisy training x with their labels y.
* **Projections** M(x) = f_θ(μ_φ(x)) of two VAEs trained on the same x by the batched engine:
  *well specified*: K = 1, σ² fixed at the ground truth, decoder initialised at θ_GT, encoder fitted
  with the decoder frozen, then both trained by the ELBO (the protocol's ground-truth
  initialisation); *mismatched*: K = 2, σ² learned per dimension, from a random initialisation of
  the networks and a small initial σ² [choice, ``mismatched.sigma2_init``]. Each keeps the restart
  with the best validation ELBO. The nearest point of the true manifold, M*(x), is reported beside
  them as the ideal projection of the paper's Figure 7a.
* **Attack.** For every test point x_n with a true label y_n = c*(x_n) ∈ {0, 1} that the learned
  classifier gets right (c(x_n) = y_n: *eligible*), projected gradient ascent on the learned
  classifier's cross-entropy of y_n inside the ball ‖η‖ ≤ ε (L2 or L∞), kept inside the true-label
  region {c* = y_n}: a step that would leave it is replaced by its component normal to the true
  manifold (at the iterate's nearest point; moving along the normal keeps the nearest point), and
  if that still leaves it, shortened by bisection. Every iterate therefore keeps its true label: the
  attack may cross the learned classifier's boundary, never the true one (the paper's Figure 7).

Metrics (per version; the table gives mean ± std over versions):

* ``attack_success`` (no defence): among eligible points, the fraction whose attack flips the
  learned classifier, c(x'_n) ≠ y_n while c*(x'_n) = y_n (*valid adversarial examples*, counted
  in ``valid_examples``).
* ``attack_success_after_projection`` (per defence M): among valid adversarial examples, the
  fraction the learned classifier still gets wrong after projection, c(M(x'_n)) ≠ y_n. A defence
  that removes the perturbation scores 0; one that leaves x' where it is scores 1. Undefined (NaN,
  left out of the table's mean) in a version without valid adversarial examples.
* ``projection_distance``: mean ‖M(x_n) − x_n‖₂ over all clean test points.
* ``clean_accuracy`` / ``clean_accuracy_after_projection``: mean 1[c(x_n) = y_n] and
  1[c(M(x_n)) = y_n] over the clean test points that have a true label (the defence's cost).
* ``sigma2`` (mean over dimensions) and ``val_elbo`` (validation ELBO per point) of each VAE.
"""

from __future__ import annotations

import logging
import math

import h5py
import numpy as np
import torch
from scipy.spatial import cKDTree

from fmvae import methods, store
from fmvae.config import derive_seed, to_json
from fmvae.data.simulate import load_surrogate
from fmvae.nn import BatchedMLP, BatchedVAE
from fmvae.train.loop import Trainer, evaluate_objective
from fmvae.train.protocol import DataSet, build_model, ground_truth_decoder, pick_device

log = logging.getLogger(__name__)

# The models of the comparison, in the order of the figure's panels and the table's rows.
MODELS = ("well_specified", "mismatched")
# Defences evaluated: the ideal one (nearest point of the true manifold) and the two VAEs.
DEFENCES = ("true_manifold", *MODELS)


def adversarial_spec(config: dict) -> dict:
    """Everything that determines one version's Figure 7 file: the ``adversarial`` section, the base
    seed and the trainer's settings (architecture, batch size, learning rate)."""
    training = config["training"]
    section = {k: v for k, v in config["adversarial"].items() if k != "versions"}  # one version's file
    return {**section, "seed": config["seed"],
            "training": {k: training[k] for k in ("device", "hidden", "negative_slope", "batch_size", "lr",
                                                  "log_every_epochs")}}


def adversarial_versions(config: dict) -> int:
    """Versions used: ``adversarial.versions``, at most as many as the data set has."""
    entry = config["data"]["synthetic"][config["adversarial"]["dataset"]]
    return min(config["adversarial"]["versions"], entry.get("versions", config["data"]["versions"]))


# --------------------------------------------------------------------------------------------
# The true manifold and classifier


class TrueManifold:
    """A dense curve f(z_j) (J, D) with labels and unit tangents; nearest-point queries by KD-tree.

    With ``margin`` m > 0, the curve's points within distance m of a differently labelled point of
    the curve are *ambiguous* (label −1): a band around every label switch (and wherever parts of the
    curve with different labels come close), where no label is certain under noise. With
    ``max_distance`` r, points farther than r from the curve have no label either (−1): there the
    nearest point is no longer a plausible denoising (on Circle, near the centre every point of the
    curve is about as close).
    """

    def __init__(self, z: np.ndarray, fz: np.ndarray, labels: np.ndarray, margin: float = 0.0,
                 max_distance: float = math.inf):
        self.z, self.fz = np.asarray(z, float), np.asarray(fz, float)
        self.labels = np.asarray(labels, int).copy()
        tangent = np.gradient(self.fz, axis=0)
        self.tangent = tangent / np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
        self.tree = cKDTree(self.fz)
        self.max_distance = max_distance
        if margin > 0:
            ambiguous = np.zeros(len(self.labels), dtype=bool)
            for label in np.unique(labels):
                mine, others = self.labels == label, self.labels != label
                if others.any():
                    ambiguous[mine] |= cKDTree(self.fz[others]).query(self.fz[mine])[0] < margin
            self.labels[ambiguous] = -1

    @classmethod
    def from_decoder(cls, f, z_bound: float, points: int, threshold: float, margin: float = 0.0,
                     max_distance: float = math.inf) -> TrueManifold:
        """The curve of ``f`` (a function of z (J, 1)) on ``points`` z in [−b, b], labelled 1[z > z₀]."""
        z = np.linspace(-z_bound, z_bound, points)
        return cls(z, f(z[:, None]), (z > threshold).astype(int), margin, max_distance)

    def nearest(self, x) -> np.ndarray:
        return self.tree.query(np.asarray(x, dtype=float))[1]

    def classify(self, x) -> np.ndarray:
        """c*(x): the label of the nearest point of the curve (−1: no label, see above)."""
        distance, index = self.tree.query(np.asarray(x, dtype=float))
        return np.where(distance <= self.max_distance, self.labels[index], -1)

    def project(self, x) -> np.ndarray:
        """M*(x): the nearest point of the curve."""
        return self.fz[self.nearest(x)]


def surrogate_function(surrogate_path):
    """f_GT from a surrogate file, as a numpy function of z (J, 1) (the decoder that made the data)."""
    surrogate, _ = load_surrogate(surrogate_path)

    def f(z):
        with torch.no_grad():
            return surrogate(torch.as_tensor(z, dtype=torch.float32))[0].double().numpy()

    return f


# --------------------------------------------------------------------------------------------
# The learned classifier


class Classifier:
    """A one-model leaky-ReLU MLP giving the logit of y = 1; c(x) = 1[logit(x) > 0]."""

    def __init__(self, data_dim: int, hidden, negative_slope: float, seed: int):
        self.net = BatchedMLP(1, [data_dim, *hidden, 1], negative_slope, seeds=[seed])

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())[0, :, 0]

    def predict(self, x) -> np.ndarray:
        with torch.no_grad():
            return (self.logit(torch.as_tensor(np.asarray(x), dtype=torch.float32)) > 0).long().numpy()

    def probability(self, x) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(self.logit(torch.as_tensor(np.asarray(x), dtype=torch.float32))).double().numpy()

    def fit(self, x, y, steps: int, lr: float) -> float:
        """Full-batch Adam on the mean binary cross-entropy; returns the final training loss."""
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(y), dtype=torch.float32)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        loss = torch.tensor(math.nan)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self.logit(x), y)
            loss.backward()
            opt.step()
        return float(loss.detach())


# --------------------------------------------------------------------------------------------
# The attack


def _ball(eta: torch.Tensor, epsilon: float, norm: str) -> torch.Tensor:
    """Project perturbations (N, D) onto the ε-ball of the L2 or L∞ norm."""
    if norm == "linf":
        return eta.clamp(-epsilon, epsilon)
    length = eta.norm(dim=1, keepdim=True)
    return eta * torch.clamp(epsilon / length.clamp_min(1e-12), max=1.0)


def _direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent step of unit size for the norm: g/‖g‖₂ (L2) or sign(g) (L∞)."""
    if norm == "linf":
        return torch.sign(g)
    return g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)


def pgd_attack(x, y, logit_fn, true_label_fn, tangent_fn, epsilon: float, steps: int, step_size: float = 0.0,
               norm: str = "l2", bisection_steps: int = 12) -> np.ndarray:
    """Adversarial points x' (N, D) for ``x`` (N, D) with labels ``y`` (N,) in {0, 1}.

    Projected gradient ascent on the binary cross-entropy of ``logit_fn`` (a torch function of x)
    for label y, inside the ``norm`` ball of radius ``epsilon`` around x, every iterate kept in the
    true-label region {x': true_label_fn(x') = y} (``true_label_fn``, ``tangent_fn``: numpy
    functions giving c*(x') and the unit tangent of the true manifold at x's nearest point). A step
    that would leave it is replaced by its component normal to the manifold; if that still leaves
    it, the step is shortened by bisection on the segment from the current (feasible) iterate.
    ``step_size`` 0 means 2.5 ε / steps (Madry et al.'s rule). Points start at x, which must satisfy
    true_label_fn(x) = y.
    """
    x0 = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    y_np = np.asarray(y, dtype=int)
    target = torch.as_tensor(y_np, dtype=torch.float32)
    alpha = step_size or 2.5 * epsilon / max(steps, 1)
    if not np.array_equal(true_label_fn(x0.numpy()), y_np):
        raise ValueError("every starting point must carry its true label (true_label_fn(x) = y)")
    current = x0.clone()

    def feasible(points: torch.Tensor) -> np.ndarray:
        return true_label_fn(points.numpy()) == y_np

    for _ in range(steps):
        point = current.clone().requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit_fn(point), target, reduction="sum")
        (g,) = torch.autograd.grad(loss, point)
        candidate = x0 + _ball(current + alpha * _direction(g, norm) - x0, epsilon, norm)
        bad = torch.as_tensor(~feasible(candidate))
        if bad.any():  # slide along the true boundary: keep the step's component normal to the manifold
            t = torch.as_tensor(tangent_fn(current[bad].numpy()), dtype=torch.float32)
            g_normal = g[bad] - (g[bad] * t).sum(1, keepdim=True) * t
            candidate[bad] = x0[bad] + _ball(current[bad] + alpha * _direction(g_normal, norm) - x0[bad], epsilon, norm)
            bad = torch.as_tensor(~feasible(candidate))
        if bad.any():  # last resort: the farthest feasible point of the segment current -> candidate
            index = torch.nonzero(bad)[:, 0]
            start, end = current[index], candidate[index]
            lo, hi = torch.zeros(len(index), 1), torch.ones(len(index), 1)
            for _ in range(bisection_steps):
                mid = (lo + hi) / 2
                ok = torch.as_tensor(true_label_fn((start + mid * (end - start)).numpy()) == y_np[index.numpy()])[:, None]
                lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
            candidate[index] = start + lo * (end - start)
        current = candidate.detach()
    return current.numpy()


def attack_metrics(y, learned_clean, learned_adv, true_adv, learned_projected_adv=None) -> dict:
    """The attack's rates from predictions (each (N,) in {0, 1}; see the module docstring).

    ``y``: true labels c*(x_n); ``learned_clean``: c(x_n); ``learned_adv``: c(x'_n); ``true_adv``:
    c*(x'_n); ``learned_projected_adv``: c(M(x'_n)) for one defence M (optional). Returns counts,
    ``attack_success`` and, with a defence, ``attack_success_after_projection`` (NaN when there is
    no valid adversarial example)."""
    y, clean, adv, true_adv = (np.asarray(a, dtype=int) for a in (y, learned_clean, learned_adv, true_adv))
    eligible = clean == y
    valid = eligible & (adv != y) & (true_adv == y)
    out = {"eligible": int(eligible.sum()), "valid_examples": int(valid.sum()),
           "attack_success": float(valid.sum() / eligible.sum()) if eligible.any() else math.nan}
    if learned_projected_adv is not None:
        still = valid & (np.asarray(learned_projected_adv, dtype=int) != y)
        out["attack_success_after_projection"] = float(still.sum() / valid.sum()) if valid.any() else math.nan
    return out


# --------------------------------------------------------------------------------------------
# The two VAEs


def project(model: BatchedVAE, x) -> np.ndarray:
    """M(x) = f_θ(μ_φ(x)) under model 0 of ``model``; x (N, D) -> (N, D)."""
    with torch.no_grad():
        mean, _ = model.encode(torch.as_tensor(np.asarray(x), dtype=torch.float32)[None].to(model.log_sigma2.device))
        return model.decode(mean)[0].double().cpu().numpy()


def _best(model: BatchedVAE, data: DataSet, diverged: np.ndarray, seeds) -> tuple[BatchedVAE, np.ndarray]:
    """The restart with the best validation ELBO (diverged ones excluded) as a one-model stack."""
    device = model.log_sigma2.device
    val = evaluate_objective(model, methods.get("vae"), {}, data.x["val"].to(device), seeds=seeds)
    val = np.where(diverged | ~np.isfinite(val), -np.inf, val)
    if not np.isfinite(val).any():
        raise RuntimeError(f"{data.name}: every restart diverged")
    best = int(np.argmax(val))
    single = BatchedVAE(1, model.data_dim, model.latent_dim, model.encoder.sizes[1:-1], model.encoder.negative_slope,
                        seeds=[0], sigma2_init=torch.ones(1, model.data_dim), learn_sigma2=False)
    single.load_arrays({k: v[best:best + 1] for k, v in model.state_arrays().items()})
    return single.eval(), val


def train_models(spec: dict, data: DataSet, surrogate_path, version: int) -> dict:
    """Train the well-specified and the mismatched VAE (see the module docstring); returns, per model,
    the selected one-model stack and its validation ELBO per restart."""
    device = pick_device(spec["training"]["device"])
    vae = methods.get("vae")
    out = {}
    for role in MODELS:
        entry = spec[role]
        seeds = [derive_seed(spec["seed"], "adversarial", data.name, version, role, r) for r in range(entry["restarts"])]
        plan = [{"init": "random", "seed": s} for s in seeds]
        training = {**spec["training"], "sigma2_init_random": entry.get("sigma2_init", 1.0)}
        name = f"figure7 {data.name} v{version} {role}"
        diverged = np.zeros(len(plan), dtype=bool)
        if role == "well_specified":
            model = build_model(data, training, plan, False, None, None, torch.device("cpu"))
            decoder = ground_truth_decoder(data, surrogate_path)
            model.decoder.set_models(list(range(len(plan))), {k: torch.as_tensor(v) for k, v in decoder.items()})
            model = model.to(device)
            if entry["encoder_epochs"]:
                result = Trainer(model, vae, {}, {**training, "epochs": entry["encoder_epochs"]},
                                 seeds=[s + 1 for s in seeds], freeze_decoder=True, name=f"{name} (encoder)"
                                 ).run(data.x["train"], data.x["val"])
                diverged |= result.diverged
            for p in model.decoder_parameters():
                p.requires_grad_(True)
        else:
            model = build_model(data, training, plan, True, None, None, device, latent_dim=entry["latent_dim"])
        if entry["epochs"]:
            result = Trainer(model, vae, {}, {**training, "epochs": entry["epochs"]}, seeds=[s + 2 for s in seeds],
                             name=name).run(data.x["train"], data.x["val"])
            diverged |= result.diverged
        out[role] = _best(model, data, diverged, [s + 3 for s in seeds])
        log.info("%s: validation ELBO per restart %s; σ² of the kept one %s", name,
                 np.array2string(out[role][1], precision=4),
                 np.array2string(torch.exp(out[role][0].log_sigma2[0]).detach().cpu().numpy(), precision=4))
    return out


# --------------------------------------------------------------------------------------------
# One version, end to end


def _grid(x: np.ndarray, n: int, margin: float = 0.15) -> np.ndarray:
    """An n × n uniform grid over the data's bounding box (first two coordinates), widened by ``margin``."""
    lo, hi = x[:, :2].min(0), x[:, :2].max(0)
    pad = margin * (hi - lo)
    axes = [np.linspace(a, b, n) for a, b in zip(lo - pad, hi + pad)]
    return np.stack([m.ravel() for m in np.meshgrid(*axes)], axis=1)


def run_version(spec: dict, data_path, surrogate_path, version: int, out) -> dict:
    """Train, attack and evaluate one version; write the Figure 7 file (see README, "Figure 7")."""
    data = DataSet(data_path)
    if data.name != spec["dataset"]:
        raise ValueError(f"{data_path} holds {data.name}; the adversarial section names {spec['dataset']}")
    if data.gt.latent_dim != 1 or data.gt.label:
        raise ValueError(f"{data.name}: Figure 7 needs an unsupervised set with a 1-D latent")
    z_train = store.read_split(data_path, "train")["z"][:, 0]
    test = store.read_split(data_path, "test")
    x_train, x_test = data.x["train"].numpy().astype(float), test["x"].astype(float)
    if spec["test_points"]:
        x_test = x_test[:spec["test_points"]]

    sigma = math.sqrt(data.noise_variance)
    margin, max_distance = spec["margin"] * sigma, spec["max_distance"] * sigma
    truth = TrueManifold.from_decoder(surrogate_function(surrogate_path), spec["z_bound"], spec["manifold_points"],
                                      spec["label_threshold"], margin, max_distance)
    y_test = truth.classify(x_test)
    labelled = y_test >= 0
    settings = spec["classifier"]
    classifier = Classifier(data.gt.data_dim, settings["hidden"], spec["training"]["negative_slope"],
                            derive_seed(spec["seed"], "adversarial", data.name, version, "classifier"))
    loss = classifier.fit(x_train, (z_train > spec["label_threshold"]).astype(int), settings["steps"], settings["lr"])
    learned_clean = classifier.predict(x_test)
    accuracy = float(np.mean(learned_clean[labelled] == y_test[labelled]))
    log.info("figure7 %s v%d: classifier training loss %.4f; %d of %d test points outside the ambiguous band "
             "(margin %.3g), clean accuracy there %.4f", data.name, version, loss, labelled.sum(), len(y_test),
             margin, accuracy)

    attack = spec["attack"]
    eligible = learned_clean == y_test
    x_adv = x_test.copy()
    x_adv[eligible] = pgd_attack(x_test[eligible], y_test[eligible], classifier.logit, truth.classify,
                                 lambda points: truth.tangent[truth.nearest(points)], attack["epsilon"],
                                 attack["steps"], attack["step_size"], attack["norm"], attack["bisection_steps"])
    learned_adv, true_adv = classifier.predict(x_adv), truth.classify(x_adv)
    base = attack_metrics(y_test, learned_clean, learned_adv, true_adv)
    log.info("figure7 %s v%d: %d eligible points, %d valid adversarial examples (success %.3f)", data.name, version,
             base["eligible"], base["valid_examples"], base["attack_success"])

    models = train_models(spec, data, surrogate_path, version)
    projections = {"true_manifold": truth.project}
    projections.update({role: (lambda points, m=models[role][0]: project(m, points)) for role in MODELS})
    grid = _grid(x_train, spec["grid_points"])
    metrics = {"none": {**base, "clean_accuracy": accuracy}}
    arrays = {"test/x": x_test, "test/y": y_test, "test/learned": learned_clean, "test/x_adv": x_adv,
              "test/learned_adv": learned_adv, "test/true_adv": true_adv,
              "test/valid": (learned_clean == y_test) & (learned_adv != y_test) & (true_adv == y_test), "grid/x": grid}
    for name, projection in projections.items():
        projected_clean, projected_adv = projection(x_test), projection(x_adv)
        learned_projected_adv = classifier.predict(projected_adv)
        row = attack_metrics(y_test, learned_clean, learned_adv, true_adv, learned_projected_adv)
        row["projection_distance"] = float(np.linalg.norm(projected_clean - x_test, axis=1).mean())
        row["clean_accuracy_after_projection"] = float(np.mean(classifier.predict(projected_clean)[labelled]
                                                               == y_test[labelled]))
        if name in models:
            row["sigma2"] = float(torch.exp(models[name][0].log_sigma2[0]).mean())
            row["val_elbo"] = float(np.max(models[name][1]))
        metrics[name] = row
        arrays.update({f"projection/{name}/test": projected_clean, f"projection/{name}/adv": projected_adv,
                       f"projection/{name}/learned_adv": learned_projected_adv,
                       f"projection/{name}/grid": projection(grid)})
        log.info("figure7 %s v%d %s: %s", data.name, version, name,
                 ", ".join(f"{k} {v:.4g}" for k, v in row.items()))

    # What the figure draws: both classifiers on a dense grid, and the curves.
    dense = _grid(x_train, spec["boundary_grid_points"])
    z_curve = np.linspace(-3, 3, 400)[:, None]
    arrays.update({"boundary/x": dense, "boundary/learned_probability": classifier.probability(dense),
                   "boundary/true_label": truth.classify(dense),
                   "curve/z": z_curve[:, 0], "curve/true": surrogate_function(surrogate_path)(z_curve),
                   "curve/well_specified": _decode(models["well_specified"][0], z_curve)})
    attrs = {"dataset": data.name, "version": version, "noise_variance": data.noise_variance, "margin": margin,
             "max_distance": max_distance, "metrics": metrics,
             "val_elbo": {role: models[role][1].tolist() for role in MODELS},
             "latent_dim": {"well_specified": 1, "mismatched": spec["mismatched"]["latent_dim"]},
             "config": to_json(spec)}
    with store.write_h5(out, attrs) as f:
        store.write_arrays(f, arrays)
        for role in MODELS:
            group = f.create_group(f"params/{role}")
            store.write_arrays(group, {k: v.numpy() for k, v in models[role][0].state_arrays().items()})
    return metrics


def _decode(model: BatchedVAE, z) -> np.ndarray:
    with torch.no_grad():
        return model.decode(torch.as_tensor(z, dtype=torch.float32)[None].to(model.log_sigma2.device))[0].double().cpu().numpy()


def read_result(path) -> tuple[dict, dict]:
    """Attributes and arrays (by path, e.g. ``projection/mismatched/grid``) of a Figure 7 file."""
    with h5py.File(path, "r") as f:
        attrs = store.read_attrs(f)
        arrays = {}
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return attrs, arrays
