#!/usr/bin/env bash
# A short training run under valgrind memcheck, at P = 1 and P = 2 (mpirun -np 2
# valgrind mpirec ...), then `mpirec recommend` on what it wrote: no memory error
# and no definite leak of mpirec's own memory, else exit 1.
#
# valgrind 3.19 does not decode AVX-512, so this uses its own build without
# -march=native (BUILD_DIR, default build/valgrind, RelWithDebInfo: -O2 -g), and
# OpenBLAS is held to its Haswell (AVX2) kernels. Open MPI's noise is suppressed
# with tools/mpi-valgrind.supp and --num-callers=40 (toolchain notes section 5).
# Each run must also leave what it should (checkpoints, latest, index.h5, answers):
# a run that failed early would be "clean" for the wrong reason.
#
# Usage: tools/valgrind_train.sh [BUILD_DIR]     (VG_KEEP=1 keeps the scratch dir)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${1:-build/valgrind}
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell

mkdir -p "$BUILD"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMPIREC_NATIVE=OFF \
    -DMPIREC_WERROR=ON -DBUILD_TESTING=OFF > "$BUILD/configure.log" 2>&1 ||
    { cat "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" --target mpirec -- -j "$(nproc)" > "$BUILD/build.log" 2>&1 ||
    { tail -40 "$BUILD/build.log"; exit 1; }
BIN=$ROOT/$BUILD/mpirec

T=$(mktemp -d "${TMPDIR:-/tmp}/valgrind_train.XXXXXX")
if [ "${VG_KEEP:-0}" = 1 ]; then echo "valgrind: scratch in $T"; else trap 'rm -rf "$T"' EXIT; fi
VG=(valgrind --tool=memcheck --error-exitcode=9 --leak-check=full --show-leak-kinds=definite
    --errors-for-leak-kinds=definite --track-origins=yes --num-callers=40
    --suppressions="$ROOT/tools/mpi-valgrind.supp")

"$BIN" gen --out "$T/syn.csv" --users 400 --items 80 --interactions 3000 --seed 3 > /dev/null 2>&1
# multitask with a ranking MLP, logQ, row-sharded tables at P = 2, a periodic
# checkpoint, the final evaluation, the IVF index and the exclude-seen file
S=(--config "$ROOT/configs/synthetic.json" --set "data.path=$T/syn.csv" --set train.batch_size=256
   --set train.epochs=1 --set model.embedding_dim=8 --set checkpoint.every_steps=4
   --set train.max_steps=8 --set 'eval.ks=[1,10]' --set index.nlist=8)
fails=0
run() { # NAME CMD...: one command under memcheck (one log per process)
    local name=$1
    shift
    local t0=$SECONDS rc=0
    "$@" > "$T/$name.out" 2> "$T/$name.err" || rc=$?
    local errs nlogs
    nlogs=$(cat "$T"/vg-"$name"-*.log 2> /dev/null | grep -c "ERROR SUMMARY" || true)
    errs=$(cat "$T"/vg-"$name"-*.log 2> /dev/null | grep -h "ERROR SUMMARY" | awk '{s += $4} END {print s + 0}')
    if [ "$rc" != 0 ] || [ "$errs" != 0 ] || [ "$nlogs" = 0 ]; then
        echo "valgrind: $name: exit $rc, $errs error(s)"
        cat "$T"/vg-"$name"-*.log | grep -v "^==[0-9]*== *$" | head -80
        tail -5 "$T/$name.err"
        fails=$((fails + 1))
    else
        echo "valgrind: $name clean: $nlogs process(es), 0 errors ($((SECONDS - t0)) s)"
    fi
}
run train_p1 "${VG[@]}" --log-file="$T/vg-train_p1-%p.log" "$BIN" train "${S[@]}" --out "$T/p1"
run train_p2 mpirun --oversubscribe -np 2 "${VG[@]}" --log-file="$T/vg-train_p2-%p.log" \
    "$BIN" train "${S[@]}" --set dist.embedding_sharding=row --out "$T/p2"
for d in p1 p2; do # the runs did what they were asked
    [ -f "$T/$d/checkpoints/ckpt-000000004.h5" ] && [ -f "$T/$d/checkpoints/ckpt-000000008.h5" ] &&
        [ "$(cat "$T/$d/checkpoints/latest" 2> /dev/null)" = ckpt-000000008.h5 ] &&
        [ -f "$T/$d/index.h5" ] && [ -f "$T/$d/summary.json" ] ||
        { echo "valgrind: train_$d did not leave checkpoints 4 and 8, latest, index.h5, summary.json"; fails=$((fails + 1)); }
done
printf 'u1\nu7\n{"user": "u3"}\nnobody\n' > "$T/users.txt"
run recommend "${VG[@]}" --log-file="$T/vg-recommend-%p.log" "$BIN" recommend \
    --index "$T/p2/index.h5" --checkpoint "$T/p2" --users "$T/users.txt" -k 5 --exclude-seen --rerank 10
[ "$(grep -c '"items": \[' "$T/recommend.out")" = 4 ] ||
    { echo "valgrind: recommend did not answer the 4 requests"; fails=$((fails + 1)); }
# the checkpoint readers of the other commands, on the P = 2 (row-sharded) checkpoint
run eval "${VG[@]}" --log-file="$T/vg-eval-%p.log" "$BIN" eval \
    --checkpoint "$T/p2/checkpoints/ckpt-000000008.h5" --out "$T/ev"
run index "${VG[@]}" --log-file="$T/vg-index-%p.log" "$BIN" index \
    --checkpoint "$T/p2/checkpoints/ckpt-000000004.h5" --out "$T/ix4.h5" --kind exact
[ -f "$T/ix4.h5" ] || { echo "valgrind: index wrote no file"; fails=$((fails + 1)); }
[ "$fails" = 0 ] || exit 1
echo "valgrind: no errors"
