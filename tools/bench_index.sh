#!/bin/bash
# bench_index.sh — the candidate-index benchmark: mpirec (bench/bench_index.c) and
# FAISS (tools/bench_faiss.py) on the same vectors, ratios mpirec / FAISS.
#
#   tools/bench_index.sh                 # 150K and 1M items x 32, 10K queries
#   ITEMS="150000" REPEATS=3 tools/bench_index.sh
#
# Environment: BUILD (build dir, default build), OUT (default BUILD/bench-out/index),
# ITEMS (default "150000 1000000"), QUERIES (10000), TIME_QUERIES (2000),
# SWEEP_QUERIES (2000), REPEATS (5), THREADS ("1,2"), EXTRA (more bench_index args).
# For each size it writes OUT/n<items>/{items,queries,gt}.npy, mpirec.jsonl,
# faiss.jsonl and the logs, and prints the comparison tables (also in
# OUT/n<items>/table.txt). Slow: about 10 minutes for 1M items on 2 cores, most
# of it FAISS's IVF build and its recall-0.99 searches.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
out=${OUT:-$build/bench-out/index}
threads=${THREADS:-1,2}
repeats=${REPEATS:-5}
for n in ${ITEMS:-150000 1000000}; do
    dir=$out/n$n
    mkdir -p "$dir"
    echo "== $n items: mpirec" >&2
    cmd=("$build/bench/bench_index" --items "$n" --queries "${QUERIES:-10000}"
         --time-queries "${TIME_QUERIES:-2000}" --sweep-queries "${SWEEP_QUERIES:-2000}"
         --repeats "$repeats" --threads "$threads" --dir "$dir" ${EXTRA:-})
    echo "${cmd[*]}" > "$dir/command.txt"
    "${cmd[@]}" > "$dir/mpirec.jsonl" 2> "$dir/mpirec.log"
    grep -vE "^  nprobe" "$dir/mpirec.log" >&2
    nlist=$(sed -n 's/.*"kind": "build".*"nlist": \([0-9]*\).*/\1/p' "$dir/mpirec.jsonl")
    echo "== $n items: FAISS (nlist $nlist)" >&2
    /usr/bin/python3 "$root/tools/bench_faiss.py" "$dir" --threads "$threads" \
        --repeats "$repeats" --nlist "$nlist" --time-queries "${TIME_QUERIES:-2000}" \
        --sweep-queries "${SWEEP_QUERIES:-2000}" --ours "$dir/mpirec.jsonl" \
        > "$dir/faiss.jsonl" 2> "$dir/faiss.log"
    sed -n '/ items x /,$p' "$dir/faiss.log" | tee "$dir/table.txt" >&2
done
