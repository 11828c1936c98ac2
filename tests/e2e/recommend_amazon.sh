#!/bin/bash
# recommend_amazon.sh — `mpirec recommend` end to end on amazon_reviews.csv.
# Trains a small multitask model with a text tower (configs/amazon_reviews_multitask.json),
# then checks against an independent computation in Python (csv + numpy + h5py):
#  - exclude-seen: with k = every item, the answer is exactly all items minus the
#    user's TRAINING items (split recomputed from SEMANTICS.md section 8), in the
#    retrieval order; without it, every item comes back;
#  - retrieval: items and scores equal q . c computed in numpy from the checkpoint's
#    parameters (user row + masked mean of the text's token rows -> query tower);
#  - rerank: the k returned items are the top k by the rating MLP (numpy) among the
#    retrieval top N, with "ratings" equal to it and decreasing;
#  - unknown users are flagged (and use the OOV row), k > corpus is clamped and said.
# ctest-labels: e2e
# ctest-timeout: 300
set -euo pipefail
: "${MPIREC_BIN:?set by ctest}" "${MPIREC_DATA:?set by ctest}" "${MPIREC_SRC:?set by ctest}"
tmp="${MPIREC_TMP:-/tmp}/recommend_amazon.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
data="$MPIREC_DATA/amazon_reviews.csv"
fail() { echo "recommend_amazon: $*" >&2; exit 1; }

"$MPIREC_BIN" train --config "$MPIREC_SRC/configs/amazon_reviews_multitask.json" \
    --set data.path="$data" --out "$tmp/run" -q > "$tmp/train.log" 2>&1 \
    || { cat "$tmp/train.log"; fail "training failed"; }
[ -f "$tmp/run/index.h5" ] && [ -f "$tmp/run/index.seen.h5" ] || fail "train wrote no index/seen file"

# Requests: every user with a training record (plain ids), then JSON requests with
# and without text, an unknown user, a user given as a JSON number.
/usr/bin/python3 - "$data" "$tmp" <<'EOF'
import csv, json, sys
data, tmp = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(data, newline='', encoding='utf-8')))
users = sorted({r['reviewerID'] for r in rows})
with open(f'{tmp}/users.txt', 'w') as f:
    f.write('\n'.join(users) + '\n')
req = [{"user": rows[5]['reviewerID'], "text": "Works great with my HDTV!"},
       {"user": rows[5]['reviewerID']},
       {"user": rows[100]['reviewerID'], "text": None, "extra": [1, {"a": 2}]},
       {"user": rows[300]['reviewerID'], "text": rows[300]['summary']},
       {"user": "no-such-user-42", "text": "cheap cable, broke fast"},
       {"user": 12345}]
with open(f'{tmp}/req.jsonl', 'w') as f:
    for r in req:
        f.write(json.dumps(r) + '\n')
EOF

R() { "$MPIREC_BIN" recommend --index "$tmp/run/index.h5" -q "$@"; }
R --users "$tmp/users.txt" -k 40 > "$tmp/all.jsonl"
R --users "$tmp/users.txt" -k 40 --exclude-seen > "$tmp/ex.jsonl"
R --checkpoint "$tmp/run" --users "$tmp/req.jsonl" -k 15 > "$tmp/r15.jsonl" < /dev/null
R --checkpoint "$tmp/run/checkpoints/latest" -k 5 --rerank 15 < "$tmp/req.jsonl" > "$tmp/rr.jsonl"
R --user "$(sed -n 1p "$tmp/users.txt")" --text "Works great with my HDTV!" -k 15 > "$tmp/one.jsonl"
# -q keeps the info lines out, not the clamping notice
R --user nobody -k 100 > "$tmp/clamp.jsonl" 2> "$tmp/clamp.err" || fail "k > corpus failed"
grep -q "k = 100 is larger than the 40 items of the index" "$tmp/clamp.err" \
    || { cat "$tmp/clamp.err"; fail "no clamping notice on stderr"; }

/usr/bin/python3 - "$data" "$tmp" <<'EOF'
import csv, json, string, sys
import h5py, numpy as np
data, tmp = sys.argv[1], sys.argv[2]
def die(msg):
    print('recommend_amazon: ' + msg, file=sys.stderr); sys.exit(1)
def load(p):
    return [json.loads(l) for l in open(p)]

# --- the split (SEMANTICS.md section 8) and the training pairs
M = (1 << 64) - 1
def sm(x):
    z = (x + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)
def mix(a, b): return sm(sm(a) ^ b)
base, thr = mix(42, 1), int(0.2 * 2**53)
rows = list(csv.DictReader(open(data, newline='', encoding='utf-8')))
seen = {}
ntrain = 0
for r, row in enumerate(rows):
    if (mix(base, r) >> 11) >= thr:
        seen.setdefault(row['reviewerID'], set()).add(row['asin'])
        ntrain += 1
if ntrain != 813: die(f'split gives {ntrain} training records, expected 813')
items = sorted({row['asin'] for row in rows})
allset = set(items)

# --- exclude-seen
a, x = load(f'{tmp}/all.jsonl'), load(f'{tmp}/ex.jsonl')
if len(a) != len(x) or len(a) < 900: die(f'{len(a)} / {len(x)} answers')
checked = 0
for ra, rx in zip(a, x):
    u = ra['user']
    if rx['user'] != u: die('answers out of order')
    if set(ra['items']) != allset or len(ra['items']) != 40 or ra.get('k_clamped'):
        die(f'{u}: without exclude-seen not every item came back')
    s = seen.get(u, set())
    want = [i for i in ra['items'] if i not in s]
    if rx['items'] != want:
        die(f'{u}: exclude-seen gave {rx["items"]}, expected all items minus {sorted(s)}')
    if bool(rx.get('k_clamped')) != bool(s): die(f'{u}: k_clamped {rx.get("k_clamped")}')
    checked += bool(s)
