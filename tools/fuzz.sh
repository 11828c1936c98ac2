#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan + UBSan, tests/fuzz/) and run every
# target for a while; any crash, sanitizer report, leak, timeout or broken oracle
# is a finding: the input is kept under BUILD/fuzz-artifacts/ and the script exits 1.
#
# Usage: tools/fuzz.sh [-t SECONDS] [-j PARALLEL] [-b BUILD_DIR] [TARGET ...]
#   -t SECONDS   per target (default 20: the CI smoke; docs/robustness.md records
#                the 10-minute campaigns, run with -t 600)
#   -j PARALLEL  targets run at the same time (default 1; each is one process)
#   -b DIR       build directory (default build/fuzz, the `fuzz` preset's); it is
#                configured and built when needed
#   TARGET       fuzz_reader_csv fuzz_reader_jsonl fuzz_config fuzz_ckpt fuzz_index
#                fuzz_request (default: all)
# The corpus grown by a run is kept in BUILD/fuzz-corpus/<target> and reused by the
# next run; the seeds in tests/fuzz/corpus/<target> are only read. The HDF5 loader
# targets run without per-input leak checks (HDF5 leaks on damaged files, see
# tests/fuzz/lsan-hdf5.supp) and get a leak pass over their corpus at the end, with
# HDF5's own leaks suppressed; every input is also checked for HDF5 ids left open.
# A summary line per target: seconds, executions, exec/s, corpus, coverage (libFuzzer's
# cov: edges / ft: features of its last status line), findings.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=20
PAR=1
BUILD=build/fuzz
while getopts "t:j:b:h" o; do
    case $o in
    t) SECS=$OPTARG ;;
    j) PAR=$OPTARG ;;
    b) BUILD=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
ALL="fuzz_reader_csv fuzz_reader_jsonl fuzz_config fuzz_ckpt fuzz_index fuzz_request"
TARGETS=${*:-$ALL}

# (a tree made by tools/sanitize.sh without -f gets the fuzz targets switched on)
if [ ! -f "$BUILD/build.ninja" ] || ! grep -q '^MPIREC_FUZZ:BOOL=ON' "$BUILD/CMakeCache.txt"; then
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DMPIREC_FUZZ=ON -DMPIREC_SANITIZE=ON -DMPIREC_WERROR=ON > /dev/null
fi
cmake --build "$BUILD" --target fuzz_all -- -j "$(nproc)" > "$BUILD/fuzz-build.log" 2>&1 ||
    { tail -30 "$BUILD/fuzz-build.log"; exit 1; }

mkdir -p "$BUILD/fuzz-corpus" "$BUILD/fuzz-artifacts" "$BUILD/fuzz-logs"
SUPP="$ROOT/tests/fuzz/lsan-hdf5.supp"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

run_one() {
    local t=$1
    local bin="$BUILD/tests/fuzz/$t" work="$BUILD/fuzz-corpus/$t" seeds="tests/fuzz/corpus/$t"
    local log="$BUILD/fuzz-logs/$t.log" art="$BUILD/fuzz-artifacts/$t-"
    mkdir -p "$work"
    local -a leak=(-detect_leaks=1)
    local asan="detect_leaks=1"
    case $t in fuzz_ckpt | fuzz_index) leak=(-detect_leaks=0) asan="detect_leaks=0" ;; esac
    local rc=0
    ASAN_OPTIONS=$asan nice -n 19 "$bin" -max_total_time="$SECS" -timeout=25 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$art" "${leak[@]}" "$work" "$seeds" > "$log" 2>&1 || rc=$?
    if [ "$rc" = 0 ] && [ "${leak[0]}" = -detect_leaks=0 ]; then
        # leak pass over the corpus, HDF5's own leaks suppressed (slow unwinding)
        LSAN_OPTIONS="suppressions=$SUPP:fast_unwind_on_malloc=0:print_suppressions=0" \
            nice -n 19 "$bin" -runs=0 -artifact_prefix="$art" "$work" "$seeds" >> "$log" 2>&1 || rc=$?
    fi
    local execs eps units files cov
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | head -1)
    # coverage of the last status line: "cov: N ft: M" (edges, features)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 | awk '{print $2 "/" $4}')
    eps=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log" | head -1)
    units=$(awk '/stat::new_units_added/ {print $2}' "$log" | head -1)
    files=$(find "$work" -type f | wc -l)
    local found
    found=$(find "$BUILD/fuzz-artifacts" -name "$t-*" -newer "$BUILD/fuzz-logs/.start" | wc -l)
    printf '%-18s %5ss  %10s execs  %7s/s  corpus %5s (+%s)  cov/ft %s  findings %s%s\n' "$t" "$SECS" \
        "${execs:-?}" "${eps:-?}" "$files" "${units:-?}" "${cov:-?}" "$found" \
        "$([ "$rc" = 0 ] || echo "  (exit $rc, $log)")"
    [ "$rc" = 0 ] && [ "$found" = 0 ]
}

touch "$BUILD/fuzz-logs/.start"
fails=0
pids=()
names=()
for t in $TARGETS; do
    [ -x "$BUILD/tests/fuzz/$t" ] || { echo "no fuzz target $t in $BUILD"; exit 2; }
    run_one "$t" > "$BUILD/fuzz-logs/$t.summary" &
    pids+=($!)
    names+=("$t")
    if [ "${#pids[@]}" -ge "$PAR" ]; then
        wait "${pids[0]}" || fails=$((fails + 1))
        cat "$BUILD/fuzz-logs/${names[0]}.summary"
        pids=("${pids[@]:1}")
        names=("${names[@]:1}")
    fi
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || fails=$((fails + 1))
    cat "$BUILD/fuzz-logs/${names[$i]}.summary"
done
if [ "$fails" -gt 0 ]; then
    echo "fuzz: $fails target(s) with findings; inputs in $BUILD/fuzz-artifacts/, logs in $BUILD/fuzz-logs/"
    for f in "$BUILD"/fuzz-logs/*.log; do
        grep -q -E "ERROR|SUMMARY|abort|deadly" "$f" && { echo "== $f"; grep -E -A12 "ERROR|==ABORTING|deadly signal" "$f" | head -40; }
    done
    exit 1
fi
echo "fuzz: no findings"
