#!/usr/bin/env bash
# ctest-labels: e2e mpi
# ctest-timeout: 300
# The run-directory lock (DIR/checkpoints/mpirec.lock, taken by rank 0 of
# `mpirec train` before anything is written):
#   - while job A trains in DIR, job B on the same DIR (P = 2, and P = 1 without
#     mpirun) fails fast with exit 5 and a message naming the holder (host, pid
#     of A's rank 0); B neither ingests data nor writes anything into DIR;
#   - A is undisturbed (it then stops on SIGUSR1 with exit 75 and a verifying
#     checkpoint);
#   - after A exits the lock record is empty and a new job takes the directory;
#   - a SIGKILLed job (no cleanup at all) does not block its successor: the
#     kernel dropped its flock; the successor resumes and finishes, bitwise equal
#     to an uninterrupted run.
set -euo pipefail
source "$(dirname "$0")/resume_lib.bash"
rl_init lock_run_dir

"$BIN" gen --out "$T/syn.csv" --users 3000 --items 800 --interactions 20000 --seed 13 > /dev/null
SYN="--config $SRC/configs/synthetic.json --set data.path=$T/syn.csv --set train.batch_size=256 \
     --set train.epochs=40 --set train.log_every=10" # long enough that job A cannot finish while the refused jobs are checked, on a fast machine
LOCK=$T/run/checkpoints/mpirec.lock

rl_train ref 2 $SYN
rl_expect_rc 0 "uninterrupted reference (P=2)" ref

# wait_step N: until job A committed a checkpoint >= N (or ended)
wait_step() {
    local i s
    for ((i = 0; i < 600; i++)); do
        s=$(sed -E 's/^ckpt-0*([0-9]+)\.h5$/\1/' "$T/run/checkpoints/latest" 2>/dev/null || echo 0)
        [ "${s:-0}" -ge "$1" ] && return 0
        kill -0 "$LPID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

rl_launch run 2 $SYN --set checkpoint.every_steps=1 --resume auto
wait_step 3 || bad "job A made no progress"
# rank 0 of job A: the child of mpirun whose environment says OMPI_COMM_WORLD_RANK=0
# (not the lowest pid: under load or after pid wrap-around that need not be rank 0)
a0=
for c in $(cat /proc/"$LPID"/task/*/children); do
    # grep -z reads the NUL-separated environment itself: no pipe (with pipefail, a
    # `tr | grep -q` fails when grep exits before tr has written a large environment)
    if grep -qzx "OMPI_COMM_WORLD_RANK=0" /proc/"$c"/environ 2>/dev/null; then
        a0=$c
    fi
done
[ -n "$a0" ] || bad "cannot find rank 0 of job A among the children of mpirun $LPID"
cfg_before=$(md5sum < "$T/run/config.json")
for np in 2 1; do
    start=$SECONDS
    set +e
    if [ "$np" = 1 ]; then
        "$BIN" train $SYN --out "$T/run" --resume auto > "$T/b$np.log" 2>&1
    else
        "$MPIRUN" --oversubscribe -np 2 "$BIN" train $SYN --out "$T/run" --resume auto > "$T/b$np.log" 2>&1
    fi
    RC=$?
    set -e
    rl_expect_rc 5 "second job on the same DIR (P=$np)" "b$np"
    if grep -q "is in use by another job (host=$(hostname) pid=$a0 " "$T/b$np.log"; then
        ok "P=$np: the message names the holder (host $(hostname), pid $a0)"
    else
        bad "P=$np: the message does not name the holder (pid $a0)"
        cat "$T/b$np.log"
    fi
    grep -q "^data:" "$T/b$np.log" && bad "P=$np: the refused job ingested data" || ok "P=$np: refused before ingestion ($((SECONDS - start)) s)"
done
[ "$cfg_before" = "$(md5sum < "$T/run/config.json")" ] && ok "config.json of job A untouched" ||
    bad "the refused jobs rewrote config.json"
grep -q "pid=$a0 " "$LOCK" && ok "lock record: $(cat "$LOCK")" || bad "lock record does not name A"

kill -USR1 "$LPID"
rl_wait
rl_expect_rc 75 "job A undisturbed, stopped by SIGUSR1" run
$BIN inspect "$(rl_ck run)" > /dev/null 2>&1 && ok "A's stop checkpoint verifies" || bad "A's stop checkpoint does not verify"
[ ! -s "$LOCK" ] && ok "A released the lock (empty record)" || bad "lock record left after a clean exit: $(cat "$LOCK")"

# SIGKILL: no chance to unlock
rl_launch run 2 $SYN --set checkpoint.every_steps=1 --resume auto
s0=$(sed -E 's/^ckpt-0*([0-9]+)\.h5$/\1/' "$T/run/checkpoints/latest")
wait_step $((s0 + 3)) || bad "job C made no progress"
for c in $(cat /proc/"$LPID"/task/*/children); do kill -KILL "$c"; done
rl_wait
[ -s "$LOCK" ] && ok "SIGKILLed job left its owner record behind" || bad "no owner record after SIGKILL"
rl_train run 2 $SYN --resume auto
rl_expect_rc 0 "successor of the SIGKILLed job takes the lock and finishes" run
rl_same_hash ref run "USR1 stop + SIGKILL + resume"
rl_same_metrics ref run "USR1 stop + SIGKILL + resume"
rl_done
