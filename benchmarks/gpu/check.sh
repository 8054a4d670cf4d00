#!/usr/bin/env bash
# One short run on a machine with NVIDIA GPUs: build with CUDA for this GPU, run every test that
# needs a device (today: the NCCL communicator's collectives, one GPU per rank, checked against
# the MPI/CPU results), then the CPU suite's model tests for reference timings.
# Usage: benchmarks/gpu/check.sh [BUILD_DIR]    Output also goes to $OUT/check.log when set.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build-gpu}
LOG=${OUT:-/tmp}/check.log
exec > >(tee "$LOG") 2>&1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || {
  echo "check: no GPU visible"; exit 1; }
GPUS=$(nvidia-smi --list-gpus | wc -l)
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)

bash launch/install-deps.sh
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDSMATH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DDSMATH_MPI_TEST_NP="1;2;4"
cmake --build "$BUILD" -j "$(nproc)"

echo "== device tests ($GPUS GPU(s), sm_$ARCH) =="
DSMATH_MPI_TEST_TIMEOUT_S=120 ctest --test-dir "$BUILD" -R 'nccl' --output-on-failure

echo "== CPU reference timings on this host =="
"$BUILD/bin/dsmath-make-model" --preset small --seed 0 --out "$BUILD/small" > /dev/null
"$BUILD/bin/dsmath-bench-decode" --model "$BUILD/small" --batch 1
"$BUILD/bin/dsmath-bench-decode" --model "$BUILD/small" --batch 16
