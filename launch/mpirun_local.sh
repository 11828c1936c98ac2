#!/bin/bash
# mpirun_local.sh — run `mpirec train` on this machine with mpirun, preemption-safe.
#
# Usage: launch/mpirun_local.sh NP CONFIG.json OUTDIR [mpirec train options...]
#   e.g. launch/mpirun_local.sh 4 configs/synthetic.json runs/syn --set train.epochs=5
#
# Always passes --resume auto: the first run starts fresh, a rerun of the same
# command continues from the newest valid checkpoint in OUTDIR/checkpoints.
#
# Signals: SIGTERM, SIGINT or SIGUSR1 to this script is passed on to mpirun as
# SIGUSR1, which mpirun relays to every rank: the ranks finish the current step,
# write a checkpoint and exit 75. (mpirun treats a SIGTERM of its own as "abort":
# it kills the ranks after 1 s and exits 1, which is why we translate.)
#
# Exit code: mpirec's. 0 done; 75 checkpointed after a signal (run the same
# command again to continue); others: see `mpirec train --help`.
#
# Environment (plumbing only; every training setting lives in the config):
#   MPIREC_BIN    the mpirec binary (default: `mpirec` on PATH)
#   MPIRUN        the mpirun command (default: mpirun)
#   MPIRUN_ARGS   extra mpirun options, word-split (e.g. "--oversubscribe --bind-to none")
#   OPENBLAS_NUM_THREADS  passed to the ranks (default 1: one BLAS thread per rank)
set -uo pipefail
if [ $# -lt 3 ] || [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
    sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 2
fi
np=$1 config=$2 out=$3
shift 3
BIN=${MPIREC_BIN:-mpirec}
MPIRUN=${MPIRUN:-mpirun}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
log() { echo "$(date -u +%FT%TZ) mpirun_local: $*" >&2; }

child=""
forward() {
    log "got SIG$1; asking the ranks to checkpoint and stop (SIGUSR1 to mpirun)"
    [ -n "$child" ] && kill -USR1 "$child" 2>/dev/null
}
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward USR1' USR1

# shellcheck disable=SC2086  # MPIRUN_ARGS is a list of options
"$MPIRUN" -np "$np" ${MPIRUN_ARGS:-} -x OPENBLAS_NUM_THREADS \
    "$BIN" train --config "$config" --out "$out" --resume auto "$@" &
child=$!
# `wait` returns early (status > 128) whenever a trapped signal arrives: loop
# until mpirun is gone, then wait once more for its real exit status.
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
