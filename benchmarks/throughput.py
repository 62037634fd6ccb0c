"""Training throughput: the batched trainer versus the same VAEs trained one at a time.

What it measures, for M = 1, 10, 100, 1000 models (``--models``):

* ``batched``: ``fmvae.train.loop.Trainer`` training a ``BatchedVAE`` of M MFG-VAEs (method
  "vae": ELBO, one reparameterised sample, Adam lr 1e-3, batch 100) on 5000 points, i.e. 50
  steps per epoch; with ``--samples S`` > 1 the models are IWAEs (method "iwae", S samples). One warm-up epoch, then whole epochs, at least ``--min-seconds`` in total.
* ``single``: a plain PyTorch loop for ONE model (nn.Sequential encoder/decoder, fixed sigma^2,
  the same ELBO, torch.optim.Adam, mini-batches from a per-epoch index permutation), models
  trained one after another. The models are independent and identical in cost, so only the
  first min(M, ``--single-models``) are timed (after a warm-up epoch) and the per-model-step time
  is extrapolated to M models; the JSON row says how many were timed.

Both use the same network (D=2, K=1, 3x50 leaky-ReLU), the same objective (:func:`single_loss`)
and the same ``torch.set_num_threads``, with subnormal floats flushed as every ``fmvae`` command does.
Throughput is model-steps per second = models x optimiser steps / wall seconds. Each row alternates
the two measurements for ``--rounds`` rounds (default 3) and reports the medians, with the ratio
the median of the per-round ratios: on a shared 2-core machine the one-at-a-time loop alone moves by
up to a third from one measurement to the next, and alternating keeps both sides under the same
conditions. Every round's figures are in the JSON. The batched
trainer's FLOP rate is counted analytically (forward matmuls 2*in*out per layer per point, encoder
+ decoder, times 3 for forward + backward) and divided by the peak measured in the same run with
a 2048x2048 float32 matmul on the batched trainer's device.

Run from the repository root (about 1-4 minutes on 2 cores):

    python benchmarks/throughput.py [--threads N] [--device auto|cpu|cuda] [--out PATH]

Writes ``results/benchmarks/throughput.json`` and prints a table. The single loop always runs on
the CPU; ``--device`` moves only the batched trainer (model and data) to CUDA.

On a CPU shared with other busy processes, PyTorch's OpenMP threads spin-wait for each other and
small ops slow down many-fold when another process holds a core: compare ``--threads 1``, or set
``OMP_WAIT_POLICY=PASSIVE`` in the environment. The JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from itertools import pairwise
from pathlib import Path

import torch
from torch import nn

from fmvae import methods, runtime
from fmvae.nn import BatchedVAE
from fmvae.objectives.unsupervised import gaussian_kl_to_standard, log_normal
from fmvae.train.loop import Trainer

D, K, HIDDEN, SLOPE, SIGMA2 = 2, 1, (50, 50, 50), 0.01, 0.02
N_TRAIN, BATCH, LR = 5000, 100, 1e-3
STEPS_PER_EPOCH = N_TRAIN // BATCH


def flops_per_model_step(samples: int = 1) -> float:
    """Forward+backward FLOPs of one optimiser step of one model (≈ 3 x forward matmul FLOPs); the
    decoder runs once per sample."""
    encoder = sum(2 * a * b for a, b in pairwise([D, *HIDDEN, 2 * K]))
    decoder = sum(2 * a * b for a, b in pairwise([K, *HIDDEN, D]))
    return 3 * (encoder + samples * decoder) * BATCH


def single_loss(encode, decode, x: torch.Tensor, noise: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """One model's loss on a batch x (B, D) with noise (B, S, K): −ELBO for S = 1 (analytic KL), the
    −IWAE bound for S > 1, the same objectives as the engine's methods "vae" and "iwae"."""
    mean, log_var = encode(x).split(K, dim=-1)
    s = noise.shape[-2]
    if s == 1:
        z = mean + torch.exp(0.5 * log_var) * noise[:, 0]
        return -(log_normal(x, decode(z), log_sigma2) - gaussian_kl_to_standard(mean, log_var)).mean()
    z = mean[:, None] + torch.exp(0.5 * log_var)[:, None] * noise  # (B, S, K)
    log_w = (log_normal(x[:, None], decode(z), log_sigma2) + log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
             - log_normal(z, mean[:, None], log_var[:, None]))
    return -(torch.logsumexp(log_w, 1) - math.log(s)).mean()


def make_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A figure-8 in 2-D with noise (the cost does not depend on the data)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N_TRAIN + 1000, generator=g)
    x = torch.stack([torch.sin(z), torch.sin(z) * torch.cos(z)], 1)
    x = (x + math.sqrt(SIGMA2) * torch.randn(x.shape, generator=g)).float()
    return x[:N_TRAIN], x[N_TRAIN:]


def measure(train, per_epoch: float, min_seconds: float) -> tuple[int, float]:
    """Call ``train(epochs)`` (returns seconds) until at least ``min_seconds`` in total, sizing each
    call from the time per epoch seen so far; returns (epochs, seconds) summed over the calls."""
    epochs, seconds = 0, 0.0
    while seconds < min_seconds:
        n = max(1, math.ceil((min_seconds - seconds) / per_epoch))
        seconds += train(n)
        epochs += n
        per_epoch = seconds / epochs
    return epochs, seconds


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_matmul_gflops(device: torch.device, n: int = 2048, min_seconds: float = 2.0) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b  # warm-up
    sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        a @ b
        reps += 1
        if device.type == "cuda":
            sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9


