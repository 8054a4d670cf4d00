#!/usr/bin/env bash
# Tensor-parallel scaling on this machine, measured in one run:
#   for each preset: decode tokens/s at batch 1 and 16 with tp 1 (1 rank x all cores) and
#   tp 2 (2 ranks x half the cores each), the ratio tp2/tp1, and per-rank peak RSS
#   (tp 2 should hold at most ~55% of tp 1's weight bytes per rank).
# Usage: benchmarks/tp_scaling.sh [BUILD_DIR] [PRESET...]   (default: build small)
# Models are made once under models/<preset> (deepseek-math-7b: 13.8 GB of disk).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/scaling_common.sh "$@"
MPIRUN=(mpirun --oversubscribe --allow-run-as-root --bind-to none)

for preset in "${PRESETS[@]}"; do
  model=$(model_of "$preset")
  if [ "$preset" = deepseek-math-7b ]; then steps=(--prompt-tokens 4 --new-tokens 4);
  else steps=(--prompt-tokens 32 --new-tokens 24); fi
  for batch in 1 16; do
    for tp in 1 2; do
      threads=$((CORES / tp > 0 ? CORES / tp : 1))
      "${MPIRUN[@]}" -np $tp "$BIN/dsmath-bench-decode" --model "$model" --batch $batch \
        --threads $threads "${steps[@]}" --format json | sed "s/^{/{\"preset\":\"$preset\",/" >> "$OUT"
    done
  done
done

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'preset':18} {'batch':>5} {'tp x thr':>8} {'decode tok/s':>12} {'prefill tok/s':>13} {'shard/rank GiB':>14} {'peak RSS/rank GiB':>18} {'weights GiB':>11}")
for r in rows:
    rss = max(r["peak_rss_gib_per_rank"])
    print(f"{r['preset']:18} {r['batch']:>5} {str(r['tp'])+' x '+str(r['threads']):>8} {r['decode_tokens_per_s']:>12.2f} {r['prefill_tokens_per_s']:>13.1f} {max(r['shard_gib_per_rank']):>14.3f} {rss:>18.3f} {r['weight_gib']:>11.3f}")
print()
for preset in dict.fromkeys(r["preset"] for r in rows):
    for batch in (1, 16):
        by_tp = {r["tp"]: r for r in rows if r["preset"] == preset and r["batch"] == batch}
        if 1 in by_tp and 2 in by_tp:
            speed = by_tp[2]["decode_tokens_per_s"] / by_tp[1]["decode_tokens_per_s"]
            mem = max(by_tp[2]["peak_rss_gib_per_rank"]) / max(by_tp[1]["peak_rss_gib_per_rank"])
            shard = max(by_tp[2]["shard_gib_per_rank"]) / max(by_tp[1]["shard_gib_per_rank"])
            print(f"{preset} batch {batch}: tp2/tp1 decode speed {speed:.2f}x, per-rank weight shard tp2/tp1 {shard:.2f}, per-rank peak RSS tp2/tp1 {mem:.2f}")
PY
