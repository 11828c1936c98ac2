#!/usr/bin/env bash
# ctest-labels: e2e mpi robust
# ctest-timeout: 600
# robust_rank_death.sh — one rank SIGKILLed in the middle of training (rank 1 of 2,
# then rank 0 of 3): the whole job ends within 60 s with a message naming the lost
# rank, no process of the job is left behind (none hangs), the newest checkpoint
# verifies, and `--resume auto` continues from it to the end.
# (tests/e2e/preempt_sigkill.sh, from the resume work, checks that such a resume is
# bitwise exact and covers kills during a checkpoint write; this test adds the time
# bound, the message and the leftover processes.)
source "$(dirname "$0")/robust_lib.bash"
rb_init robust_rank_death
cd "$T"

"$BIN" gen --out syn.csv --users 20000 --items 2000 --interactions 120000 --seed 4 > /dev/null 2>&1
# about 375 steps per epoch; 200 epochs is far longer than the test waits (a quiet
# machine does 400 steps/s: 20 epochs were once done before the kill)
S="--config $SRC/configs/synthetic.json --set data.path=$T/syn.csv --set train.batch_size=256 \
   --set train.epochs=200 --set model.embedding_dim=16 --set checkpoint.every_steps=25 \
   --set checkpoint.every_seconds=0 --set train.log_every=25"

rank_pid() { # MPIRUN_PID RANK: pid of that rank (from its environment)
    local p
    for p in $(pgrep -P "$1"); do
        # no pipe: with pipefail, `tr | grep -q` fails when grep exits first
        if grep -qzx "OMPI_COMM_WORLD_RANK=$2" "/proc/$p/environ" 2> /dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

kill_rank() { # NP RANK DIR
    local np=$1 victim=$2 dir=$3
    rm -rf "$dir"
    $MPI "$np" "$BIN" train $S --out "$T/$dir" > "$dir.log" 2>&1 &
    local mp=$! i pid="" l
    NEWEST=0
    # wait until `latest` names step 50 or later (the second checkpoint: the kill
    # lands in the middle of training; ckpt-50 itself may already be rotated away)
    for i in $(seq 1 600); do
        l=$(sed -nE 's/^ckpt-0*([0-9]+)\.h5$/\1/p' "$dir/checkpoints/latest" 2> /dev/null || true)
        [ -n "$l" ] && [ "$l" -ge 50 ] && break
        kill -0 "$mp" 2> /dev/null || break
        sleep 0.1
    done
    pid=$(rank_pid "$mp" "$victim")
    if [ -z "$pid" ]; then
        bad "P=$np: rank $victim not found (run ended early?)"
        tail -5 "$dir.log"
        kill -TERM "$mp" 2> /dev/null
        wait "$mp"
        return
    fi
    local t0 t1 rc
    t0=$(date +%s.%N)
    kill -KILL "$pid"
    # wait at most 60 s for the job to end
    for i in $(seq 1 600); do
        kill -0 "$mp" 2> /dev/null || break
        sleep 0.1
    done
    t1=$(date +%s.%N)
    if kill -0 "$mp" 2> /dev/null; then
        bad "P=$np: the job still runs 60 s after rank $victim was killed (hang)"
        kill -KILL "$mp"
        pkill -KILL -f -- "--out $T/$dir" || true
    fi
    wait "$mp"
    rc=$?
    local secs
    secs=$(python3 -c "print(round($t1 - $t0, 1))")
    [ "$rc" != 0 ] && [ "$rc" != 75 ] && ok "P=$np: the job failed (exit $rc) $secs s after the kill" ||
        bad "P=$np: exit $rc after killing rank $victim"
    python3 -c "import sys; sys.exit(0 if $t1 - $t0 < 60 else 1)" && ok "P=$np: ended within 60 s" ||
        bad "P=$np: took $secs s to end"
    grep -qE "process rank $victim .*(exited on signal 9|Killed)" "$dir.log" &&
        ok "P=$np: the message names rank $victim" ||
        { bad "P=$np: no message naming rank $victim"; grep -v '^\s' "$dir.log" | tail -8; }
    sleep 1
    if pgrep -f -- "--out $T/$dir" > /dev/null; then
        bad "P=$np: processes of the job are left: $(pgrep -f -- "--out $T/$dir" | tr '\n' ' ')"
        pkill -KILL -f -- "--out $T/$dir" || true
    else
        ok "P=$np: no process of the job is left"
    fi
    local latest="$dir/checkpoints/$(cat "$dir/checkpoints/latest" 2> /dev/null)"
    expect 0 -- "$BIN" inspect "$latest"
    NEWEST=$(sed -E 's/^ckpt-0*([0-9]+)\.h5$/\1/' "$dir/checkpoints/latest")
}

kill_rank 2 1 k2
# resume at the same P; train.max_steps bounds the rest of the run
expect 0 "resumed from $T/k2/checkpoints/ckpt-$(printf %09d "$NEWEST").h5" "done: $((NEWEST + 30)) steps" \
    -- $MPI 2 "$BIN" train $S --set train.max_steps=$((NEWEST + 30)) --out "$T/k2" --resume auto

kill_rank 3 0 k3
# resume with another rank count
expect 0 "resumed from $T/k3/checkpoints/ckpt-$(printf %09d "$NEWEST").h5" "done: $((NEWEST + 30)) steps" \
    -- $MPI 2 "$BIN" train $S --set train.max_steps=$((NEWEST + 30)) --out "$T/k3" --resume auto

rb_done
