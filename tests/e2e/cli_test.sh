#!/usr/bin/env bash
# End-to-end: the command-line interfaces other programs are written against.
#   dsmath-make-model, dsmath-worker generate (text, json, --prompts-file with per-line
#   overrides and ids, --stop, --stop-token-id, EOS, engine flags, errors),
#   dsmath tokenize / detokenize.
set -euo pipefail
BIN=$1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0 passes=0
check() {  # check NAME COMMAND...: runs COMMAND, counts a pass or a failure
  local name=$1; shift
  if "$@"; then echo "ok   $name"; passes=$((passes + 1)); else echo "FAIL $name"; fails=$((fails + 1)); fi
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
assert lines[0]["token_ids"] == json.load(open(sys.argv[2]))["token_ids"]  # key "1", as --prompt
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
  elif grep -q -- "$pattern" "$TMP/err"; then echo "ok   $name"; passes=$((passes + 1)); else
    echo "FAIL $name: stderr lacks '$pattern':"; cat "$TMP/err"; fails=$((fails + 1)); fi
}
expect_error "negative temperature is named" "temperature" \
  "$BIN/dsmath-worker" generate --model "$TMP/model" --prompt hi --temperature -1
expect_error "missing model directory is named" "nonexistent" \
  "$BIN/dsmath-worker" generate --model "$TMP/nonexistent" --prompt hi
expect_error "bad --prompts-file line is named" "prompts.bad:2" \
  bash -c "printf '\"a\"\n{oops\n' > '$TMP/prompts.bad' && '$BIN/dsmath-worker' generate --model '$TMP/model' --prompts-file '$TMP/prompts.bad'"

expect_error "unknown --prompts-file field is named with its line" 'prompts.unknown:1: unknown field "temprature"' \
  bash -c "printf '{\"prompt\": \"a\", \"temprature\": 1}\n' > '$TMP/prompts.unknown' && '$BIN/dsmath-worker' generate --model '$TMP/model' --prompts-file '$TMP/prompts.unknown'"
expect_error "duplicate ids are named" 'used by an earlier line' \
  bash -c "printf '{\"prompt\": \"a\", \"id\": \"x\"}\n{\"prompt\": \"b\", \"id\": \"x\"}\n' > '$TMP/prompts.dup' && '$BIN/dsmath-worker' generate --model '$TMP/model' --prompts-file '$TMP/prompts.dup'"

# Stop conditions, on a greedy run's own tokens and text.
GEN=("$BIN/dsmath-worker" generate --model "$TMP/model" --prompt "Compute 12*12." --temperature 0 --ignore-eos --format json)
"${GEN[@]}" --max-new-tokens 12 > "$TMP/free.json"
read -r THIRD STOP_STR < <(python3 - "$TMP/free.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
text = j["text"]
print(j["token_ids"][2], json.dumps(text[len(text) // 2: len(text) // 2 + 3]))
PY
)
"${GEN[@]}" --max-new-tokens 12 --stop-token-id "$THIRD" > "$TMP/stop_token.json"
check "--stop-token-id ends at that token" python3 - "$TMP/free.json" "$TMP/stop_token.json" "$THIRD" <<'PY'
import json, sys
free, got, third = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
first = free["token_ids"].index(third)
assert got["token_ids"] == free["token_ids"][:first + 1], got
assert got["finish_reason"] == "stop" and got["stop_reason"] == third, got
PY
"${GEN[@]}" --max-new-tokens 12 --stop "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]))' "$STOP_STR")" > "$TMP/stop_str.json"
check "--stop ends the text before the stop string" python3 - "$TMP/free.json" "$TMP/stop_str.json" "$STOP_STR" <<'PY'
import json, sys
free, got, stop = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), json.loads(sys.argv[3])
assert got["text"] == free["text"][:free["text"].index(stop)], (got["text"], stop)
assert got["finish_reason"] == "stop" and got["stop_reason"] == stop, got
assert len(got["token_ids"]) < len(free["token_ids"])
PY
cp -r "$TMP/model" "$TMP/eos_model"
python3 - "$TMP/eos_model/generation_config.json" "$THIRD" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["eos_token_id"] = int(sys.argv[2]); json.dump(c, open(sys.argv[1], "w"))
PY
"$BIN/dsmath-worker" generate --model "$TMP/eos_model" --prompt "Compute 12*12." --temperature 0 \
  --max-new-tokens 12 --format json > "$TMP/eos.json"
check "EOS (generation_config.json) ends the sample" python3 - "$TMP/free.json" "$TMP/eos.json" "$THIRD" <<'PY'
import json, sys
free, got, third = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
assert got["token_ids"] == free["token_ids"][:free["token_ids"].index(third) + 1], got
assert got["finish_reason"] == "stop" and got["stop_reason"] == third, got
PY

# Per-line overrides and ids; the key (id or line number) fixes the samples whatever the order.
printf '%s\n' '{"id": "b", "prompt": "What is 3*3?", "n": 2, "temperature": 0.9, "seed": 7}' \
  '{"prompt": "1+1=", "max_new_tokens": 3}' '{"id": 17, "prompt": "x", "stop": ["\n"], "top_k": 5}' \
  > "$TMP/over.jsonl"
printf '%s\n' '{"id": 17, "prompt": "x", "stop": ["\n"], "top_k": 5}' \
  '{"id": "b", "prompt": "What is 3*3?", "n": 2, "temperature": 0.9, "seed": 7}' > "$TMP/reordered.jsonl"
for f in over reordered; do
  "$BIN/dsmath-worker" generate --model "$TMP/model" --prompts-file "$TMP/$f.jsonl" \
    --max-new-tokens 6 --ignore-eos --format json --max-step-tokens 8 > "$TMP/$f.out"
done
"$BIN/dsmath-worker" generate --model "$TMP/model" --prompts-file "$TMP/over.jsonl" \
  --max-new-tokens 6 --ignore-eos --format json --no-prefix-cache > "$TMP/over_nocache.out"
check "--prompts-file overrides, ids and keys" python3 - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
over = [json.loads(l) for l in open(d + "/over.out")]
assert [(l.get("id"), l.get("sample_index")) for l in over] == [("b", 0), ("b", 1), (None, None), (17, None)], over
assert len(over[2]["token_ids"]) == 3 and len(over[0]["token_ids"]) == 6
assert over[0]["token_ids"] != over[1]["token_ids"]
re = {(l["id"], l.get("sample_index")): l["token_ids"] for l in map(json.loads, open(d + "/reordered.out"))}
assert re[("b", 0)] == over[0]["token_ids"] and re[("b", 1)] == over[1]["token_ids"] and re[(17, None)] == over[3]["token_ids"]
nocache = [json.loads(l) for l in open(d + "/over_nocache.out")]
assert [l["token_ids"] for l in nocache] == [l["token_ids"] for l in over]
PY

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

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
