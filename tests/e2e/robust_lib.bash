# robust_lib.bash — helpers shared by tests/e2e/robust_*.sh (sourced, not a test).
#
#   rb_init NAME          scratch directory $T (removed at exit unless RB_KEEP=1), $BIN, $SRC
#   expect CODE [TEXT...] -- CMD...
#                         run CMD; pass when it exits with CODE and every TEXT occurs
#                         (fixed string) in its stderr (+ stdout). A crash (exit > 128,
#                         a sanitizer report) or a hang (RB_TIMEOUT s, default 120) fails
#                         whatever CODE says.
#   $MPI NP CMD...        run CMD under mpirun with NP ranks (oversubscribed)
#   ok MSG / bad MSG      record a check
#   rb_done               print the summary, exit 1 when any check failed
#
# Output of the last `expect` is in $T/out and $T/err; $RC holds its exit code.
set -uo pipefail
: "${MPIREC_BIN:?set by ctest (MPIREC_BIN)}" "${MPIREC_SRC:?set by ctest (MPIREC_SRC)}"
BIN="$MPIREC_BIN"
SRC="$MPIREC_SRC"
DATA="${MPIREC_DATA:-$SRC/../shared/data}"
MPIEXEC="${MPIEXEC:-mpirun}"
RB_TIMEOUT="${RB_TIMEOUT:-120}"
RB_FAILS=0
RB_CHECKS=0
RB_NAME=robust

rb_init() {
    RB_NAME=$1
    T="${MPIREC_TMP:-/tmp}/$RB_NAME.$$"
    rm -rf "$T"
    mkdir -p "$T"
    if [ "${RB_KEEP:-0}" != 1 ]; then trap 'rb_cleanup' EXIT; fi
    if [ "$(id -u)" = 0 ]; then
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
    export OPENBLAS_NUM_THREADS=1
}

RB_CLEANUP_HOOKS=()
rb_cleanup() {
    local h
    for h in "${RB_CLEANUP_HOOKS[@]+"${RB_CLEANUP_HOOKS[@]}"}"; do eval "$h" || true; done
    chmod -R u+w "$T" 2> /dev/null
    rm -rf "$T"
}

ok() {
    RB_CHECKS=$((RB_CHECKS + 1))
    echo "ok   $*"
}
bad() {
    RB_CHECKS=$((RB_CHECKS + 1))
    RB_FAILS=$((RB_FAILS + 1))
    echo "FAIL $*"
}

# `$MPI 2 "$BIN" ...` runs with 2 ranks. A word list, not a function, so that
# `expect` can run it under timeout. One node: the ranks inherit mpirun's
# environment (MPIREC_FAULT_INJECT, ...).
MPI="$MPIEXEC --oversubscribe -np"

# expect CODE [TEXT ...] -- CMD ...
expect() {
    local code=$1
    shift
    local -a needles=()
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
        needles+=("$1")
        shift
    done
    shift
    local what="$*"
    timeout -k 10 "$RB_TIMEOUT" "$@" > "$T/out" 2> "$T/err"
    RC=$?
    local good=1
    if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
        bad "HANG (no exit within ${RB_TIMEOUT} s): $what"
        good=0
    elif grep -qE "AddressSanitizer|runtime error:|LeakSanitizer|Segmentation fault|core dumped" \
        "$T/err"; then
        bad "CRASH or sanitizer report (exit $RC): $what"
        good=0
    elif [ "$RC" != "$code" ]; then
        bad "exit $RC, expected $code: $what"
        good=0
    else
        local n
        for n in "${needles[@]+"${needles[@]}"}"; do
            if ! grep -qF -- "$n" "$T/err" "$T/out"; then
                bad "message lacks '$n': $what"
                good=0
            fi
        done
    fi
    if [ "$good" = 1 ]; then
        ok "exit $code${needles[0]+, \"${needles[0]}\"...}: ${what:0:150}"
    else
        grep -v -E '^(\s|\{|\}|$)' "$T/err" | sed 's/^/     | /' | tail -12
    fi
    return 0
}

# The one line mpirec prints on failure ("mpirec: <kind>: <message>").
rb_errline() { grep -h '^mpirec' "$T/err" | tail -1; }

rb_done() {
    if [ "$RB_FAILS" -gt 0 ]; then
        echo "$RB_NAME: $RB_FAILS of $RB_CHECKS checks failed"
        exit 1
    fi
    echo "$RB_NAME: all $RB_CHECKS checks passed"
    exit 0
}
