#!/usr/bin/env bash
# Plot a run's metrics.jsonl (train loss and top-k / RMSE per epoch) to PNG with
# gnuplot.  Usage: tools/plot_metrics.sh RUN_DIR [OUT.png]
set -euo pipefail
DIR=${1:?usage: plot_metrics.sh RUN_DIR [OUT.png]}
OUT=${2:-$DIR/metrics.png}
M="$DIR/metrics.jsonl"
[ -s "$M" ] || { echo "no metrics in $M" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
# One whitespace table per split: epoch train_loss then each metric column.
/usr/bin/python3 - "$M" "$TMP" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = [k for k in rows[0] if k.startswith("top_")] + (["rmse"] if "rmse" in rows[0] else [])
with open(sys.argv[2] + "/cols", "w") as f:
    f.write(" ".join(keys))
for split in ("test", "train"):
    sel = [r for r in rows if r.get("split", "test") == split]
    if sel:
        with open(f"{sys.argv[2]}/{split}.dat", "w") as f:
            for r in sel:
                f.write(" ".join(str(r.get(k, "nan")) for k in ["epoch", "train_loss"] + keys) + "\n")
PY
cols=$(cat "$TMP/cols")
plot=""
i=3
for k in $cols; do
  plot+="'$TMP/test.dat' using 1:$i with linespoints title 'test $k', "
  i=$((i + 1))
done
gnuplot <<GP
set terminal pngcairo size 1000,420 font ",10" noenhanced
set output "$OUT"
set multiplot layout 1,2 title "$(basename "$DIR")"
set xlabel "epoch"; set grid
set title "train loss (mean over the epoch's batches)"
plot '$TMP/test.dat' using 1:2 with linespoints title 'train loss'
set title "evaluation"; set key bottom right
plot ${plot%, }
unset multiplot
GP
echo "wrote $OUT"
