#!/usr/bin/env bash
# The GPU check: on a machine with CUDA, run the engine's correctness tests on the GPU (stack
# independence of VAE, IWAE, LIN and M2 models, divergence isolation, LIN's phase, checkpoint resume:
# the tests marked `gpu`), then the throughput benchmark up to 10 000 models, written where
# `fmvae plan --gpu-benchmark` reads it, and the two kinds of random streams (benchmarks/streams.py). Budget: under 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, in the activated environment
#   fmvae plan config/paper.yaml --gpu-benchmark results/benchmarks/throughput_gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run this on a GPU machine')"
python -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
start=$(date +%s)
FMVAE_TEST_DEVICE=cuda timeout 240 python -m pytest -q -m gpu tests/ -p no:cacheprovider
echo "gpu tests: $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout 240 python benchmarks/throughput.py --device cuda --models 1 10 100 1000 10000 --rounds 2 --min-seconds 1 \
  --out results/benchmarks/throughput_gpu.json
echo "throughput benchmark: $(( $(date +%s) - start )) s -> results/benchmarks/throughput_gpu.json"
start=$(date +%s)
timeout 90 python benchmarks/streams.py --device cuda --models 100 1000 10000 --generator-max 1000 --rounds 2 \
  --out results/benchmarks/streams_gpu.json
echo "streams benchmark: $(( $(date +%s) - start )) s -> results/benchmarks/streams_gpu.json (training.streams: auto picks counter on a GPU; this measures whether it should)"
