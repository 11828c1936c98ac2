#!/usr/bin/env bash
# ctest-labels: parity
# ctest-timeout: 600
# mpirec against the PyTorch reference (../shared/reference/ref_torch.py), same
# seed, hence the same split, initial weights and batches (SEMANTICS.md section 8):
#  1. every parameter and Adagrad accumulator after 3 epochs (78 steps) on
#     amazon_reviews.csv agrees within |a-b| <= 1e-6 + 1e-5|b| for retrieval (dim
#     16), ranking (dim 32) and multitask with the summary text tower;
#  2. the per-epoch test metrics (top-1..100, RMSE) equal the reference's own
#     evaluation to 4 decimals (both use the matmul positive score);
#  3. the same at P = 2 (global negatives) against the same reference.
set -euo pipefail
BIN=${MPIREC_BIN:?}; DATA=${MPIREC_DATA:?}; SRC=${MPIREC_SRC:?}; SHARED=${MPIREC_SHARED:?}
T=${MPIREC_TMP:?}/train_parity
rm -rf "$T"; mkdir -p "$T"
PY=/usr/bin/python3
D=$DATA/amazon_reviews.csv
REF=(--data "$D" --dataset amazon_reviews --batch 32 --epochs 3 --seed 42)
declare -A RARGS=(
  [retrieval]="--task retrieval --dim 16"
  [ranking]="--task ranking --dim 32"
  [multitask]="--task multitask --dim 32 --text --max-tokens 2000 --text-dim 32 --layer-sizes 32 --rating-weight 0.5 --retrieval-weight 0.5")
fails=0
for task in retrieval ranking multitask; do
  # shellcheck disable=SC2086
  $PY "$SRC/tests/parity/ref_dump.py" --ref "$SHARED/reference" --steps 78 --dump "$T/ref_$task.npz" \
      "${REF[@]}" ${RARGS[$task]} > /dev/null
  # shellcheck disable=SC2086
  $PY "$SHARED/reference/ref_torch.py" "${REF[@]}" ${RARGS[$task]} > "$T/ref_$task.jsonl"
  for np in 1 2; do
    out="$T/${task}_p$np"
    mpirun --oversubscribe -np $np -x OPENBLAS_NUM_THREADS=1 "$BIN" train -q \
        --config "$SRC/configs/amazon_reviews_$task.json" --set data.path="$D" \
        --set train.progress=none --set index.build_at_end=false --out "$out" > "$out.log" 2>&1 \
      || { cat "$out.log"; exit 1; }
    ck="$out/checkpoints/$(cat "$out/checkpoints/latest")"
    if $PY "$SRC/tests/parity/compare_ckpt.py" "$ck" "$T/ref_$task.npz" --atol 1e-6 --rtol 1e-5 > "$T/cmp.txt"; then
      echo "ok   $task P=$np: parameters and accumulators equal the reference"
    else
      echo "FAIL $task P=$np"; cat "$T/cmp.txt"; fails=$((fails + 1))
    fi
    if $PY - "$out/metrics.jsonl" "$T/ref_$task.jsonl" <<'PY'
import json, sys
mine = [json.loads(l) for l in open(sys.argv[1])]
ref = [json.loads(l) for l in open(sys.argv[2])]
ref = [r for r in ref if r.get("event") == "epoch"]
assert len(mine) == len(ref) == 3, (len(mine), len(ref))
for m, r in zip(mine, ref):
    t = r["test"]
    for k in ("top_1", "top_5", "top_10", "top_50", "top_100", "rmse"):
        if k in t:
            assert abs(m[k] - t[k]) < 1e-4, (m["epoch"], k, m[k], t[k])
print("  epochs:", [round(m.get("top_10", m.get("rmse", 0)), 4) for m in mine])
PY
    then echo "ok   $task P=$np: per-epoch metrics equal the reference's"
    else echo "FAIL $task P=$np: metrics differ"; fails=$((fails + 1)); fi
  done
done
[ $fails -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
