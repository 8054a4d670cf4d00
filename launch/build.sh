#!/usr/bin/env bash
# Configures and builds dsmath into ${DSMATH_BUILD_DIR:-build} (Release, ccache when present).
# Extra arguments go to cmake's configure step, e.g. -DDSMATH_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${DSMATH_BUILD_DIR:-build}
# ccache hits across clones in other folders (CI builds a fresh clone each time).
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$BUILD_DIR" -j "$(nproc)"
