"""One epoch's random numbers of a training job, per stream kind (``training.streams``).

For ``--models`` M, the draws one epoch of the trainer makes for an IWAE job of the paper's shape
(5000 points, batch 100, S = ``--samples`` noise draws per point, K = 1): a permutation of the
points per model and the (M, 50, 100, S, 1) normals. ``generator``: one CPU ``torch.Generator``
per model, drawn model by model, then copied to ``--device`` (what the trainer does on the CPU);
``counter``: Philox4x32-10 on ``--device``, every model at once. The two kinds alternate for
``--rounds`` rounds; each row reports the median seconds per epoch of each and their ratio.
``--generator-max`` skips the generator at larger M (it takes seconds per epoch there).

    python benchmarks/streams.py [--models 1 10 100] [--device cpu] [--threads 1] [--out PATH]

Writes ``results/benchmarks/streams.json`` (``streams_gpu.json`` from benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from fmvae import runtime
from fmvae.train.streams import CounterStreams, ModelStreams


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def epoch_draws(streams, device: torch.device, m: int, samples: int) -> float:
    sync(device)
    start = time.perf_counter()
    order = streams.permutations(5000).to(device)
    noise = streams.normal((50, 100, samples, 1), samples=[samples] * m, axis=-2).to(device)
    sync(device)
    del order, noise
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--generator-max", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/streams.json"))
    args = parser.parse_args(argv)
    runtime.flush_denormals()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for m in args.models:
        made = {"counter": CounterStreams(range(m), device)}
        if m <= args.generator_max:
            made["generator"] = ModelStreams(range(m))
        for streams in made.values():
            epoch_draws(streams, device, m, args.samples)  # warm-up
        times = {name: [] for name in made}
        for _ in range(args.rounds):
            for name, streams in made.items():
                times[name].append(epoch_draws(streams, device, m, args.samples))
        row = {"models": m, **{f"{name}_s": statistics.median(t) for name, t in times.items()}}
        if "generator_s" in row:
            row["counter_over_generator"] = row["counter_s"] / row["generator_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
               "load_average": os.getloadavg(), "device": str(device), "threads": args.threads,
               "torch": torch.__version__,
               **({"gpu": torch.cuda.get_device_name(0)} if device.type == "cuda" else {})}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "samples": args.samples, "rounds": args.rounds, "rows": rows},
                                   indent=1) + "\n")


if __name__ == "__main__":
    main()
