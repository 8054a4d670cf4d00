#!/usr/bin/env bash
# Pipeline against tensor parallelism on this machine's 2 ranks, measured in one run:
#   for each preset and batch 1, 16, 64: decode tokens/s at tp 2 x pp 1, and at tp 1 x pp 2 with
#   one step at a time (--micro-batches 1) and with two micro-batches in flight (the engine's
#   default under --pp 2); the micro-batching speed-up; per-rank weight shard and peak RSS; and
#   the traffic per decoded token that a 2-node cluster would carry (stage boundary, all-reduce,
#   the sampled token back to the driver).
# Usage: benchmarks/pp_scaling.sh [BUILD_DIR] [PRESET...]   (default: build small)
# Models are made once under models/<preset> (deepseek-math-7b: 13.8 GB of disk).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/scaling_common.sh "$@"
MPIRUN=(mpirun --oversubscribe --allow-run-as-root --bind-to none -np 2)
THREADS=$((CORES / 2 > 0 ? CORES / 2 : 1))

for preset in "${PRESETS[@]}"; do
  model=$(model_of "$preset")
  if [ "$preset" = deepseek-math-7b ]; then steps=(--prompt-tokens 4 --new-tokens 4);
  else steps=(--prompt-tokens 16 --new-tokens 17); fi
  for batch in 1 16 64; do
    for config in "1 1" "2 1" "2 2"; do  # pp, micro-batches
      read -r pp mb <<< "$config"
      [ "$batch" -ge "$mb" ] || continue
      "${MPIRUN[@]}" "$BIN/dsmath-bench-decode" --model "$model" --batch $batch --threads $THREADS \
        --pp $pp --micro-batches $mb "${steps[@]}" --format json |
        sed "s/^{/{\"preset\":\"$preset\",/" >> "$OUT"
    done
  done
done

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'preset':18} {'batch':>5} {'tp x pp':>7} {'mb':>3} {'decode tok/s':>12} {'shard/rank GiB':>14} {'peak RSS/rank GiB':>17}")
for r in rows:
    print(f"{r['preset']:18} {r['batch']:>5} {str(r['tp'])+' x '+str(r['pp']):>7} {r['micro_batches']:>3} "
          f"{r['decode_tokens_per_s']:>12.2f} {max(r['shard_gib_per_rank']):>14.3f} {max(r['peak_rss_gib_per_rank']):>17.3f}")
print()
for preset in dict.fromkeys(r["preset"] for r in rows):
    for batch in (1, 16, 64):
        by = {(r["pp"], r["micro_batches"]): r for r in rows if r["preset"] == preset and r["batch"] == batch}
        if (2, 1) in by and (2, 2) in by:
            mb = by[(2, 2)]["decode_tokens_per_s"] / by[(2, 1)]["decode_tokens_per_s"]
            line = f"{preset} batch {batch}: pp 2 with 2 micro-batches / 1: {mb:.2f}x"
            if (1, 1) in by:
                line += f"; tp 1 x pp 2 (2 micro-batches) / tp 2 x pp 1: {by[(2, 2)]['decode_tokens_per_s'] / by[(1, 1)]['decode_tokens_per_s']:.2f}x"
            print(line)
    r2 = next(r for r in rows if r["preset"] == preset and r["pp"] == 2)
    r1 = next(r for r in rows if r["preset"] == preset and r["pp"] == 1)
    print(f"{preset} traffic per decoded token on a 2-node cluster: pp 2: {r2['boundary_bytes_per_token']:.0f} B of hidden "
          f"state per stage boundary + {r2['sampled_bytes_per_token']:.0f} B of sampled token back to the driver; "
          f"tp 2: {r1['all_reduce_bytes_per_token']:.0f} B of all-reduce payload over "
          f"{r1['all_reduce_bytes_per_token'] / r2['boundary_bytes_per_token']:.0f} all-reduces of the hidden state")
PY
