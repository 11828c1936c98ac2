#!/usr/bin/env bash
# ctest-labels: e2e robust
# ctest-timeout: 600
# robust_files.sh — damaged, foreign and unwritable files at the command line. A
# checkpoint or an index that is truncated, has one flipped byte (in the mpirec
# header, in HDF5 metadata, in a dataset's data), carries another format version,
# or belongs to another model is refused by every command that reads it (inspect,
# eval, index, train --resume PATH, recommend) with exit 9 (3 for a checkpoint of
# another model given to a run of this config) and a message naming the file and
# the problem; never a crash, never a silent answer. A run directory that cannot
# be written gives exit 5 naming the directory, at P = 1 and 2.
# (recommend reads only the checkpoint rows it needs, unverified; a flipped byte
# inside /params/user is therefore not among its cases: docs/robustness.md.)
source "$(dirname "$0")/robust_lib.bash"
rb_init robust_files
cd "$T"

flip() { # FILE OFFSET: invert the bits of one byte
    python3 -c "import sys; p=sys.argv[1]; o=int(sys.argv[2]); b=bytearray(open(p,'rb').read()); b[o]^=0xff; open(p,'wb').write(b)" "$1" "$2"
}
data_offset() { # FILE DATASET: file offset of a contiguous dataset's first byte
    h5dump -p -H -d "$2" "$1" | awk '/OFFSET/ {print $2; exit}'
}

"$BIN" gen --out syn.csv --users 1500 --items 250 --interactions 6000 --seed 5 > /dev/null 2>&1
S="--config $SRC/configs/synthetic.json --set data.path=$T/syn.csv --set train.batch_size=256 \
   --set train.epochs=2 --set model.embedding_dim=8 --set checkpoint.every_steps=10"
expect 0 "done: " -- "$BIN" train $S --out A
expect 0 "done: " -- "$BIN" train $S --set model.embedding_dim=16 --set train.epochs=1 --out B
CK="A/checkpoints/$(cat A/checkpoints/latest)"
CKB="B/checkpoints/$(cat B/checkpoints/latest)"
IX=A/index.h5
[ -f "$CK" ] && [ -f "$CKB" ] && [ -f "$IX" ] || { bad "training did not leave the files"; rb_done; }
size=$(stat -c %s "$CK")

# Every reader of a checkpoint refuses the file F with exit CODE and TEXT...
refused_ckpt() { # CODE F TEXT...
    local code=$1 f=$2
    shift 2
    expect "$code" "$f" "$@" -- "$BIN" inspect "$f"
    expect "$code" "$f" "$@" -- "$BIN" eval --checkpoint "$f" --out ev
    expect "$code" "$f" "$@" -- "$BIN" index --checkpoint "$f" --out ix.h5
    expect "$code" "$f" "$@" -- $MPI 2 "$BIN" train $S --out R --resume "$f"
    [ -e ix.h5 ] && bad "index written from the damaged $f" && rm -f ix.h5
    return 0
}

# ---- checkpoints --------------------------------------------------------------------
head -c $((size / 2)) "$CK" > trunc.h5
refused_ckpt 9 trunc.h5 "is truncated: $((size / 2)) of $size bytes"
head -c 300 "$CK" > stub.h5
refused_ckpt 9 stub.h5 "truncated or not a checkpoint"
cp "$CK" hdr.h5 && flip hdr.h5 100
refused_ckpt 9 hdr.h5 "the header is damaged"
cp "$CK" meta.h5 && flip meta.h5 700 # the root object header (HDF5 metadata)
refused_ckpt 9 meta.h5 "file format error"
cp "$CK" data.h5 && flip data.h5 $(($(data_offset data.h5 /params/user) + 1000))
# eval, index and train check the file digest first; inspect names the dataset
refused_ckpt 9 data.h5 "data.h5 is corrupt"
expect 9 "data.h5 is corrupt: checksum mismatch in dataset /params/user" -- "$BIN" inspect data.h5
cp "$CK" tail.h5 && printf 'appended' >> tail.h5
refused_ckpt 9 tail.h5 "has $((size + 8)) bytes but its header says $size"

# another format version: rewrite the root attribute with the HDF5 C API
cat > setattr.c << 'EOF'
/* setattr FILE NAME VALUE: overwrite the int64 root attribute NAME of an HDF5 file
 * (the mpirec header digest then no longer matches: a foreign or future file). */
#include <hdf5.h>
#include <stdlib.h>
int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    long long v = atoll(argv[3]);
    hid_t f = H5Fopen(argv[1], H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0)
        return 1;
    hid_t a = H5Aopen(f, argv[2], H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, H5T_NATIVE_LLONG, &v) < 0;
    if (a >= 0)
        H5Aclose(a);
    return (H5Fclose(f) < 0) | rc;
}
EOF
if ! h5pcc -o setattr setattr.c > h5pcc.log 2>&1; then
    bad "cannot build the attribute helper with h5pcc (libhdf5-openmpi-dev): $(tail -2 h5pcc.log)"
