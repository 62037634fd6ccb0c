"""The generic training loop for a stack of M models, with the standard and the LIN schedules.

Every model has its own parameters, Adam state, random stream (data order, noise, LIN's fresh
batches) and hyper-parameters (per-model tensors), so its training does not depend on which other
models share the stack (up to float rounding: a batched product over another number of models may
round its last bit differently, 1e-7 after a few epochs, which LIN's thresholded exits can amplify
over a long run into a different but equally valid trajectory). Per-model decisions (LIN's
inner-loop exits and aggressive phase, models that diverged) are masks. A model whose loss becomes non-finite is marked diverged and frozen; it
never stops the job or touches the other models. Long jobs checkpoint at epoch ends and resume.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fmvae import runtime, store
from fmvae.methods import Method
from fmvae.objectives.unsupervised import log_normal
from fmvae.train.optim import BatchedAdam
from fmvae.train.streams import ModelStreams, make_streams

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    curve: np.ndarray  # (M, epochs) mean training loss (−objective) per epoch; NaN once diverged
    diverged: np.ndarray  # (M,) bool
    diverged_epoch: np.ndarray  # (M,) epoch in which the loss became non-finite, −1 if never
    aggressive_epochs: np.ndarray  # (M,) LIN: epochs spent in the aggressive phase (0 otherwise)
    steps: int  # optimiser steps per model (outer steps)
    seconds: float


def hyper_tensors(method: Method, hyper: dict, n_models: int, device) -> dict[str, torch.Tensor]:
    out = {}
    for name in method.hyper:
        values = torch.as_tensor(np.asarray(hyper[name]), device=device)
        out[name] = values.expand(n_models) if values.dim() == 0 else values
    return out


def encoder_mutual_information(model, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """I_q(x; z) of each model's encoder on ``x`` (N, D), as He et al.'s calc_mi: E[log q(z|x)]
    − E[log q(z)], with q(z) the aggregate posterior over these N points. Shape (M,)."""
    with torch.no_grad():
        mean, log_var = model.encode(x)  # (M, N, K)
        z = mean + torch.exp(0.5 * log_var) * eps  # (M, N, K): one draw per point
        k = mean.shape[-1]
        neg_entropy = (-0.5 * k * math.log(2 * math.pi) - 0.5 * (1 + log_var).sum(-1)).mean(1)
        log_q_all = log_normal(z[:, :, None], mean[:, None], log_var[:, None])  # (M, N_z, N_x)
        log_qz = torch.logsumexp(log_q_all, dim=2) - math.log(x.shape[0])
        return neg_entropy - log_qz.mean(1)


@contextmanager
def substack(model, optimizer: BatchedAdam, members: torch.Tensor):
    """Shrink ``model`` (every parameter and buffer with one row per model) and ``optimizer``'s
    per-model state to the models ``members`` for the duration of the block, then write their new
    values back into the whole stack. Gradients are dropped on the way in and out."""
    m = model.n_models
    if len(members) == m:
        yield
        return
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.dim() and t.shape[0] == m]
    full = [t.data for t in tensors]
    sized = [module for module in model.modules() if hasattr(module, "n_models")]
    state = (optimizer.steps, optimizer.exp_avg, optimizer.exp_avg_sq)
    for t, whole in zip(tensors, full):
        t.grad = None
        t.data = whole[members]
    for module in sized:
        module.n_models = len(members)
    optimizer.steps = state[0][members]
    optimizer.exp_avg, optimizer.exp_avg_sq = [v[members] for v in state[1]], [v[members] for v in state[2]]
    try:
        yield
    finally:
        for t, whole in zip(tensors, full):
            whole[members] = t.data
            t.grad = None
            t.data = whole
        for module in sized:
            module.n_models = m
        for whole, part in zip((state[0], *state[1], *state[2]),
                               (optimizer.steps, *optimizer.exp_avg, *optimizer.exp_avg_sq)):
            whole[members] = part
        optimizer.steps, optimizer.exp_avg, optimizer.exp_avg_sq = state


class Trainer:
    """Train ``model`` (a BatchedVAE of M models) with ``method`` on ``x_train`` (N, D).

    ``settings``: epochs, batch_size, lr, and for LIN max_inner_steps, mi_patience, mi_points;
    log_every_epochs; checkpoint_every_s. ``hyper`` maps each of the method's hyper-parameters to
    per-model values. ``freeze_decoder`` trains the encoder only (ground-truth encoder fits).
    """

    def __init__(self, model, method: Method, hyper: dict, settings: dict, seeds, freeze_decoder=False,
                 name: str = "train"):
        self.model, self.method, self.settings, self.name = model, method, settings, name
        runtime.keep_freed_memory()  # stacked activations: reuse freed memory, no page faults per step
        runtime.flush_denormals()  # IWAE's backward is full of subnormals (runtime.py); a no-op after the CLI's
        device = model.log_sigma2.device
        self.device = device
        m = model.n_models
        self.hyper = hyper_tensors(method, hyper, m, device)
        self.samples = [method.samples({k: v[i].item() for k, v in self.hyper.items()}) for i in range(m)]
        self.objective = method.objective_fn
        self.streams = make_streams(seeds, device, settings.get("streams", "auto"))
        if freeze_decoder:
            for p in model.decoder_parameters():
                p.requires_grad_(False)
        self.lagging = method.schedule == "lagging"
        # Fused Adam only where all live models step together (not LIN's encoder): see optim.py.
        self.opt_encoder = BatchedAdam(model.encoder_parameters(), m, settings["lr"], fused=not self.lagging)
        self.opt_decoder = BatchedAdam([] if freeze_decoder else model.decoder_parameters(), m, settings["lr"],
                                       fused=True)
        self.diverged = torch.zeros(m, dtype=torch.bool, device=device)
        self.diverged_epoch = torch.full((m,), -1, dtype=torch.long, device=device)
        self.aggressive = torch.full((m,), self.lagging, dtype=torch.bool, device=device)
        self.aggressive_epochs = torch.zeros(m, dtype=torch.long)
        self.mi_best = torch.full((m,), -math.inf, device=device)
        self.mi_fails = torch.zeros(m, dtype=torch.long, device=device)
        self.curve = torch.full((m, settings["epochs"]), math.nan)
        self.epoch = 0

    # -- one step --------------------------------------------------------------------------
    def _loss(self, x: torch.Tensor, eps: torch.Tensor, live: torch.Tensor, members: torch.Tensor | None = None,
              hyper: dict | None = None) -> torch.Tensor:
        """Per-model mean loss on a batch; models that turn non-finite are marked diverged. Inside
        :func:`substack`, ``members`` (the stack's positions of the models present) and their
        ``hyper`` map the shrunk stack's models back to the trainer's masks."""
        loss = -self.objective(self.model, x, eps, self.hyper if hyper is None else hyper).mean(1)
        bad = ~torch.isfinite(loss) & live  # on the device: no read back per step (optim.py)
        full = bad
        if members is not None:
            full = torch.zeros_like(self.diverged)
            full[members] = bad
        self.diverged_epoch = torch.where(full & ~self.diverged, self.epoch, self.diverged_epoch)
        self.diverged |= full
        diverged = self.diverged if members is None else self.diverged[members]
        keep = live & ~diverged
        self.opt_encoder.zero_grad()
        self.opt_decoder.zero_grad()
        torch.where(keep, loss, torch.zeros_like(loss)).sum().backward()
        return torch.where(keep, loss.detach(), torch.zeros_like(loss))

    def _inner_loop(self, x_train: torch.Tensor, x_batch: torch.Tensor) -> None:
        """LIN's aggressive phase for one outer batch: encoder-only steps on fresh batches until
        the mean loss over a window of R steps improves by less than T (per model, masked).

        The steps run on a stack shrunk to the models still in the loop (:func:`substack`), shrunk
        again whenever half of them have left: otherwise one slow model keeps the whole stack
        stepping. Each model's draws come from its own stream as before, so its arithmetic does not
        depend on which models share the loop (up to the rounding the module docstring describes)."""
        s = self.settings
        n, b = x_train.shape[0], x_batch.shape[1]
        k = self.model.noise_dim
        inner = self.aggressive & ~self.diverged  # (M,), the whole stack's view
        members = inner.nonzero().flatten()
        if len(members) == 0:
            return
        window = torch.zeros(inner.shape, device=self.device)
        previous = torch.full(inner.shape, math.inf, device=self.device)
        R = self.hyper["R"].long()
        T = self.hyper["T"].to(window.dtype)
        x = x_batch  # (M, b, D): every model's batch; the shrunk stack reads its members' rows
        j = 1
        while j <= s["max_inner_steps"] and len(members):
            with substack(self.model, self.opt_encoder, members):
                hyper = {key: v[members] for key, v in self.hyper.items()}
                while j <= s["max_inner_steps"]:
                    eps = self.streams.normal((b, 1, k), active=inner).to(self.device)[members]
                    window[members] += self._loss(x[members], eps, inner[members], members, hyper)
                    inner &= ~self.diverged
                    self.opt_encoder.step(inner[members])
                    due = inner & (j % R == 0)
                    if bool(due.any()):
                        current = window / R
                        inner &= ~(due & (previous - current < T))
                        previous = torch.where(due, current, previous)
                        window = torch.where(due, torch.zeros_like(window), window)
                    index = self.streams.randint(n, (b,), active=inner).to(self.device)
                    x = x_train[index]
                    j += 1
                    left = int(inner.sum())
                    if left == 0 or left <= len(members) // 2:
                        break
            members = inner.nonzero().flatten()

    # -- epochs ------------------------------------------------------------------------------
    def run(self, x_train: torch.Tensor, x_val: torch.Tensor, checkpoint: Path | None = None) -> TrainResult:
        s = self.settings
        started = time.perf_counter()
        if checkpoint is not None and Path(checkpoint).exists():
            self._resume(checkpoint)
        x_train, x_val = x_train.to(self.device), x_val.to(self.device)
        n, b = x_train.shape[0], s["batch_size"]
        if n < b:
            raise ValueError(f"{self.name}: {n} training points is fewer than one batch of {b}")
        n_steps = n // b  # the last partial batch of each epoch is dropped
        k, s_max = self.model.noise_dim, max(self.samples)
        last_checkpoint = time.monotonic()
        for epoch in range(self.epoch, s["epochs"]):
            self.epoch = epoch
            epoch_started = time.perf_counter()
            order = self.streams.permutations(n).to(self.device)
            noise = self.streams.normal((n_steps, b, s_max, k), samples=self.samples, axis=-2).to(self.device)
            total = torch.zeros(self.model.n_models, device=self.device)
            for step in range(n_steps):
                x = x_train[order[:, step * b:(step + 1) * b]]
                if self.lagging and bool((self.aggressive & ~self.diverged).any()):
                    self._inner_loop(x_train, x)
                total += self._loss(x, noise[:, step], ~self.diverged)
                active = ~self.diverged
                self.opt_decoder.step(active)
                self.opt_encoder.step(active & ~self.aggressive)
            self.curve[:, epoch] = torch.where(self.diverged, math.nan, total / n_steps).cpu()
            self.opt_encoder.check_lockstep()
            self.opt_decoder.check_lockstep()
            if self.lagging:
                self._end_of_epoch_lagging(x_val)
            if s.get("log_every_epochs") and ((epoch + 1) % s["log_every_epochs"] == 0 or epoch + 1 == s["epochs"]):
                finite = self.curve[:, epoch][~torch.isnan(self.curve[:, epoch])]
                seconds = time.perf_counter() - epoch_started
                log.info("%s epoch %d/%d: median loss %.4f over %d models, %d diverged, %d aggressive, "
                         "%.2f s/epoch (%.0f model-steps/s)", self.name, epoch + 1, s["epochs"],
                         float(finite.median()) if len(finite) else math.nan, self.model.n_models,
                         int(self.diverged.sum()), int((self.aggressive & ~self.diverged).sum()), seconds,
                         self.model.n_models * n_steps / seconds)
            self.epoch = epoch + 1
            if checkpoint is not None and time.monotonic() - last_checkpoint >= s.get("checkpoint_every_s", math.inf):
                self._save(checkpoint)
                last_checkpoint = time.monotonic()
        return TrainResult(self.curve.numpy(), self.diverged.cpu().numpy(), self.diverged_epoch.cpu().numpy(),
                           self.aggressive_epochs.numpy(), n_steps * s["epochs"], time.perf_counter() - started)

    def _end_of_epoch_lagging(self, x_val: torch.Tensor) -> None:
        """Leave the aggressive phase once I_q on validation data has failed ``mi_patience``
        times to beat its best (docs/methods.md §2, as image.py)."""
        aggressive = self.aggressive & ~self.diverged
        if not bool(aggressive.any()):
            return
        self.aggressive_epochs += aggressive.cpu().long()
        x = x_val[: self.settings["mi_points"]]
        eps = self.streams.normal((x.shape[0], self.model.latent_dim), active=aggressive).to(self.device)
        mi = encoder_mutual_information(self.model, x, eps)
        better = aggressive & (mi > self.mi_best)
        self.mi_best = torch.where(better, mi, self.mi_best)
        self.mi_fails = torch.where(better, 0, self.mi_fails + aggressive.long())
        self.aggressive &= self.mi_fails < self.settings["mi_patience"]

    # -- checkpoints -------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"epoch": self.epoch, "model": self.model.state_dict(), "encoder": self.opt_encoder.state(),
                "decoder": self.opt_decoder.state(), "streams": self.streams.state(),
                "diverged": self.diverged, "diverged_epoch": self.diverged_epoch, "aggressive": self.aggressive,
                "aggressive_epochs": self.aggressive_epochs, "mi_best": self.mi_best,
                "mi_fails": self.mi_fails, "curve": self.curve}

    def _save(self, path: Path) -> None:
        with store.atomic_path(path) as tmp:
            torch.save(self._state(), tmp)
        log.info("%s: checkpoint after epoch %d -> %s", self.name, self.epoch, path)

    def _resume(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)  # copied onto the device below
        self.model.load_state_dict(state["model"])
        self.opt_encoder.load_state(state["encoder"])
        self.opt_decoder.load_state(state["decoder"])
        self.streams.load_state(state["streams"])
        for key in ("diverged", "diverged_epoch", "aggressive", "aggressive_epochs", "mi_best", "mi_fails", "curve"):
            getattr(self, key).copy_(state[key])
        self.epoch = state["epoch"]
        log.info("%s: resumed from %s at epoch %d", self.name, path, self.epoch)


def evaluate_objective(model, method: Method, hyper: dict, x: torch.Tensor, seeds, chunk: int = 1000,
                       samples: int | None = None) -> np.ndarray:
    """Mean of the method's objective on ``x`` (N, D) per model, shape (M,), with noise from
    per-model streams seeded by ``seeds`` (so the value is reproducible). ``samples`` overrides the
    number of importance samples (IWAE)."""
    m = model.n_models
    hyper_t = hyper_tensors(method, hyper, m, x.device)
    if samples is not None and method.samples_from:
        hyper_t[method.samples_from] = torch.full((m,), samples, device=x.device)
    counts = [method.samples({k: v[i].item() for k, v in hyper_t.items()}) for i in range(m)]
    streams = ModelStreams(seeds)
    objective = method.objective_fn
    total = torch.zeros(m, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            xb = x[start:start + chunk]
            eps = streams.normal((xb.shape[0], max(counts), model.noise_dim), samples=counts).to(x.device)
            total += objective(model, xb.expand(m, -1, -1), eps, hyper_t).double().sum(1).cpu()
    return (total / x.shape[0]).numpy()
