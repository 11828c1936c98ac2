# resume_lib.bash — helpers shared by tests/e2e/{resume,preempt,lock}_*.sh.
# Sourced, not a test itself (ctest registers only *.sh). Needs the ctest
# environment: MPIREC_BIN, MPIREC_DATA, MPIREC_SRC, MPIREC_TMP (and the OMPI_*
# root/oversubscribe variables when run as root).
#
#   rl_init NAME               fresh scratch dir $T, cleanup trap for our own jobs
#   rl_train NAME P ARGS...    foreground `mpirun -np P mpirec train ARGS --out $T/NAME`; RC=exit code
#   rl_launch NAME P ARGS...   the same in the background; LPID=mpirun's pid; rl_wait sets RC
#   rl_fire --pid PID ...      send signals when a checkpoint condition holds (fire.py below)
#   rl_ck NAME                 path of the checkpoint DIR/checkpoints/latest names
#   rl_same_hash A B WHAT      bitwise: hash_params.py of both latest checkpoints
#   rl_close A B WHAT          compare_ckpt.py within the distributed test's tolerance
#   rl_same_metrics A B WHAT [TOL]  metrics.jsonl: same lines (epoch, step, losses,
#                              metrics; timing fields ignored), exactly or within TOL
#   ok / bad MSG, rl_done      bookkeeping; rl_done exits 1 if any check failed
set -euo pipefail
BIN=${MPIREC_BIN:?}
DATA=${MPIREC_DATA:?}
SRC=${MPIREC_SRC:?}
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1
MPIRUN=${MPIEXEC:-mpirun}
fails=0
RL_BG=()

ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

rl_cleanup() {
    # Only processes this test started (their pids), never by name.
    local p
    for p in "${RL_BG[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do kill -KILL "$c" 2>/dev/null || true; done
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
}

rl_init() {
    T=${MPIREC_TMP:?}/$1
    rm -rf "$T"
    mkdir -p "$T"
    trap rl_cleanup EXIT
    cat > "$T/fire.py" <<'PYEOF'
"""fire.py: wait for a checkpoint condition in DIR, then signal a process or its
children. Prints one line saying what it saw. Exit 0 fired, 3 the process ended
first (condition never met), 4 timeout."""
import argparse, os, re, signal, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--pid", type=int, required=True)          # mpirun or a launcher script
ap.add_argument("--who", choices=["children", "pid", "last-child"], default="children")
ap.add_argument("--sig", default="TERM")
ap.add_argument("--dir", required=True)                    # DIR/checkpoints
ap.add_argument("--min-step", type=int, default=0)         # a committed ckpt-<s>.h5 with s >= this
ap.add_argument("--tmp", action="store_true")              # and a .h5.tmp being written
ap.add_argument("--count", type=int, default=1)            # send it this many times
ap.add_argument("--gap", type=float, default=0.0)          # seconds between sends
ap.add_argument("--timeout", type=float, default=120)
a = ap.parse_args()
sig = getattr(signal, "SIG" + a.sig)
pat = re.compile(r"^ckpt-(\d+)\.h5(\.tmp)?$")

def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

def children(pid):
    out = []
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out

def scan():
    best, tmp = -1, None
    try:
        names = os.listdir(a.dir)
    except OSError:
        return best, tmp
    for n in names:
        m = pat.match(n)
        if m and m.group(2):
            tmp = n
        elif m:
            best = max(best, int(m.group(1)))
    return best, tmp

end = time.time() + a.timeout
while True:
    if not alive(a.pid):
        print("fire: process %d ended before the condition held" % a.pid)
        sys.exit(3)
    best, tmp = scan()
    if best >= a.min_step and (tmp or not a.tmp):
        break
    if time.time() > end:
        print("fire: timeout")
        sys.exit(4)
    time.sleep(0.001)
targets = children(a.pid) if a.who != "pid" else [a.pid]
if a.who == "last-child":  # one rank only (the highest pid: not rank 0 as a rule)
    targets = sorted(targets)[-1:]
for i in range(a.count):
    for t in targets:
        try:
            os.kill(t, sig)
        except OSError:
            pass
    if i + 1 < a.count:
        time.sleep(a.gap)
still = os.path.exists(os.path.join(a.dir, tmp)) if tmp else False
after, _ = scan()  # a loaded machine may deschedule us between the scan and the kill
print("fire: SIG%s x%d to %s at newest committed step %d%s (step %d just after)" % (
    a.sig, a.count, targets, best,
    (", %s being written (%s after the signal)" % (tmp, "still there" if still else "gone"))
    if tmp else "", after))
PYEOF
}

# rl_train NAME P ARGS... (foreground; RC = exit code; log appended to $T/NAME.log)
rl_train() {
    local name=$1 np=$2
    shift 2
    set +e
    "$MPIRUN" --oversubscribe -np "$np" -x OPENBLAS_NUM_THREADS "$BIN" train "$@" \
        --set train.progress=plain --set index.build_at_end=false --out "$T/$name" \
        >> "$T/$name.log" 2>&1
    RC=$?
    set -e
}

