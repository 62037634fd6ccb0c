"""Selection and evaluation of trained models (docs/methods.md §3–4).

For one (experiment, data set, version, method): read every training part, keep per grid point the
restart with the best validation objective (diverged restarts excluded), pick the grid point by the
experiment's criterion (validation objective, or the smallest smooth-kNN statistic against the
validation data), and evaluate the chosen model on the test split. The evaluation file holds the
selection, the metrics and the chosen model's parameters; tables and figures read only these files.
"""

from __future__ import annotations

import logging
import math

import h5py
import numpy as np
import torch

from fmvae import methods, store
from fmvae.config import derive_seed, to_json
from fmvae.data.groundtruth import LINEAR_A_GT
from fmvae.data.simulate import decoder_mean, load_surrogate
from fmvae.metrics import linear_gaussian
from fmvae.metrics.loglik import best_estimate, best_log_likelihood, bound_per_point, log_likelihood_estimates, summarise
from fmvae.metrics.mutual_information import average_latent_mutual_information
from fmvae.metrics.smooth_knn import smooth_knn_statistic
from fmvae.nn import BatchedVAE, Labels
from fmvae.objectives.semi_supervised import relaxed_log_sample
from fmvae.train.protocol import DataSet, build_model, model_latent_dim, pick_device

log = logging.getLogger(__name__)


def read_parts(paths) -> dict:
    """Per-model records of all training parts, in plan order: ``models``, the per-model arrays
    (curve, diverged, validation bounds) concatenated, and ``params``: per model, its part's
    parameter arrays and its row there (parts of different K have differently shaped weights);
    ``seconds``: the parts' training wall time, summed."""
    models, arrays, params, seconds = [], {}, [], 0.0
    for path in paths:
        with h5py.File(path, "r") as f:
            attrs = store.read_attrs(f)
            models += attrs["models"]
            seconds += attrs["seconds"]
            for key in ("curve", "diverged", "val_objective", "val_elbo", "aggressive_epochs"):
                arrays.setdefault(key, []).append(f[key][()])
            part = {}
            f["params"].visititems(lambda name, obj, part=part: part.__setitem__(name, obj[()])
                                   if isinstance(obj, h5py.Dataset) else None)
            params += [(part, row) for row in range(len(attrs["models"]))]
    return {"models": models, "params": params, "seconds": seconds, **{k: np.concatenate(v) for k, v in arrays.items()}}


def load_models(data: DataSet, spec: dict, runs: dict, indices, device) -> BatchedVAE:
    """A stack holding the models ``indices`` of ``runs`` (all of one K) with their trained parameters."""
    plan = [{**runs["models"][i], "init": "random"} for i in indices]
    latent_dims = {model_latent_dim(spec, m) for m in plan}
    if len(latent_dims) != 1:
        raise ValueError(f"models of different K ({sorted(latent_dims)}) cannot share a stack")
    model = build_model(data, spec["training"], plan, spec["sigma2"] == "learned", None, None, torch.device("cpu"),
                        latent_dims.pop(), semi_supervised=methods.get(spec["method"]).semi_supervised)
    rows = [runs["params"][i] for i in indices]
    model.load_arrays({name: torch.as_tensor(np.stack([part[name][row] for part, row in rows])) for name in rows[0][0]})
    return model.to(device)


def sample_labels(model: BatchedVAE, n: int, generator: torch.Generator) -> torch.Tensor:
    """y ~ p(y) of an M2 stack as the decoder sees it, (M, n, width): one-hot uniform classes, a
    sample of the uniform Concrete prior (the relaxed model, training.m2.discrete_y: relaxed), or N(0, 1)."""
    labels, m = model.labels, model.n_models
    if labels.relaxed:
        eps = torch.randn(m, n, labels.n_classes, generator=generator)
        return relaxed_log_sample(torch.zeros_like(eps), eps, labels.temperature).exp()
    if labels.discrete:
        return labels.represent(torch.randint(labels.n_classes, (m, n), generator=generator))
    return labels.represent(torch.randn(m, n, generator=generator))


