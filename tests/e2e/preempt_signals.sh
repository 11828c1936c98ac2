#!/usr/bin/env bash
# ctest-labels: e2e mpi
# ctest-timeout: 400
# Preemption with real signals (synthetic multitask set, P = 2, a checkpoint after
# every step so that writes are frequent and slow enough to be hit):
#   1. SIGTERM to every rank after step >= 15 -> exit 75; the stop checkpoint is
#      at most 2 steps after the newest one committed when the signal was sent
#      (the next step boundary), `latest` names it, no .h5.tmp is left (a real
#      preemption: the step in flight completes and is saved, nothing is lost);
#   2. resumed with --resume auto, SIGUSR1 to mpirun (which relays it to the ranks,
#      as the SLURM template does) -> exit 75;
#   3. resumed, two SIGTERMs 3 ms apart sent WHILE a checkpoint is being written
#      (a .h5.tmp exists) -> exit 75, nothing corrupt;
#   4. resumed to the end -> final parameters and optimizer state bitwise equal to
#      an uninterrupted run (hash_params.py), metrics.jsonl with the same lines;
#   5. the stop checkpoint of 1. (P = 2) resumed at P = 4 with row-sharded tables
#      -> equal to the uninterrupted P = 2 run within atol 1e-5 / rtol 1e-4.
set -euo pipefail
source "$(dirname "$0")/resume_lib.bash"
rl_init preempt_signals

"$BIN" gen --out "$T/syn.csv" --users 8000 --items 1500 --interactions 30000 --seed 5 > /dev/null
SYN="--config $SRC/configs/synthetic.json --set data.path=$T/syn.csv --set train.batch_size=512 \
     --set train.epochs=2 --set train.log_every=10"
EVERY="--set checkpoint.every_steps=1 --set checkpoint.keep=3"

rl_train ref 2 $SYN
rl_expect_rc 0 "uninterrupted reference (P=2)" ref

# stop_ok NAME WHAT FIRE-OUTPUT [SLACK]: exit 75, stop checkpoint close after the signal
stop_ok() {
    rl_expect_rc 75 "$2" "$1"
    local s n n1 latest
    s=$(grep -o "checkpointed at step [0-9]*" "$T/$1.log" | tail -1 | grep -o "[0-9]*$" || echo -1)
    n=$(echo "$3" | grep -o "newest committed step [0-9]*" | grep -o "[0-9]*$" || echo -1)
    n1=$(echo "$3" | grep -o "step [0-9]* just after" | grep -o "[0-9][0-9]*" || echo -1)
    latest=$(cat "$T/$1/checkpoints/latest")
    # The step running when the signal lands finishes, the next boundary stops:
    # at most 2 steps after the newest checkpoint committed at that moment (SLACK
    # more when mpirun relays the signal from its own event loop).
    if [ "$s" -ge "$n" ] && [ "$s" -le $((n1 + 2 + ${4:-0})) ] && [ "$latest" = "$(printf 'ckpt-%09d.h5' "$s")" ]; then
        ok "$2: stopped at step $s (newest checkpoint at the signal: $n), latest = $latest"
    else
        bad "$2: stop step $s, newest checkpoint at the signal $n..$n1, latest $latest"
    fi
    if ls "$T/$1/checkpoints/"*.tmp > /dev/null 2>&1; then bad "$2: a .tmp file was left"; fi
}

# 1. SIGTERM to the ranks
rl_launch sig 2 $SYN $EVERY --resume auto
out=$(rl_fire --pid "$LPID" --who children --sig TERM --dir "$T/sig/checkpoints" --min-step 15)
echo "$out"
rl_wait
stop_ok sig "SIGTERM to both ranks" "$out"
s1=$(grep -o "checkpointed at step [0-9]*" "$T/sig.log" | tail -1 | grep -o "[0-9]*$")
rl_seed_dir sig sigp "$s1" # for 5.: this stop checkpoint, resumed at P = 4

# 2. SIGUSR1 to mpirun
rl_launch sig 2 $SYN $EVERY --resume auto
out=$(rl_fire --pid "$LPID" --who pid --sig USR1 --dir "$T/sig/checkpoints" --min-step $((s1 + 10)))
echo "$out"
rl_wait
stop_ok sig "SIGUSR1 to mpirun (relayed to the ranks)" "$out" 3
s2=$(grep -o "checkpointed at step [0-9]*" "$T/sig.log" | tail -1 | grep -o "[0-9]*$")

# 3. two SIGTERMs during a checkpoint write
rl_launch sig 2 $SYN $EVERY --resume auto
out=$(rl_fire --pid "$LPID" --who children --sig TERM --count 2 --gap 0.003 --tmp \
    --dir "$T/sig/checkpoints" --min-step $((s2 + 10)))
echo "$out"
rl_wait
stop_ok sig "two SIGTERMs while a checkpoint was being written" "$out"
echo "$out" | grep -q "being written" && ok "the signals landed during a checkpoint write" ||
    bad "the signals did not land during a checkpoint write"

# 4. to the end
rl_train sig 2 $SYN --resume auto
rl_expect_rc 0 "resumed to the end" sig
[ "$(grep -c "resumed from" "$T/sig.log")" = 3 ] && ok "three resumes logged" || bad "expected 3 resumes"
rl_same_hash ref sig "3 preemptions, same P"
rl_same_metrics ref sig "3 preemptions, same P"

# 5. the stop checkpoint of 1. (P = 2), resumed at P = 4 (row-sharded)
rl_train sigp 4 $SYN --resume auto --set dist.embedding_sharding=row
rl_expect_rc 0 "resumed at P=4, row-sharded" sigp
grep -q "saved with 2 ranks, now 4" "$T/sigp.log" && ok "rank change logged" || bad "rank change not logged"
rl_close ref sigp "saved at P=2, resumed at P=4 (row)"
rl_same_metrics ref sigp "saved at P=2, resumed at P=4 (row; tol 1e-3)" 1e-3
rl_done
