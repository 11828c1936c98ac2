#!/usr/bin/env bash
# bench_rss.sh — run a command and record its memory: peak RSS (VmHWM) and the
# largest RSS seen once a marker file exists (e.g. the run's steps.jsonl, written
# after the first training steps: "memory while training", after the ingestion's
# transient buffers are gone). Used per rank under mpirun by tools/bench_scaling.sh:
#
#   mpirun -np 2 tools/bench_rss.sh OUT MARKER mpirec train ...
#
# Writes OUT.<rank> (rank from OMPI_COMM_WORLD_RANK / PMI_RANK, else 0) with one
# line "peak_kb training_kb wall_s" (training_kb 0 if the marker never appeared).
# Samples /proc/PID/status every 0.2 s, so a peak shorter than that can be missed;
# the exit code is the command's.
set -u
out=$1.${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}
marker=$2
shift 2
t0=$(date +%s.%N)
now() { date +%s.%N; }
"$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' TERM INT
hwm=0; train=0
while kill -0 "$pid" 2>/dev/null; do
    if s=$(awk '/^State:/{z=($2=="Z")} /^VmHWM:/{h=$2} /^VmRSS:/{r=$2} END{print h+0, r+0, z+0}' \
            "/proc/$pid/status" 2>/dev/null); then
        read -r h r z <<< "$s"
        [ "$z" = 1 ] && break
        [ "$h" -gt "$hwm" ] && hwm=$h
        if [ -e "$marker" ] && [ "$r" -gt "$train" ]; then train=$r; fi
    fi
    sleep 0.2
done
wait "$pid"
rc=$?
echo "$hwm $train $(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.2f", b - a}')" > "$out"
exit $rc
