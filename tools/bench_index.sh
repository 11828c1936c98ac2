#!/bin/bash
# bench_index.sh — the candidate-index benchmark: mpirec (bench/bench_index.c) and
# FAISS (tools/bench_faiss.py) on the same vectors, ratios mpirec / FAISS.
#
#   tools/bench_index.sh                          # 150K and 1M items x 32, 10K queries
#   ITEMS=150000 RUNS=1 REPEATS=3 tools/bench_index.sh
#
# The machine this was written for is shared and noisy, so the two programs are
# run alternately RUNS times (mpirec, FAISS, mpirec, FAISS, ...); each run reports
# the median of REPEATS timed batches, and the table gives the median over runs.
# FAISS's trained index and its nprobe sweep are cached beside the vectors after
# the first run (they are deterministic), so later runs only repeat the timing.
#
# Environment: BUILD (build dir, default ./build), OUT (default BUILD/bench-out/index),
# ITEMS ("150000 1000000"), QUERIES (10000), TIME_QUERIES (2000), SWEEP_QUERIES
# (2000), REPEATS (5), RUNS (3), THREADS ("1,2"), EXTRA (more bench_index args).
# Writes OUT/n<items>/: {items,queries,gt}.npy, command.txt, mpirec-run<i>.jsonl,
# faiss-run<i>.jsonl, logs, and table.md (also printed). Slow: about 70 minutes for
# both sizes with RUNS=3 on the 2 shared cores (2026-11-23; docs/index.md has the results).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
out=${OUT:-$build/bench-out/index}
threads=${THREADS:-1,2}
repeats=${REPEATS:-5}
runs=${RUNS:-3}
tq=${TIME_QUERIES:-2000}
sq=${SWEEP_QUERIES:-2000}
for n in ${ITEMS:-150000 1000000}; do
    dir=$out/n$n
    mkdir -p "$dir"
    rm -f "$dir"/mpirec-run*.jsonl "$dir"/faiss-run*.jsonl
    cmd=("$build/bench/bench_index" --items "$n" --queries "${QUERIES:-10000}"
         --time-queries "$tq" --sweep-queries "$sq" --repeats "$repeats"
         --threads "$threads" --dir "$dir" ${EXTRA:-})
    echo "${cmd[*]}" > "$dir/command.txt"
    for r in $(seq 1 "$runs"); do
        echo "== $n items, run $r: mpirec (load $(cut -d' ' -f1 /proc/loadavg))" >&2
        "${cmd[@]}" > "$dir/mpirec-run$r.jsonl" 2> "$dir/mpirec-run$r.log"
        grep -vE "^  nprobe" "$dir/mpirec-run$r.log" >&2
        nlist=$(sed -n 's/.*"kind": "build".*"nlist": \([0-9]*\).*/\1/p' "$dir/mpirec-run$r.jsonl")
        echo "== $n items, run $r: FAISS, nlist $nlist (load $(cut -d' ' -f1 /proc/loadavg))" >&2
        /usr/bin/python3 "$root/tools/bench_faiss.py" "$dir" --threads "$threads" \
            --repeats "$repeats" --nlist "$nlist" --time-queries "$tq" --sweep-queries "$sq" \
            > "$dir/faiss-run$r.jsonl" 2> "$dir/faiss-run$r.log"
        grep -v "faiss nprobe" "$dir/faiss-run$r.jsonl" >&2
    done
    /usr/bin/python3 "$root/tools/bench_faiss.py" "$dir" --summarize | tee "$dir/table.md"
done
