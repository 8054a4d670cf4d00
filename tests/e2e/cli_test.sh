#!/usr/bin/env bash
# End-to-end: the command-line interfaces other programs are written against.
#   dsmath-make-model, dsmath-worker generate (text, json, --prompts-file, errors),
#   dsmath tokenize / detokenize.
set -euo pipefail
BIN=$1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
check() {  # check NAME COMMAND...: runs COMMAND, counts a failure when it fails
  local name=$1; shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}

"$BIN/dsmath-make-model" --preset tiny --seed 5 --out "$TMP/model" > /dev/null

"$BIN/dsmath-worker" generate --model "$TMP/model" --prompt "What is 1+1?" --chat --cot \
  --max-new-tokens 6 --temperature 0 --ignore-eos --logprobs --format json > "$TMP/one.json"
check "generate --format json has the documented fields" python3 - "$TMP/one.json" <<'PY'
import json, math, sys
j = json.load(open(sys.argv[1]))
assert set(j) >= {"text", "token_ids", "logprobs", "finish_reason", "prompt_tokens", "completion_tokens"}, j
assert j["finish_reason"] == "length" and j["completion_tokens"] == 6 == len(j["token_ids"]) == len(j["logprobs"])
assert all(lp <= 0 and math.isfinite(lp) for lp in j["logprobs"])
assert j["prompt_tokens"] > 10   # BOS + chat template + question + CoT instruction
PY

"$BIN/dsmath-worker" generate --model "$TMP/model" --prompt "What is 1+1?" --chat --cot \
  --max-new-tokens 6 --temperature 0 --ignore-eos > "$TMP/one.txt"
check "text format prints the same text" python3 - "$TMP/one.json" "$TMP/one.txt" <<'PY'
import json, sys
assert open(sys.argv[2]).read() == json.load(open(sys.argv[1]))["text"] + "\n"
PY

printf '%s\n' '{"prompt": "What is 3*3?"}' '"Let x = 2."' '"1+1="' '"1+1="' > "$TMP/prompts.jsonl"
"$BIN/dsmath-worker" generate --model "$TMP/model" --prompts-file "$TMP/prompts.jsonl" \
  --max-new-tokens 5 --temperature 0.8 --seed 3 --ignore-eos --format json > "$TMP/batch.jsonl"
"$BIN/dsmath-worker" generate --model "$TMP/model" --prompt "What is 3*3?" \
  --max-new-tokens 5 --temperature 0.8 --seed 3 --ignore-eos --format json > "$TMP/alone.json"
check "--prompts-file: one line per prompt, batch-invariant, a stream per line" python3 - "$TMP/batch.jsonl" "$TMP/alone.json" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 4 and all(l["completion_tokens"] == 5 for l in lines)
assert lines[0]["token_ids"] == json.load(open(sys.argv[2]))["token_ids"]  # line 0: stream 0, as alone
assert lines[2]["token_ids"] != lines[3]["token_ids"]  # the same prompt twice: two samples
PY

"$BIN/dsmath-worker" generate --model "$TMP/model" --prompt "What is 5+7?" --n 3 \
  --max-new-tokens 6 --temperature 1.0 --seed 2 --ignore-eos --format json > "$TMP/n3.jsonl"
check "--n 3: three different samples of one prompt, indexed" python3 - "$TMP/n3.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert [(l["prompt_index"], l["sample_index"]) for l in lines] == [(0, 0), (0, 1), (0, 2)], lines
assert len({tuple(l["token_ids"]) for l in lines}) == 3
PY

expect_error() {  # expect_error NAME PATTERN COMMAND...: must exit non-zero naming PATTERN
  local name=$1 pattern=$2; shift 2
  if "$@" > "$TMP/out" 2> "$TMP/err"; then echo "FAIL $name: exited 0"; fails=$((fails + 1));
  elif grep -q -- "$pattern" "$TMP/err"; then echo "ok   $name"; else
    echo "FAIL $name: stderr lacks '$pattern':"; cat "$TMP/err"; fails=$((fails + 1)); fi
}
expect_error "negative temperature is named" "temperature" \
  "$BIN/dsmath-worker" generate --model "$TMP/model" --prompt hi --temperature -1
expect_error "missing model directory is named" "nonexistent" \
  "$BIN/dsmath-worker" generate --model "$TMP/nonexistent" --prompt hi
expect_error "bad --prompts-file line is named" "prompts.bad:2" \
  bash -c "printf '\"a\"\n{oops\n' > '$TMP/prompts.bad' && '$BIN/dsmath-worker' generate --model '$TMP/model' --prompts-file '$TMP/prompts.bad'"

printf '%s\n' '"The integral of x^2 is x^3/3."' '""' '"请通过逐步推理"' > "$TMP/texts.jsonl"
"$BIN/dsmath" tokenize --model "$TMP/model" < "$TMP/texts.jsonl" > "$TMP/ids.jsonl"
"$BIN/dsmath" tokenize --model "$TMP/model" --no-special-tokens < "$TMP/texts.jsonl" > "$TMP/ids_plain.jsonl"
"$BIN/dsmath" detokenize --model "$TMP/model" < "$TMP/ids_plain.jsonl" > "$TMP/round.jsonl"
check "tokenize adds BOS, detokenize round-trips" python3 - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
ids = [json.loads(l) for l in open(d + "/ids.jsonl")]
plain = [json.loads(l) for l in open(d + "/ids_plain.jsonl")]
assert len(ids) == 3 and all(i[0] == 100000 and i[1:] == p for i, p in zip(ids, plain)), (ids, plain)
assert plain[1] == []
assert [json.loads(l) for l in open(d + "/round.jsonl")] == [json.loads(l) for l in open(d + "/texts.jsonl")]
PY

echo "$((8 - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
