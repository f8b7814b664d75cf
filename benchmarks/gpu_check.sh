#!/usr/bin/env bash
# One prepared run on a lent GPU machine, under 10 minutes (each step has a timeout, 550 s in all):
# build the CUDA extension against the machine's CUDA torch, run the kernel tests on the GPU (every
# Triton and CUDA kernel against the torch reference at the house tolerances, the CUDA bindings'
# argument checks), then time every
# kernel against torch at the shapes of benchmarks/gpu_cases.py and print the rules table for
# fastdnc/kernels/dispatch.py (to be pasted into docs/benchmarks.md with the numbers).
# Usage (device tool): bash benchmarks/gpu_check.sh   — results land in $OUT (or ./gpu-results).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
timeout 150 python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3 | tee "$OUT/build.log"
python3 -c "import fastdnc.kernels.cuda as c; print('cuda extension:', c.unavailable_reason() or 'built')" | tee -a "$OUT/build.log"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/kernels tests/curvature/test_layer.py 2>&1 | tail -25 | tee "$OUT/tests.log" || true
timeout 200 python3 benchmarks/bench_gpu.py --out "$OUT/gpu.md"
