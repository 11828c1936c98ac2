#!/usr/bin/env bash
# ctest-labels: e2e
# tools/plot_metrics.sh turns a run's metrics.jsonl into a PNG (checked by its
# signature and size), and fails clearly on a directory without metrics.
set -euo pipefail
BIN=${MPIREC_BIN:?}; DATA=${MPIREC_DATA:?}; SRC=${MPIREC_SRC:?}
T=${MPIREC_TMP:?}/plot_metrics
rm -rf "$T"; mkdir -p "$T"
"$BIN" train -q --config "$SRC/configs/amazon_reviews_retrieval.json" --set data.path="$DATA/amazon_reviews.csv" \
    --set train.progress=none --set index.build_at_end=false --set train.epochs=2 --out "$T/run" > /dev/null 2>&1
"$SRC/tools/plot_metrics.sh" "$T/run" "$T/m.png"
[ "$(head -c 8 "$T/m.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] || { echo "not a PNG"; exit 1; }
[ "$(stat -c %s "$T/m.png")" -gt 5000 ] || { echo "PNG too small"; exit 1; }
if "$SRC/tools/plot_metrics.sh" "$T" 2> "$T/err"; then echo "should fail without metrics"; exit 1; fi
grep -q "no metrics" "$T/err"
echo "ok"
