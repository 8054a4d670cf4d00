#!/usr/bin/env bash
# The whole test suite from a fresh machine: install packages, build once, run ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install-deps.sh
# Reference implementations for the cross-check tests (set DSMATH_SKIP_REFERENCE=1 to skip them).
[ "${DSMATH_SKIP_REFERENCE:-0}" = 1 ] || bash launch/install-reference.sh
bash launch/build.sh "$@"
ctest --test-dir "${DSMATH_BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 600
