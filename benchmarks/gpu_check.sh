#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see docs/benchmarks.md): build the CUDA extension
# against the machine's CUDA torch, check every GPU kernel against the torch reference, time them.
# Usage (device tool): bash benchmarks/gpu_check.sh   — results land in $OUT (or ./gpu-results).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3 | tee "$OUT/build.log"
python3 -c "import fastdnc.kernels.cuda as c; print('cuda extension:', c.unavailable_reason() or 'built')" | tee -a "$OUT/build.log"
python3 -m pytest -q tests/kernels/test_gpu.py tests/kernels tests/curvature/test_layer.py -x 2>&1 | tail -15 | tee "$OUT/tests.log"
python3 benchmarks/bench_gpu.py | tee "$OUT/gpu.md"
