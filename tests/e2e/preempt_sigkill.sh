#!/usr/bin/env bash
# ctest-labels: e2e mpi
# ctest-timeout: 400
# SIGKILL cannot be caught: the run loses the work since its last periodic
# checkpoint, and the resumed run replays it. Synthetic multitask set, P = 2:
#   1. periodic checkpoints every 5 steps; SIGKILL to ONE rank (mpirun then takes
#      the job down) after step >= 12 -> resume from the newest periodic checkpoint;
#   2. a checkpoint after every step; SIGKILL to both ranks WHILE a checkpoint is
#      being written (a .h5.tmp exists and is still there after the kill: the
#      write was cut) -> `latest` still names a complete checkpoint, resume uses
#      it without skipping anything; the stale .tmp is gone after the next commit;
#   3. same as 2 a second time, then resume to the end -> bitwise equal to an
#      uninterrupted run, metrics.jsonl with the same lines.
set -euo pipefail
source "$(dirname "$0")/resume_lib.bash"
rl_init preempt_sigkill

"$BIN" gen --out "$T/syn.csv" --users 8000 --items 1500 --interactions 30000 --seed 9 > /dev/null
SYN="--config $SRC/configs/synthetic.json --set data.path=$T/syn.csv --set train.batch_size=512 \
     --set train.epochs=2 --set train.log_every=10"

rl_train ref 2 $SYN
rl_expect_rc 0 "uninterrupted reference (P=2)" ref

newest() { sed -E 's/^ckpt-0*([0-9]+)\.h5$/\1/' "$T/kill/checkpoints/latest"; }

# 1. one rank killed; periodic checkpoints every 5 steps
rl_launch kill 2 $SYN --set checkpoint.every_steps=5 --resume auto
out=$(rl_fire --pid "$LPID" --who last-child --sig KILL --dir "$T/kill/checkpoints" --min-step 12)
echo "$out"
rl_wait
[ "$RC" != 0 ] && [ "$RC" != 75 ] && ok "SIGKILL of one rank: the job failed (exit $RC)" ||
    bad "SIGKILL of one rank: exit $RC"
k1=$(newest)
[ $((k1 % 5)) = 0 ] && ok "newest checkpoint after the kill is a periodic one (step $k1)" ||
    bad "unexpected newest checkpoint $k1"

# 2. and 3. killed during a checkpoint write
hit=0
for round in 1 2; do
    k=$(newest)
    rl_launch kill 2 $SYN --set checkpoint.every_steps=1 --resume auto
    out=$(rl_fire --pid "$LPID" --who children --sig KILL --tmp --dir "$T/kill/checkpoints" \
        --min-step $((k + 8)))
    echo "$out"
    rl_wait
    grep -q "resumed from .*ckpt-0*$k.h5" "$T/kill.log" && ok "round $round: resumed from step $k" ||
        bad "round $round: did not resume from step $k"
    if echo "$out" | grep -q "still there after the signal"; then
        hit=$((hit + 1))
        ls "$T/kill/checkpoints/"*.h5.tmp > /dev/null 2>&1 &&
            ok "round $round: killed during a write, the partial .tmp is left" ||
            bad "round $round: no .tmp after a kill during a write"
    fi
    $BIN inspect "$(rl_ck kill)" > "$T/inspect.txt" 2>&1 &&
        ok "round $round: latest ($(cat "$T/kill/checkpoints/latest")) is complete and verifies" ||
        { bad "round $round: latest does not verify"; cat "$T/inspect.txt"; }
done
[ "$hit" -ge 1 ] && ok "$hit of 2 kills landed inside a checkpoint write" ||
    bad "no kill landed inside a checkpoint write"

rl_train kill 2 $SYN --resume auto
rl_expect_rc 0 "resumed to the end" kill
if grep -q "skipped unusable" "$T/kill.log"; then bad "a committed checkpoint was unusable"; fi
ls "$T/kill/checkpoints/"*.tmp > /dev/null 2>&1 && bad "a stale .tmp survived the next commit" ||
    ok "no stale .tmp left"
rl_same_hash ref kill "3 SIGKILLs, same P"
rl_same_metrics ref kill "3 SIGKILLs, same P"
rl_done
