#!/bin/bash
# index_ml100k.sh — IVF recall on embeddings trained by mpirec itself on MovieLens
# 100K (943 users x 1,682 items).
#  1. `mpirec train` on 2 ranks, configs/ml100k_retrieval.json as shipped (dim 32,
#     3 epochs, index.kind = ivf, every other index.* setting at its default); the
#     index.h5 that training writes at its end has nlist = round(4 sqrt(1682)) = 164,
#     nprobe picked by the build (index.nprobe = 0) and a self-measured recall@10
#     >= 0.95 on its sample of training users' query embeddings;
#  2. the model has no dense layers, so the query embedding of a user is its row of
#     params/user and the index's /emb must equal params/item (the candidate tower
#     at the end of training, the ids in vocabulary order);
#  3. `mpirec recommend` from that ivf index for every user (-k 10), against an
#     exact top 10 computed here in numpy (float64; ties by lower item index):
#     recall@10 >= 0.95, and the returned scores are the users' inner products;
#  4. the CUnit test `index ml100k_recall` on the same embeddings: even users are
#     the build sample, odd users held out; default ivf, float and int8 codes:
#     build-sample and held-out recall@10 >= 0.95.
# ctest-labels: e2e mpi
# ctest-timeout: 300
set -euo pipefail
: "${MPIREC_BIN:?set by ctest}" "${MPIREC_DATA:?set by ctest}" "${MPIREC_SRC:?set by ctest}"
: "${MPIREC_TESTS_BIN:?set by ctest}"
MPIEXEC="${MPIEXEC:-mpirun}"
tmp="${MPIREC_TMP:-/tmp}/index_ml100k.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "index_ml100k: $*" >&2; exit 1; }

"$MPIEXEC" -np 2 "$MPIREC_BIN" train --config "$MPIREC_SRC/configs/ml100k_retrieval.json" \
    --set data.path="$MPIREC_DATA/ml-100k/u.data" --out "$tmp/run" > "$tmp/train.log" 2>&1 \
    || { tail -30 "$tmp/train.log" >&2; fail "training failed"; }
grep "^index " "$tmp/train.log" || fail "training printed no index line"
ck="$tmp/run/checkpoints/$(cat "$tmp/run/checkpoints/latest")"

/usr/bin/python3 - "$tmp" "$ck" <<'EOF'
import json, math, sys
import h5py, numpy as np
tmp, ck = sys.argv[1], sys.argv[2]
def die(msg): print('index_ml100k: ' + msg, file=sys.stderr); sys.exit(1)
ix, f = h5py.File(f'{tmp}/run/index.h5', 'r'), h5py.File(ck, 'r')
m = ix['meta'].attrs
def s(v): return v.decode() if isinstance(v, bytes) else str(v)
if s(m['kind']) != 'ivf' or m['items'] != 1682 or m['dim'] != 32: die(f'index kind/shape {dict(m)}')
if m['nlist'] != round(4 * math.sqrt(1682)) or m['nlist_param'] != 0 or m['nprobe_param'] != 0:
    die(f'not the default nlist/nprobe: nlist {m["nlist"]} params {m["nlist_param"]}/{m["nprobe_param"]}')
if m['quantize'] != 0 or abs(m['target_recall'] - 0.95) > 1e-12 or m['k'] != 10:
    die('not the default quantize/target_recall/k')
if not (1 <= m['nprobe'] < m['nlist'] and m['recall'] >= 0.95 and m['queries'] >= 500):
    die(f'self-measurement: recall {m["recall"]} at nprobe {m["nprobe"]} on {m["queries"]} queries')
if f['params/dense'].shape != (0,): die('the model has dense layers: user rows are not the queries')
def strings(h, g):
    b, o = h[g + '/bytes'][:].tobytes(), h[g + '/offsets'][:]
    return [b[o[i]:o[i + 1]].decode() for i in range(len(o) - 1)]
users, items = strings(f, 'vocab/user'), strings(f, 'vocab/item')
if strings(ix, 'ids') != items: die('index ids are not the item vocabulary')
C = ix['emb'][:]
if not np.array_equal(C, f['params/item'][1:]): die('index /emb differs from params/item')
U = f['params/user'][1:]
if U.shape != (943, 32): die(f'user table {U.shape}')
np.save(f'{tmp}/users.npy', np.ascontiguousarray(U, dtype='<f4'))
np.save(f'{tmp}/items.npy', np.ascontiguousarray(C, dtype='<f4'))
open(f'{tmp}/users.txt', 'w').write('\n'.join(users) + '\n')
print(f'index_ml100k: build nlist {m["nlist"]} nprobe {m["nprobe"]} recall@10 {m["recall"]:.4f} '
      f'on {m["queries"]} training queries, {m["qps"]:.0f} q/s (exact {m["qps_exact"]:.0f})')
EOF

"$MPIREC_BIN" recommend -q --index "$tmp/run/index.h5" --checkpoint "$ck" \
    --users "$tmp/users.txt" -k 10 > "$tmp/ivf.jsonl"

/usr/bin/python3 - "$tmp" <<'EOF'
import json, sys
import numpy as np
tmp = sys.argv[1]
def die(msg): print('index_ml100k: ' + msg, file=sys.stderr); sys.exit(1)
U, C = np.load(f'{tmp}/users.npy').astype(np.float64), np.load(f'{tmp}/items.npy').astype(np.float64)
users = open(f'{tmp}/users.txt').read().split()
import h5py
ix = h5py.File(f'{tmp}/run/index.h5', 'r')
b, o = ix['ids/bytes'][:].tobytes(), ix['ids/offsets'][:]
row = {b[o[i]:o[i + 1]].decode(): i for i in range(len(o) - 1)}
ans = [json.loads(l) for l in open(f'{tmp}/ivf.jsonl')]
if len(ans) != len(users): die(f'{len(ans)} answers for {len(users)} users')
S = U @ C.T
hit = worst = 0
for u, a in enumerate(ans):
    if a['user'] != users[u] or a.get('unknown_user'): die(f'answer {u}: {a}')
    ref = sorted(range(C.shape[0]), key=lambda i: (-S[u, i], i))[:10]
    got = [row[i] for i in a['items']]
    if len(got) != 10: die(f'{users[u]}: {len(got)} items')
    hit += len(set(got) & set(ref))
    worst = max(worst, float(np.max(np.abs(np.array(a['scores']) - S[u, got]))))
rec = hit / (10 * len(users))
print(f'index_ml100k: recommend from the ivf index, all {len(users)} users: recall@10 {rec:.4f} '
      f'vs exact (numpy), max score error {worst:.2e}')
if rec < 0.95: die(f'recall@10 {rec:.4f} < 0.95')
if worst > 1e-4: die(f'scores differ from q . c by {worst}')
EOF

MPIREC_INDEX_USERS="$tmp/users.npy" MPIREC_INDEX_ITEMS="$tmp/items.npy" \
    "$MPIREC_TESTS_BIN" index ml100k_recall > "$tmp/cunit.log" 2>&1 \
    || { cat "$tmp/cunit.log" >&2; fail "CUnit ml100k_recall failed"; }
grep "ml100k quantize" "$tmp/cunit.log"
awk '$1 == "tests" && $3 == 1 && $4 == 1 && $5 == 0 { ok = 1 } END { exit !ok }' "$tmp/cunit.log" \
    || { cat "$tmp/cunit.log" >&2; fail "ml100k_recall did not run"; }
echo "index_ml100k: ok"
