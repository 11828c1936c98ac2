#!/usr/bin/env bash
# bench_rss.sh — run a command and record its memory: peak RSS (VmHWM) and the
# largest RSS seen once a marker file exists (e.g. the run's steps.jsonl, written
# after the first training steps: "memory while training", after the ingestion's
# transient buffers are gone). Used per rank under mpirun by tools/bench_scaling.sh:
#
#   mpirun -np 2 tools/bench_rss.sh OUT MARKER mpirec train ...
#
# Writes OUT.<rank> (rank from OMPI_COMM_WORLD_RANK / PMI_RANK, else 0) with one
# line "peak_kb training_kb wall_s train_cpu_s train_wall_s" (training_kb 0 if the
# marker never appeared): train_cpu_s is the CPU time (user + system, /proc/PID/stat)
# the command got between the first sample that saw the marker and the last sample,
# train_wall_s the wall time between them; their ratio is the share of a core the
# rank received while training (on a shared machine, < 1 when other jobs compete).
# Samples /proc/PID every 0.2 s, so a peak shorter than that can be missed;
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
tck=$(getconf CLK_TCK)
cpu0=""; t0m=""; cpu1=""; t1m=""
while kill -0 "$pid" 2>/dev/null; do
    if s=$(awk '/^State:/{z=($2=="Z")} /^VmHWM:/{h=$2} /^VmRSS:/{r=$2} END{print h+0, r+0, z+0}' \
            "/proc/$pid/status" 2>/dev/null); then
        read -r h r z <<< "$s"
        [ "$z" = 1 ] && break
        [ "$h" -gt "$hwm" ] && hwm=$h
        if [ -e "$marker" ]; then
            [ "$r" -gt "$train" ] && train=$r
            # utime + stime: fields 14 and 15 of /proc/PID/stat (after the ")" of comm)
            c=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')
            if [ -n "$c" ]; then
                tm=$(now)
                [ -z "$cpu0" ] && cpu0=$c && t0m=$tm
                cpu1=$c; t1m=$tm
            fi
        fi
    fi
    sleep 0.2
done
wait "$pid"
rc=$?
echo "$hwm $train $(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.2f", b - a}')" \
     "$(awk -v a="${cpu0:-0}" -v b="${cpu1:-0}" -v t="$tck" -v w0="${t0m:-0}" -v w1="${t1m:-0}" \
         'BEGIN{printf "%.2f %.2f", (b - a) / t, w1 - w0}')" > "$out"
exit $rc
