#!/usr/bin/env bash
# Load test (issue 12): a coordinator with a queue limit and one worker group on 127.0.0.1 (free
# ports), held at 200 concurrent streams for 60 s by dsmath-bench-serve. Every request must end
# OK or RESOURCE_EXHAUSTED within its deadline (none hangs); prints p50/p99 latency of the
# completed ones, and the RSS of the coordinator and of each rank at start, after a warm-up and
# at the end (flat after warm-up: the end within 10% + 16 MiB of the warm-up figure). Stops
# everything it started, whatever happens.
# Usage: benchmarks/load_test.sh [BUILD_DIR] [MODEL_DIR]
#        (defaults: build, tests/data/models/arith; STREAMS=200 SECONDS_=60 MAX_QUEUE=64 NP=2
#        KV_GIB=0.05)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MODEL=${2:-tests/data/models/arith}
BIN=$BUILD/bin
STREAMS=${STREAMS:-200} DURATION=${SECONDS_:-60} MAX_QUEUE=${MAX_QUEUE:-64} NP=${NP:-2}
# A small KV cache, so that the warm-up touches all of it: the cache commits pages as blocks are
# first written, and the prefix cache keeps freed blocks until the free list runs out, so a
# rank's RSS grows up to --kv-cache-gib by design before it is flat.
KV_GIB=${KV_GIB:-0.05}
# Two distinct loopback ports that no other process is handed meanwhile (tests/e2e/ports.py).
read -r PORT WORKER_PORT < <(PYTHONPATH=tests/e2e python3 -c 'from ports import *; print(*free_ports(2))')
LOG=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 -- "-$p" 2> /dev/null || kill -9 "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$LOG"
}
trap cleanup EXIT

setsid "$BIN/dsmath-coordinator" --model "$MODEL" --listen "127.0.0.1:$PORT" \
  --worker-listen "127.0.0.1:$WORKER_PORT" --max-queue "$MAX_QUEUE" 2> "$LOG/coordinator.log" &
COORDINATOR=$!
pids+=("$COORDINATOR")
ROOT=()
[ "$(id -u)" -ne 0 ] || ROOT=(--allow-run-as-root)
setsid mpirun "${ROOT[@]}" --oversubscribe --bind-to none -np "$NP" "$BIN/dsmath-worker" serve \
  --model "$MODEL" --coordinator "127.0.0.1:$WORKER_PORT" --threads 1 --kv-cache-gib "$KV_GIB" \
  > "$LOG/group.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do
  "$BIN/dsmath" health --server "127.0.0.1:$PORT" --service dsmath.v1.Generation > /dev/null 2>&1 && break
  sleep 0.5
done
"$BIN/dsmath" health --server "127.0.0.1:$PORT" --service dsmath.v1.Generation > /dev/null || {
  cat "$LOG/coordinator.log" "$LOG/group.log"; echo "load_test: the group did not join"; exit 1; }

rss() {  # "coordinator X MiB, rank 0 Y MiB, ..." from /proc
  local out="coordinator $(($(awk '/VmRSS/ { print $2 }' /proc/$COORDINATOR/status) / 1024)) MiB"
  local r=0
  for p in $(pgrep -f "dsmath-worker serve --model $MODEL --coordinator 127.0.0.1:$WORKER_PORT"); do
    [ "$(cat /proc/$p/comm)" = dsmath-worker ] || continue
    out="$out, rank $r $(($(awk '/VmRSS/ { print $2 }' /proc/$p/status) / 1024)) MiB"
    r=$((r + 1))
  done
  echo "$out"
}
echo "RSS at start:          $(rss)"
"$BIN/dsmath-bench-serve" --server "127.0.0.1:$PORT" --duration 20 --concurrency "$STREAMS" \
  --max-new-tokens 32 --deadline 120 > "$LOG/warmup.txt"
warm=$(rss)
echo "RSS after a 20 s warm-up: $warm"
status=0
"$BIN/dsmath-bench-serve" --server "127.0.0.1:$PORT" --duration "$DURATION" \
  --concurrency "$STREAMS" --max-new-tokens 32 --deadline 120 || status=1
end=$(rss)
echo "RSS at the end:        $end"
python3 - "$warm" "$end" <<'PY' || status=1
import re, sys
warm, end = ([int(x) for x in re.findall(r"(\d+) MiB", s)] for s in sys.argv[1:3])
grown = [(w, e) for w, e in zip(warm, end) if e > w * 1.1 + 16]
print("RSS flat after warm-up" if not grown else f"FAIL: RSS grew after warm-up (MiB): {grown}")
sys.exit(1 if grown else 0)
PY
echo "queue limit --max-queue $MAX_QUEUE; $(grep -c . "$LOG/coordinator.log") coordinator log lines"
[ "$status" -eq 0 ] && echo "PASS" || echo "FAIL"
exit "$status"
