#!/bin/bash
# mpirun_hostfile.sh — run `mpirec train` across the nodes of an Open MPI hostfile.
#
# Usage: launch/mpirun_hostfile.sh HOSTFILE NP CONFIG.json OUTDIR [mpirec train options...]
#   HOSTFILE lines: "<host> slots=<ranks on that host>" (see `man mpirun`)
#   e.g. launch/mpirun_hostfile.sh hosts.txt 16 configs/yelp.json /shared/runs/yelp
#
# Requirements on multiple nodes: the same mpirec binary path on every node, and
# OUTDIR (and data.path) on a file system every node sees at the same path: the
# ranks write checkpoints together with MPI-IO, and rank 0 writes the rest.
#
# Always passes --resume auto. Signals: SIGTERM/SIGINT/SIGUSR1 to this script
# become one SIGUSR1 to mpirun, which relays it to every rank on every node: they
# checkpoint at the next step boundary and exit 75. Exit code: mpirec's (75 =
# run the same command again to continue).
#
# Environment (plumbing only; every training setting lives in the config):
#   MPIREC_BIN    the mpirec binary (default: `mpirec` on PATH; give an absolute path)
#   MPIRUN        the mpirun command (default: mpirun)
#   MPIRUN_ARGS   extra mpirun options, word-split (e.g. "--map-by ppr:8:node --bind-to core",
#                 "--mca btl_tcp_if_include ib0")
#   OPENBLAS_NUM_THREADS  exported to the ranks (default 1)
# PATH and LD_LIBRARY_PATH are exported to the remote ranks too (-x).
set -uo pipefail
if [ $# -lt 4 ] || [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
    sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 2
fi
hostfile=$1 np=$2 config=$3 out=$4
shift 4
[ -r "$hostfile" ] || { echo "mpirun_hostfile: cannot read hostfile $hostfile" >&2; exit 2; }
BIN=${MPIREC_BIN:-mpirec}
MPIRUN=${MPIRUN:-mpirun}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
log() { echo "$(date -u +%FT%TZ) mpirun_hostfile: $*" >&2; }

child=""
forward() {
    log "got SIG$1; asking the ranks to checkpoint and stop (SIGUSR1 to mpirun)"
    [ -n "$child" ] && kill -USR1 "$child" 2>/dev/null
}
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward USR1' USR1

xs=(-x OPENBLAS_NUM_THREADS -x PATH)
[ -n "${LD_LIBRARY_PATH:-}" ] && xs+=(-x LD_LIBRARY_PATH)
log "hostfile $hostfile: $(grep -v '^[[:space:]]*#' "$hostfile" | awk 'NF {printf "%s ", $1}')"
# shellcheck disable=SC2086  # MPIRUN_ARGS is a list of options
"$MPIRUN" --hostfile "$hostfile" -np "$np" ${MPIRUN_ARGS:-} "${xs[@]}" \
    "$BIN" train --config "$config" --out "$out" --resume auto "$@" &
child=$!
while :; do
    wait "$child"
    kill -0 "$child" 2>/dev/null || break
done
wait "$child"
rc=$?
case $rc in
    0) log "done" ;;
    75) log "checkpointed after a signal (exit 75): run the same command again to continue" ;;
    *) log "mpirun exited with $rc" ;;
esac
exit "$rc"
