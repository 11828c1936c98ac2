#!/usr/bin/env bash
# ctest-labels: e2e mpi
# ctest-timeout: 300
# The mpirun launch scripts (launch/mpirun_local.sh, launch/mpirun_hostfile.sh):
#   - SIGTERM to launch/mpirun_local.sh (what a scheduler or `kill` sends) is
#     translated into SIGUSR1 for mpirun, so the ranks checkpoint and the script
#     exits 75 (a SIGTERM straight to mpirun would abort the job with exit 1);
#   - rerunning through launch/mpirun_hostfile.sh (hostfile: this host) continues
#     from that checkpoint (the scripts always pass --resume auto) to the end,
#     bitwise equal to an uninterrupted run;
#   - usage errors exit 2.
set -euo pipefail
source "$(dirname "$0")/resume_lib.bash"
rl_init preempt_launch

"$BIN" gen --out "$T/syn.csv" --users 3000 --items 800 --interactions 20000 --seed 11 > /dev/null
CFG=$SRC/configs/synthetic.json
SETS=(--set data.path="$T/syn.csv" --set train.batch_size=256 --set train.epochs=2
      --set train.log_every=10 --set train.progress=plain --set index.build_at_end=false)
rl_train ref 2 --config "$CFG" "${SETS[@]}"
rl_expect_rc 0 "uninterrupted reference (P=2)" ref

export MPIREC_BIN=$BIN MPIRUN=$MPIRUN MPIRUN_ARGS=--oversubscribe
"$SRC/launch/mpirun_local.sh" 2 "$CFG" "$T/run" "${SETS[@]}" --set checkpoint.every_steps=1 \
    > "$T/run.log" 2>&1 &
LPID=$!
RL_BG+=("$LPID")
out=$(rl_fire --pid "$LPID" --who pid --sig TERM --dir "$T/run/checkpoints" --min-step 10)
echo "$out"
rl_wait
rl_expect_rc 75 "SIGTERM to launch/mpirun_local.sh" run
grep -q "got SIGTERM; asking the ranks to checkpoint" "$T/run.log" && ok "the script forwarded the signal" ||
    bad "no forwarding message"
grep -q "stop signal: checkpointed at step" "$T/run.log" && ok "the ranks checkpointed" ||
    bad "the ranks did not checkpoint"

echo "$(hostname) slots=4" > "$T/hosts"
set +e
"$SRC/launch/mpirun_hostfile.sh" "$T/hosts" 2 "$CFG" "$T/run" "${SETS[@]}" >> "$T/run.log" 2>&1
RC=$?
set -e
rl_expect_rc 0 "rerun through launch/mpirun_hostfile.sh" run
grep -q "resumed from" "$T/run.log" && ok "the rerun resumed (--resume auto)" || bad "the rerun did not resume"
rl_same_hash ref run "stopped via mpirun_local.sh, finished via mpirun_hostfile.sh"
rl_same_metrics ref run "stopped via mpirun_local.sh, finished via mpirun_hostfile.sh"

set +e
"$SRC/launch/mpirun_local.sh" 2 > /dev/null 2>&1; r1=$?
"$SRC/launch/mpirun_hostfile.sh" "$T/nonexistent" 2 "$CFG" "$T/x" > /dev/null 2>&1; r2=$?
set -e
[ "$r1" = 2 ] && [ "$r2" = 2 ] && ok "usage errors exit 2" || bad "usage errors: $r1 $r2"
rl_done
