#!/usr/bin/env bash
# A tp 1 x pp 2 worker group whose two stages run in different network namespaces joined by a
# veth pair: mpirun runs in namespace A, its rsh agent (netns_rsh.sh) starts the second rank in
# namespace B, and MPI is limited to TCP on the veth subnet, so the stage-to-stage activations
# and the logits cross real TCP. Its greedy tokens must equal one process's, and the bytes
# counted on the veth must cover at least the activations sent.
#   netns_pp_test.sh BIN_DIR       (exits 77, reported as skipped, when not root or without netns)
set -euo pipefail
BIN=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
MODEL="$SRC/tests/data/models/arith"

skip() { echo "SKIPPED: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
command -v ip > /dev/null || skip "no ip(8) (iproute2)"

export DSMATH_NETNS_PREFIX="dsmath-t$$-"
A="${DSMATH_NETNS_PREFIX}a" B="${DSMATH_NETNS_PREFIX}b"
NET="10.213.$(($$ % 250)).0"
cleanup() { ip netns del "$A" 2> /dev/null || true; ip netns del "$B" 2> /dev/null || true; }
trap cleanup EXIT
ip netns add "$A" 2> /dev/null || skip "cannot create network namespaces here"
ip netns add "$B"
ip link add "vt$$a" type veth peer name "vt$$b" || skip "cannot create a veth pair here"
ip link set "vt$$a" netns "$A"
ip link set "vt$$b" netns "$B"
ip -n "$A" addr add "${NET%.0}.1/24" dev "vt$$a"
ip -n "$B" addr add "${NET%.0}.2/24" dev "vt$$b"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "vt$$a" up
ip -n "$B" link set "vt$$b" up

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
WORKER_ARGS=(--chat --cot en --prompt "What is 38 plus 45?" --max-new-tokens 40)
ARGS=(generate --model "$MODEL" "${WORKER_ARGS[@]}")
expected=$("$BIN/dsmath-worker" "${ARGS[@]}")

tx_bytes() { ip -n "$A" -s link show "vt$$a" | awk '/TX:/ { getline; print $1 }'; }
rx_bytes() { ip -n "$A" -s link show "vt$$a" | awk '/RX:/ { getline; print $1 }'; }
before=$(tx_bytes) before_rx=$(rx_bytes)
# Stage 0 on this host's name (local to mpirun, in A); stage 1 on host "b" (the agent: B).
got=$(timeout 120 ip netns exec "$A" mpirun -H "$(hostname):1,b:1" --bind-to none \
  --mca plm_rsh_agent "$SRC/tests/e2e/netns_rsh.sh" \
  --mca oob_tcp_if_include "$NET/24" --mca btl_tcp_if_include "$NET/24" --mca btl self,tcp \
  -x DSMATH_NETNS_PREFIX \
  sh -c 'echo "rank $OMPI_COMM_WORLD_RANK in $(readlink /proc/self/ns/net)" >&2; exec "$0" "$@"' \
  "$BIN/dsmath-worker" "${ARGS[@]}" --pp 2 2> netns_ranks.log) || {
  cat netns_ranks.log; echo "FAIL: the pp 2 group across namespaces failed"; exit 1; }
after=$(tx_bytes) after_rx=$(rx_bytes)
cat netns_ranks.log

# The two ranks are in different network namespaces.
namespaces=$(grep -o 'net:\[[0-9]*\]' netns_ranks.log | sort -u | wc -l)
[ "$namespaces" -eq 2 ] || { echo "FAIL: ranks in $namespaces namespace(s), expected 2"; exit 1; }
case "$got" in *"boxed{83}"*) ;; *) echo "FAIL: the group did not answer 83: $got"; exit 1 ;; esac
[ "$got" = "$expected" ] || {
  echo "FAIL: tokens differ"; echo "one process: $expected"; echo "pp 2 across netns: $got"; exit 1; }
sent=$((after - before))
# Each forward sends the step's hidden states (rows x 64 floats) from A to B: at least the
# prompt's ~40 rows and one row per further token.
[ "$sent" -gt $(((40 + 39) * 64 * 4)) ] || { echo "FAIL: only $sent bytes crossed the veth"; exit 1; }
# The last stage samples: what comes back is token ids (and MPI's own traffic), not a
# 102,400-float logits row (400 KB) per token.
returned=$((after_rx - before_rx))
[ "$returned" -lt $((40 * 102400 * 4 / 10)) ] || {
  echo "FAIL: $returned bytes came back from stage 1: logits rather than sampled tokens?"; exit 1; }
echo "ok: pp 2 across two namespaces = one process ($sent bytes to stage 1, $returned back)"

# The same group through launch/dsmath-group: its checkpoint check on each "node", then
# --map-by ppr:1:node (a stage per node); and its refusal, naming both nodes, of a checkpoint
# that is not there.
export DSMATH_MPIRUN_ARGS="--mca plm_rsh_agent $SRC/tests/e2e/netns_rsh.sh \
  --mca oob_tcp_if_include $NET/24 --mca btl_tcp_if_include $NET/24 --mca btl self,tcp \
  -x DSMATH_NETNS_PREFIX"
launched=$(timeout 120 ip netns exec "$A" "$SRC/launch/dsmath-group" --host "$(hostname):1,b:1" \
  --tp 1 --pp 2 --model "$MODEL" --bin "$BIN" -- generate "${WORKER_ARGS[@]}") || {
  echo "FAIL: launch/dsmath-group failed"; exit 1; }
[ "$launched" = "$expected" ] || {
  echo "FAIL: launch/dsmath-group's tokens differ: $launched"; exit 1; }
echo "ok: launch/dsmath-group --tp 1 --pp 2 over the two namespaces = one process"
if timeout 120 ip netns exec "$A" "$SRC/launch/dsmath-group" --host "$(hostname):1,b:1" \
    --tp 1 --pp 2 --model /nonexistent-dsmath-model --bin "$BIN" -- generate --prompt hi \
    > /dev/null 2> netns_launch.err; then
  echo "FAIL: launch/dsmath-group started a group without its checkpoint"; exit 1
fi
nodes=$(grep -c "no /nonexistent-dsmath-model/config.json" netns_launch.err || true)
[ "$nodes" -eq 2 ] && grep -q "nothing was started" netns_launch.err || {
  cat netns_launch.err; echo "FAIL: the missing checkpoint was not reported for both nodes"; exit 1; }
echo "ok: a checkpoint missing on the nodes is reported per node before anything starts"
echo "PASS: pp 2 across two namespaces: $got"
