#!/usr/bin/env bash
# Fuzzing: builds the libFuzzer targets of tests/fuzz with Clang under ASan + UBSan into
# ${DSMATH_FUZZ_BUILD_DIR:-build-fuzz} and runs each for SECONDS (default 60), one after the
# other, on a scratch copy of its committed corpus (tests/fuzz/corpus/<target>, so runs never
# grow the repository) with its dictionary (tests/fuzz/dict/<target>.dict). Prints per target
# the executions and any crash file; exits 1 when a target found a crash, a leak, undefined
# behaviour, a failed check or a timeout.
#
#   launch/fuzz.sh [SECONDS] [TARGET...]     TARGET: safetensors pickle torch_bin tokenizer_json
#                                            tokenizer_codec job_input answer link_codec
#                                            (default: all)
# Environment: DSMATH_FUZZ_JOBS build jobs (default: every core); DSMATH_FUZZ_OUT where the
# scratch corpora, logs and crash files go (default: <build dir>/fuzz-out); DSMATH_FUZZ_FLAGS
# more libFuzzer flags (e.g. -jobs=2 or -max_len=65536).
# A crash file replays with: <build dir>/bin/<target>_fuzz CRASH_FILE
set -euo pipefail
cd "$(dirname "$0")/.."
ALL_TARGETS=(safetensors pickle torch_bin tokenizer_json tokenizer_codec job_input answer link_codec)

SECONDS_EACH=60
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
  SECONDS_EACH=$1
  shift
fi
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do
  if [[ ! -f tests/fuzz/${t}_fuzz.cpp ]]; then
    echo "fuzz.sh: unknown target '$t' (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
  fi
done

BUILD_DIR=${DSMATH_FUZZ_BUILD_DIR:-build-fuzz}
OUT=${DSMATH_FUZZ_OUT:-$BUILD_DIR/fuzz-out}
CC=${CC:-clang}
CXX=${CXX:-clang++}
if ! command -v "$CXX" >/dev/null; then
  echo "fuzz.sh: $CXX not found; libFuzzer needs Clang (Debian: apt-get install clang" \
       "libclang-rt-dev)" >&2
  exit 2
fi

# Only the libraries the targets need are built, with -O1 -g and asserts on.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake -S . -B "$BUILD_DIR" -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" \
  -DDSMATH_FUZZ=ON -DDSMATH_CUDA=OFF -DDSMATH_BUILD_TESTS=OFF -DDSMATH_BUILD_BENCHMARKS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
build_targets=()
for t in "${TARGETS[@]}"; do build_targets+=(--target "${t}_fuzz"); done
cmake --build "$BUILD_DIR" -j "${DSMATH_FUZZ_JOBS:-$(nproc)}" "${build_targets[@]}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$OUT"
failed=0
summary=()
for t in "${TARGETS[@]}"; do
  dir="$OUT/$t"
  rm -rf "$dir"
  mkdir -p "$dir/corpus"
  cp tests/fuzz/corpus/"$t"/* "$dir/corpus/"
  dict=()
  [[ -f tests/fuzz/dict/$t.dict ]] && dict=(-dict="tests/fuzz/dict/$t.dict")
  # Inputs up to 4 KiB, or the largest seed (libFuzzer's default is the largest seed alone).
  max_len=$(wc -c "$dir"/corpus/* | awk '$2 != "total" && $1 > m {m = $1} END {print (m > 4096 ? m : 4096)}')
  echo "== $t: ${SECONDS_EACH} s (log: $dir/log)"
  set +e
  # shellcheck disable=SC2086  # DSMATH_FUZZ_FLAGS is a list of flags
  "$BUILD_DIR/bin/${t}_fuzz" -max_total_time="$SECONDS_EACH" -timeout=25 -rss_limit_mb=4096 -max_len="$max_len" \
    -print_final_stats=1 -artifact_prefix="$dir/" "${dict[@]}" ${DSMATH_FUZZ_FLAGS:-} \
    "$dir/corpus" >"$dir/log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log" | tail -1)
  crashes=$(find "$dir" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' \
    -o -name 'timeout-*' -o -name 'oom-*' -o -name 'slow-unit-*' \) | sort)
  line="$t: ${runs:-?} executions, ${rate:-?}/s, corpus $(ls "$dir/corpus" | wc -l) files"
  if [[ $rc -ne 0 || -n $crashes ]]; then
    failed=1
    line+=" -- FOUND (exit $rc): ${crashes:-see the log}"
    grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|FUZZ_CHECK|terminate called' \
      "$dir/log" || true
  fi
  echo "$line"
  summary+=("$line")
done
echo
echo "== fuzz summary (${SECONDS_EACH} s each)"
printf '%s\n' "${summary[@]}"
exit $failed
