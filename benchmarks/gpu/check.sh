#!/usr/bin/env bash
# One short run on a machine with an NVIDIA GPU (at most ~8 minutes on one H200):
#   1. build the CUDA backend for this GPU (only the targets the check needs),
#   2. run the gpu tests: every CUDA op against the CPU op, the whole forward and the engine
#      on the GPU against the CPU backend (ctest -L gpu), and the NCCL collectives; with two
#      or more GPUs, a tp 1 x pp 2 group against one GPU,
#   3. time decode at batch 1, 32 and 256 and a 2,048-token prefill on `small` and on a
#      deepseek-math-7b-shaped checkpoint made on the spot, printing achieved GB/s and TFLOP/s
#      next to the H200's 4.8 TB/s and ~990 TFLOP/s dense bf16,
#   4. run a batch job with --overlap off and on: the same samples, and the gain in tokens/s,
#   5. where the host CPU has AMX-BF16: the CPU linear paths' tests (the tile path against its
#      emulation) and 7B prefill and batch-1 decode on the AMX path against AVX512-BF16.
# Usage: benchmarks/gpu/check.sh [BUILD_DIR]     Output also goes to $OUT/check.log when set.
#
# Dependencies: the Debian packages of launch/install-deps.sh (MPI, gRPC, ...), installed by it
# where apt reaches a mirror. On a GPU machine without them or a network (the device tool's
# H200), the programs come prebuilt in .gpukit/kit.tar.xz (benchmarks/gpu/make-kit.sh, run on a
# machine that has them; carry .gpukit along): with no mpirun here (or DSMATH_GPU_KIT=1) and a
# kit, check.sh unpacks it instead of building, and step 1 is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build-gpu}
LOG=${OUT:-/tmp}/check.log
exec > >(tee "$LOG") 2>&1
T0=$SECONDS
stamp() { echo "== [$((SECONDS - T0)) s] $*"; }
py() { env -u LD_LIBRARY_PATH python3 "$@"; }  # the system's Python, not the kit's libraries

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || {
  echo "check: no GPU visible"; exit 1; }
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
GPUS=$(nvidia-smi --list-gpus | wc -l)
[ "$(id -u)" -ne 0 ] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

KIT=.gpukit/kit.tar.xz
if [ -f "$KIT" ] && { [ "${DSMATH_GPU_KIT:-}" = 1 ] || ! command -v mpirun > /dev/null; }; then
  BUILD=build-gpukit
  stamp "unpack the kit: $(tar -xJOf "$KIT" ./built-from) (no mpirun here to build with)"
  rm -rf "$BUILD" && mkdir -p "$BUILD" && tar -xJf "$KIT" -C "$BUILD"
  # The programs find tests/data and each other under the checkout they were built in.
  src=$(cat "$BUILD/source-dir")
  if [ "$src" != "$PWD" ] && [ ! -e "$src" ]; then
    mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"
  fi
  # CUDA's libraries are this machine's: its toolkit's cuBLAS and runtime, NCCL from a wheel.
  cuda_dirs=""
  for lib in libcudart.so.13 libcublas.so.13 libnccl.so.2; do
    found=$(find /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu /usr/local/lib /opt -name "$lib" \
      2> /dev/null | head -1 || true)
    [ -n "$found" ] || { echo "check: $lib not found on this machine"; exit 1; }
    cuda_dirs+=":$(dirname "$found")"
  done
  export LD_LIBRARY_PATH="$PWD/$BUILD/lib$cuda_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export OPAL_PREFIX=$PWD/$BUILD/usr PMIX_INSTALL_PREFIX=$PWD/$BUILD/usr/lib/x86_64-linux-gnu/pmix2
  export PATH=$PWD/$BUILD/usr/bin:$PATH
  [ "$ARCH" = "$(tar -xJOf "$KIT" ./built-from | sed 's/^sm_\([0-9]*\).*/\1/')" ] ||
    echo "check: the kit is not built for this GPU's sm_$ARCH; its kernels may not load"

  stamp "gpu tests (the kit's programs)"
  status=0
  for t in cuda_ops_test cuda_sampling_test cuda_model_test; do
    "$BUILD/bin/$t" --gtest_brief=1 || status=1
  done
  mpirun -np 1 "$BUILD/bin/nccl_test" --gtest_brief=1 || status=1
  if [ "$GPUS" -ge 2 ]; then mpirun -np 2 "$BUILD/bin/nccl_test" --gtest_brief=1 || status=1; fi
