#!/usr/bin/env bash
# The main job on the built-in model, from a fresh machine: install packages, build, then
#   1. serve the model: a dsmath-coordinator on 127.0.0.1 and a worker group of 2 tensor-parallel
#      ranks under mpirun that joins it; ask arithmetic questions with `dsmath generate`
#      (streamed; the answer is boxed), show the group's health and metrics, stop both (SIGTERM);
#   2. run a small batch job (50 held-out problems x 4 samples, graded, with a summary: accuracy,
#      maj@4, pass@4) through a worker group directly.
# The built-in model is tests/data/models/arith: a small LlamaForCausalLM with the DeepSeekMath
# tokenizer and chat format, trained (tools/train_arith.py) to add and subtract numbers up to
# 99. DSMATH_MODEL=DIR runs the same on any checkpoint (e.g. a DeepSeekMath 7B download).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install-deps.sh
bash launch/build.sh
BIN=${DSMATH_BUILD_DIR:-build}/bin
MODEL=${DSMATH_MODEL:-tests/data/models/arith}
NP=${DSMATH_NP:-2}
MPIRUN=(mpirun -np "$NP" --oversubscribe --bind-to none)
[ "$(id -u)" -ne 0 ] || MPIRUN+=(--allow-run-as-root)
THREADS=$(( $(nproc) / NP > 0 ? $(nproc) / NP : 1 ))
PORT=${DSMATH_PORT:-50051} WORKER_PORT=${DSMATH_WORKER_PORT:-50052} METRICS_PORT=${DSMATH_METRICS_PORT:-9090}
SERVER=127.0.0.1:$PORT

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
"$BIN/dsmath" generate --server "$SERVER" --chat --cot --temperature 0 --max-new-tokens 64 \
  "What is 37 + 45?"
echo "== 2 samples at temperature 0.7, as JSON (texts, token ids, finish and stop reasons, usage, timings) =="
"$BIN/dsmath" generate --server "$SERVER" --chat --cot --temperature 0.7 --seed 1 --n 2 \
  --max-new-tokens 64 --format json "What is 81 minus 27?"
echo "== metrics (excerpt) =="
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$METRICS_PORT/metrics').read().decode())" |
  grep -E '^dsmath_(requests_total|generated_tokens_total|worker_groups|kv_blocks)'
echo "== stopping: SIGTERM drains the coordinator, which tells the group to exit =="
kill -TERM "$COORDINATOR"
wait "$COORDINATOR" "$GROUP"
trap - EXIT

echo "== a batch job: 50 held-out problems x 4 samples, graded, resumable; tp $NP =="
JOB=$(mktemp -d)
trap 'rm -rf "$JOB"' EXIT
head -n 50 tests/data/models/arith/heldout.jsonl > "$JOB/problems.jsonl"
"${MPIRUN[@]}" "$BIN/dsmath-worker" batch --threads "$THREADS" --model "$MODEL" --chat --cot \
  --input "$JOB/problems.jsonl" --output "$JOB/samples.jsonl" --summary "$JOB/summary.json" \
  --n 4 --max-new-tokens 64 --temperature 0.7 --seed 1
echo "-- samples.jsonl (one line per sample, written as each finishes):"
head -n 2 "$JOB/samples.jsonl"
echo "-- summary.json (overall):"
python3 - "$JOB/summary.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))["overall"]
print(json.dumps(o))
print(f"accuracy {o['mean_accuracy']:.1%}, maj@{o['k']} {o['maj@k']:.1%}, pass@{o['k']} {o['pass@k']:.1%}")
PY
