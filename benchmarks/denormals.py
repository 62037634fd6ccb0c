"""Subnormal floats flushed to zero (fmvae.runtime.flush_denormals) against IEEE gradual underflow.

For each method (``--methods``: the paper's VAE, IWAE, LIN and the M2 versions) one training job's
shape: ``--models`` models of 3×50 leaky-ReLU networks (D = 2, K = 1), batch 100, 5000 points
(a noisy figure-8; for M2 a labelled semi-circle with 10% of the labels observed), IWAE at S = 10,
LIN at T = 0.05, R = 5. Each measurement is a fresh process (the setting must precede PyTorch's
thread pool) with ``FMVAE_FLUSH_DENORMAL`` 1 or 0, timing ``--epochs`` epochs after one warm-up
epoch; the two settings alternate for ``--rounds`` rounds and the row reports the median seconds
per epoch of each and the median of the per-round ratios (kept / flushed).

    python benchmarks/denormals.py [--methods vae iwae] [--models 20] [--threads 2] [--out PATH]

Writes ``results/benchmarks/denormals.json`` and prints a table (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

EPOCH = """
import json, sys, time, torch
from fmvae import methods, runtime
from fmvae.nn import BatchedVAE, Labels
from fmvae.objectives.semi_supervised import pack
from fmvae.train.loop import Trainer
flushing = runtime.flush_denormals()
name, m, epochs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
method = methods.get(name)
g = torch.Generator().manual_seed(0)
z = torch.randn(7000, 1, generator=g)
if method.semi_supervised:  # a semi-circle whose side is the label
    x = torch.cat([torch.cos(z), torch.sin(z).abs()], 1) + 0.1 * torch.randn(7000, 2, generator=g)
    y, observed = (z[:, 0] > 0).float(), torch.rand(7000, generator=g) < 0.1
    x = pack(x, y, observed)
    x_val = pack(x[5000:, :2], y[5000:], torch.zeros(2000, dtype=torch.bool))
else:
    x = torch.cat([torch.sin(z), torch.sin(z) * torch.cos(z)], 1) + 0.14 * torch.randn(7000, 2, generator=g)
    x_val = x[5000:]
labels = Labels(2) if method.semi_supervised else None
model = BatchedVAE(m, 2, 1, [50, 50, 50], 0.01, seeds=list(range(m)), sigma2_init=torch.full((m, 1), 0.01),
                   learn_sigma2=False, labels=labels)
grid = {"S": 10, "T": 0.05, "R": 5, "alpha": 1.0, "gamma": 1.0}
hyper = {k: [grid[k]] * m for k in method.hyper}
settings = {"batch_size": 100, "lr": 1e-3, "log_every_epochs": 0, "max_inner_steps": 100, "mi_patience": 5,
            "mi_points": 1000}
Trainer(model, method, hyper, {**settings, "epochs": 1}, seeds=list(range(m))).run(x[:5000], x_val)  # warm-up
start = time.perf_counter()
Trainer(model, method, hyper, {**settings, "epochs": epochs}, seeds=list(range(m))).run(x[:5000], x_val)
print(json.dumps({"flushing": flushing, "seconds_per_epoch": (time.perf_counter() - start) / epochs}))
"""


def epoch_seconds(method: str, models: int, epochs: int, threads: int, flush: bool) -> float:
    env = {**os.environ, "FMVAE_FLUSH_DENORMAL": "1" if flush else "0"}
    done = subprocess.run([sys.executable, "-c", EPOCH, method, str(models), str(epochs), str(threads)],
                          env=env, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["flushing"] != flush:
        raise SystemExit(f"FMVAE_FLUSH_DENORMAL={int(flush)} but the process reports flushing={out['flushing']}")
    return out["seconds_per_epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["vae", "iwae", "lin", "m2_vae", "m2_iwae", "m2_lin"])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/denormals.json"))
    args = parser.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()
    rows = []
    print(f"{'method':>8} {'kept s/epoch':>13} {'flushed s/epoch':>16} {'ratio':>6}")
    for method in args.methods:
        rounds = []
        for _ in range(args.rounds):
            kept = epoch_seconds(method, args.models, args.epochs, args.threads, flush=False)
            flushed = epoch_seconds(method, args.models, args.epochs, args.threads, flush=True)
            rounds.append({"kept": kept, "flushed": flushed, "ratio": kept / flushed})
        row = {"method": method, "kept_seconds_per_epoch": statistics.median(r["kept"] for r in rounds),
               "flushed_seconds_per_epoch": statistics.median(r["flushed"] for r in rounds),
               "ratio": statistics.median(r["ratio"] for r in rounds), "rounds": rounds}
        rows.append(row)
        print(f"{method:>8} {row['kept_seconds_per_epoch']:>13.3f} {row['flushed_seconds_per_epoch']:>16.3f} "
              f"{row['ratio']:>6.2f}", flush=True)
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpu_count": os.cpu_count(), "threads": args.threads,
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
              "setup": {"models": args.models, "epochs": args.epochs, "rounds": args.rounds, "hidden": [50, 50, 50],
                        "batch_size": 100, "n_train": 5000, "S": 10},
              "rows": rows, "total_seconds": time.perf_counter() - started}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