def sample_x(model: BatchedVAE, n: int, generator: torch.Generator, y: float | None = None) -> torch.Tensor:
    """x ~ p_θ(x) for every model: z ~ N(0, I), x = f_θ(z) + σ ε; for M2, f_θ(z, y) with y ~ p(y),
    or x ~ p_θ(x | y) with ``y`` given (a class index, decoded one-hot also in the relaxed model, whose
    vertices they are, or a continuous value). Shape (M, n, D)."""
    m = model.n_models
    z = torch.randn(m, n, model.latent_dim, generator=generator)
    labels = None
    if model.labels:
        labels = (sample_labels(model, n, generator) if y is None
                  else model.labels.represent(torch.full((m, n), float(y))))
        labels = labels.to(model.log_sigma2.device)
    eps = torch.randn(m, n, model.data_dim, generator=generator).to(model.log_sigma2.device)
    with torch.no_grad():
        return model.decode(z.to(model.log_sigma2.device), labels) + torch.exp(0.5 * model.log_sigma2)[:, None, :] * eps


def smooth_knn_px(model: BatchedVAE, x_ref: torch.Tensor, settings: dict, seed: int, y: float | None = None) -> np.ndarray:
    """Smooth-kNN statistic of model samples (of p_θ(x), or of p_θ(x | y) given ``y``) against
    ``x_ref``, averaged over repeated draws; (M,)."""
    generator = torch.Generator().manual_seed(seed)
    values = np.zeros(model.n_models)
    for _ in range(settings["draws"]):
        samples = sample_x(model, settings["model_samples"], generator, y).cpu()
        values += [smooth_knn_statistic(samples[i], x_ref.cpu(), settings["alpha"], settings["k"])
                   for i in range(model.n_models)]
    return values / settings["draws"]


