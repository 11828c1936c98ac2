#!/bin/bash
# index_checkpoint.sh — `mpirec index` builds from a checkpoint the index that
# training writes at its end.
#  - from the run directory, 1 rank: /emb, /ids, model hash, source and the
#    exclude-seen data are identical to the run's own index.h5 / index.seen.h5;
#  - from the `latest` pointer on 2 ranks: same ids and seen data, embeddings
#    equal up to float rounding;
#  - --kind ivf with index.nprobe = 0 and index.target_recall = 0.9: the printed
#    recall (measured on training users' query embeddings) reaches 0.9, is the
#    one stored in the file (and shown by `mpirec inspect --json`), nprobe was
#    picked (>= 1), QPS are positive; recommend serves from it, and with k = every
#    item and --exclude-seen returns the same sets as exact search (queries whose
#    probed lists run short are answered exactly).
# ctest-labels: e2e mpi
# ctest-timeout: 300
set -euo pipefail
: "${MPIREC_BIN:?set by ctest}" "${MPIREC_DATA:?set by ctest}" "${MPIREC_SRC:?set by ctest}"
MPIEXEC="${MPIEXEC:-mpirun}"
tmp="${MPIREC_TMP:-/tmp}/index_checkpoint.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "index_checkpoint: $*" >&2; exit 1; }

"$MPIREC_BIN" train --config "$MPIREC_SRC/configs/amazon_reviews_multitask.json" \
    --set data.path="$MPIREC_DATA/amazon_reviews.csv" --out "$tmp/run" -q > "$tmp/train.log" 2>&1 \
    || { cat "$tmp/train.log"; fail "training failed"; }

"$MPIREC_BIN" index --checkpoint "$tmp/run" --out "$tmp/x/exact.h5" -q > "$tmp/exact.json"
"$MPIEXEC" -np 2 "$MPIREC_BIN" index --checkpoint "$tmp/run/checkpoints/latest" \
    --out "$tmp/x/exact2.h5" -q > "$tmp/exact2.json"
"$MPIREC_BIN" index --checkpoint "$tmp/run/checkpoints" --out "$tmp/x/ivf.h5" --kind ivf \
    --set index.nprobe=0 --set index.target_recall=0.9 --set index.nlist=16 > "$tmp/ivf.json" \
    2> "$tmp/ivf.err"
grep -q "recall@10" "$tmp/ivf.err" || { cat "$tmp/ivf.err"; fail "recall not printed"; }
"$MPIREC_BIN" inspect --json "$tmp/x/ivf.h5" > "$tmp/inspect.json"
"$MPIREC_BIN" recommend -q --index "$tmp/x/ivf.h5" --user A2JXAZZI9PHK9Z --exclude-seen > "$tmp/rec.json"
# k = every item with exclusions: the probed lists alone cannot fill the lists, the
# exact fallback must (same sets as the exact index)
/usr/bin/python3 -c "import csv,sys; print('\n'.join(sorted({r['reviewerID'] for r in csv.DictReader(open(sys.argv[1], newline='', encoding='utf-8'))})))" \
    "$MPIREC_DATA/amazon_reviews.csv" > "$tmp/users.txt"
"$MPIREC_BIN" recommend -q --index "$tmp/x/ivf.h5" --users "$tmp/users.txt" -k 40 --exclude-seen > "$tmp/ivf_all.jsonl"
"$MPIREC_BIN" recommend -q --index "$tmp/x/exact.h5" --users "$tmp/users.txt" -k 40 --exclude-seen > "$tmp/ex_all.jsonl"