else
    cp "$CK" v2.h5 && ./setattr v2.h5 format_version 2
    expect 9 "v2.h5 has format version 2, this mpirec" "reads version 1" "written by a newer mpirec" \
        -- "$BIN" eval --checkpoint v2.h5 --out ev
    expect 9 "v2.h5 has format version 2" -- $MPI 2 "$BIN" train $S --out R --resume v2.h5
    expect 9 "v2.h5 has format version 2" -- "$BIN" recommend --index "$IX" --checkpoint v2.h5 --user u1
    expect 9 "v2.h5 is corrupt: its digest does not match" -- "$BIN" inspect v2.h5
    grep -q "format version 2" "$T/out" && ok "inspect shows format version 2" || bad "inspect: $(head -3 "$T/out")"
    cp "$IX" iv7.h5 && ./setattr iv7.h5 format_version 7
    expect 9 "index file 'iv7.h5'" "format version 7, this mpirec reads version 1" "mpirec index" \
        -- "$BIN" recommend --index iv7.h5 --user u1
fi

# another model: B has embedding_dim 16
expect 3 "cannot resume from $CKB: model.embedding_dim differs from the checkpoint's config" \
    -- "$BIN" train $S --out R --resume "$CKB"
expect 3 "model.embedding_dim would differ from the config of checkpoint $CKB" \
    -- "$BIN" eval --checkpoint "$CKB" --out ev --set model.embedding_dim=8
expect 9 "index B/index.h5 belongs to another model than checkpoint $CK" \
    -- "$BIN" recommend --index B/index.h5 --checkpoint "$CK" --user u1
# the run B was started with a different model: --resume auto in it with A's config
expect 3 "model.embedding_dim differs from the checkpoint's config" -- "$BIN" train $S --out B --resume auto
[ "$(cat B/checkpoints/latest)" = "$(basename "$CKB")" ] && ok "B's latest untouched by the refused run" ||
    bad "B's latest changed: $(cat B/checkpoints/latest)"

# ---- indexes ------------------------------------------------------------------------
isize=$(stat -c %s "$IX")
head -c $((isize / 2)) "$IX" > itrunc.h5
expect 9 "itrunc.h5" "truncated" -- "$BIN" recommend --index itrunc.h5 --checkpoint "$CK" --user u1
expect 9 "itrunc.h5" "truncated" -- "$BIN" inspect itrunc.h5
cp "$IX" idata.h5 && flip idata.h5 $(($(data_offset idata.h5 /emb) + 100))
expect 9 "idata.h5" "checksum" -- "$BIN" recommend --index idata.h5 --checkpoint "$CK" --user u1
cp "$IX" imeta.h5 && flip imeta.h5 700
expect 9 "imeta.h5" -- "$BIN" recommend --index imeta.h5 --checkpoint "$CK" --user u1
expect 9 "imeta.h5" -- "$BIN" inspect imeta.h5
expect 9 "is a checkpoint" -- "$BIN" recommend --index "$CK" --user u1

# ---- run directories that cannot be written -----------------------------------------
# As root, permissions do not stop writes: run as nobody (setpriv) where we are root.
as_user=()
if [ "$(id -u)" = 0 ]; then
    if command -v setpriv > /dev/null; then
        as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
        chmod 755 "$T" && chmod -R a+rX "$T"
    else
        bad "running as root without setpriv: cannot test unwritable directories"
    fi
fi
mkdir -p ro && chmod 555 ro
expect 5 "I/O error" "cannot create directory ro/run: Permission denied" -- "${as_user[@]}" "$BIN" train $S --out ro/run
mkdir -p ckro/checkpoints && chmod 777 ckro && chmod 555 ckro/checkpoints
expect 5 "directory ckro/checkpoints is not writable" -- "${as_user[@]}" "$BIN" train $S --out ckro
expect 5 "directory ckro/checkpoints is not writable" -- "${as_user[@]}" $MPI 2 "$BIN" train $S --out ckro
echo x > afile
expect 5 "cannot create directory afile/checkpoints: Not a directory" -- "$BIN" train $S --out afile
expect 5 "cannot create directory afile/x: Not a directory" -- "$BIN" data $S --out afile/x
expect 5 "cannot create directory ro/ev" -- "${as_user[@]}" "$BIN" eval --checkpoint "$CK" --out ro/ev
# metrics.jsonl read-only: the run stops at the first evaluation with exit 5
mkdir -p mro/checkpoints && chmod 777 mro mro/checkpoints && touch mro/metrics.jsonl && chmod 444 mro/metrics.jsonl
expect 5 "cannot write mro/metrics.jsonl: Permission denied" -- "${as_user[@]}" "$BIN" train $S --out mro
# a read-only file system (root too), where mounting is allowed
mkdir -p rofs
if mount -t tmpfs -o ro,size=1m tmpfs rofs 2> /dev/null; then
    RB_CLEANUP_HOOKS+=("umount '$T/rofs' 2> /dev/null")
    expect 5 "rofs/run" "Read-only file system" -- "$BIN" train $S --out rofs/run
else
    echo "skip read-only tmpfs (mount not permitted here)"
fi

rb_done
