#!/usr/bin/env bash
# A batch job end to end on this machine, in one run: PROBLEMS GSM8K-shaped problems, N samples
# each, with the GSM8K 8-shot template (a ~800-token prefix shared by every prompt), at tp 1 and
# tp 2, with the prefix cache on and off. Prints samples/s, generated tokens/s and the job's
# wall time per configuration, and the prefix cache's speed-up at each tp.
# Usage: benchmarks/batch_bench.sh [BUILD_DIR] [MODEL_DIR]   (defaults: build, models/small)
# Environment: PROBLEMS (200), N (8), MAX_NEW_TOKENS (64)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MODEL=${2:-models/small}
BIN=$BUILD/bin
PROBLEMS=${PROBLEMS:-200} N=${N:-8} MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64}
[ -f "$MODEL/config.json" ] || "$BIN/dsmath-make-model" --preset small --seed 0 --out "$MODEL"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 - "$PROBLEMS" > "$TMP/problems.jsonl" <<'PY'
import json, random, sys
rng = random.Random(0)
for i in range(int(sys.argv[1])):
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
    q = f"Tom has {a} marbles. He buys {c} bags with {b} marbles each. How many marbles does he have now?"
    print(json.dumps({"id": f"q{i}", "question": q, "answer": f"{a} + {c} * {b}\n#### {a + c * b}"}))
PY
MPIRUN=(mpirun --oversubscribe --bind-to none)
[ "$(id -u)" -ne 0 ] || MPIRUN+=(--allow-run-as-root)
echo "== $PROBLEMS problems x n $N, $MAX_NEW_TOKENS new tokens, GSM8K 8-shot, $MODEL, $(nproc) cores"
declare -A WALL
for np in 1 2; do
  for cache in on off; do
    flags=()
    [ "$cache" = on ] || flags=(--no-prefix-cache)
    out="$TMP/out-$np-$cache.jsonl"
    "${MPIRUN[@]}" -np $np "$BIN/dsmath-worker" batch --model "$MODEL" --threads $(( $(nproc) / np )) \
      --input "$TMP/problems.jsonl" --output "$out" --template launch/templates/gsm8k-8shot.json \
      --n "$N" --temperature 0.7 --top-p 0.95 --seed 1 --max-new-tokens "$MAX_NEW_TOKENS" \
      --summary "$out.summary" "${flags[@]}" 2> /dev/null
    read -r sps tps secs < <(python3 -c "import json; o=json.load(open('$out.summary'))['overall']; print(o['samples_per_second'], o['tokens_per_second'], o['seconds'])")
    WALL[$np-$cache]=$secs
    printf 'tp %d, prefix cache %-3s: %8.2f samples/s %9.1f tok/s  %7.1f s\n' "$np" "$cache" "$sps" "$tps" "$secs"
  done
  printf 'tp %d: prefix cache speed-up %.2fx\n' "$np" "$(python3 -c "print(${WALL[$np-off]} / ${WALL[$np-on]})")"
done
