#!/usr/bin/env bash
# ctest-labels: e2e
# ctest-timeout: 120
#
# inspect_ckpt.sh — checkpoint files end to end, from outside mpirec:
#  1. bench_ckpt writes a tiny checkpoint at P = 1 and at P = 2;
#  2. `mpirec inspect` (text and --json) reports them intact, and the dataset
#     checksums of the P = 1 and P = 2 files are identical;
#  3. h5dump reads the file; h5py reads it and recomputes every checksum, the
#     string tables and the header digest from the conventions documented in
#     docs/checkpoint.md (so the documentation is right, and no mpirec is needed
#     to read a checkpoint);
#  4. a flipped data byte, a truncated copy, a missing file and a bad command
#     line give exit codes 9, 9, 5 and 2 with the right messages;
#  5. a file written by h5py alone (no header, an index magic, awkward strings)
#     is inspected, and its --json output is valid JSON with the strings intact.
set -euo pipefail

: "${MPIREC_BIN:?run through ctest}" "${MPIREC_TMP:?run through ctest}"
PY=/usr/bin/python3
BENCH="$(dirname "$MPIREC_BIN")/bench/bench_ckpt"
MPIEXEC="${MPIEXEC:-mpiexec}"
T="$MPIREC_TMP/e2e-inspect"
rm -rf "$T"
mkdir -p "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. Two tiny checkpoints.
"$BENCH" --users 300 --items 40 --dim 6 --reps 1 --vocab --keep --modes row --dir "$T/p1" > "$T/bench1.txt"
"$MPIEXEC" -n 2 "$BENCH" --users 300 --items 40 --dim 6 --reps 1 --vocab --keep --modes row \
    --dir "$T/p2" > "$T/bench2.txt"
F1="$T/p1/row/ckpt-1.h5"
F2="$T/p2/row/ckpt-1.h5"
[ -f "$F1" ] && [ -f "$F2" ] || fail "bench_ckpt did not leave its checkpoints"

# 2. inspect, text and JSON.
"$MPIREC_BIN" inspect "$F1" > "$T/inspect.txt" || fail "inspect of a good file failed"
grep -q "^result    ok (every checksum verified)" "$T/inspect.txt" || fail "no ok line"
grep -q "/params/user_emb .*float32 .*\[301 x 6\]" "$T/inspect.txt" || fail "user table line"
grep -q "kind      MPIREC-CKPT, format version 1" "$T/inspect.txt" || fail "kind line"
"$MPIREC_BIN" inspect --json "$F1" > "$T/j1.json"
"$MPIREC_BIN" inspect --json "$F2" > "$T/j2.json"
"$PY" - "$T/j1.json" "$T/j2.json" <<'EOF'
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
for j in (a, b):
    assert j["ok"] is True and j["exit_code"] == 0 and j["error"] is None, j
    assert j["magic"] == "MPIREC-CKPT" and j["format_version"] == 1
    assert j["header"]["present"] and j["header"]["digest_status"] == "ok"
    assert j["meta"]["step"] == 1
    assert all(d["status"] == "ok" and d["checksum"] == d["computed"] for d in j["datasets"])
names = [d["path"] for d in a["datasets"]]
assert "/vocab/user/offsets" in names and "/optim/user_emb/accum" in names, names
# The layout does not depend on the rank count: same datasets, same checksums.
ca = {d["path"]: (d["checksum"], d["shape"], d["dtype"]) for d in a["datasets"]}
cb = {d["path"]: (d["checksum"], d["shape"], d["dtype"]) for d in b["datasets"]}
assert ca == cb, (ca, cb)
print("json ok:", len(names), "datasets, identical at P=1 and P=2")
EOF

# 3. h5dump and h5py, without mpirec.
h5dump -H "$F1" > "$T/h5dump.txt" || fail "h5dump cannot read the checkpoint"
grep -q 'DATASET "user_emb"' "$T/h5dump.txt" || fail "h5dump: no user_emb"
grep -q 'ATTRIBUTE "checksum"' "$T/h5dump.txt" || fail "h5dump: no checksum attribute"
"$PY" - "$F1" <<'EOF'
import sys, h5py, numpy as np
M = (1 << 64) - 1
FNV_OFF, FNV_PRIME = 0xcbf29ce484222325, 0x100000001b3
def splitmix(x):
    z = (x + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)
