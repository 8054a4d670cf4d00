#!/usr/bin/env bash
# Serving through gRPC, measured in one run on this machine: starts a coordinator and one worker
# group (tp NP) on the model, then
#   - dsmath-bench-serve: N requests at concurrency C (requests/s, generated tokens/s, TTFT and
#     inter-token p50/p99), the same requests one at a time (the continuous-batching speed-up),
#     and one long greedy stream's decode rate;
#   - `dsmath-worker generate` on the same prompt, greedy, K tokens and 1 token: its decode rate
#     is (K - 1) / (time(K) - time(1)), which leaves out loading and the prefill;
# and prints the single-stream ratio gRPC / offline (goal: at least 0.95).
# With 2 or more cores the worker group gets all cores but the last in both runs (taskset), and
# the coordinator and the load generator get the last one, as they would have cores (or hosts)
# of their own in a deployment; on 2 cores, sharing them would measure CPU contention instead.
# Usage: benchmarks/serve_bench.sh [BUILD_DIR] [MODEL_DIR]   (defaults: build, models/small)
# Environment: NP (1), REQUESTS (64), CONCURRENCY (16), MAX_NEW_TOKENS (64), STREAM_TOKENS (256)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MODEL=${2:-models/small}
BIN=$BUILD/bin
NP=${NP:-1} REQUESTS=${REQUESTS:-64} CONCURRENCY=${CONCURRENCY:-16}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64} STREAM_TOKENS=${STREAM_TOKENS:-256}
MPIRUN=(mpirun -np "$NP" --oversubscribe --bind-to none)
[ "$(id -u)" -ne 0 ] || MPIRUN+=(--allow-run-as-root)
CORES=$(nproc)
PIN_GROUP=() PIN_FRONT=()
if [ "$CORES" -ge 2 ]; then
  PIN_GROUP=(taskset -c "0-$((CORES - 2))") PIN_FRONT=(taskset -c "$((CORES - 1))")
  GROUP_CORES=$((CORES - 1))
else
  GROUP_CORES=1
fi
THREADS=${THREADS:-$(( GROUP_CORES / NP > 0 ? GROUP_CORES / NP : 1 ))}
[ -f "$MODEL/config.json" ] || "$BIN/dsmath-make-model" --preset small --seed 0 --out "$MODEL"

calc() { python3 -c "print($1)"; }
# Two distinct loopback ports that no other process is handed meanwhile (tests/e2e/ports.py).
read -r PORT WPORT < <(PYTHONPATH=tests/e2e python3 -c 'from ports import *; print(*free_ports(2))')
LOG=$(mktemp -d)
cleanup() { kill "$COORD" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$LOG"; }
trap cleanup EXIT
"${PIN_FRONT[@]}" "$BIN/dsmath-coordinator" --model "$MODEL" --listen 127.0.0.1:$PORT \
  --worker-listen 127.0.0.1:$WPORT 2> "$LOG/coordinator.log" &
COORD=$!
"${PIN_GROUP[@]}" "${MPIRUN[@]}" "$BIN/dsmath-worker" serve --model "$MODEL" --coordinator 127.0.0.1:$WPORT \
  --threads "$THREADS" 2> "$LOG/group.log" &
for _ in $(seq 1 300); do
  "$BIN/dsmath" health --server 127.0.0.1:$PORT > /dev/null 2>&1 && break
  sleep 0.2
done
"$BIN/dsmath" health --server 127.0.0.1:$PORT > /dev/null || { cat "$LOG"/*.log; exit 1; }

echo "== $MODEL, tp $NP, $THREADS thread(s) per rank, $CORES cores (group: ${PIN_GROUP[*]:-all})"
OUT=$("${PIN_FRONT[@]}" "$BIN/dsmath-bench-serve" --server 127.0.0.1:$PORT --requests "$REQUESTS" \
  --concurrency "$CONCURRENCY" --max-new-tokens "$MAX_NEW_TOKENS" --compare-sequential \
  --single-stream-tokens "$STREAM_TOKENS")
echo "$OUT"
GRPC_RATE=$(echo "$OUT" | sed -n 's/^single stream through gRPC: \([0-9.]*\) tok\/s.*/\1/p')
kill -TERM "$COORD"; wait "$COORD" || true  # the group exits with it

PROMPT="Problem 0: what is 0 + 0?"
offline() {
  local t0 t1
  t0=$(date +%s.%N)
  "${PIN_GROUP[@]}" "${MPIRUN[@]}" "$BIN/dsmath-worker" generate --model "$MODEL" --threads "$THREADS" \
    --prompt "$PROMPT" --max-new-tokens "$1" --temperature 0 --ignore-eos > /dev/null
  t1=$(date +%s.%N)
  calc "$t1 - $t0"
}
# Best of two for each: a process run is noisier than a stream.
T1=$(calc "min($(offline 1), $(offline 1))")
TK=$(calc "min($(offline "$STREAM_TOKENS"), $(offline "$STREAM_TOKENS"))")
OFFLINE_RATE=$(calc "($STREAM_TOKENS - 1) / ($TK - $T1)")
printf 'single stream offline (dsmath-worker generate): %.1f tok/s decode\n' "$OFFLINE_RATE"
printf 'single-stream ratio gRPC / offline: %.3f (goal >= 0.95)\n' \
  "$(calc "$GRPC_RATE / $OFFLINE_RATE")"
