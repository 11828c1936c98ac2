#!/usr/bin/env bash
# bench_all.sh — every benchmark of the project, one after the other, with medians
# and a markdown table per benchmark; the source of truth for the performance
# figures in README.md and docs/benchmarks.md.
#
#   tools/bench_all.sh                  # everything (about 1 hour on 2 cores)
#   QUICK=1 tools/bench_all.sh          # small sizes and 1-2 repeats: checks the drivers (~10 min)
#   ONLY="train scaling" tools/bench_all.sh   # a subset
#
# Sections (ONLY / SKIP take these names):
#   train    tools/bench_train.sh    training speed, 1 core, vs the PyTorch reference and the GEMM bound
#   model    bench/bench_model        the model step alone (towers, loss, Adagrad), GEMM rates
#   scaling  tools/bench_scaling.sh  strong/weak scaling, comm share, alpha-beta bytes, RSS row vs replicated
#   ingest   tools/bench_ingest.sh   ingestion MB/s per rank vs raw read, P = 1, 2 (~1 GB generated CSV)
#   reader   bench/bench_reader       parse speed per format vs read(), one core
#   ckpt     bench/bench_ckpt         checkpoint write/read vs raw disk write, P = 1, 2 (if built)
#   index    tools/bench_index.sh or bench/bench_index (+ FAISS when `import faiss` works)
# Each section writes under $OUT/<section>/ and its table to $OUT/<section>.md; the whole
# report (machine description first) goes to stdout and $OUT/benchmarks.md. A section
# that fails is reported as failed (with the end of its log) and the others still run.
#
# Run it on a quiet machine: every figure is wall-clock time. The load average is
# recorded next to each measurement.
#
# Environment: BUILD (default build), OUT (default $BUILD/bench-out), QUICK, ONLY, SKIP,
# and each section's own variables (see the scripts), which are passed through.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
out=${OUT:-$build/bench-out}
mkdir -p "$out"
export BUILD=$build
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
export OPENBLAS_NUM_THREADS=1
scratch=$(mktemp -d "${TMPDIR:-/tmp}/mpirec-bench-all.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
report=$out/benchmarks.md
quick=${QUICK:-0}

want() {
    local s=$1
    if [ -n "${ONLY:-}" ]; then [[ " $ONLY " == *" $s "* ]] || return 1; fi
    if [ -n "${SKIP:-}" ]; then [[ " $SKIP " == *" $s "* ]] && return 1; fi
    return 0
}
load() { cut -d' ' -f1-3 /proc/loadavg; }
emit() { tee -a "$report"; }

{
    echo "# mpirec benchmarks"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
    echo "| machine | $(nproc) cores ($(grep -c ^processor /proc/cpuinfo) logical), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM |"
    echo "| kernel | $(uname -r) |"
    echo "| virtualisation | $(systemd-detect-virt 2>/dev/null || echo unknown) |"
    echo "| CPU flags | $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512bw|fma)$' | tr '\n' ' ') |"
    echo "| compiler | $(${CC:-cc} --version 2>/dev/null | head -1) |"
    echo "| MPI | $(mpirun --version 2>/dev/null | head -1) |"
    echo "| OpenBLAS | OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS; $(dpkg-query -W -f='${Package} ${Version}' libopenblas0-pthread 2>/dev/null || echo '?') |"
    echo "| commit | $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' (modified)') |"
    echo "| load average at start | $(load) |"
    echo "| mode | $([ "$quick" = 1 ] && echo 'QUICK=1 (small sizes: checks the drivers, figures not representative)' || echo full) |"
    echo
} > "$report"
cat "$report"

section() { # name title command...
    local name=$1 title=$2
    shift 2
    local log=$out/$name.log t0
    t0=$(date +%s)
    echo "## $title" | emit
    echo | emit
    echo "load average before: $(load)" | emit
    echo | emit
    if "$@" > "$out/$name.md" 2> "$log"; then
        cat "$out/$name.md" | emit
        echo | emit
        echo "($(( $(date +%s) - t0 )) s; load average after: $(load); log: $log)" | emit
    else
        echo "**FAILED** (exit code $?): last lines of $log:" | emit
        echo '```' | emit
        tail -15 "$log" | emit
        echo '```' | emit
    fi
    echo | emit
}

# ---- sections ----
run_train() {
    if [ "$quick" = 1 ]; then
        REPEATS=${REPEATS:-1} ROWS=${ROWS:-40000} DIMS=${DIMS:-32} OUT=$out/train "$root/tools/bench_train.sh"
    else
        OUT=$out/train "$root/tools/bench_train.sh"
    fi
}
run_model() {
    local r=9
    [ "$quick" = 1 ] && r=3
    echo '```'
    "$build/bench/bench_model" --repeats "$r"
    echo '```'
}
run_scaling() {
    if [ "$quick" = 1 ]; then
        REPEATS=${REPEATS:-1} STEPS=${STEPS:-20} OUT=$out/scaling "$root/tools/bench_scaling.sh"
    else
        OUT=$out/scaling "$root/tools/bench_scaling.sh"
    fi
}
run_ingest() {
    if [ "$quick" = 1 ]; then
        INTERACTIONS=${INTERACTIONS:-4000000} REPEATS=${REPEATS:-2} OUT=$out/ingest "$root/tools/bench_ingest.sh"
    else
        OUT=$out/ingest "$root/tools/bench_ingest.sh"
    fi
}
run_reader() {
    local mb=400 runs=7
    [ "$quick" = 1 ] && mb=50 && runs=3
    mkdir -p "$out/reader"
    echo "### Readers, one core (thread CPU time), generated files of $mb MB, median of $runs runs"
    echo
    echo "| format | read MB/s | parse MB/s | read + parse MB/s | M records/s | read / parse | parse within 3x of read |"
    echo "|---|---|---|---|---|---|---|"
    for g in csv csvq delim jsonl; do
        local f=$scratch/reader_$g.dat
        "$build/bench/bench_reader" --gen "$g" --mb "$mb" --runs "$runs" --path "$f" > "$out/reader/$g.txt" || return 1
        rm -f "$f"
        awk -v g="$g" '
            /^read /   { rd = $2 }
            /^parse /  { ps = $2; rp = $(NF) }
            /^stream / { st = $2; for (i = 1; i <= NF; i++) if ($i == "M") mr = $(i-1) }
            END { sub("x", "", rp); printf "| %s | %s | %s | %s | %s | %sx | %s |\n", g, rd, ps, st, mr, rp, (rp + 0 <= 3 ? "met" : "NOT met") }
        ' "$out/reader/$g.txt"
    done
    echo
    echo "csv = user,item,rating,timestamp; csvq = quoted summary text column; delim = MovieLens '::'; jsonl = JSON Lines."
    echo "read = read() from the page cache (a memory copy: the strictest comparison). Per-format commands in $out/reader/*.txt."
}
run_ckpt() {
    local bench=$build/bench/bench_ckpt
    if [ ! -x "$bench" ]; then
        echo "bench_ckpt is not built in this tree ($bench): skipped."
        return 0
    fi
    local users=2000000 items=150000 reps=5
    [ "$quick" = 1 ] && users=200000 && items=15000 && reps=2
    mkdir -p "$out/ckpt"
    echo "### Checkpoints: ($users + $items) x 32 float32 tables + Adagrad state, median of $reps repeats"
    echo
    echo "| P | mode | write MB/s | write / raw disk write | read (cold) MB/s | verify (s) | raw write+fsync MB/s |"
    echo "|---|---|---|---|---|---|---|"
    for P in 1 2; do
        local dir=$scratch/ckpt_p$P
        mkdir -p "$dir"
        mpirun -np "$P" "$bench" --dir "$dir" --users "$users" --items "$items" --reps "$reps" \
            > "$out/ckpt/p$P.txt" 2>&1 || return 1
        rm -rf "$dir"
        awk -v P="$P" '
            /raw write\+fsync/ { raw = $3 }
            /^  (row|replicated) +write/ {
                m = $1; w = $3; pct = ""; rc = ""; vf = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /%$/) pct = $i
                    if ($i == "cold") rc = $(i+1)
                    if ($i == "verify") vf = $(i+1)
                }
                line[++n] = sprintf("| %s | %s | %s | %s | %s | %s |", P, m, w, pct, rc, vf)
            }
            END { for (i = 1; i <= n; i++) print line[i] " " raw " |" }
        ' "$out/ckpt/p$P.txt"
    done
    echo
    echo "Full output of bench_ckpt in $out/ckpt/p*.txt."
}
run_index() {
    local items="150000 1000000" reps=5 queries=10000
    [ "$quick" = 1 ] && items=150000 && reps=2 && queries=2000
    local dir=$out/index
    mkdir -p "$dir"
    if [ -x "$root/tools/bench_index.sh" ]; then
        ITEMS=${ITEMS:-$items} REPEATS=${REPEATS:-$reps} QUERIES=${QUERIES:-$queries} OUT=$dir \
            "$root/tools/bench_index.sh" > "$dir/driver.log" 2>&1 \
            || echo "(tools/bench_index.sh exited with an error, e.g. FAISS missing; see $dir/driver.log)" >&2
    else
        local n
        for n in ${ITEMS:-$items}; do
            mkdir -p "$dir/n$n"
            "$build/bench/bench_index" --items "$n" --queries "${QUERIES:-$queries}" \
                --repeats "${REPEATS:-$reps}" --threads 1,2 --dir "$dir/n$n" \
                > "$dir/n$n/mpirec.jsonl" 2> "$dir/n$n/mpirec.log" || return 1
            if /usr/bin/python3 -c 'import faiss' 2> /dev/null; then
                local nl
                nl=$(sed -n 's/.*"kind": "build".*"nlist": \([0-9]*\).*/\1/p' "$dir/n$n/mpirec.jsonl")
                for th in 1 2; do
                    /usr/bin/python3 "$root/tools/bench_faiss.py" "$dir/n$n" --threads "$th" --nlist "$nl" \
                        --repeats "${REPEATS:-$reps}" >> "$dir/n$n/faiss.jsonl" 2> "$dir/n$n/faiss.log" || true
                done
            fi
        done
    fi
    /usr/bin/python3 - "$dir" <<'PY'
import glob, json, os, sys
d = sys.argv[1]
print("### Candidate index: queries per second, exact and IVF at target recall@10 (synthetic clustered vectors, d = 32)\n")
print("| items | impl | kind | threads | target recall | nprobe / nlist | recall | QPS | vs exact | mpirec / FAISS |")
print("|---|---|---|---|---|---|---|---|---|---|")
any_faiss = False
for sub in sorted(glob.glob(os.path.join(d, "n*")), key=lambda p: int(os.path.basename(p)[1:])):
    rows = []
    for fn in ("mpirec.jsonl", "faiss.jsonl"):
        p = os.path.join(sub, fn)
        if os.path.exists(p):
            rows += [json.loads(l) for l in open(p) if l.startswith("{")]
    any_faiss |= any(r.get("impl") == "faiss" for r in rows)
    fq = {(r.get("kind"), r.get("threads"), round(r.get("target", 0), 3)): r.get("qps")
          for r in rows if r.get("impl") == "faiss" and r.get("kind") != "build"}
    def vs(r):
        q = fq.get((r.get("kind"), r.get("threads"), round(r.get("target", 0), 3)))
        return "%.1fx" % (r["qps"] / q) if r.get("impl") == "mpirec" and q and not r.get("quantize") else ""
    for r in rows:
        if r.get("kind") == "build":
            continue
        if r.get("kind") == "exact" or "target" not in r:
            print("| %s | %s | %s | %s | | | | %.0f | | %s |" % (r.get("items", "?"), r.get("impl", "?"),
                  r.get("kind", r.get("index", "?")), r.get("threads", "?"), r.get("qps", 0), vs(r)))
        else:
            print("| %s | %s | %s%s | %s | %.2f | %s / %s | %.4f | %.0f | %s | %s |" % (
                r.get("items", "?"), r.get("impl", "?"), r.get("kind", "?"), "+sq8" if r.get("quantize") else "",
                r.get("threads", "?"), r["target"], r.get("nprobe", "?"), r.get("nlist", "?"),
                r.get("recall", 0), r.get("qps", 0),
                "%.1fx" % r["speedup_vs_exact"] if "speedup_vs_exact" in r else "", vs(r)))
if not any_faiss:
    print("\nFAISS is not installed here (`import faiss` fails): no FAISS rows. tools/bench_faiss.py runs when it is.")
print("\nRaw results and logs in %s/n*/." % d)
PY
}

want train && section train "Training speed vs the PyTorch reference (1 core)" run_train
want model && section model "Model step alone (bench_model)" run_model
want scaling && section scaling "Scaling, communication and memory" run_scaling
want ingest && section ingest "Ingestion" run_ingest
want reader && section reader "Readers" run_reader
want ckpt && section ckpt "Checkpoints" run_ckpt
want index && section index "Candidate index" run_index
echo "Report: $report" >&2