else
  # Installs what is missing; fails naming the packages where apt cannot reach a mirror.
  bash launch/install-deps.sh

  stamp "configure and build for sm_$ARCH ($GPUS GPU(s))"
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDSMATH_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DDSMATH_MPI_TEST_NP="1;2" > /dev/null
  cmake --build "$BUILD" -j "$(nproc)" --target cuda_ops_test cuda_model_test \
    cuda_sampling_test nccl_test dsmath-bench-decode dsmath-make-model dsmath-worker test_kernels

  stamp "gpu tests"
  status=0
  ctest --test-dir "$BUILD" -L gpu --output-on-failure --timeout 300 || status=1
  DSMATH_MPI_TEST_TIMEOUT_S=120 ctest --test-dir "$BUILD" -R nccl --output-on-failure || status=1
fi

# Pipeline stages on GPUs (NCCL send/recv between stages) need a GPU per rank: on a machine
# with two or more, tp 1 x pp 2 must give the greedy tokens of one GPU.
if [ "$GPUS" -ge 2 ]; then
  stamp "pp 2 on two GPUs against one"
  "$BUILD/bin/dsmath-make-model" --preset tiny --layers 4 --seed 3 --out "$BUILD/tiny4" > /dev/null
  ARGS=(generate --device cuda --model "$BUILD/tiny4" --prompt "1+1=" --max-new-tokens 16
    --temperature 0 --ignore-eos --format json)
  one=$("$BUILD/bin/dsmath-worker" "${ARGS[@]}")
  two=$(mpirun -np 2 --bind-to none "$BUILD/bin/dsmath-worker" "${ARGS[@]}" --pp 2) || status=1
  ids() { py -c 'import json, sys; print(json.loads(sys.stdin.read())["token_ids"])'; }
  if [ "$(ids <<< "$one")" = "$(ids <<< "$two")" ]; then
    echo "pp 2 on GPUs: same tokens as one GPU"
  else
    echo "FAIL: pp 2 on GPUs: $two, one GPU: $one"; status=1
  fi
fi

stamp "timings"
"$BUILD/bin/dsmath-make-model" --preset small --seed 0 --out "$BUILD/small" > /dev/null
"$BUILD/bin/dsmath-make-model" --preset deepseek-math-7b --seed 0 --out "$BUILD/7b" > /dev/null
RESULTS="$BUILD/gpu-timings.jsonl"
: > "$RESULTS"
for model in small 7b; do
  for batch in 1 32 256; do
    "$BUILD/bin/dsmath-bench-decode" --device cuda --kv-dtype bf16 --model "$BUILD/$model" \
      --batch "$batch" --prompt-tokens 128 --new-tokens 33 --format json >> "$RESULTS" || status=1
  done
  "$BUILD/bin/dsmath-bench-decode" --device cuda --kv-dtype bf16 --model "$BUILD/$model" \
    --batch 1 --prompt-tokens 2048 --new-tokens 1 --format json >> "$RESULTS" || status=1
done
py - "$RESULTS" <<'PY'
import json, sys
H200_GBPS, H200_TFLOPS = 4800.0, 990.0
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'model':>8} {'work':>22} {'tokens/s':>10} {'ms/step':>8} {'achieved':>14} {'of H200':>8}")
for r in rows:
    model = r["model"].rstrip("/").split("/")[-1]
    if r["decode_tokens_per_s"] > 0:
        ms = 1000.0 * r["batch"] / r["decode_tokens_per_s"]
        gbps = r["decode_weight_gb_per_s"]
        print(f"{model:>8} {'decode batch %d' % r['batch']:>22} {r['decode_tokens_per_s']:10.1f} "
              f"{ms:8.2f} {gbps:10.0f} GB/s {100 * gbps / H200_GBPS:7.1f}%")
    else:
        tf = r["prefill_tflops"]
        print(f"{model:>8} {'prefill %d tokens' % r['prompt_tokens']:>22} "
              f"{r['prefill_tokens_per_s']:10.0f} {'':>8} {tf:8.1f} TFLOP/s {100 * tf / H200_TFLOPS:7.1f}%")
