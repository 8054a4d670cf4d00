#!/usr/bin/env bash
# The main job on the built-in `small` model, from a fresh machine:
# install packages, build, write a random DeepSeekMath-shaped checkpoint, then with a worker
# group of 2 tensor-parallel ranks under mpirun: answer one math question in the chat format
# and run a small batch of prompts (ids, per-line n) through the engine.
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

if [ ! -f "$MODEL/config.json" ]; then
  "$BIN/dsmath-make-model" --preset small --seed 0 --out "$MODEL"
fi

echo "== one query (chat + chain-of-thought, greedy; tp $NP) =="
"${MPIRUN[@]}" "$BIN/dsmath-worker" generate --threads "$THREADS" --model "$MODEL" --chat --cot \
  --prompt "What is the integral of x^2 from 0 to 2?" \
  --max-new-tokens 32 --temperature 0 --logprobs --format json

echo "== a small batch (4 prompts, sampled, 2 samples of the first; tp $NP) =="
PROMPTS=$(mktemp)
trap 'rm -f "$PROMPTS"' EXIT
cat > "$PROMPTS" <<'JSONL'
{"id": "linear-1", "prompt": "Find x if 2x + 3 = 11.", "n": 2}
{"id": "arith-1", "prompt": "What is 17 * 23?"}
{"id": "frac-1", "prompt": "Simplify \\frac{6}{8}.", "max_new_tokens": 12}
"请通过逐步推理来解答问题：1+2+...+10 = ?"
JSONL
"${MPIRUN[@]}" "$BIN/dsmath-worker" generate --threads "$THREADS" --model "$MODEL" --prompts-file "$PROMPTS" --chat --cot \
  --max-new-tokens 24 --temperature 0.7 --top-p 0.95 --seed 1 --format json