def refit_sigma2(model: BatchedVAE, x: torch.Tensor, draws: int, seed: int, chunk: int = 500) -> np.ndarray:
    """Closed-form ELBO-optimal σ² for fixed θ, φ (eqs. 30–31): σ_d² = mean_n E_q[(x_nd − f_d(z))²],
    with ``draws`` samples of q per point. Shape (M, D)."""
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(model.n_models, model.data_dim, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            xb = x[start:start + chunk].expand(model.n_models, -1, -1)
            mean, log_var = model.encode(xb)
            eps = torch.randn(model.n_models, xb.shape[1], draws, model.latent_dim, generator=generator).to(x.device)
            z = mean[:, :, None] + torch.exp(0.5 * log_var)[:, :, None] * eps
            fz = model.decode(z.flatten(1, 2)).view(model.n_models, xb.shape[1], draws, -1)
            total += ((xb[:, :, None] - fz) ** 2).mean(2).sum(1).double().cpu()
    return (total / x.shape[0]).numpy()


def latent_mutual_information(model: BatchedVAE, x: torch.Tensor, neighbours: int, seed: int) -> float:
    """avg_i I(x; z_i) of model 0 (Table 1): KSG on x against one z ~ q(z|x) per point (docs/methods.md §4)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mean, log_var = model.encode(x[None])
        z = mean[0] + torch.exp(0.5 * log_var[0]) * torch.randn(mean.shape[1:], generator=generator).to(x.device)
    return average_latent_mutual_information(x.cpu().double().numpy(), z.cpu().double().numpy(), k=neighbours)


COHORT_Y = 3.5  # Table 4: the continuous semi-circle's cohorts are p(x | y = −3.5) and p(x | y = 3.5)


def label_cohorts(data: DataSet) -> list[tuple[str, float]]:
    """The cohorts of p(x|y) as (name, y): ``y=0``, ``y=1`` (discrete semi-circle), ``y=-3.5``,
    ``y=3.5`` (continuous), or ``cohort1``… (the real sets' classes, the paper's names)."""
    labels = data.labels
    if data.real:
        return [(f"cohort{c + 1}", float(c)) for c in range(labels.n_classes)]
    if labels.discrete:
        return [(f"y={c}", float(c)) for c in range(labels.n_classes)]
    return [(f"y={-COHORT_Y:g}", -COHORT_Y), (f"y={COHORT_Y:g}", COHORT_Y)]


def true_decoder(data: DataSet, surrogate_path):
    """f_GT(z, y) of a synthetic set as its data were generated (numpy in, numpy out)."""
    if surrogate_path is None and data.gt.surrogate:
        raise ValueError(f"{data.name}: the ground-truth conditionals need the surrogate file (--surrogate)")
    surrogate = load_surrogate(surrogate_path)[0] if data.gt.surrogate else None
    return decoder_mean(data.gt, data.attrs["config"]["params"], surrogate)


def conditional_reference(data: DataSet, y: float, seed: int, truth) -> torch.Tensor:
    """Held-out samples of the true p(x | y): fresh draws of ``truth`` (f_GT, :func:`true_decoder`)
    plus noise, as many as the test split, on a synthetic set; the test points of class y on a real set."""
    if data.real:
        return data.x["test"][data.y["test"] == y]
    rng = np.random.default_rng(seed)
    n = data.x["test"].shape[0]
    z = rng.standard_normal((n, data.gt.latent_dim))
    fz = truth(z, np.full(n, y))
    return torch.as_tensor(fz + math.sqrt(data.noise_variance) * rng.standard_normal(fz.shape), dtype=torch.float32)


def function_separation(decode, cohorts: list[float], z: np.ndarray) -> float:
    """Mean over z ~ p(z) and over pairs of cohorts of ‖f(z, a) − f(z, b)‖: how far apart the
    functions of different labels are (0: functional collapse)."""
    fs = [np.asarray(decode(z, np.full(len(z), y)), dtype=np.float64) for y in cohorts]
    return float(np.mean([np.linalg.norm(fs[a] - fs[b], axis=1).mean()
                          for a in range(len(fs)) for b in range(a + 1, len(fs))]))


def learned_decoder(model: BatchedVAE, index: int = 0):
    """f_θ(z, y) of model ``index`` of an M2 stack (numpy in, numpy out)."""
    def decode(z, y):
        device = model.log_sigma2.device
        with torch.no_grad():
            labels = model.labels.represent(torch.as_tensor(y, dtype=torch.float32))[None].to(device)
            z = torch.as_tensor(z, dtype=torch.float32)[None].to(device)
            return model.decode(z.expand(model.n_models, -1, -1), labels.expand(model.n_models, -1, -1))[index].cpu().numpy()
    return decode


def semi_supervised_metrics(model: BatchedVAE, data: DataSet, settings: dict, seed: int, surrogate_path) -> dict:
    """Model 0's p_θ(x|y) per cohort against the true p(x|y) (``smooth_knn_pxy:<cohort>``), the
    functional-collapse measure (``f_separation``; on synthetic sets also ``f_separation_ratio``,
    learned over true, 0 = collapsed, 1 = as far apart as the truth) and, for discrete labels,
    the balanced accuracy of q(y|x) on the test split."""
    metrics = {}
    cohorts = label_cohorts(data)
    truth = None if data.real else true_decoder(data, surrogate_path)  # the surrogate, read once
    for i, (name, y) in enumerate(cohorts):
        reference = conditional_reference(data, y, seed + 100 + i, truth)
        metrics[f"smooth_knn_pxy:{name}"] = float(smooth_knn_px(model, reference, settings, seed + i, y=y)[0])
    z = np.random.default_rng(seed + 200).standard_normal((settings["model_samples"], model.latent_dim))
    values = [y for _, y in cohorts]
    metrics["f_separation"] = function_separation(learned_decoder(model), values, z)
    if truth is not None:
        metrics["f_separation_true"] = function_separation(truth, values, z[:, :data.gt.latent_dim])
        metrics["f_separation_ratio"] = metrics["f_separation"] / metrics["f_separation_true"]
    if model.labels.discrete:
        with torch.no_grad():
            predicted = model.classify(data.x["test"][None].to(model.log_sigma2.device))[0].argmax(-1).cpu()
        truth = data.y["test"].long()
        recalls = [float((predicted[truth == c] == c).float().mean()) for c in truth.unique()]
        metrics["classifier_balanced_accuracy"] = float(np.mean(recalls))
    return metrics


def select(runs: dict, spec: dict, data: DataSet, device, seed: int) -> tuple[int, list[dict]]:
    """Best restart per grid point by validation objective, then the grid point by the criterion."""
    val = np.where(runs["diverged"], -np.inf, runs["val_objective"])
    candidates = []
    for slug in dict.fromkeys(m["slug"] for m in runs["models"]):
        members = [i for i, m in enumerate(runs["models"]) if m["slug"] == slug]
        best = max(members, key=lambda i: val[i])
        candidates.append({"slug": slug, "index": best, "restart": runs["models"][best]["restart"],
                           "init": runs["models"][best]["init"], "val_objective": float(val[best]),
                           "diverged_restarts": int(runs["diverged"][members].sum())})
    usable = [c for c in candidates if np.isfinite(c["val_objective"])]
    if not usable:
        raise RuntimeError(f"{data.name}: every restart of every grid point diverged; nothing to evaluate")
    if spec["selection"] == "smooth_knn" and len(usable) > 1:
        by_k: dict = {}  # one stack per K
        for c in usable:
            by_k.setdefault(model_latent_dim(spec, runs["models"][c["index"]]), []).append(c)
        for group in by_k.values():
            model = load_models(data, spec, runs, [c["index"] for c in group], device)
            scores = smooth_knn_px(model, data.x["val"], spec["evaluation"]["smooth_knn"], seed)
            for c, score in zip(group, scores):
                c["val_smooth_knn"] = float(score)
        chosen = min(usable, key=lambda c: c["val_smooth_knn"])
    else:
        chosen = max(usable, key=lambda c: c["val_objective"])
    return chosen["index"], candidates


def invariant(name: str, lhs: float, rhs: float, se: float, tolerance: float) -> dict:
    """One checked inequality lhs ≤ rhs, allowed 3 Monte Carlo standard errors plus ``tolerance``."""
    slack = 3 * (se if np.isfinite(se) else 0.0) + tolerance
    return {"name": name, "lhs": lhs, "rhs": rhs, "slack": slack, "holds": bool(lhs <= rhs + slack)}


def bound_invariants(bounds: dict, estimates: dict, tolerance: float, agreement: float) -> list[dict]:
    """The invariants every evaluated model is checked against (docs/methods.md, "Evaluation"):
    each bound (``{name: (mean, se)}``) at most the best log-likelihood estimate, the ELBO at most the
    IWAE bound, and, where both exist, the importance-sampled estimate within ``agreement`` of the
    quadrature (and not above it)."""
    best_name, best = best_estimate(estimates)
    loglik = float(best.mean())
    rows = [invariant(f"{name} <= log p(x) [{best_name}]", mean, loglik, se, tolerance)
            for name, (mean, se) in bounds.items()]
    (elbo, elbo_se), (iwae, iwae_se) = bounds["elbo"], bounds["iwae_check"]
    rows.append(invariant("elbo <= iwae_check", elbo, iwae, math.hypot(elbo_se, iwae_se), tolerance))
    if "quadrature" in estimates and "defensive_is" in estimates:
        quad, is_ = float(estimates["quadrature"].mean()), float(estimates["defensive_is"].mean())
        rows.append(invariant("defensive_is <= quadrature", is_, quad, 0.0, tolerance))
        rows.append(invariant("quadrature - defensive_is <= agreement", quad - is_, agreement, 0.0, 0.0))
    return rows


def restart_records(data: DataSet, spec: dict, runs: dict, members: list[int], chosen: int, device, seed: int) -> list[dict]:
    """Every restart of the selected grid point on the test split: init, validation objective, the
    p(x) statistic, the best test log-likelihood and σ², so a reader sees when the validation bound
    prefers a worse p(x). Diverged restarts keep their validation numbers only."""
    settings = spec["evaluation"]
    live = [i for i in members if not runs["diverged"][i]]
    by_index = {}
    if live:
        model = load_models(data, spec, runs, live, device)
        semi = methods.get(spec["method"]).semi_supervised
        knn = {**settings["smooth_knn"], "draws": settings["restart_smooth_knn_draws"]}
        px = smooth_knn_px(model, data.x["test"], knn, seed)
        estimator, loglik = best_log_likelihood(model, data.inputs("test", semi).to(device), settings, seed + 1)
        sigma2 = torch.exp(model.log_sigma2.detach()).mean(1).cpu().numpy()
        by_index = {i: {"smooth_knn_px": float(px[j]), "test_loglik": float(loglik[j].mean()),
                        "loglik_estimator": estimator, "sigma2": float(sigma2[j])} for j, i in enumerate(live)}
    nan = {"smooth_knn_px": math.nan, "test_loglik": math.nan, "loglik_estimator": "", "sigma2": math.nan}
    return [{"slug": runs["models"][i]["slug"], "restart": runs["models"][i]["restart"],
             "init": runs["models"][i]["init"], "selected": i == chosen, "diverged": bool(runs["diverged"][i]),
             "val_objective": float(runs["val_objective"][i]), "val_elbo": float(runs["val_elbo"][i]),
             **by_index.get(i, nan)} for i in members]


def evaluate(spec: dict, data_path, version: int, run_paths, out, surrogate_path=None) -> dict:
    """Select, evaluate on the test split and write the evaluation file; ``surrogate_path`` (θ_GT)
    is needed for the ground-truth conditionals of the semi-supervised synthetic sets.

    Bounds are averaged over ``evaluation.bound_draws`` noise draws per test point and stored with
    their Monte Carlo standard errors (``*_se``); the log-likelihood is the best estimate available
    (``test_loglik``, its estimator in the ``estimators`` attribute), and every model is checked
    against the invariants of :func:`bound_invariants` (``invariants`` attribute; a violation is
    logged and shown in the audit table, never dropped)."""
    data = DataSet(data_path)
    device = pick_device(spec["training"]["device"])
    settings = spec["evaluation"]
    seed = derive_seed(spec["seed"], spec["experiment"], data.name, version, spec["method"], "evaluate")
    runs = read_parts(run_paths)
    index, candidates = select(runs, spec, data, device, seed)
    chosen = runs["models"][index]
    method = methods.get(spec["method"])
    model = load_models(data, spec, runs, [index], device)
    hyper = {k: np.array([chosen["hyper"][k]]) for k in method.hyper}
    semi = method.semi_supervised
    x_test = data.x["test"].to(device)
    inputs_test = data.inputs("test", semi).to(device)  # M2: test labels unobserved, so its bounds are U
    elbo = methods.get(method.elbo_method)
    importance = methods.get("m2_iwae" if semi else "iwae")
    draws = settings["bound_draws"]

    def bound(bound_method, bound_hyper, offset):
        mean, var, used = bound_per_point(model, bound_method, bound_hyper, inputs_test, [seed + offset], draws)
        return summarise(mean[0], var[0], used)

    bounds = {"elbo": bound(elbo, {k: hyper[k] for k in elbo.hyper}, 0)}
    bounds["objective"] = bounds["elbo"] if method.objective == elbo.objective else bound(method, hyper, 2)
    check_hyper = {**{k: np.ones(1) for k in importance.hyper}, "S": np.array([settings["check_iwae_samples"]])}
    same_check = method.objective == importance.objective and int(hyper["S"][0]) == settings["check_iwae_samples"]
    bounds["iwae_check"] = bounds["objective"] if same_check else bound(importance, check_hyper, 7)
    estimates = log_likelihood_estimates(model, inputs_test, settings, seed + 3)
    estimator, loglik = best_estimate(estimates)
    metrics = {
        "smooth_knn_px": float(smooth_knn_px(model, data.x["test"], settings["smooth_knn"], seed + 1)[0]),
        "test_neg_elbo": -bounds["elbo"][0], "test_neg_elbo_se": bounds["elbo"][1],
        "test_neg_objective": -bounds["objective"][0], "test_neg_objective_se": bounds["objective"][1],
        "test_iwae_check": bounds["iwae_check"][0],
        "test_loglik": float(loglik[0].mean()),
        **{f"test_loglik_{name}": float(value[0].mean()) for name, value in estimates.items()},
        "sigma2": float(torch.exp(model.log_sigma2[0].detach()).mean()),
    }
    if semi:
        metrics.update(semi_supervised_metrics(model, data, settings["smooth_knn"], seed + 6, surrogate_path))
    else:
        # [choice] the closed-form σ² refit on the training split (the data the model was fitted to),
        # and on the test split beside it
        for split, key in (("train", "sigma2_refit"), ("test", "sigma2_refit_test")):
            metrics[key] = float(refit_sigma2(model, data.x[split].to(device), settings["sigma2_refit_draws"],
                                              seed + 4)[0].mean())
        metrics["avg_mi_x_zi"] = latent_mutual_information(model, x_test, settings["mi_neighbours"], seed + 5)
    if data.decoder[0] == "linear_cholesky":
        A = model.decoder.A[0].detach().cpu().double().numpy()
        B = data.decoder[1]["B"]
        sigma2_total = data.noise_variance + B
        cov_true = linear_gaussian.linear_cholesky_matrix(LINEAR_A_GT, B)
        cov_true = cov_true @ cov_true.T + data.noise_variance * np.eye(2)
        entropy = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * cov_true)[1]
        metrics["neg_elbo_plus_const"] = metrics["test_neg_elbo"] - entropy
        metrics["neg_elbo_plus_const_se"] = bounds["elbo"][1]
        metrics["neg_elbo_plus_const_closed_form"] = linear_gaussian.neg_elbo_plus_const(A, sigma2_total, B)
    own = {"elbo": bounds["elbo"], "iwae_check": bounds["iwae_check"],
           **({spec["method"]: bounds["objective"]} if method.objective != elbo.objective else {})}
    invariants = bound_invariants(own, {k: v[0] for k, v in estimates.items()}, settings["invariant_tolerance"],
                                  settings["is_agreement"])
    for row in invariants:
        if not row["holds"]:
            log.warning("%s/%s v%d %s: invariant violated: %s (%.4f > %.4f + %.4f)", spec["experiment"], data.name,
                        version, spec["method"], row["name"], row["lhs"], row["rhs"], row["slack"])
    members = [i for i, m in enumerate(runs["models"]) if m["slug"] == chosen["slug"]]
    restarts = restart_records(data, spec, runs, members, index, device, seed + 8)
    log.info("%s/%s v%d %s: selected %s restart %d (%s); %s", spec["experiment"], data.name, version, spec["method"],
             chosen["slug"] or "default", chosen["restart"], chosen["init"],
             ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    attrs = {"experiment": spec["experiment"], "dataset": data.name, "method": spec["method"], "version": version,
             "selected": chosen, "candidates": candidates, "metrics": metrics, "decoder_options": data.decoder[1],
             "estimators": {"test_loglik": estimator}, "invariants": invariants, "restarts": restarts,
             "diverged_models": int(runs["diverged"].sum()), "models": len(runs["models"]), "config": to_json(spec),
             "train_seconds": runs["seconds"], "true_sigma2": data.noise_variance,
             **({"n_classes": model.labels.n_classes} if semi else {})}
    with store.write_h5(out, attrs) as f:
        params = f.create_group("params")
        for key, value in model.state_arrays().items():
            params.create_dataset(key, data=value.numpy(), track_times=False)
        store.write_arrays(f, {"curve": runs["curve"][index]})
    return metrics


def load_evaluated_model(path) -> tuple[BatchedVAE, dict]:
    """The selected model of an evaluation file (a one-model stack) and the file's attributes."""
    with h5py.File(path, "r") as f:
        attrs = store.read_attrs(f)
        arrays = {}
        f["params"].visititems(lambda name, obj: arrays.__setitem__(name, torch.as_tensor(obj[()]))
                               if isinstance(obj, h5py.Dataset) else None)
    spec = attrs["config"]
    data_dim = arrays["log_sigma2"].shape[1]
    latent_dim = arrays[_last_encoder_weight(arrays)].shape[2] // 2
    decoder = "linear_cholesky" if "decoder/A" in arrays else "mlp"
    options = attrs["decoder_options"] if decoder == "linear_cholesky" else {}
    labels = (Labels(attrs["n_classes"], **spec["training"].get("m2", {}))  # an M2 model
              if "n_classes" in attrs else None)
    model = BatchedVAE(1, data_dim, latent_dim, spec["training"]["hidden"], spec["training"]["negative_slope"],
                       seeds=[0], sigma2_init=torch.ones(1, data_dim), learn_sigma2=False, decoder=decoder,
                       decoder_options=options, labels=labels)
    model.load_arrays(arrays)
    return model.eval(), attrs


def _last_encoder_weight(arrays: dict) -> str:
    return max((k for k in arrays if k.startswith("encoder/W")), key=lambda k: int(k.rsplit("W", 1)[1]))
