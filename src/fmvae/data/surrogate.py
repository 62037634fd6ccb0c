"""Surrogate ground-truth decoders (Appendix G/H preamble, Appendix D).

For every G/H data set the paper fits a network of the model's decoder architecture to the
analytic f by full supervision until its MSE < 1e-4 and then simulates the data from that network:
the surrogate *is* θ_GT, used to generate data, to initialise decoders at the ground truth and to
draw the "true" posteriors. The fit here: several restarts trained together as one batched
computation (Adam with cosine decay on batches of fresh z ~ p(z)); the best restart on a fixed
sample is kept and finished by full-batch L-BFGS on that sample (drawn from a widened prior and
weighted back to p(z), so the tails are fitted too), with a check of the MSE on fresh z ~ p(z) every
few hundred iterations that stops it once below the target; rounds repeat until the target is met.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from fmvae.data.groundtruth import GroundTruth
from fmvae.nn import BatchedMLP

log = logging.getLogger(__name__)


@dataclass
class SurrogateFit:
    model: BatchedMLP  # one model: the selected restart
    mse: float  # MSE on fresh z ~ p(z) of the selected restart
    restart_mse: np.ndarray  # weighted MSE of every restart on the first L-BFGS sample, after Adam
    rounds: int
    steps: int
    seconds: float


class SurrogateNotConverged(RuntimeError):
    pass


def _fmt(values: np.ndarray) -> str:
    return "[" + " ".join(f"{v:.2e}" for v in values) + "]"


def _draw(gt: GroundTruth, params: dict, rng: np.random.Generator, n: int, widen: float = 1.0):
    """``n`` decoder inputs and targets f with z ~ p(z), and a weight per point.

    With ``widen`` > 1, normal z (and a normal label y) are drawn from N(0, widen²) instead and
    weighted by p/q, normalised to mean 1: the weighted MSE still estimates the MSE under p(z), but
    the tails, nearly empty in a sample from p(z), are fitted too.
    """
    z, y = gt.sample_latents(rng, n)
    log_weight = np.zeros(n)
    if gt.prior == "normal":
        z = z * widen
        log_weight -= 0.5 * (1 - widen**-2) * (z**2).sum(axis=1)
    if gt.label == "normal":
        y = y * widen
        log_weight -= 0.5 * (1 - widen**-2) * y**2
    weights = np.exp(log_weight - log_weight.max())
    inputs = torch.as_tensor(gt.decoder_input(z, y), dtype=torch.float32)
    targets = torch.as_tensor(gt.mean(z, y, **params), dtype=torch.float32)
    return inputs, targets, torch.as_tensor(weights / weights.mean(), dtype=torch.float32)


def _weighted_mse(model: BatchedMLP, inputs, targets, weights) -> torch.Tensor:
    """Weighted MSE of each model, shape (M,)."""
    return (((model(inputs) - targets) ** 2).mean(dim=2) * weights).mean(dim=1)


def per_model_mse(model: BatchedMLP, inputs: torch.Tensor, targets: torch.Tensor, chunk: int = 65536):
    """Mean squared error of each model over all points and output dimensions, shape (M,)."""
    total = torch.zeros(model.n_models, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, inputs.shape[0], chunk):
            pred = model(inputs[start : start + chunk])
            total += ((pred - targets[start : start + chunk]) ** 2).sum(dim=(1, 2)).double()
    return (total / targets.numel()).numpy()


def _lbfgs_finish(model: BatchedMLP, sample, evaluation, settings: dict, label: str) -> float:
    """Full-batch L-BFGS of a one-model stack on ``sample``, in chunks of ``lbfgs_check_every``
    iterations, each followed by the MSE on ``evaluation`` (fresh z); stops at the first check below
    ``lbfgs_stop_fraction * mse_target`` or after ``lbfgs_iterations``. Returns the last MSE on
    ``evaluation``."""
    lbfgs = torch.optim.LBFGS(model.parameters(), lr=1.0, history_size=settings["lbfgs_history"],
                              line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)

    def closure():
        lbfgs.zero_grad(set_to_none=True)
        value = _weighted_mse(model, *sample).sum()
        value.backward()
        return value

    total, every = settings["lbfgs_iterations"], settings["lbfgs_check_every"]
    mse = per_model_mse(model, *evaluation)[0]
    for done in range(0, total, every):
        chunk = min(every, total - done)  # the optimiser's memory carries over between chunks
        lbfgs.param_groups[0].update(max_iter=chunk, max_eval=chunk * 5 // 4)  # PyTorch's default ratio
        lbfgs.step(closure)
        mse = per_model_mse(model, *evaluation)[0]
        log.info("%s L-BFGS %d/%d: MSE on fresh z %.2e", label, done + chunk, total, mse)
        if mse < settings["lbfgs_stop_fraction"] * settings["mse_target"]:
            break
    return float(mse) if np.isfinite(mse) else math.inf


def fit_surrogate(gt: GroundTruth, params: dict, settings: dict, seed: int) -> SurrogateFit:
    """Fit ``settings['restarts']`` surrogates to ``gt.mean`` and return the best one.

    ``settings`` is the config's ``data.surrogate`` section (documented in the schema). If the
    target ``mse_target`` is not met after ``max_rounds`` rounds, raises
    :class:`SurrogateNotConverged` (``on_target_missed: error``) or logs a warning and returns the
    fit (``warn``); the returned MSE says which happened.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    sizes = [gt.decoder_input_dim, *settings["hidden"], gt.data_dim]
    model = BatchedMLP(settings["restarts"], sizes, settings["negative_slope"], generator=generator)
    restart_mse = None
    steps_done = 0
    for round_index in range(1, settings["max_rounds"] + 1):
        # Adam on fresh mini-batches, cosine decay to 0 within each round; later rounds refine the
        # kept network from a learning rate lowered by ``round_lr_factor`` per round.
        lr = settings["lr"] * settings["round_lr_factor"] ** (round_index - 1)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        n_steps = settings["steps"]
        for step in range(n_steps):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / n_steps))
            inputs, targets, _ = _draw(gt, params, rng, settings["batch_size"])
            per_restart = ((model(inputs) - targets) ** 2).mean(dim=(1, 2))
            opt.zero_grad(set_to_none=True)
            per_restart.sum().backward()
            opt.step()
            steps_done += 1
            if settings["log_every"] and (step + 1) % settings["log_every"] == 0:
                log.info("%s round %d step %d/%d: batch MSE per restart %s", gt.name, round_index,
                         step + 1, n_steps, _fmt(per_restart.detach().numpy()))
        # The best restart on a fixed sample is kept and finished alone: L-BFGS's line search would
        # share one step length among restarts trained jointly.
        sample = _draw(gt, params, rng, settings["lbfgs_points"], settings["lbfgs_widen"])
        if restart_mse is None:
            with torch.no_grad():
                restart_mse = _weighted_mse(model, *sample).double().numpy()
            restart_mse = np.where(np.isfinite(restart_mse), restart_mse, np.inf)
            log.info("%s round %d: weighted MSE per restart on %d fixed z %s; keeping restart %d", gt.name,
                     round_index, settings["lbfgs_points"], _fmt(restart_mse), int(np.argmin(restart_mse)))
            model = model.select(int(np.argmin(restart_mse)))
        evaluation = _draw(gt, params, rng, settings["eval_points"])[:2]
        mse = _lbfgs_finish(model, sample, evaluation, settings, f"{gt.name} round {round_index}")
        log.info("%s round %d: MSE on %d fresh z %.2e (target %.1e)", gt.name, round_index,
                 settings["eval_points"], mse, settings["mse_target"])
        if mse < settings["mse_target"]:
            break
    else:
        message = (f"surrogate for {gt.name!r}: MSE {mse:.3g} after {settings['max_rounds']} rounds "
                   f"is above the target {settings['mse_target']:g}; raise surrogate.steps, "
                   f"surrogate.lbfgs_iterations, surrogate.max_rounds or surrogate.restarts in the config")
        if settings["on_target_missed"] == "error":
            raise SurrogateNotConverged(message)
        log.warning("%s; keeping the fit (on_target_missed: warn)", message)
    return SurrogateFit(model, mse, restart_mse, round_index, steps_done, time.perf_counter() - started)
