#!/usr/bin/env bash
# bench_ingest.sh — ingestion throughput per rank next to the raw read speed of the
# same file (bench/bench_ingest.c), at P = 1 and 2, on a ~1 GB CSV made by `mpirec gen`.
#
#   tools/bench_ingest.sh                 # generate 40M interactions (~1.07 GB), P = 1 2
#   FILE=/path/big.csv PS="1 2 4" tools/bench_ingest.sh   # an existing user,item,rating,timestamp CSV
#
# bench_ingest measures, interleaved per repeat, on each rank's byte range: raw
# (pread into a buffer, page cache warm), parse (the reader alone), ingest (the whole
# mr_ingest: parse, intern, split, distributed vocabularies, ids, summary); medians in
# MB/s per rank (file bytes / P / slowest rank's seconds). Goals (the project's issue):
# parse within 3x of raw (raw / parse <= 3) and whole ingestion >= 200 MB/s per rank.
# The generated file is deleted at the end (FILE is kept).
#
# Environment: BUILD (default build), OUT (default $BUILD/bench-out/ingest), SCRATCH
# (default mktemp -d, removed), FILE, INTERACTIONS (40000000), USERS (2000000),
# ITEMS (150000), PS ("1 2"), REPEATS (5), NP_GEN (2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
out=${OUT:-$build/bench-out/ingest}
ps=${PS:-1 2}
repeats=${REPEATS:-5}
bin=$build/mpirec
bench=$build/bench/bench_ingest
for f in "$bin" "$bench"; do
    [ -x "$f" ] || { echo "bench_ingest: missing $f (build first: cmake --build $build)" >&2; exit 2; }
done
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
export OPENBLAS_NUM_THREADS=1
mkdir -p "$out"
scratch=${SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/mpirec-bench-ingest.XXXXXX")}
mkdir -p "$scratch"
trap 'rm -rf "$scratch"' EXIT
echo "bench_ingest: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(date -u +%FT%TZ)" >&2
if [ -n "${FILE:-}" ]; then
    file=$FILE
else
    file=$scratch/ingest.csv
    n=${INTERACTIONS:-40000000}
    echo "bench_ingest: generating $n interactions into $file (mpirun -np ${NP_GEN:-2} mpirec gen)" >&2
    t0=$(date +%s)
    mpirun -np "${NP_GEN:-2}" "$bin" gen --out "$file" --users "${USERS:-2000000}" \
        --items "${ITEMS:-150000}" --interactions "$n" --seed 7 > "$out/gen.json" 2> /dev/null
    echo "bench_ingest: generated $(stat -c %s "$file") bytes in $(( $(date +%s) - t0 )) s" >&2
fi
raw=$out/ingest.jsonl
: > "$raw"
for P in $ps; do
    l0=$(cut -d' ' -f1 /proc/loadavg)
    mpirun -np "$P" -x OPENBLAS_NUM_THREADS=1 "$bench" "$file" "$repeats" > "$scratch/p$P.out"
    l1=$(cut -d' ' -f1 /proc/loadavg)
    grep '"summary": true' "$scratch/p$P.out" | sed "s/}\$/, \"load1\": $l0, \"load1_after\": $l1}/" >> "$raw"
    grep -v '"summary": true' "$scratch/p$P.out" > "$out/p$P.repeats.txt" || true
    echo "  P=$P done (load $l0 -> $l1)" >&2
done
/usr/bin/python3 - "$raw" <<'PY' | tee "$out/table.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
r0 = rows[0]
print("### Ingestion: %.2f GB CSV (%d records), median of %d repeats per rank count\n"
      % (r0["bytes"] / 1e9, r0["records"], r0["repeats"]))
print("| P | raw MB/s/rank | parse MB/s/rank | ingest MB/s/rank | raw / parse | raw / ingest | parse within 3x of raw | ingest >= 200 MB/s/rank | load avg |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| %d | %.0f | %.0f | %.0f | %.2f | %.2f | %s | %s | %.1f-%.1f |"
          % (r["ranks"], r["raw_mb_s_per_rank"], r["parse_mb_s_per_rank"], r["ingest_mb_s_per_rank"],
             r["raw_over_parse"], r["raw_over_ingest"],
             "met" if r["raw_over_parse"] <= 3 else "NOT met",
             "met" if r["ingest_mb_s_per_rank"] >= 200 else "NOT met", r["load1"], r["load1_after"]))
if len(rows) > 1:
    a, b = rows[0], rows[-1]
    print("\ningest MB/s per rank at P = %d / at P = %d: %.2f (1.00 = perfect scaling of the whole ingestion)"
          % (b["ranks"], a["ranks"], b["ingest_mb_s_per_rank"] / a["ingest_mb_s_per_rank"]))
PY
echo "reproduce: PS=\"$ps\" REPEATS=$repeats tools/bench_ingest.sh   (bench_ingest: mpirun -np P $bench FILE $repeats)" | tee -a "$out/table.md"