# rl_launch NAME P ARGS... (background; LPID = mpirun's pid)
rl_launch() {
    local name=$1 np=$2
    shift 2
    "$MPIRUN" --oversubscribe -np "$np" -x OPENBLAS_NUM_THREADS "$BIN" train "$@" \
        --set train.progress=plain --set index.build_at_end=false --out "$T/$name" \
        >> "$T/$name.log" 2>&1 &
    LPID=$!
    RL_BG+=("$LPID")
}

rl_wait() {
    set +e
    wait "$LPID"
    RC=$?
    set -e
}

rl_fire() { $PY "$T/fire.py" "$@" || true; }

# rl_expect_rc WANT WHAT LOGNAME
rl_expect_rc() {
    if [ "$RC" = "$1" ]; then
        ok "$2: exit $RC"
    else
        bad "$2: exit $RC, expected $1"
        tail -30 "$T/$3.log"
    fi
}

rl_ck() { echo "$T/$1/checkpoints/$(cat "$T/$1/checkpoints/latest")"; }
# hash_params.py costs ~0.5 s (h5py import): cache by path, size and mtime.
declare -A RL_HASHES=()
rl_hash() {
    local key
    key="$1:$(stat -c %s:%Y.%y "$1")"
    [ -n "${RL_HASHES[$key]:-}" ] || RL_HASHES[$key]=$($PY "$SRC/tests/parity/hash_params.py" "$1")
    echo "${RL_HASHES[$key]}"
}

rl_same_hash() {
    local ha hb
    rl_hash "$(rl_ck "$1")" > /dev/null # fills the cache (a $(...) subshell would not)
    rl_hash "$(rl_ck "$2")" > /dev/null
    ha=$(rl_hash "$(rl_ck "$1")")
    hb=$(rl_hash "$(rl_ck "$2")")
    if [ "$ha" = "$hb" ]; then ok "$3: bitwise equal ($ha)"; else bad "$3: hashes differ ($ha vs $hb)"; fi
}

rl_close() {
    if $PY "$SRC/tests/parity/compare_ckpt.py" --atol 1e-5 --rtol 1e-4 "$(rl_ck "$1")" \
        "$(rl_ck "$2")" > "$T/cmp.txt" 2>&1; then
        ok "$3: equal within atol 1e-5, rtol 1e-4"
    else
        bad "$3: not within tolerance"
        cat "$T/cmp.txt"
    fi
}

# metrics.jsonl of A and B: same number of lines, same keys, same values except
# the timing fields (examples_per_sec, seconds); TOL 0 = exact.
rl_metrics_cmp() {
    $PY - "$T/$1/metrics.jsonl" "$T/$2/metrics.jsonl" "${3:-0}" <<'PYEOF'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
b = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
tol = float(sys.argv[3])
skip = {"examples_per_sec", "seconds"}
if len(a) != len(b) or not a:
    print("metrics: %d lines vs %d" % (len(a), len(b)))
    sys.exit(1)
bad = 0
for i, (x, y) in enumerate(zip(a, b)):
    if set(x) != set(y):
        print("line %d: keys differ: %s vs %s" % (i + 1, sorted(x), sorted(y)))
        bad += 1
        continue
    for k in sorted(set(x) - skip):
        u, v = x[k], y[k]
        same = u == v if (tol == 0 or not isinstance(u, (int, float))) else \
            abs(u - v) <= tol * (1 + abs(v))
        if not same:
            print("line %d (epoch %s step %s): %s %r vs %r" % (i + 1, x.get("epoch"), x.get("step"), k, u, v))
            bad += 1
print("metrics: %d lines compared, %d differences" % (len(a), bad))
sys.exit(1 if bad else 0)
PYEOF
}

rl_same_metrics() {
    if rl_metrics_cmp "$1" "$2" "${4:-0}" > "$T/mcmp.txt"; then
        ok "$3: metrics.jsonl has the same evaluation lines ($(tail -1 "$T/mcmp.txt"))"
    else
        bad "$3: metrics.jsonl differs"
        cat "$T/mcmp.txt"
    fi
}

# rl_seed_dir SRCNAME DSTNAME K: a run directory holding only SRC's checkpoint of
# step K as `latest` (what a job killed right after that checkpoint leaves behind).
rl_seed_dir() {
    local f
    f=$(printf "ckpt-%09d.h5" "$3")
    rm -rf "${T:?}/$2"
    mkdir -p "$T/$2/checkpoints"
    cp "$T/$1/checkpoints/$f" "$T/$2/checkpoints/"
    echo "$f" > "$T/$2/checkpoints/latest"
}

rl_done() {
    if [ "$fails" -gt 0 ]; then
        echo "$fails check(s) failed"
        exit 1
    fi
    echo "all checks passed (${SECONDS}s)"
}
