#!/usr/bin/env bash
# ctest-labels: e2e slurm
# ctest-timeout: 600
# Preemption under a REAL single-node SLURM (22.05, munge; tests/slurm/start.sh
# in a private state dir under MPIREC_TMP, free ports, CPUs=6 on this node):
# launch/mpirec.sbatch is submitted twice, as job A (mpirun launcher) and job B
# (MPIREC_LAUNCHER=srun: srun --mpi=pmix), 2 tasks each, on a synthetic set with
# a checkpoint every 2 steps (progress markers). Then
#   1. while A runs, `mpirec train` on A's run directory fails with exit 5 and
#      names A's SLURM job id (the run-directory lock); a third job C (srun), once
#      training, is cancelled with a plain `scancel`: its ranks may still
#      checkpoint and exit 75, but it must stay CANCELLED (not requeue itself);
#   2. preemption by hand: `scancel -b -s TERM A` and `scancel -b -s USR1 B` (to
#      the batch shells only): the shells forward SIGUSR1 to the launcher, the
#      ranks checkpoint and exit 75, the shells `scontrol requeue` the jobs;
#      SLURM restarts them (SLURM_RESTART_COUNT=1) and they resume;
#   3. preemption by priority: a 6-task job in the `high` partition preempts both
#      (preempt_send_user_signal: the batch shells get their --signal B:USR1):
#      same path, SLURM_RESTART_COUNT=2;
#   4. both jobs COMPLETE, and their final models are bitwise equal to an
#      uninterrupted run (hash_params.py) with the same metrics.jsonl lines.
# Only the daemons this test started are stopped (PID files, tests/slurm/stop.sh):
# at the end (checked), on failure (EXIT trap, also on SIGINT/SIGTERM), and, should
# the test itself be SIGKILLed (a ctest timeout), by a detached watchdog that
# stops them once the test's process is gone; a later run first stops daemons a
# previous run of this test left in its directory.
set -euo pipefail
SLURM_DIR=${MPIREC_SRC:?}/tests/slurm
if [ -f "${MPIREC_TMP:?}/slurm_preempt/cluster/slurm.conf" ]; then
    SLURM_LOCAL_DIR=$MPIREC_TMP/slurm_preempt/cluster "$SLURM_DIR/stop.sh" || true
fi
source "$(dirname "$0")/resume_lib.bash"
rl_init slurm_preempt

for b in munged mungekey slurmctld slurmd sbatch scontrol scancel squeue srun; do
    command -v "$b" > /dev/null || { echo "FAIL: $b not found (apt-get install slurmctld slurmd slurm-client munge)"; exit 1; }
done

