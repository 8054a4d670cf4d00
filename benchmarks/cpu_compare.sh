#!/usr/bin/env bash
# dsmath against its peers on this CPU, on the same bf16 weights, in one run: prefill (64 and 512
# tokens) and decode (batch 1, 16, 64) tokens/s of dsmath (at its default precision and at
# --matmul-precision medium, bf16 activations like the peers), llama.cpp (llama-cpp-python) and
# Hugging Face transformers on torch, with each ratio and the fraction of the machine's physical
# bound (dsmath-cpu-probe: read bandwidth for decode, peak bf16/AMX flops for prefill).
# Usage: benchmarks/cpu_compare.sh [BUILD_DIR] [PRESET...]   (defaults: build; small deepseek-math-7b)
# Environment: THREADS (nproc), NEW_TOKENS (decode steps + 1: 64, or 8 for the 7B preset),
#   ROUNDS (3: alternated rounds of batch-1 decode, dsmath then llama.cpp, reported as medians),
#   READ_TURNS (8: dsmath-bench-decode --read-bound in those rounds, decode against a plain read
#   of the same weights in turns),
#   PEERS (which peers to run: "llama torch"; torch's bf16 on a CPU without AVX512-BF16 runs
#   ~100x slower than the others, hours for the 7B: PEERS=llama leaves it out),
#   DSMATH_BENCH_VENV (/opt/benchvenv), OUT (a folder for the results; benchmarks/results),
#   CMAKE_BUILD_PARALLEL_LEVEL (jobs of the llama.cpp compile and of the dsmath builds).
# Installs what is missing: Debian's python3-torch (launch/install-reference.sh), a venv with
# pinned llama-cpp-python (compiled here for the native CPU), gguf and transformers; builds the
# dsmath tools; makes models/PRESET (dsmath-make-model --seed 0) and models/PRESET/model-bf16.gguf.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
shift || true
PRESETS=("$@")
[ ${#PRESETS[@]} -gt 0 ] || PRESETS=(small deepseek-math-7b)
BIN=$BUILD/bin
T=${THREADS:-$(nproc)}
VENV=${DSMATH_BENCH_VENV:-/opt/benchvenv}
PY=$VENV/bin/python
RESULTS=${OUT:-benchmarks/results}/cpu_compare-$(date +%Y%m%d-%H%M%S).jsonl
mkdir -p "$(dirname "$RESULTS")"

# ---- what the run needs ------------------------------------------------------------------------
/usr/bin/python3 -c 'import torch' 2>/dev/null || launch/install-reference.sh
if ! "$PY" -c 'import llama_cpp, gguf, torch, transformers' 2>/dev/null; then
  [ -x "$PY" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"  # sees Debian's torch
  # llama-cpp-python ships no wheel on PyPI: pip compiles llama.cpp, here for this CPU only
  # (GGML_NATIVE), without the multimodal library the benchmark does not use.
  echo "== installing llama-cpp-python (compiles llama.cpp; minutes), gguf, transformers into $VENV"
  CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}" \
    "$PY" -m pip install -q --disable-pip-version-check llama-cpp-python==0.3.36 gguf==0.19.0 \
    transformers==4.40.2 tokenizers==0.19.1 safetensors==0.4.3
fi
if [[ " ${PEERS:-llama torch} " == *" torch "* ]] && ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "cpu_compare: $VENV does not see Debian's torch (a venv made by another python, or without" \
    "--system-site-packages): remove it and run again, or set PEERS=llama" >&2
  exit 1
fi
for t in dsmath-bench-decode dsmath-cpu-probe dsmath-make-model; do
  if [ ! -x "$BIN/$t" ]; then
    cmake -S . -B "$BUILD" > /dev/null  # configure anew: an older build tree may lack the target
    cmake --build "$BUILD" --target "$t"
  fi
done

# WORK BATCH PROMPT NEW PRECISION [FLAG...]: one dsmath-bench-decode run on $M (with the extra
# flags), as a line of $RESULTS.
# PRECISION highest is dsmath's default (f32-grade activations); medium is bf16 activations, the
# precision torch and llama.cpp run their bf16 products at (system "dsmath-bf16").
dsmath() {
  local r key=prefill_tokens_per_s tps system=dsmath
  [ "$5" = highest ] || system=dsmath-bf16
  r=$("$BIN/dsmath-bench-decode" --model "$M" --threads "$T" --format json --batch "$2" \
    --prompt-tokens "$3" --new-tokens "$4" --matmul-precision "$5" "${@:6}" | tail -1)
  [ "$1" = prefill ] || key=decode_tokens_per_s
  tps=$(python3 -c "import json, sys; print(json.loads(sys.argv[1])['$key'])" "$r")
  echo "{$tag,\"system\":\"$system\",\"work\":\"$1\",\"batch\":$2,\"prompt\":$3,\"tokens_per_s\":$tps,\"result\":$r}" >> "$RESULTS"
}

# ---- measurements: each appends JSON lines to $RESULTS -------------------------------------------
probe=$("$BIN/dsmath-cpu-probe" --threads "$T")
echo "{\"system\":\"probe\",${probe#\{}" >> "$RESULTS"
# --matmul-precision medium changes only the AVX512-BF16 path: elsewhere it is the same run.
precisions=(highest)
python3 -c "import json, sys; sys.exit(not json.loads(sys.argv[1])['cpu_flags']['avx512_bf16'])" \
  "$probe" && precisions+=(medium)
PEERS=${PEERS:-llama torch}
for P in "${PRESETS[@]}"; do
  M=models/$P
  [ -f "$M/config.json" ] || "$BIN/dsmath-make-model" --preset "$P" --seed 0 --out "$M"
  if [[ " $PEERS " == *" llama "* && ! -f "$M/model-bf16.gguf" ]]; then  # written once; via .tmp
    # so that a killed run leaves none
    "$PY" tools/write_gguf.py "$M" "$M/model-bf16.gguf.tmp"
    mv "$M/model-bf16.gguf.tmp" "$M/model-bf16.gguf"
  fi
  # The 7B model reads 13.8 GB per decode step, and decode at batch 64 starts with a prefill of
  # 64 prompts: few steps and short prompts keep its run near 20 minutes.
  case $P in
    deepseek-math-7b) NEW=${NEW_TOKENS:-8} DECODE_PROMPT=4 ;;
    *) NEW=${NEW_TOKENS:-64} DECODE_PROMPT=16 ;;
  esac
  tag="\"preset\":\"$P\",\"model\":\"$M\""
  echo "== $P: dsmath"
  # Read the weights into the page cache once so the first run does not pay for the disk
  # (dsmath-bench-decode's untimed warm-up token then faults the mapping in).
  cat "$M"/*.safetensors > /dev/null
  for precision in "${precisions[@]}"; do
    dsmath prefill 1 64 1 $precision
    dsmath prefill 1 512 1 $precision
    for B in 1 16 64; do dsmath decode "$B" "$DECODE_PROMPT" "$NEW" $precision; done
  done
  peers=(--preset "$P" --threads "$T" --prefill 64 512 --decode-prompt "$DECODE_PROMPT"
    --new-tokens "$NEW")
  if [[ " $PEERS " == *" llama "* ]]; then
    echo "== $P: llama.cpp"
    "$PY" benchmarks/cpu_compare_peers.py llama --gguf "$M/model-bf16.gguf" "${peers[@]}" >> "$RESULTS"
  fi
  if [[ " $PEERS " == *" llama "* ]]; then
    # Batch-1 decode is bound by memory, whose speed on a shared VM moves from minute to minute:
    # ROUNDS alternated runs, each after reading its own weights into the page cache (both 7B
    # files do not fit in it together), compared as medians. dsmath's also time a plain read of
    # its weights after each of READ_TURNS (8) more steps: the bound at the same moment.
    for ((round = 1; round <= ${ROUNDS:-3}; round++)); do
      echo "== $P: batch-1 decode, alternated round $round"
      cat "$M"/*.safetensors > /dev/null
      dsmath decode-alt 1 "$DECODE_PROMPT" "$NEW" highest --read-bound "${READ_TURNS:-8}"
      cat "$M/model-bf16.gguf" > /dev/null
      "$PY" benchmarks/cpu_compare_peers.py llama --gguf "$M/model-bf16.gguf" "${peers[@]}" \
        --prefill --decode-work decode-alt >> "$RESULTS"
    done
  fi
  if [[ " $PEERS " == *" torch "* ]]; then
    echo "== $P: torch"
    "$PY" benchmarks/cpu_compare_peers.py torch --model "$M" --decode-batches 1 16 "${peers[@]}" \
      >> "$RESULTS"
  fi
done
echo
"$PY" benchmarks/cpu_compare_peers.py report "$RESULTS"
echo "raw results: $RESULTS"
