"""Process-wide settings (fmvae.runtime): subnormal floats flushed to zero in every thread, and
the flush changes no training result beyond float32 rounding."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

# Every element the smallest positive subnormal float32 (bit pattern 1), doubled by an elementwise
# product large enough that PyTorch splits it over its 2 threads: with the flush in every thread
# the result is all zero; without it (or in a thread that missed it) the subnormals survive.
SUBNORMALS_IN_THREADS = """
import torch
from fmvae import runtime
flushing = runtime.flush_denormals()
torch.set_num_threads(2)
x = torch.ones(4_000_000, dtype=torch.int32).view(torch.float32)
y = x * 2.0
print(flushing, int((y != 0).sum()))
"""

# One epoch of 4 IWAE models (S = 10), whose backward pass is full of subnormal sample weights.
IWAE_EPOCH = """
import json, torch
from fmvae import methods, runtime
from fmvae.nn import BatchedVAE
from fmvae.train.loop import Trainer
runtime.flush_denormals()
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
z = torch.randn(1100, 1, generator=g)
x = torch.cat([torch.sin(z), torch.sin(z) * torch.cos(z)], 1) + 0.1 * torch.randn(1100, 2, generator=g)
model = BatchedVAE(4, 2, 1, [50, 50, 50], 0.01, seeds=[1, 2, 3, 4], sigma2_init=torch.full((4, 1), 0.01),
                   learn_sigma2=False)
settings = {"epochs": 2, "batch_size": 100, "lr": 1e-3, "log_every_epochs": 0}
result = Trainer(model, methods.get("iwae"), {"S": [10] * 4}, settings, seeds=[5, 6, 7, 8]).run(x[:1000], x[1000:])
print(json.dumps(result.curve[:, -1].tolist()))
"""


def run_python(code: str, flush: bool) -> str:
    env = {**os.environ, "FMVAE_FLUSH_DENORMAL": "1" if flush else "0", "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def supports_flush() -> bool:
    return platform.machine().lower() in {"x86_64", "amd64", "i686"}  # SSE3's flush-to-zero


@pytest.mark.skipif(not supports_flush(), reason="this CPU cannot flush subnormals (not x86 with SSE3)")
def test_subnormals_are_flushed_in_every_thread():
    flushing, left = run_python(SUBNORMALS_IN_THREADS, flush=True).split()
    assert flushing == "True" and left == "0"
    flushing, left = run_python(SUBNORMALS_IN_THREADS, flush=False).split()  # the switch turns it off
    assert flushing == "False" and left == "4000000"


@pytest.mark.skipif(not supports_flush(), reason="this CPU cannot flush subnormals (not x86 with SSE3)")
def test_flushing_moves_no_training_result_beyond_rounding():
    flushed = json.loads(run_python(IWAE_EPOCH, flush=True))
    kept = json.loads(run_python(IWAE_EPOCH, flush=False))
    assert flushed == pytest.approx(kept, rel=1e-4, abs=1e-4)