# -- batched trainer -----------------------------------------------------------------------------
def time_batched(m: int, x_train, x_val, device, min_seconds: float, samples: int = 1) -> dict:
    model = BatchedVAE(m, D, K, HIDDEN, SLOPE, seeds=list(range(m)), sigma2_init=torch.tensor(SIGMA2),
                       learn_sigma2=False).to(device)
    x_train, x_val = x_train.to(device), x_val.to(device)

    def train(epochs: int) -> float:  # a fresh Trainer (new Adam state) continuing from the model
        settings = {"epochs": epochs, "batch_size": BATCH, "lr": LR, "log_every_epochs": 0}
        method, hyper = (methods.get("vae"), {}) if samples == 1 else (methods.get("iwae"), {"S": [samples] * m})
        trainer = Trainer(model, method, hyper, settings, seeds=list(range(m)))
        sync(device)
        start = time.perf_counter()
        trainer.run(x_train, x_val)
        sync(device)
        return time.perf_counter() - start

    warm = train(1)  # warm-up epoch; its time sizes the measurement
    epochs, seconds = measure(train, warm, min_seconds)
    return {"epochs": epochs, "seconds": seconds,
            "model_steps_per_s": m * epochs * STEPS_PER_EPOCH / seconds}


# -- plain single-model loop ---------------------------------------------------------------------
def mlp(sizes) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(SLOPE))
    return nn.Sequential(*layers)


def train_single(seed: int, x_train: torch.Tensor, epochs: int, samples: int = 1) -> float:
    """Train one VAE for ``epochs``; returns the seconds spent in the training loop."""
    torch.manual_seed(seed)
    encoder, decoder = mlp([D, *HIDDEN, 2 * K]), mlp([K, *HIDDEN, D])
    log_sigma2 = torch.full((D,), math.log(SIGMA2))
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=LR)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(N_TRAIN, generator=g)
        noise = torch.randn(STEPS_PER_EPOCH, BATCH, samples, K, generator=g)
        for step in range(STEPS_PER_EPOCH):
            x = x_train[order[step * BATCH:(step + 1) * BATCH]]
            loss = single_loss(encoder, decoder, x, noise[step], log_sigma2)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def time_single(m: int, x_train, max_models: int, min_seconds: float, samples: int = 1) -> dict:
    timed = min(m, max_models)
    warm = train_single(10 ** 6, x_train, 1, samples)  # warm-up epoch (a model not counted)
    epochs, seconds = measure(lambda n: sum(train_single(seed, x_train, n, samples) for seed in range(timed)),
                              warm * timed, min_seconds)
    return {"models_timed": timed, "epochs_per_model": epochs, "seconds": seconds,
            "extrapolated": timed < m,
            "model_steps_per_s": timed * epochs * STEPS_PER_EPOCH / seconds,
            "method": (f"models trained one after another; the first {timed} timed in full and the per-"
                       f"model-step time applied to all {m} (models are independent and identical "
                       "in cost)")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--single-models", type=int, default=3, help="single-loop models timed per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating batched/single measurements per row")
    parser.add_argument("--samples", type=int, default=1, help="S: 1 trains VAEs, more trains IWAEs with S samples")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/throughput.json"))
    args = parser.parse_args()
    runtime.flush_denormals()  # as every fmvae command does, before torch starts its threads

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    load_before = os.getloadavg()
    started = time.perf_counter()
    x_train, x_val = make_data()
    peak = peak_matmul_gflops(device)
    flops = flops_per_model_step(args.samples)

    rows = []
    print(f"peak matmul: {peak:.1f} GFLOP/s on {device}, {args.threads} threads")
    print(f"{'models':>7} {'batched/s':>11} {'single/s':>10} {'ratio':>7} {'range':>11} {'GFLOP/s':>8} {'of peak':>8}")
    for m in args.models:
        rounds = []
        for _ in range(args.rounds):
            batched = time_batched(m, x_train, x_val, device, args.min_seconds, args.samples)
            single = time_single(m, x_train, args.single_models, args.min_seconds, args.samples)
            rounds.append({"batched": batched, "single": single,
                           "ratio": batched["model_steps_per_s"] / single["model_steps_per_s"]})
        rate = statistics.median(r["batched"]["model_steps_per_s"] for r in rounds)
        ratios = [r["ratio"] for r in rounds]
        gflops = rate * flops / 1e9
        rows.append({"models": m,
                     "batched_model_steps_per_s": rate,
                     "single_model_steps_per_s": statistics.median(r["single"]["model_steps_per_s"] for r in rounds),
                     "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                     "batched_gflops": gflops, "peak_fraction": gflops / peak, "rounds": rounds})
        r = rows[-1]
        print(f"{m:>7} {r['batched_model_steps_per_s']:>11.0f} {r['single_model_steps_per_s']:>10.0f} "
              f"{r['ratio']:>7.1f} {r['ratio_min']:>5.1f}-{r['ratio_max']:<5.1f} {gflops:>8.2f} "
              f"{r['peak_fraction']:>8.1%}", flush=True)

    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": args.threads,
                    "device": str(device), "single_device": "cpu",
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "setup": {"method": "vae" if args.samples == 1 else f"iwae S={args.samples}", "samples": args.samples,
                  "data_dim": D, "latent_dim": K, "hidden": HIDDEN, "negative_slope": SLOPE,
                  "n_train": N_TRAIN, "batch_size": BATCH, "steps_per_epoch": STEPS_PER_EPOCH, "lr": LR,
                  "sigma2": SIGMA2, "min_seconds": args.min_seconds, "rounds": args.rounds,
                  "flops_per_model_step": flops,
                  "flop_model": "3 x forward matmul FLOPs (2*in*out per layer per point, encoder+decoder)"},
        "peak_matmul_gflops": peak,
        "peak_matmul": "2048x2048 @ 2048x2048 float32, repeated >= 2 s, same threads, batched device",
        "rows": rows,
        "total_seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
