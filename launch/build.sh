#!/usr/bin/env bash
# Configures and builds dsmath into ${DSMATH_BUILD_DIR:-build} (Release, ccache when present).
# Extra arguments go to cmake's configure step, e.g. -DDSMATH_CUDA=OFF.
# DSMATH_BUILD_JOBS sets the parallel jobs (default: every core); DSMATH_BUILD_TARGETS, a
# space-separated list, builds only those targets (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${DSMATH_BUILD_DIR:-build}
# ccache hits across clones in other folders (CI builds a fresh clone each time).
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@"
targets=()
for t in ${DSMATH_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$BUILD_DIR" -j "${DSMATH_BUILD_JOBS:-$(nproc)}" "${targets[@]}"
