#!/usr/bin/env bash
# ASan + UBSan pass: build mpirec with clang -fsanitize=address,undefined
# -fno-sanitize-recover=all (-O2 -g), then run under the sanitizers
#   1. the unit suites (ctest unit.*) and the MPI suites at P = 1..4 (ctest mpi_*),
#   2. the robustness end-to-end tests (ctest robust_*: bad data, bad configs,
#      damaged files, injected NaN and write failures, a killed rank, a full disk),
#      whose error paths are the ones most likely to hide memory errors, and the
#      file readers' and the server's error cases (recommend_errors, inspect_ckpt,
#      index_checkpoint, train_cli),
# with Open MPI's own leaks suppressed (tools/lsan-mpi.supp, toolchain notes
# section 5; Open MPI's components are kept mapped by the LD_PRELOAD shim
# tools/sanitize/nodlclose.c so that the suppressions work with the fast unwinder)
# and HDF5's leak on damaged files (tests/fuzz/lsan-hdf5.supp). Any
# sanitizer report fails the test that produced it. A canary (tools/sanitize/canary.c)
# first proves that these settings still catch a leak, an overflow and UB of ours.
#
# Usage: tools/sanitize.sh [-b BUILD_DIR] [-f] [-q] [-- extra ctest args]
#   -b DIR  build directory (default build/asan, the `asan` preset's)
#   -f      also build the libFuzzer targets in the same tree (MPIREC_FUZZ=ON), so
#           that tools/fuzz.sh -b DIR can reuse it (tools/test.sh does)
#   -q      only the unit and MPI suites (skip the end-to-end tests)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=build/asan
FUZZ=OFF
E2E=1
while getopts "b:fqh" o; do
    case $o in
    b) BUILD=$OPTARG ;;
    f) FUZZ=ON ;;
    q) E2E=0 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

mkdir -p "$BUILD"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMPIREC_SANITIZE=ON -DMPIREC_FUZZ=$FUZZ -DMPIREC_WERROR=ON > "$BUILD/configure.log" 2>&1 ||
    { cat "$BUILD/configure.log"; exit 1; }
t0=$SECONDS
cmake --build "$BUILD" -- -j "$(nproc)" > "$BUILD/build.log" 2>&1 || { tail -40 "$BUILD/build.log"; exit 1; }
echo "sanitize: $BUILD built in $((SECONDS - t0)) s"

# HDF5's leak on damaged files: the fast unwinder sees only its first frame, an
# unnamed one inside libhdf5, so here the whole library is suppressed (HDF5 holds
# no memory mpirec must free, except variable-length strings, and those are
# checked precisely by tools/fuzz.sh's leak pass over the fuzz_ckpt corpus, which
# uses the slow unwinder and suppresses only H5C_protect).
{ cat tools/lsan-mpi.supp tests/fuzz/lsan-hdf5.supp; echo "leak:libhdf5_openmpi.so"; } > "$BUILD/lsan.supp"
# Open MPI's components stay mapped (tools/sanitize/nodlclose.c), so that the fast
# unwinder names them and the suppressions match: about 4x faster process starts
# than fast_unwind_on_malloc=0, which the shim replaces.
cc -shared -fPIC -O2 -o "$BUILD/nodlclose.so" tools/sanitize/nodlclose.c
export LD_PRELOAD="$ROOT/$BUILD/nodlclose.so${LD_PRELOAD:+:$LD_PRELOAD}"
export LSAN_OPTIONS="suppressions=$ROOT/$BUILD/lsan.supp:print_suppressions=0"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export OMPI_MCA_rmaps_base_oversubscribe=1

# Negative control (tools/sanitize/canary.c): under exactly these settings a leak,
# an overflow and a signed overflow of our own must still fail, a clean run pass.
OMPI_CC=clang mpicc -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
    -fno-omit-frame-pointer tools/sanitize/canary.c -o "$BUILD/canary"
for mode in 0 1 2 3; do
    rc=0
    mpirun --oversubscribe -np 2 "$BUILD/canary" "$mode" > "$BUILD/canary.log" 2>&1 || rc=$?
    want=LeakSanitizer
    [ "$mode" = 2 ] && want=heap-buffer-overflow
    [ "$mode" = 3 ] && want="signed integer overflow"
    if [ "$mode" = 0 ] && [ "$rc" != 0 ]; then
        echo "sanitize: canary: a clean MPI program fails under these settings (exit $rc):"
        tail -30 "$BUILD/canary.log"
        exit 1
    elif [ "$mode" != 0 ] && { [ "$rc" = 0 ] || ! grep -q "$want" "$BUILD/canary.log"; }; then
        echo "sanitize: canary: mode $mode (exit $rc) was not reported as $want"
        tail -30 "$BUILD/canary.log"
        exit 1
    fi
done
echo "sanitize: canary ok (a leak, a heap overflow and a signed overflow are caught)"

cd "$BUILD"
tests='^(unit\.|mpi_)'
[ "$E2E" = 1 ] && tests='^(unit\.|mpi_|e2e\.(robust_|recommend_errors|inspect_ckpt|index_checkpoint|train_cli))'
# Sanitized runs are slower; the tests' own time limits are generous.
t0=$SECONDS
ctest --output-on-failure -R "$tests" -j 2 --timeout 900 "$@"
echo "sanitize: ctest under ASan + UBSan passed in $((SECONDS - t0)) s"
