#!/bin/bash
# recommend_errors.sh — loading errors of `mpirec recommend`, `eval` and `index`:
# every bad input gives the documented exit code and a message naming the file and
# what is wrong, never a crash (exit codes above 128) or a silent answer.
#  5: missing index / checkpoint / exclude-seen file
#  9: truncated index or checkpoint, checkpoint given as index and index as
#     checkpoint, index of another model (model hash), index of other weights
#     (another checkpoint of the same model), corrupted or foreign seen file
#  2: --rerank on a model without a rating head, --rerank N < k
#  3: eval/index overriding a model key, data giving other vocabularies
#  4: malformed request lines (answered with an "error" line, the rest served)
# ctest-labels: e2e
# ctest-timeout: 300
set -uo pipefail
: "${MPIREC_BIN:?set by ctest}" "${MPIREC_DATA:?set by ctest}" "${MPIREC_SRC:?set by ctest}"
tmp="${MPIREC_TMP:-/tmp}/recommend_errors.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
data="$MPIREC_DATA/amazon_reviews.csv"
fails=0
fail() { echo "recommend_errors: $*" >&2; fails=$((fails + 1)); }

# expect CODE "TEXT" "TEXT2" -- command...: exit code and message fragments on stderr
expect() {
    local code=$1; shift
    local -a needles=()
    while [ "$1" != "--" ]; do needles+=("$1"); shift; done
    shift
    "$@" > "$tmp/out" 2> "$tmp/err"
    local rc=$?
    if [ "$rc" != "$code" ]; then
        fail "exit $rc (want $code): $*"; sed 's/^/    /' "$tmp/err" >&2; return
    fi
    for n in "${needles[@]}"; do
        grep -qF -- "$n" "$tmp/err" || { fail "no '$n' in the message of: $*"; sed 's/^/    /' "$tmp/err" >&2; }
    done
}

T() { "$MPIREC_BIN" train --set data.path="$data" -q "$@" > "$tmp/train.log" 2>&1 || { cat "$tmp/train.log"; exit 1; }; }
# A: multitask, a checkpoint after every epoch; B: the retrieval model (another config)
T --config "$MPIREC_SRC/configs/amazon_reviews_multitask.json" --set checkpoint.every_steps=26 \
  --set checkpoint.keep=5 --out "$tmp/a"
T --config "$MPIREC_SRC/configs/amazon_reviews_retrieval.json" --out "$tmp/b"
A="$tmp/a/index.h5"; CA="$tmp/a/checkpoints/ckpt-000000078.h5"; C26="$tmp/a/checkpoints/ckpt-000000026.h5"
[ -f "$C26" ] && [ -f "$CA" ] || { ls -R "$tmp/a" >&2; echo "recommend_errors: checkpoints missing" >&2; exit 1; }
R() { "$MPIREC_BIN" recommend -q --user A2JXAZZI9PHK9Z "$@"; }

# the good case works (so the failures below are about the files)
expect 0 -- R --index "$A" --checkpoint "$CA" --exclude-seen --rerank 10
grep -q '"items": \[' "$tmp/out" || fail "no answer from the good files"

# missing files: 5
expect 5 "index file '$tmp/nope.h5'" "cannot open" -- R --index "$tmp/nope.h5"
expect 5 "checkpoint $tmp/nope.h5" "cannot open" -- R --index "$A" --checkpoint "$tmp/nope.h5"
cp "$A" "$tmp/lonely.h5"
expect 5 "exclude-seen file $tmp/lonely.seen.h5" "cannot open" "mpirec index" -- \
    R --index "$tmp/lonely.h5" --checkpoint "$CA" --exclude-seen
expect 5 "checkpoint $tmp/nope" -- "$MPIREC_BIN" index --checkpoint "$tmp/nope" --out "$tmp/x.h5"

# truncated files: 9
head -c 6000 "$A" > "$tmp/trunc_index.h5"
head -c 300000 "$CA" > "$tmp/trunc_ckpt.h5"
expect 9 "$tmp/trunc_index.h5" "truncated" -- R --index "$tmp/trunc_index.h5" --checkpoint "$CA"
expect 9 "$tmp/trunc_ckpt.h5 is truncated" -- R --index "$A" --checkpoint "$tmp/trunc_ckpt.h5"
expect 9 "$tmp/trunc_ckpt.h5 is truncated" -- "$MPIREC_BIN" eval --checkpoint "$tmp/trunc_ckpt.h5" --out "$tmp/ev"