/usr/bin/python3 - "$tmp" <<'EOF'
import json, sys
import h5py, numpy as np
tmp = sys.argv[1]
def die(msg): print('index_checkpoint: ' + msg, file=sys.stderr); sys.exit(1)
ref, seen_ref = h5py.File(f'{tmp}/run/index.h5', 'r'), h5py.File(f'{tmp}/run/index.seen.h5', 'r')
def same_seen(path, what):
    s = h5py.File(path, 'r')
    if not np.array_equal(s['seen/bytes'][:], seen_ref['seen/bytes'][:]): die(f'{what}: seen data differs')
    for k in ('users', 'items', 'pairs', 'model_hash', 'user_vocab_hash', 'item_vocab_hash', 'source_step'):
        if s['meta'].attrs[k] != seen_ref['meta'].attrs[k]: die(f'{what}: seen attribute {k} differs')
    if s['meta'].attrs['pairs'] != 813: die(f'{what}: {s["meta"].attrs["pairs"]} pairs, expected 813')
ex = h5py.File(f'{tmp}/x/exact.h5', 'r')
if not np.array_equal(ex['emb'][:], ref['emb'][:]): die('1 rank: embeddings differ from training\'s index')
for d in ('ids/bytes', 'ids/offsets'):
    if not np.array_equal(ex[d][:], ref[d][:]): die(f'1 rank: {d} differs')
for k in ('model_hash', 'source', 'source_step', 'items', 'dim', 'kind', 'queries'):
    if ex['meta'].attrs[k] != ref['meta'].attrs[k]: die(f'1 rank: meta {k} differs')
same_seen(f'{tmp}/x/exact.seen.h5', '1 rank')
ex2 = h5py.File(f'{tmp}/x/exact2.h5', 'r')
if not np.allclose(ex2['emb'][:], ref['emb'][:], rtol=1e-5, atol=1e-6): die('2 ranks: embeddings differ')
if not np.array_equal(ex2['ids/bytes'][:], ref['ids/bytes'][:]): die('2 ranks: ids differ')
same_seen(f'{tmp}/x/exact2.seen.h5', '2 ranks')
js = json.load(open(f'{tmp}/exact.json'))
if js['kind'] != 'exact' or js['items'] != 40 or js['recall'] != 1 or not js['checkpoint'].endswith('ckpt-000000078.h5'):
    die(f'exact summary {js}')
iv = json.load(open(f'{tmp}/ivf.json'))
f = h5py.File(f'{tmp}/x/ivf.h5', 'r')
m = f['meta'].attrs
if iv['kind'] != 'ivf' or iv['nlist'] != 16 or iv['queries'] != 813 or iv['k'] != 10:
    die(f'ivf summary {iv}')
if not (iv['recall'] >= 0.9 and 1 <= iv['nprobe'] <= 16 and iv['qps'] > 0 and iv['qps_exact'] > 0):
    die(f'ivf: recall {iv["recall"]} nprobe {iv["nprobe"]} qps {iv["qps"]}')
if abs(m['recall'] - iv['recall']) > 1e-5 or m['nprobe'] != iv['nprobe'] or m['nprobe_param'] != 0:
    die('ivf: printed figures are not the stored ones')
ins = json.load(open(f'{tmp}/inspect.json'))
if not ins['ok'] or abs(ins['meta']['recall'] - iv['recall']) > 1e-5 or ins['meta']['qps'] <= 0:
    die('inspect --json does not show the recall and qps')
rec = json.loads(open(f'{tmp}/rec.json').read())
if len(rec['items']) != 10 or '0594451647' in rec['items']:   # the user's training item
    die(f'recommend from the ivf index: {rec}')
a = [json.loads(l) for l in open(f'{tmp}/ivf_all.jsonl')]
b = [json.loads(l) for l in open(f'{tmp}/ex_all.jsonl')]
if len(a) != len(b) or len(a) < 900: die('k = all items: missing answers')
for x, y in zip(a, b):
    if set(x['items']) != set(y['items']) or len(x['items']) != len(y['items']):
        die(f'{x["user"]}: ivf with exclusions returned {len(x["items"])} items, exact {len(y["items"])}')
print(f'index_checkpoint: ok (ivf recall {iv["recall"]:.3f} at nprobe {iv["nprobe"]}/16)')
EOF
