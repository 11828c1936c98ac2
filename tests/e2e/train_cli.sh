#!/usr/bin/env bash
# ctest-labels: e2e
# `mpirec train` as a command: --help (exit codes listed), usage errors (exit 2),
# a fresh run into a directory that holds another run's checkpoints is refused
# (exit 2, names the file and says --resume auto), while --resume auto continues.
set -uo pipefail
BIN=${MPIREC_BIN:?}; DATA=${MPIREC_DATA:?}; SRC=${MPIREC_SRC:?}
T=${MPIREC_TMP:?}/train_cli
rm -rf "$T"; mkdir -p "$T"
fail() { echo "FAIL: $*"; exit 1; }
"$BIN" train --help > "$T/help" || fail "--help exit"
grep -q "75  checkpointed" "$T/help" || fail "--help lacks exit codes"
grep -q -- "--resume auto" "$T/help" || fail "--help lacks --resume"
"$BIN" train --config x.json 2> "$T/err"; [ $? -eq 2 ] || fail "missing --out: exit"
grep -q -- "--out DIR is required" "$T/err" || fail "missing --out: message"
"$BIN" train --out "$T/x" --bogus 2> "$T/err"; [ $? -eq 2 ] || fail "unknown option: exit"
grep -q "unknown option '--bogus'" "$T/err" || fail "unknown option: message"
"$BIN" frobnicate 2> "$T/err"; [ $? -eq 2 ] || fail "unknown command: exit"
A=(--config "$SRC/configs/amazon_reviews_retrieval.json" --set data.path="$DATA/amazon_reviews.csv"
   --set train.epochs=1 --set train.progress=none --set index.build_at_end=false --out "$T/run")
"$BIN" train -q "${A[@]}" > /dev/null 2>&1 || fail "first run"
"$BIN" train -q "${A[@]}" 2> "$T/err"; rc=$?
[ $rc -eq 2 ] || fail "second fresh run: exit $rc"
grep -q "already holds checkpoints of an earlier run (ckpt-" "$T/err" || fail "second run: message"
grep -q -- "--resume auto" "$T/err" || fail "second run: hint"
"$BIN" train -q "${A[@]}" --resume auto > /dev/null 2>&1 || fail "--resume auto after the refusal"
echo ok
