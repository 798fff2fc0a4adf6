#!/usr/bin/env bash
# One script for a lent GPU machine (torch with CUDA and nvcc there, nothing downloaded), < 8 minutes:
#   1. builds the extension with the CUDA kernels and their at::Tensor bridge (build/gpu),
#   2. runs the op tests on CUDA against the references (tests/python/test_ops.py),
#   3. times every op against torch's own, and LLaVA-small end to end against transformers,
# and prints the tables last (also appended to bench/RESULTS.md).
#   bench/gpu_check.sh            # everything
#   SKIP_E2E=1 bench/gpu_check.sh # ops only
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
stage() { echo; echo "== $1 ($(( $(date +%s) - started ))s)"; }

stage "device"
python - <<'PY'
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device"
print(torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name())
PY
nvcc_path=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
"$nvcc_path" --version | tail -1

stage "build"
export VLMZOO_BUILD_DIR=build/gpu VLMZOO_JOBS=$(nproc)
export VLMZOO_CMAKE_ARGS="-DCMAKE_CUDA_COMPILER=$nvcc_path -DCMAKE_CUDA_ARCHITECTURES=native -DVLMZOO_BUILD_TESTS=OFF"
timeout 300 scripts/dev_build.sh
PYTHONPATH=python python -c "
import torch, vlmzoo._C
x = torch.randn(4, 64, device='cuda')
torch.ops.vlmzoo.rms_norm(x, torch.ones(64, device='cuda'), 1e-6)
print('vlmzoo ops registered for CUDA')"

stage "op tests on CUDA"
VLMZOO_TEST_DEVICE=cuda PYTHONPATH=python timeout 240 python -m pytest tests/python/test_ops.py -q \
  -p no:cacheprovider --maxfail=25 2>&1 | tail -30 || echo "op tests on CUDA: FAILURES (see above)"

stage "timings"
results=$(mktemp)
e2e_flag=""
[ -n "${SKIP_E2E:-}" ] && e2e_flag="--skip-e2e"
log=$(mktemp)
PYTHONPATH=python timeout 240 python bench/ops_gpu.py --device cuda $e2e_flag --results "$results" > "$log" 2>&1 \
  || { echo "timings: incomplete"; tail -25 "$log"; }
cat "$results" >> bench/RESULTS.md

stage "results"
cat "$results"