print("goals: 7b decode batch 1 within 90% of the memory bound (~3.2 ms/token); prefill > 50% of peak")
PY
# The engine's overlap (step k+1 launched before step k's tokens reach the host): a batch job
# on `small`, where the host's share of a step is largest, with --overlap off, then on. The
# samples must be the same; the ratio of tokens/s is what overlapping the host's work gains.
stamp "overlap: a batch job on small with --overlap off, then on"
py -c 'import json
for i in range(48):
    print(json.dumps({"id": f"p{i}", "question": f"What is {i} + {7 * i}?", "answer": str(8 * i)}))' \
  > "$BUILD/overlap-problems.jsonl"
for mode in off on; do
  "$BUILD/bin/dsmath-worker" batch --device cuda --overlap "$mode" --model "$BUILD/small" \
    --input "$BUILD/overlap-problems.jsonl" --output "$BUILD/overlap-$mode.jsonl" --n 8 \
    --temperature 0.8 --seed 5 --max-new-tokens 96 --summary "$BUILD/overlap-$mode.json" \
    > /dev/null || status=1
done
py - "$BUILD" <<'PY' || status=1
import json, sys
d = sys.argv[1]
def samples(mode):
    rows = [json.loads(l) for l in open(f"{d}/overlap-{mode}.jsonl")]
    return sorted((r["id"], r["sample_index"], r["text"]) for r in rows)
speed = {m: json.load(open(f"{d}/overlap-{m}.json"))["overall"]["tokens_per_second"]
         for m in ("off", "on")}
print(f"overlap off {speed['off']:.0f} tokens/s, on {speed['on']:.0f} tokens/s: "
      f"{speed['on'] / speed['off']:.2f}x")
assert samples("off") == samples("on"), "--overlap on changed the samples"
print("overlap: the same samples")
PY

# The GPU machine's host CPU may be a Xeon with AMX, which no CPU session here has had: the tile
# path's tests, then the same CPU runs with it (default) and without (DSMATH_KERNELS_ISA).
if grep -qw amx_bf16 /proc/cpuinfo; then
  stamp "host CPU has AMX-BF16: the linear paths' tests and 7B on the CPU, AMX against AVX512-BF16"
  "$BUILD/bin/test_kernels" --gtest_brief=1 --gtest_filter='Amx*:Linear*' || status=1
  : > "$BUILD/cpu-amx.jsonl"
  for cap in "" avx512_bf16; do  # "": linear()'s own choice
    for work in "--prompt-tokens 256 --new-tokens 1" "--prompt-tokens 4 --new-tokens 4"; do
      # shellcheck disable=SC2086  # $work is two flags
      DSMATH_KERNELS_ISA=$cap "$BUILD/bin/dsmath-bench-decode" --model "$BUILD/7b" \
        --threads "$(nproc)" --batch 1 $work --format json | tail -1 >> "$BUILD/cpu-amx.jsonl" ||
        status=1
    done
  done
  py - "$BUILD/cpu-amx.jsonl" <<'PY'
import json, sys
for r in (json.loads(l) for l in open(sys.argv[1]) if l.strip()):
    if r["decode_tokens_per_s"] > 0:
        print(f"cpu {r['cpu_linear_path']:>12}: decode batch 1 {r['decode_tokens_per_s']:7.2f} tokens/s"
              f" ({r['decode_weight_gb_per_s']:.0f} GB/s)")
    else:
        print(f"cpu {r['cpu_linear_path']:>12}: prefill {r['prompt_tokens']} {r['prefill_tokens_per_s']:8.1f}"
              f" tokens/s ({r['prefill_tflops']:.2f} TFLOP/s)")
PY
fi

stamp "done (status $status)"
exit $status
