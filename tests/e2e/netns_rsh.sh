#!/bin/sh
# mpirun's rsh agent for netns_pp_test.sh: "host" NAME is the network namespace
# ${DSMATH_NETNS_PREFIX}NAME on this machine, so the daemon and ranks started "there" talk to
# the others over the namespaces' veth pair (real TCP), not over loopback or shared memory.
host=$1
shift
exec ip netns exec "${DSMATH_NETNS_PREFIX}${host}" sh -c "$*"