def mix(a, b): return splitmix(splitmix(a) ^ b)
def np_splitmix(x):
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
def checksum(arr):
    # row i: mix(i, fnv1a64(bytes of row i, little-endian)); wrapping sum.
    a = np.ascontiguousarray(arr)
    rows = a.shape[0]
    b = a.view(np.uint8).reshape(rows, -1) if rows else np.zeros((0, 1), np.uint8)
    h = np.full(rows, FNV_OFF, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(b.shape[1]):
            h = (h ^ b[:, j].astype(np.uint64)) * np.uint64(FNV_PRIME)
        m = np_splitmix(np_splitmix(np.arange(rows, dtype=np.uint64)) ^ h)
    return int(m.sum(dtype=np.uint64)) if rows else 0
f = h5py.File(sys.argv[1], "r")
assert f.attrs["magic"] == b"MPIREC-CKPT" and int(f.attrs["format_version"]) == 1
assert int(f["meta"].attrs["step"]) == 1
n = 0
def visit(name, obj):
    global n
    if isinstance(obj, h5py.Dataset):
        got, want = checksum(obj[()]), int(obj.attrs["checksum"])
        assert got == want, (name, hex(got), hex(want))
        n += 1
f.visititems(visit)
# Strings: bytes[off[i]:off[i+1]].
off = f["vocab/user/offsets"][()]; raw = f["vocab/user/bytes"][()].tobytes()
assert len(off) == 301 and off[0] == 0 and off[-1] == len(raw)
assert raw[off[0]:off[1]] == b"u" + b"0" * 19 and raw[off[299]:off[300]] == b"u%019d" % 299
# The header digest: body = bytes after the 512-byte user block, 1 MiB blocks;
# block k adds mix(k, H(block)); H = four FNV-1a lanes over little-endian 8-byte
# words (zero-padded), word j to lane j % 4, then mix(mix(mix(mix(len,h0),h1),h2),h3).
data = open(sys.argv[1], "rb").read()
hdr = data[:512].split(b"\0")[0].decode().splitlines()
assert hdr[0] == "MPIREC-FILE 1" and hdr[1] == "kind MPIREC-CKPT", hdr
size, block, digest = int(hdr[2].split()[1]), int(hdr[3].split()[1]), int(hdr[4].split()[1], 16)
assert size == len(data) and block == 1 << 20
total = 0
body = data[512:]
for k in range(0, (len(body) + block - 1) // block):
    chunk = body[k * block:(k + 1) * block]
    pad = chunk + b"\0" * (-len(chunk) % 8)
    words = np.frombuffer(pad, "<u8")
    lanes = [FNV_OFF] * 4
    for j, w in enumerate(words.tolist()):
        lanes[j % 4] = ((lanes[j % 4] ^ w) * FNV_PRIME) & M
    h = len(chunk)
    for l in lanes: h = mix(h, l)
    total = (total + mix(k, h)) & M
assert total == digest, (hex(total), hex(digest))
print("h5py ok:", n, "checksums, strings and the header digest recomputed")
EOF

# 4. Damage and misuse.
cp "$F1" "$T/flip.h5"
OFF=$("$PY" -c "import h5py; print(h5py.File('$T/flip.h5','r')['params/item_emb'].id.get_offset())")
"$PY" -c "
f = open('$T/flip.h5', 'r+b'); f.seek($OFF + 30); b = f.read(1); f.seek($OFF + 30)
f.write(bytes([b[0] ^ 0x5a])); f.close()"
set +e
"$MPIREC_BIN" inspect "$T/flip.h5" > "$T/flip.txt" 2> "$T/flip.err"; rc=$?
"$MPIREC_BIN" inspect --json "$T/flip.h5" > "$T/flip.json" 2>/dev/null; rcj=$?
head -c 3000 "$F1" > "$T/cut.h5"
"$MPIREC_BIN" inspect "$T/cut.h5" > /dev/null 2> "$T/cut.err"; rc2=$?
"$MPIREC_BIN" inspect "$T/absent.h5" > /dev/null 2> "$T/absent.err"; rc3=$?
"$MPIREC_BIN" inspect > /dev/null 2>&1; rc4=$?
"$MPIREC_BIN" inspect "$F1" --bogus > /dev/null 2>&1; rc5=$?
set -e
[ $rc -eq 9 ] && [ $rcj -eq 9 ] || fail "flipped byte: exit $rc/$rcj, expected 9"
grep -q "checksum mismatch in dataset /params/item_emb" "$T/flip.err" || fail "flip message: $(cat "$T/flip.err")"
grep -q "/params/item_emb .*MISMATCH" "$T/flip.txt" || fail "flip listing"
"$PY" -c "
import json; j = json.load(open('$T/flip.json'))
assert j['ok'] is False and j['exit_code'] == 9 and 'item_emb' in j['error']
st = {d['path']: d['status'] for d in j['datasets']}
assert st['/params/item_emb'] == 'mismatch' and st['/params/user_emb'] == 'ok', st
assert j['header']['digest_status'] == 'mismatch'"
[ $rc2 -eq 9 ] || fail "truncated: exit $rc2"
grep -q "is truncated: 3000 of" "$T/cut.err" || fail "truncation message: $(cat "$T/cut.err")"
[ $rc3 -eq 5 ] || fail "missing file: exit $rc3"
grep -q "No such file" "$T/absent.err" || fail "missing file message"
[ $rc4 -eq 2 ] && [ $rc5 -eq 2 ] || fail "usage errors: exit $rc4/$rc5"
grep -q "stack" "$T/flip.err" "$T/cut.err" && fail "an HDF5 error stack was printed"

# 5. A file made by h5py alone, with the checksum convention and awkward strings.
"$PY" - "$T/foreign.h5" <<'EOF'
import sys, h5py, numpy as np
M = (1 << 64) - 1
def sm(x):
    z = (x + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)
def cs(a):
    tot = 0
    for i, row in enumerate(np.ascontiguousarray(a).reshape(a.shape[0], -1)):
        h = 0xcbf29ce484222325
        for byte in row.tobytes():
            h = ((h ^ byte) * 0x100000001b3) & M
        tot = (tot + sm(sm(i) ^ h)) & M
    return tot
with h5py.File(sys.argv[1], "w") as f:
    f.attrs["magic"] = np.bytes_(b"MPIREC-INDEX")
    f.attrs["format_version"] = np.int64(1)
    g = f.create_group("meta")
    g.attrs["note"] = 'quote " backslash \\ tab \t newline \n ctl \x01 caf\u00e9'
    g.attrs["raw"] = np.bytes_(b"bad \xff\xfe utf8")
    g.attrs["recall"] = 0.875
    g.attrs["ks"] = np.array([1, 5, 10], dtype=np.int64)
    g.attrs["big"] = np.uint64(0xE400000000000001)  # above 2^63: not clipped to int64
    e = np.arange(12, dtype=np.float32).reshape(4, 3)
    d = f.create_dataset("emb", data=e); d.attrs["checksum"] = np.uint64(cs(e))
    ids = np.arange(5, dtype=np.int64)
    d = f.create_dataset("ids", data=ids); d.attrs["checksum"] = np.uint64(cs(ids))
EOF
"$MPIREC_BIN" inspect --json "$T/foreign.h5" > "$T/foreign.json" || fail "foreign file: exit $?"
"$PY" -c "
import json; j = json.load(open('$T/foreign.json'))
assert j['ok'] is True and j['magic'] == 'MPIREC-INDEX' and j['header'] == {'present': False}
m = j['meta']
assert m['note'] == 'quote \" backslash \\\\ tab \t newline \n ctl \x01 caf\u00e9', repr(m['note'])
assert m['raw'] == 'bad \ufffd\ufffd utf8', repr(m['raw'])
assert m['recall'] == 0.875 and m['ks'].startswith('int64[3] = [1, 5, 10]'), m
assert m['big'] == 0xE400000000000001, m['big']
assert [d['status'] for d in j['datasets']] == ['ok', 'ok']
print('foreign file ok')"
echo "PASS"
