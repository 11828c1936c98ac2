#!/bin/bash
# recommend_eval.sh — `mpirec eval` reproduces training's own evaluation.
# Trains the amazon multitask model on 2 ranks (row-sharded tables, a checkpoint
# after every epoch), then:
#  - eval of the final checkpoint on 2 ranks prints exactly the numbers of the
#    run's last metrics.jsonl line (top_k, rmse, examples: same P, same bits);
#  - eval of the epoch-1 checkpoint (ckpt-26) prints the epoch-1 line;
#  - eval on 1 rank (tables read by global row into a replicated layout) agrees up
#    to float rounding;
#  - the run directory, checkpoints/ and the `latest` pointer all name the final
#    checkpoint; DIR/metrics.jsonl and DIR/config.json are written.
# ctest-labels: e2e mpi
# ctest-timeout: 300
set -euo pipefail
: "${MPIREC_BIN:?set by ctest}" "${MPIREC_DATA:?set by ctest}" "${MPIREC_SRC:?set by ctest}"
MPIEXEC="${MPIEXEC:-mpirun}"
tmp="${MPIREC_TMP:-/tmp}/recommend_eval.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "recommend_eval: $*" >&2; exit 1; }
run2() { "$MPIEXEC" -np 2 "$@"; }

run2 "$MPIREC_BIN" train --config "$MPIREC_SRC/configs/amazon_reviews_multitask.json" \
    --set data.path="$MPIREC_DATA/amazon_reviews.csv" --set dist.embedding_sharding=row \
    --set checkpoint.every_steps=26 --set checkpoint.keep=5 --out "$tmp/run" -q \
    > "$tmp/train.log" 2>&1 || { cat "$tmp/train.log"; fail "training failed"; }
ck="$tmp/run/checkpoints"
[ -f "$ck/ckpt-000000026.h5" ] || fail "no epoch-1 checkpoint"

run2 "$MPIREC_BIN" eval --checkpoint "$tmp/run" --out "$tmp/e2" -q > "$tmp/e2.out"
run2 "$MPIREC_BIN" eval --checkpoint "$ck/ckpt-000000026.h5" --out "$tmp/e26" -q > /dev/null
"$MPIREC_BIN" eval --checkpoint "$ck/latest" --out "$tmp/e1" -q > /dev/null
"$MPIREC_BIN" eval --checkpoint "$ck" --split both --out "$tmp/eb" -q > /dev/null
[ -f "$tmp/e2/config.json" ] || fail "no config.json"
cmp -s "$tmp/e2.out" "$tmp/e2/metrics.jsonl" || fail "stdout differs from DIR/metrics.jsonl"

/usr/bin/python3 - "$tmp" <<'EOF'
import json, sys
tmp = sys.argv[1]
def lines(p): return [json.loads(l) for l in open(p)]
run = [m for m in lines(f'{tmp}/run/metrics.jsonl') if m['split'] == 'test']
keys = ['top_1', 'top_5', 'top_10', 'top_50', 'top_100', 'rmse', 'examples']
def die(msg): print('recommend_eval: ' + msg, file=sys.stderr); sys.exit(1)
def same(a, b, what):
    for k in keys:
        if a[k] != b[k]: die(f'{what}: {k} is {a[k]}, training said {b[k]}')
e2, e26, e1 = lines(f'{tmp}/e2/metrics.jsonl'), lines(f'{tmp}/e26/metrics.jsonl'), lines(f'{tmp}/e1/metrics.jsonl')
if len(e2) != 1 or e2[0]['split'] != 'test' or e2[0]['step'] != run[-1]['step']: die(f'eval output {e2}')
if not e2[0]['checkpoint'].endswith('ckpt-000000078.h5'): die('run directory did not resolve to the final checkpoint')
same(e2[0], run[-1], 'final checkpoint, 2 ranks')
if e26[0]['step'] != 26: die(f'epoch-1 checkpoint has step {e26[0]["step"]}')
same(e26[0], run[0], 'epoch-1 checkpoint, 2 ranks')
# 1 rank: the same model, scores may differ in the last bits
a, b = e1[0], run[-1]
if a['examples'] != b['examples'] or abs(a['rmse'] - b['rmse']) > 1e-5 * b['rmse']:
    die(f'1 rank: rmse {a["rmse"]} vs {b["rmse"]}')
for k in keys[:5]:
    if abs(a[k] - b[k]) > 2.0 / b['examples']: die(f'1 rank: {k} {a[k]} vs {b[k]}')
eb = lines(f'{tmp}/eb/metrics.jsonl')
if [m['split'] for m in eb] != ['test', 'train'] or eb[1]['examples'] != 813:
    die(f'--split both: {eb}')
print('recommend_eval: ok', {k: e2[0][k] for k in keys})
EOF
