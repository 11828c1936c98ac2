#!/bin/bash
# index_ml100k.sh — IVF recall on embeddings trained on MovieLens 100K.
# The PyTorch reference (../shared/reference/ref_torch.py) trains a dim-32 retrieval
# model for 3 epochs and dumps users.npy / items.npy; the CUnit test
# `index ml100k_recall` builds the index from them and checks held-out recall@10.
# (The architect will switch this to mpirec's own trained embeddings.)
# ctest-labels: e2e
# ctest-timeout: 600
set -euo pipefail
: "${MPIREC_SHARED:?set by ctest}" "${MPIREC_TESTS_BIN:?set by ctest}"
tmp="${MPIREC_TMP:-/tmp}/index_ml100k.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
(echo userId,movieId,rating,timestamp; tr '\t' , < "$MPIREC_SHARED/data/ml-100k/u.data") > "$tmp/ml100k.csv"
if ! /usr/bin/python3 "$MPIREC_SHARED/reference/ref_torch.py" --data "$tmp/ml100k.csv" \
    --dataset movielens --task retrieval --dim 32 --batch 8192 --epochs 3 --seed 42 \
    --dump-emb "$tmp/emb" > "$tmp/ref.log" 2>&1; then
    echo "index_ml100k: the PyTorch reference failed:" >&2
    tail -20 "$tmp/ref.log" >&2
    exit 1
fi
MPIREC_INDEX_USERS="$tmp/emb/users.npy" MPIREC_INDEX_ITEMS="$tmp/emb/items.npy" \
    "$MPIREC_TESTS_BIN" index ml100k_recall
