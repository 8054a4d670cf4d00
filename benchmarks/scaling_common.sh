# Sourced by tp_scaling.sh and pp_scaling.sh (from the repository root, with their arguments):
# [BUILD_DIR] [PRESET...] -> BUILD, PRESETS (default: small), BIN, CORES; OUT, a results file
# removed on exit; model_of PRESET prints models/<preset>, made once (deepseek-math-7b: 13.8 GB).
BUILD=${1:-build}
shift || true
PRESETS=("$@")
[ ${#PRESETS[@]} -gt 0 ] || PRESETS=(small)
BIN=$BUILD/bin
CORES=$(nproc)
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

model_of() {
  local model=models/$1
  [ -f "$model/config.json" ] ||
    "$BIN/dsmath-make-model" --preset "$1" --seed 0 --out "$model" >&2
  echo "$model"
}
