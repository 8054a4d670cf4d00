#!/usr/bin/env bash
# End-to-end under mpirun: `dsmath-worker generate` gives the same tokens at -np 1, 2 and 4
# (sampled, a batch of prompts), and a tp that does not divide the model stops every rank
# with one clear message and a non-zero exit.
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

echo "$passed passed, $fails failed"
[ "$fails" -eq 0 ]