# Private cluster directory; unix socket paths must stay short.
CL=$T/cluster
if [ ${#CL} -ge 70 ]; then CL=$(mktemp -d /tmp/mpirec-slurm.XXXXXX); fi
export SLURM_LOCAL_DIR=$CL CPUS=6
WATCHDOG=""
cleanup() {
    rl_cleanup
    "$SLURM_DIR/stop.sh" >> "$T/stop.log" 2>&1 || true
    [ -z "$WATCHDOG" ] || kill "$WATCHDOG" 2>/dev/null || true
    [ "$CL" = "$T/cluster" ] || rm -rf "$CL"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Watchdog, in its own session so that a kill of our process group spares it: it
# waits while this shell lives (same pid AND same start time, so a reused pid
# does not fool it) and then stops the cluster.
me=$$
born=$(awk '{print $22}' /proc/$me/stat)
setsid bash -c 'while [ "$(awk "{print \$22}" /proc/'$me'/stat 2>/dev/null)" = '$born' ]; do sleep 1; done
    SLURM_LOCAL_DIR='"$CL"' '"$SLURM_DIR"'/stop.sh >> '"$T"'/watchdog.log 2>&1' < /dev/null > /dev/null 2>&1 &
WATCHDOG=$!

"$BIN" gen --out "$T/syn.csv" --users 3000 --items 800 --interactions 20000 --seed 17 > /dev/null
CFG=$SRC/configs/synthetic.json
# 20 epochs of 63 steps: long enough that no job can finish before the preemptions
# below reach it, even on a fast machine (2 epochs were done in ~13 s on a CI box; on
# an idle 2-core machine a resumed job ran 250 steps in 3 s, so 6 epochs were not)
SETS=(--set data.path="$T/syn.csv" --set train.batch_size=256 --set train.epochs=20
      --set train.log_every=20 --set train.progress=plain --set index.build_at_end=false)
rl_train ref 2 --config "$CFG" "${SETS[@]}"
rl_expect_rc 0 "uninterrupted reference (P=2, mpirun)" ref

"$SLURM_DIR/start.sh" > "$T/start.log" 2>&1 || { cat "$T/start.log"; echo "FAIL: cluster did not start"; exit 1; }
grep "cluster up" "$T/start.log"
source "$CL/env.sh"

export MPIREC_BIN=$BIN MPIRUN_ARGS= SRUN_ARGS=
submit() { # submit NAME LAUNCHER
    MPIREC_LAUNCHER=$2 sbatch --parsable -n 2 -J "$1" -D "$T" --output="$T/%x.out" \
        "$SRC/launch/mpirec.sbatch" "$CFG" "$T/$1" "${SETS[@]}" --set checkpoint.every_steps=2
}
ja=$(submit A mpirun)
jb=$(submit B srun)
jc=$(submit C srun)
echo "submitted A=$ja (mpirun) B=$jb (srun) C=$jc (srun, to be cancelled)"

step_of() { sed -E 's/^ckpt-0*([0-9]+)\.h5$/\1/' "$T/$1/checkpoints/latest" 2>/dev/null || echo 0; }
# wait_progress NAME MIN_STEP: until the job's run dir has a checkpoint >= MIN_STEP
wait_progress() {
    local i
    for ((i = 0; i < 1200; i++)); do
        [ "$(step_of "$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    echo "timeout waiting for $1 to reach step $2"; cat "$T/$1.out" || true
    return 1
}
# wait_restart NAME COUNT: until the job's log shows SLURM_RESTART_COUNT=COUNT
wait_restart() {
    local i
    for ((i = 0; i < 1200; i++)); do
        grep -q "SLURM_RESTART_COUNT=$2 " "$T/$1.out" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timeout waiting for $1 to restart ($2)"
    grep -q "training finished" "$T/$1.out" 2>/dev/null &&
        echo "($1 finished training before the signal reached it: the run is too short for this machine)"
    tail -60 "$T/$1.out" || true
    scontrol show job "$(cat "$T/$1.jid")" || true
    return 1
}
echo "$ja" > "$T/A.jid"
echo "$jb" > "$T/B.jid"
echo "$jc" > "$T/C.jid"

wait_progress A 10 && wait_progress B 10 && wait_progress C 4 || { bad "jobs did not start training"; rl_done; }
echo "t=${SECONDS}s: all three jobs training"
scancel "$jc" # a user's cancel: must not be undone by the template's requeue

# 1. the lock names the SLURM job
set +e
"$BIN" train --config "$CFG" "${SETS[@]}" --out "$T/A" --resume auto > "$T/intruder.log" 2>&1
RC=$?
set -e
rl_expect_rc 5 "a second mpirec train on job A's run directory" intruder
grep -q "in use by another job (host=.* slurm_job=$ja " "$T/intruder.log" &&
    ok "the refusal names SLURM job $ja" || { bad "the refusal does not name job $ja"; cat "$T/intruder.log"; }

# 2. scancel -b (batch shell only)
sa=$(step_of A)
sb=$(step_of B)
scancel -b -s TERM "$ja"
scancel -b -s USR1 "$jb"
wait_restart A 1 && wait_restart B 1 || bad "no restart after scancel -b"
echo "t=${SECONDS}s: both jobs restarted"
wait_progress A $((sa + 15)) && wait_progress B $((sb + 15)) || bad "no progress after the restart"

# 3. preemption by a job in the high partition (needs all 6 CPUs)
jh=$(sbatch --parsable -p high -n 6 -J high -D "$T" --output="$T/high.out" --wrap "sleep 1")
echo "t=${SECONDS}s: submitted high-priority job $jh"
wait_restart A 2 && wait_restart B 2 || bad "no restart after preemption by the high partition"
echo "t=${SECONDS}s: both jobs restarted again"

# 4. completion
for j in A B; do
    st=$("$SLURM_DIR/wait_job.sh" "$(cat "$T/$j.jid")" 180) || true
    [ "$st" = COMPLETED ] && ok "job $j COMPLETED" || { bad "job $j ended $st"; tail -40 "$T/$j.out"; }
done
st=$("$SLURM_DIR/wait_job.sh" "$jh" 30) || true
[ "$st" = COMPLETED ] && ok "high-priority job COMPLETED" || bad "high-priority job $st"
echo "t=${SECONDS}s: all jobs done"

for j in A B; do
    out=$T/$j.out
    for n in 0 1 2; do
        grep -q "start: SLURM_RESTART_COUNT=$n " "$out" || bad "job $j: no start with SLURM_RESTART_COUNT=$n"
    done
    [ "$(grep -c "exited with 75" "$out")" = 2 ] && ok "job $j: launcher exited 75 twice" ||
        bad "job $j: expected two exits with 75"
    [ "$(grep -c "checkpointed after a signal: scontrol requeue" "$out")" = 2 ] &&
        ok "job $j: requeued itself twice" || bad "job $j: expected two scontrol requeue"
    [ "$(grep -c "stop signal: checkpointed at step" "$out")" = 2 ] &&
        ok "job $j: ranks checkpointed twice on the signal" || bad "job $j: expected two stop checkpoints"
    [ "$(grep -c "resumed from" "$out")" = 2 ] && ok "job $j: resumed twice" || bad "job $j: expected two resumes"
    grep -q "training finished" "$out" || bad "job $j: no 'training finished'"
    rl_same_hash ref "$j" "job $j ($(grep -o "launcher=[a-z]*" "$out" | head -1)) after 2 preemptions"
    rl_same_metrics ref "$j" "job $j after 2 preemptions"
done
# C: cancelled by scancel, and it stayed so (it would have restarted long ago).
st=$(scontrol -o show job "$jc" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
if [ "$st" = CANCELLED ] && ! grep -q "SLURM_RESTART_COUNT=1" "$T/C.out"; then
    ok "job C: cancelled by scancel and not requeued ($(grep -o "srun exited with [0-9]*" "$T/C.out" | head -1);" \
        "$(grep -o "not requeueing" "$T/C.out" | head -1))"
else
    bad "job C: state $st after scancel"
    tail -20 "$T/C.out"
fi
grep -q "batch shell got SIGTERM" "$T/A.out" && grep -q "batch shell got SIGUSR1" "$T/B.out" &&
    ok "signals reached the batch shells (USR1 and TERM)" || bad "signals missing in the job logs"

# Stop the cluster now and check that its daemons are gone.
pids=$(cat "$CL/run/slurmctld.pid" "$CL/run/slurmd.pid" "$CL/munge/munged.pid")
"$SLURM_DIR/stop.sh" > "$T/stop.log" 2>&1 || true
cat "$T/stop.log"
left=""
for p in $pids; do
    st=$(awk '{print $3}' /proc/"$p"/stat 2>/dev/null || true)
    [ -n "$st" ] && [ "$st" != Z ] && left="$left $p"
done
[ -z "$left" ] && ok "the cluster's daemons ($(echo $pids)) are stopped" || bad "daemons still alive:$left"
rl_done
