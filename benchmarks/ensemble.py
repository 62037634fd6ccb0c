"""The batched trainer against the peer a PyTorch user would pick: a ``torch.func`` ensemble.

For M = 1, 10, 100, 1000 MFG-VAEs (``--models``) of throughput.py's shape (D = 2, K = 1, 3×50
leaky ReLU, batch 100, 5000 points, fixed σ², one reparameterised sample, Adam lr 1e-3):

* ``engine``: ``fmvae.train.loop.Trainer`` on a ``BatchedVAE`` (throughput.py's ``time_batched``);
* ``torch.func``: the same M models as ``nn.Sequential`` modules, their parameters stacked by
  ``torch.func.stack_module_state``, the per-model loss through ``functional_call``, per-model
  gradients by ``vmap(grad_and_value(loss))``, and a batched Adam on the stacked tensors with
  ``torch._foreach_*`` operations (the multi-tensor form ``torch.optim.Adam`` uses); every model
  draws its own data order and noise per epoch, as the engine's models do.

Both run on the same device and threads; each row alternates the two for ``--rounds`` rounds and
reports medians, the ratio being the median of the per-round ratios (engine / torch.func).

    python benchmarks/ensemble.py [--models 1 10 100] [--threads N] [--device cpu|cuda] [--out PATH]

Writes ``results/benchmarks/ensemble.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import BATCH, HIDDEN, LR, N_TRAIN, SIGMA2, STEPS_PER_EPOCH, D, K, make_data, measure, mlp, single_loss, sync, time_batched

from fmvae import runtime


class FuncEnsemble:
    """M VAEs as one ``torch.func`` computation with a batched (multi-tensor) Adam."""

    def __init__(self, m: int, device, samples: int = 1, betas=(0.9, 0.999), eps=1e-8):
        torch.manual_seed(0)
        encoders = [mlp([D, *HIDDEN, 2 * K]) for _ in range(m)]
        decoders = [mlp([K, *HIDDEN, D]) for _ in range(m)]
        enc, _ = stack_module_state(encoders)
        dec, _ = stack_module_state(decoders)
        self.enc_base = copy.deepcopy(encoders[0]).to("meta")
        self.dec_base = copy.deepcopy(decoders[0]).to("meta")
        self.names = [f"e.{k}" for k in enc] + [f"d.{k}" for k in dec]
        self.params = [v.detach().to(device) for v in (*enc.values(), *dec.values())]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.betas, self.eps, self.t, self.m, self.device, self.samples = betas, eps, 0, m, device, samples
        self.log_sigma2 = torch.full((D,), math.log(SIGMA2), device=device)
        self.step_fn = vmap(grad_and_value(self._loss))

    def _loss(self, params: tuple, x, noise):
        named = dict(zip(self.names, params))
        encoder = {k[2:]: v for k, v in named.items() if k[0] == "e"}
        decoder = {k[2:]: v for k, v in named.items() if k[0] == "d"}
        return single_loss(lambda h: functional_call(self.enc_base, encoder, (h,)),
                           lambda z: functional_call(self.dec_base, decoder, (z,)), x, noise, self.log_sigma2)

    def _adam(self, grads) -> None:
        b1, b2 = self.betas
        self.t += 1
        torch._foreach_lerp_(self.exp_avg, grads, 1 - b1)
        torch._foreach_mul_(self.exp_avg_sq, b2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1 - b2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(1 - b2 ** self.t))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, self.exp_avg, denom, -LR / (1 - b1 ** self.t))

    def train(self, x_train: torch.Tensor, epochs: int) -> float:
        sync(self.device)
        start = time.perf_counter()
        for _ in range(epochs):
            order = torch.argsort(torch.rand(self.m, N_TRAIN, device=self.device), dim=1)  # a permutation per model
            noise = torch.randn(self.m, STEPS_PER_EPOCH, BATCH, self.samples, K, device=self.device)
            for step in range(STEPS_PER_EPOCH):
                x = x_train[order[:, step * BATCH:(step + 1) * BATCH]]
                grads, _ = self.step_fn(tuple(self.params), x, noise[:, step])
                self._adam(list(grads))
        sync(self.device)
        return time.perf_counter() - start


def time_func(m: int, x_train, device, min_seconds: float, samples: int = 1) -> dict:
    ensemble = FuncEnsemble(m, device, samples)
    x_train = x_train.to(device)
    warm = ensemble.train(x_train, 1)
    epochs, seconds = measure(lambda n: ensemble.train(x_train, n), warm, min_seconds)
    return {"epochs": epochs, "seconds": seconds, "model_steps_per_s": m * epochs * STEPS_PER_EPOCH / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1, help="S: 1 trains VAEs, more trains IWAEs with S samples")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/ensemble.json"))
    args = parser.parse_args()
    runtime.flush_denormals()  # as every fmvae command does, before torch starts its threads
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x_train, x_val = make_data()
    rows = []
    print(f"{'models':>7} {'engine':>12} {'torch.func':>12} {'ratio':>7}  (model-steps/s, medians of {args.rounds} rounds)")
    for m in args.models:
        rounds = []
        for _ in range(args.rounds):
            engine = time_batched(m, x_train, x_val, device, args.min_seconds, args.samples)
            func = time_func(m, x_train, device, args.min_seconds, args.samples)
            rounds.append({"engine": engine, "torch_func": func,
                           "ratio": engine["model_steps_per_s"] / func["model_steps_per_s"]})
        row = {"models": m,
               "engine_model_steps_per_s": statistics.median(r["engine"]["model_steps_per_s"] for r in rounds),
               "torch_func_model_steps_per_s": statistics.median(r["torch_func"]["model_steps_per_s"] for r in rounds),
               "ratio": statistics.median(r["ratio"] for r in rounds),
               "ratio_min": min(r["ratio"] for r in rounds), "ratio_max": max(r["ratio"] for r in rounds),
               "rounds": rounds}
        rows.append(row)
        print(f"{m:>7} {row['engine_model_steps_per_s']:>12.0f} {row['torch_func_model_steps_per_s']:>12.0f} {row['ratio']:>7.2f}")
    result = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads,
                          "device": str(device), "loadavg": os.getloadavg()},
              "setup": {"data_dim": D, "latent_dim": K, "hidden": list(HIDDEN), "batch_size": BATCH, "n_train": N_TRAIN,
                        "lr": LR, "samples": args.samples,
                        "method": ("vae (ELBO, one sample" if args.samples == 1 else f"iwae (S={args.samples}")
                        + ", fixed sigma^2)"},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