if checked < 700: die(f'only {checked} users with training items were checked')

# --- the model, in numpy, from the checkpoint
ck = sorted(__import__('glob').glob(f'{tmp}/run/checkpoints/ckpt-*.h5'))[-1]
f = h5py.File(ck, 'r')
def strings(g):
    b, o = f[g + '/bytes'][:].tobytes(), f[g + '/offsets'][:]
    return [b[o[i]:o[i + 1]].decode() for i in range(len(o) - 1)]
uvoc = {s: i + 1 for i, s in enumerate(strings('vocab/user'))}
ivoc = strings('vocab/item')
tvoc = {s: i + 2 for i, s in enumerate(strings('vocab/text'))}
if ivoc != items: die('item vocabulary differs from the data')
P = {k: f['params/' + k][:].astype(np.float64) for k in ('user', 'item', 'text', 'dense')}
lay = {t['name']: t for t in json.loads(f['meta'].attrs['dense_layout'])}
def W(name):
    t = lay[name]; n = int(np.prod(t['shape']))
    return P['dense'][t['offset']:t['offset'] + n].reshape(t['shape'])
def tower(x, pre):
    n = len([k for k in lay if k.startswith(pre) and k.endswith('.W')])
    for l in range(n):
        x = x @ W(f'{pre}{l}.W') + W(f'{pre}{l}.b')
        if l + 1 < n: x = np.maximum(x, 0)
    return x
punct = set(string.punctuation)
def tokens(text):
    t = ''.join(ch for ch in text.lower() if ch not in punct)
    return [tvoc.get(w, 1) for w in t.split()]
def query(user, text):
    u = P['user'][uvoc.get(str(user), 0)]
    tk = tokens(text) if text else []
    tm = P['text'][tk].mean(axis=0) if tk else np.zeros(P['text'].shape[1])
    return tower(np.concatenate([u, tm]), 'q')
C = tower(P['item'][1:], 'c')   # index item k = vocabulary id k + 1

def near(a, b, tol=1e-4): return abs(a - b) <= tol * (1 + abs(b))
reqs = [json.loads(l) for l in open(f'{tmp}/req.jsonl')]
r15, rr = load(f'{tmp}/r15.jsonl'), load(f'{tmp}/rr.jsonl')
if len(r15) != len(reqs) or len(rr) != len(reqs): die('missing answers')
for q, a15, ar in zip(reqs, r15, rr):
    qv = query(q['user'], q.get('text'))
    sc = C @ qv
    order = sorted(range(len(items)), key=lambda i: (-sc[i], i))
    if a15['user'] != str(q['user']): die(f'user echoed as {a15["user"]!r}')
    unknown = str(q['user']) not in uvoc
    if bool(a15.get('unknown_user')) != unknown or bool(ar.get('unknown_user')) != unknown:
        die(f'{q["user"]}: unknown_user flag wrong')
    got = [items.index(i) for i in a15['items']]
    for k, (i, s) in enumerate(zip(got, a15['scores'])):
        if not near(s, sc[i]): die(f'{q["user"]}: score of {items[i]} is {s}, numpy {sc[i]}')
        if not near(sc[i], sc[order[k]]):
            die(f'{q["user"]}: rank {k} is {items[i]} ({sc[i]}), numpy {items[order[k]]} ({sc[order[k]]})')
    # rerank: top 5 of the retrieval top 15 by the rating MLP
    pool = got
    rat = {i: tower(np.concatenate([qv, C[i]]), 'r')[0] for i in pool}
    want = sorted(pool, key=lambda i: -rat[i])[:5]
    gr = [items.index(i) for i in ar['items']]
    if len(gr) != 5 or any(i not in pool for i in gr): die(f'{q["user"]}: reranked items not from the top 15')
    for k, (i, r) in enumerate(zip(gr, ar['ratings'])):
        if not near(r, rat[i]): die(f'{q["user"]}: rating of {items[i]} is {r}, numpy {rat[i]}')
        if not near(rat[i], rat[want[k]]): die(f'{q["user"]}: rerank position {k}: {items[i]}, numpy {items[want[k]]}')
        if k and ar['ratings'][k] > ar['ratings'][k - 1]: die('ratings not decreasing')
        if not near(ar['scores'][k], sc[i]): die('reranked item lost its retrieval score')
# the text changes the query; --user/--text equals the JSON request
if r15[0]['items'] == r15[1]['items'] and r15[0]['scores'] == r15[1]['scores']:
    die('text made no difference to the query')
one = load(f'{tmp}/one.jsonl')[0]
uid1 = open(f'{tmp}/users.txt').readline().strip()
qv = query(uid1, 'Works great with my HDTV!')
if not all(near(s, (C @ qv)[items.index(i)]) for i, s in zip(one['items'], one['scores'])):
    die('--user/--text answer differs from numpy')
cl = load(f'{tmp}/clamp.jsonl')[0]
if len(cl['items']) != 40 or not cl.get('k_clamped') or not cl.get('unknown_user'):
    die(f'k > corpus: {len(cl["items"])} items, flags {cl}')
print(f'recommend_amazon: ok ({checked} users with seen items, {len(reqs)} scored requests)')
EOF
