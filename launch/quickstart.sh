#!/usr/bin/env bash
# The main job on the built-in `small` model, from a fresh machine: install packages, build,
# write a random DeepSeekMath-shaped checkpoint, then
#   1. serve it: a dsmath-coordinator on 127.0.0.1 and a worker group of 2 tensor-parallel ranks
#      under mpirun that joins it; ask one math question with `dsmath generate` (streamed), show
#      the group's health and metrics, and stop both with SIGTERM;
#   2. run a small batch job (GSM8K/MATH-shaped problems, 2 samples each, graded, with a summary)
#      through a worker group directly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install-deps.sh
bash launch/build.sh
BIN=${DSMATH_BUILD_DIR:-build}/bin
MODEL=${DSMATH_MODEL:-models/small}
NP=${DSMATH_NP:-2}
MPIRUN=(mpirun -np "$NP" --oversubscribe --bind-to none)
[ "$(id -u)" -ne 0 ] || MPIRUN+=(--allow-run-as-root)
THREADS=$(( $(nproc) / NP > 0 ? $(nproc) / NP : 1 ))
PORT=${DSMATH_PORT:-50051} WORKER_PORT=${DSMATH_WORKER_PORT:-50052} METRICS_PORT=${DSMATH_METRICS_PORT:-9090}
SERVER=127.0.0.1:$PORT

if [ ! -f "$MODEL/config.json" ]; then
  "$BIN/dsmath-make-model" --preset small --seed 0 --out "$MODEL"
fi

echo "== serving: a coordinator on $SERVER and a worker group of $NP ranks (tp $NP) =="
"$BIN/dsmath-coordinator" --model "$MODEL" --listen "$SERVER" \
  --worker-listen "127.0.0.1:$WORKER_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" &
COORDINATOR=$!
"${MPIRUN[@]}" "$BIN/dsmath-worker" serve --model "$MODEL" --threads "$THREADS" \
  --coordinator "127.0.0.1:$WORKER_PORT" &
GROUP=$!
trap 'kill "$COORDINATOR" "$GROUP" 2> /dev/null || true' EXIT
for _ in $(seq 1 300); do  # the group loads its shards and registers
  "$BIN/dsmath" health --server "$SERVER" > /dev/null 2>&1 && break
  sleep 0.2
done
echo -n "health: " && "$BIN/dsmath" health --server "$SERVER"

echo "== one query (chat + chain-of-thought, greedy), streamed through the coordinator =="
"$BIN/dsmath" generate --server "$SERVER" --chat --cot --temperature 0 --max-new-tokens 32 \
  "What is the integral of x^2 from 0 to 2?"
echo "== the same with 2 samples, as JSON (text, token ids, finish reason, usage, timings) =="
"$BIN/dsmath" generate --server "$SERVER" --chat --temperature 0.7 --seed 1 --n 2 \
  --max-new-tokens 12 --format json "Find x if 2x + 3 = 11."
echo "== metrics (excerpt) =="
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$METRICS_PORT/metrics').read().decode())" |
  grep -E '^dsmath_(requests_total|generated_tokens_total|worker_groups|kv_blocks)'
echo "== stopping: SIGTERM drains the coordinator, which tells the group to exit =="
kill -TERM "$COORDINATOR"
wait "$COORDINATOR" "$GROUP"
trap - EXIT

echo "== a small batch job (4 problems x 2 samples, graded, resumable; tp $NP) =="
JOB=$(mktemp -d)
trap 'rm -rf "$JOB"' EXIT
cat > "$JOB/problems.jsonl" <<'JSONL'
{"id": "linear-1", "question": "Find x if 2x + 3 = 11.", "answer": "2x = 8, so x = 4.\n#### 4"}
{"id": "arith-1", "question": "What is 17 * 23?", "answer": "#### 391"}
{"id": "frac-1", "problem": "Simplify $\\frac{6}{8}$.", "solution": "$\\boxed{\\frac{3}{4}}$"}
{"id": "sum-1", "question": "请通过逐步推理来解答问题：1+2+...+10 = ?", "answer": "#### 55"}
JSONL
"${MPIRUN[@]}" "$BIN/dsmath-worker" batch --threads "$THREADS" --model "$MODEL" --chat --cot \
  --input "$JOB/problems.jsonl" --output "$JOB/samples.jsonl" --summary "$JOB/summary.json" \
  --n 2 --max-new-tokens 24 --temperature 0.7 --top-p 0.95 --seed 1
echo "-- samples.jsonl (one line per sample, written as each finishes):"
head -n 2 "$JOB/samples.jsonl"
echo "-- summary.json (overall; random weights, so 0% correct):"
python3 -c "import json; print(json.dumps(json.load(open('$JOB/summary.json'))['overall']))"
