#!/usr/bin/env bash
# The whole test suite from a fresh machine: install packages, build once, run ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install-deps.sh
# Reference implementations for the cross-check tests (set DSMATH_SKIP_REFERENCE=1 to skip them).
# They are optional: if they cannot be installed, those tests skip and say so.
if [ "${DSMATH_SKIP_REFERENCE:-0}" != 1 ]; then
  bash launch/install-reference.sh ||
    echo "run-tests: reference implementations not installed; torch/transformers cross-checks will skip"
fi
bash launch/build.sh "$@"
ctest --test-dir "${DSMATH_BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 600
