#!/usr/bin/env bash
# End-to-end under mpirun: `dsmath-worker generate` gives the same tokens at -np 1, 2 and 4
# (sampled, a batch of prompts), with --overlap on and under --pp 2; a tp that does not divide
# the model, or a shard missing on one stage's node, stops every rank with one clear message and
# a non-zero exit.
set -euo pipefail
BIN=$1
MPIRUN=(mpirun --oversubscribe --allow-run-as-root --bind-to none)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0 passed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }

"$BIN/dsmath-make-model" --preset tiny --kv-heads 2 --seed 6 --format bin --shards 2 \
  --out "$TMP/model" > /dev/null
printf '%s\n' '"Let x = 2."' '{"prompt": "What is 3*3?"}' '"The integral of x^2 from 0 to 2 is"' \
  > "$TMP/prompts.jsonl"
for np in 1 2 4; do
  "${MPIRUN[@]}" -np $np "$BIN/dsmath-worker" generate --model "$TMP/model" --chat \
    --prompts-file "$TMP/prompts.jsonl" --max-new-tokens 8 --temperature 0.8 --top-k 50 \
    --seed 4 --ignore-eos --logprobs --format json --threads 1 > "$TMP/np$np.jsonl"
done
if python3 - "$TMP" <<'PY'
import json, sys
runs = {np: [json.loads(l) for l in open(f"{sys.argv[1]}/np{np}.jsonl")] for np in (1, 2, 4)}
assert all(len(r) == 3 for r in runs.values()), {k: len(v) for k, v in runs.items()}
for np in (2, 4):
    for a, b in zip(runs[1], runs[np]):
        assert a["token_ids"] == b["token_ids"], (np, a["token_ids"], b["token_ids"])
        assert max(abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"])) < 1e-3
PY
then ok "same tokens at -np 1, 2, 4"; else bad "same tokens at -np 1, 2, 4"; fi

# --overlap on (each step launched before the last one's tokens are back): the same tokens.
"${MPIRUN[@]}" -np 2 "$BIN/dsmath-worker" generate --model "$TMP/model" --chat --overlap on \
  --prompts-file "$TMP/prompts.jsonl" --max-new-tokens 8 --temperature 0.8 --top-k 50 \
  --seed 4 --ignore-eos --logprobs --format json --threads 1 > "$TMP/overlap2.jsonl"
if python3 - "$TMP" <<'PY'
import json, sys
one = [json.loads(l) for l in open(f"{sys.argv[1]}/np1.jsonl")]
ahead = [json.loads(l) for l in open(f"{sys.argv[1]}/overlap2.jsonl")]
assert [r["token_ids"] for r in ahead] == [r["token_ids"] for r in one]
PY
then ok "--overlap on at -np 2: the tokens of one process"; else bad "--overlap on tokens"; fi
if timeout 120 "${MPIRUN[@]}" -np 2 "$BIN/dsmath-worker" generate --model "$TMP/model" --pp 2 \
    --overlap on --prompt hi --threads 1 > /dev/null 2> "$TMP/err"; then
  bad "--overlap on with --pp 2: exited 0"
elif grep -q -- "--overlap on needs --pp 1" "$TMP/err"; then
  ok "--overlap on with --pp 2 is refused by name"
else
  bad "--overlap on with --pp 2: message missing"; cat "$TMP/err"
fi

# Pipeline stages: --pp 2 at -np 2 (tp 1 x pp 2) and -np 4 (tp 2 x pp 2), two micro-batches in
# flight, give the tokens of one process.
for np in 2 4; do
  "${MPIRUN[@]}" -np $np "$BIN/dsmath-worker" generate --model "$TMP/model" --chat --pp 2 \
    --prompts-file "$TMP/prompts.jsonl" --max-new-tokens 8 --temperature 0.8 --top-k 50 \
    --seed 4 --ignore-eos --logprobs --format json --threads 1 > "$TMP/pp$np.jsonl"
done
if python3 - "$TMP" <<'PY'
import json, sys
one = [json.loads(l) for l in open(f"{sys.argv[1]}/np1.jsonl")]
for np in (2, 4):
    pp = [json.loads(l) for l in open(f"{sys.argv[1]}/pp{np}.jsonl")]
    assert [r["token_ids"] for r in pp] == [r["token_ids"] for r in one], np
    for a, b in zip(one, pp):
        assert max(abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"])) < 1e-3
PY
then ok "--pp 2 at -np 2 and 4: the tokens of one process"; else bad "--pp 2 tokens"; fi

# Four stages of one layer each (tp 1 x pp 4), against one process on the same 4-layer model.
"$BIN/dsmath-make-model" --preset tiny --layers 4 --kv-heads 2 --seed 8 --out "$TMP/model4" > /dev/null
for np in 1 4; do
  pp=$np
  "${MPIRUN[@]}" -np $np "$BIN/dsmath-worker" generate --model "$TMP/model4" --chat --pp $pp \
    --prompts-file "$TMP/prompts.jsonl" --max-new-tokens 8 --temperature 0.8 --top-k 50 \
    --seed 4 --ignore-eos --logprobs --format json --threads 1 > "$TMP/l4np$np.jsonl"
done
if python3 - "$TMP" <<'PY'
import json, sys
one, pp4 = ([json.loads(l) for l in open(f"{sys.argv[1]}/l4np{np}.jsonl")] for np in (1, 4))
assert len(one) == 3 and [r["token_ids"] for r in pp4] == [r["token_ids"] for r in one]
for a, b in zip(one, pp4):
    assert max(abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"])) < 1e-3
PY
then ok "--pp 4 at -np 4: the tokens of one process"; else bad "--pp 4 tokens"; fi

# A stage whose node lacks a shard of the checkpoint (here: rank 1's copy misses one file) stops
# every rank with the message naming the file, rather than leaving stage 0 waiting.
cp -r "$TMP/model" "$TMP/partial"
missing=$(cd "$TMP/partial" && ls pytorch_model-*-of-*.bin | tail -1)
rm "$TMP/partial/$missing"
if timeout 120 "${MPIRUN[@]}" -np 1 "$BIN/dsmath-worker" generate --model "$TMP/model" --pp 2 \
    --prompt hi --threads 1 : -np 1 "$BIN/dsmath-worker" generate --model "$TMP/partial" --pp 2 \
    --prompt hi --threads 1 > /dev/null 2> "$TMP/err"; then
  bad "missing shard on stage 1: exited 0"
elif [ "$(grep -c "$missing" "$TMP/err")" -ge 1 ] && grep -q "rank 1" "$TMP/err"; then
  ok "a shard missing on one stage's node stops every rank with the message"
else
  bad "missing shard on stage 1: message missing (exit status or hang)"; cat "$TMP/err"
fi

# One attention head cannot be split over 2 ranks.
cp -r "$TMP/model" "$TMP/bad"
python3 - "$TMP/bad/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["num_attention_heads"] = 1; c["num_key_value_heads"] = 1
json.dump(c, open(sys.argv[1], "w"))
PY
if timeout 120 "${MPIRUN[@]}" -np 2 "$BIN/dsmath-worker" generate --model "$TMP/bad" \
    --prompt hi > /dev/null 2> "$TMP/err"; then
  bad "bad tp: exited 0"
elif grep -q "does not divide num_attention_heads" "$TMP/err"; then
  ok "bad tp stops every rank with the message"
else
  bad "bad tp: message missing"; cat "$TMP/err"
fi

# Threads per rank follow mpirun's binding: ranks x threads never exceed the cores a node gives.
# --bind-to none: the ranks split the node's cores; --bind-to core: one core, one thread each;
# asking for more than the share is cut to it with a warning.
CORES=$(nproc)
threads_of() {  # NP BIND [--threads N]: the thread count dsmath-bench-decode reports on rank 0
  local np=$1 bind=$2
  shift 2
  mpirun --oversubscribe --allow-run-as-root --bind-to "$bind" -np "$np" "$BIN/dsmath-bench-decode" \
    --model "$TMP/model" --prompt-tokens 2 --new-tokens 2 --format json "$@" 2>> "$TMP/threads.err" |
    python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["threads"])'
}
if [ ! -x "$BIN/dsmath-bench-decode" ]; then
  # Sanitizer builds leave the benchmarks out (-DDSMATH_BUILD_BENCHMARKS=OFF).
  echo "skip threads per rank: $BIN/dsmath-bench-decode is not built"
else
  want=$((CORES / 2 > 0 ? CORES / 2 : 1))
  got=$(threads_of 2 none)
  [ "$got" = "$want" ] && ok "--bind-to none, 2 ranks: $got threads each" ||
    bad "--bind-to none, 2 ranks: $got threads, want $want"
  if [ "$CORES" -ge 2 ]; then
    got=$(threads_of 2 core)
    [ "$got" = 1 ] && ok "--bind-to core: 1 thread per rank" || bad "--bind-to core: $got threads"
    got=$(threads_of 2 core --threads 4)
    if [ "$got" = 1 ] && grep -q "more than this rank's share of cores" "$TMP/threads.err"; then
      ok "--threads beyond the binding is cut to it, with a warning"
    else
      bad "--threads 4 under --bind-to core: $got threads"; cat "$TMP/threads.err"
    fi
  fi
  # --read-bound: decode steps in turns with plain reads of the same weights, on one rank only.
  turns=$("$BIN/dsmath-bench-decode" --model "$TMP/model" --prompt-tokens 2 --new-tokens 2 \
    --read-bound 3 --format json 2> "$TMP/read.err" | python3 -c 'import json, sys
r = json.loads(sys.stdin.read())["read_bound"]
print(r["turns"] if min(r["read_gb_per_s"], r["decode_weight_gb_per_s"], r["decode_of_read"]) > 0 else 0)')
  [ "$turns" = 3 ] && ok "--read-bound 3: three timed turns of decode and read" ||
    { bad "--read-bound 3: '$turns'"; cat "$TMP/read.err"; }
  if mpirun --oversubscribe --allow-run-as-root -np 2 "$BIN/dsmath-bench-decode" --model "$TMP/model" \
    --read-bound 2 > "$TMP/read2.out" 2>&1; then
    bad "--read-bound at 2 ranks ran"
  else
    grep -q -- "--read-bound times one rank" "$TMP/read2.out" && ok "--read-bound at 2 ranks: refused by name" ||
      { bad "--read-bound at 2 ranks: no message naming the flag"; cat "$TMP/read2.out"; }
  fi
fi

echo "$passed passed, $fails failed"
[ "$fails" -eq 0 ]