# wrong kinds: 9
expect 9 "index file '$CA'" "magic is 'MPIREC-CKPT'" "this is a checkpoint" "give it as --checkpoint" \
    -- R --index "$CA"
expect 9 "$A is a 'MPIREC-INDEX' file, expected 'MPIREC-CKPT'" "candidate index" -- \
    R --index "$A" --checkpoint "$A"
expect 9 "$A is a 'MPIREC-INDEX' file" -- "$MPIREC_BIN" eval --checkpoint "$A" --out "$tmp/ev"
expect 9 "index file '$tmp/a/index.seen.h5'" "this is an exclude-seen file, not an index" -- \
    R --index "$tmp/a/index.seen.h5"

# an index of another model, of other weights of the same model: 9
expect 9 "index $tmp/b/index.h5 belongs to another model than checkpoint $CA" "model hash" -- \
    R --index "$tmp/b/index.h5" --checkpoint "$CA"
expect 9 "index $A was built from other weights than checkpoint $C26" "step 26" \
    "records $CA (step 78)" -- R --index "$A" --checkpoint "$C26"

# seen files: another model's, a damaged one: 9
cp "$A" "$tmp/mixed.h5"; cp "$tmp/b/index.seen.h5" "$tmp/mixed.seen.h5"
expect 9 "exclude-seen file $tmp/mixed.seen.h5 belongs to another model" -- \
    R --index "$tmp/mixed.h5" --checkpoint "$CA" --exclude-seen
cp "$A" "$tmp/bad.h5"; cp "$tmp/a/index.seen.h5" "$tmp/bad.seen.h5"
size=$(stat -c %s "$tmp/bad.seen.h5")
printf '\xff\xff\xff\xff' | dd of="$tmp/bad.seen.h5" bs=1 seek=$((size - 200)) conv=notrunc status=none
expect 9 "$tmp/bad.seen.h5" -- R --index "$tmp/bad.h5" --checkpoint "$CA" --exclude-seen

# usage: 2
expect 2 "re-ranking needs a rating model" "retrieval model" -- R --index "$tmp/b/index.h5" --rerank 10
expect 2 "--rerank N" "at least -k" -- R --index "$A" -k 10 --rerank 5

# eval/index overrides: 3
expect 3 "model.embedding_dim would differ from the config of checkpoint $CA" -- \
    "$MPIREC_BIN" eval --checkpoint "$CA" --out "$tmp/ev" --set model.embedding_dim=8
head -n 400 "$data" > "$tmp/part.csv"
expect 3 "different user vocabulary than checkpoint $CA" "--set data.path" -- \
    "$MPIREC_BIN" eval --checkpoint "$CA" --out "$tmp/ev" --set data.path="$tmp/part.csv"
expect 3 "different user vocabulary" -- \
    "$MPIREC_BIN" index --checkpoint "$CA" --out "$tmp/x.h5" --set data.path="$tmp/part.csv"

# malformed request lines: 4, with the good lines still answered in order
printf 'A2JXAZZI9PHK9Z\n{"user": "A2JXAZZI9PHK9Z", "text": 5}\n\n{"text": "x"}\nnobody\n' > "$tmp/req.txt"
expect 4 "2 malformed request lines" -- "$MPIREC_BIN" recommend -q --index "$A" --users "$tmp/req.txt"
/usr/bin/python3 - "$tmp/out" <<'EOF' || fail "malformed lines were not answered as expected"
import json, sys
out = [json.loads(l) for l in open(sys.argv[1])]
assert [o.get('user') for o in out] == ['A2JXAZZI9PHK9Z', None, None, 'nobody'], out
assert out[1]['line'] == 2 and 'must be a string or null' in out[1]['error'], out[1]
assert out[2]['line'] == 4 and 'no "user" member' in out[2]['error'], out[2]
assert out[3].get('unknown_user') is True and len(out[0]['items']) == 10
EOF

if [ "$fails" -gt 0 ]; then
    echo "recommend_errors: $fails check(s) failed" >&2
    exit 1
fi
echo "recommend_errors: ok"
