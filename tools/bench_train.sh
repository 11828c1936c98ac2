#!/usr/bin/env bash
# bench_train.sh — training speed on one core: mpirec next to the PyTorch reference
# (../shared/reference/ref_torch.py) in the same invocation, on the same data, and
# at batch 8192 next to the GEMM bound measured on the same core in between.
#
#   tools/bench_train.sh                       # all 12 configurations, 3 repeats
#   REPEATS=5 DIMS="32" BATCHES="8192" tools/bench_train.sh
#
# Data: `mpirec gen` (ROWS interactions, 20000 users, 2000 items, seed 7) with the
# header renamed to userId,movieId,rating,timestamp, so the reference reads the same
# file as `--dataset movielens`; random 80/20 split (seed 42), vocabularies from the
# whole file (vocab.from = all, as the reference).
# Models: retrieval (id embeddings only) and multitask (rating MLP [32, 16] + Dense(1),
# weights 1/1), dims 16/32/64, batch 32 and 8192, Adagrad 0.1, EPOCHS epochs.
# Both run single-threaded: OPENBLAS_NUM_THREADS=1, mpirec as a plain process
# (MPI singleton), the reference with its default --threads 1.
#
# Measured per repeat (repeats are the outer loop, so that drifting machine load is
# spread over all configurations), for each configuration in turn:
#   - load average (1 min) before the configuration;
#   - batch 8192 only: bench_train_gemm --batch 8192 --dim D (sgemm rate of the three
#     B x B x D GEMMs; bound = rate / (6 B D) examples/s), before AND after the mpirec
#     run; the bound paired with the run uses the mean of the two rates;
#   - mpirec train: examples/s = epochs x train records / sum of the epochs' training
#     times (metrics.jsonl examples_per_sec per epoch: training only, no evaluation,
#     no ingestion), i.e. the harmonic mean of the per-epoch rates;
#   - the reference: its `done` event's train_ex_per_s (the same definition).
# Reported: medians over repeats, and the median of the per-repeat ratios
# mpirec / reference and mpirec / bound. Goals (the project's issue): >= 10x the
# reference at batch 32; >= 75% of the GEMM bound at batch 8192.
#
# Environment: BUILD (default build), OUT (default $BUILD/bench-out/train; raw
# results in $OUT/train.jsonl, table in $OUT/table.md), SCRATCH (data directory,
# default a fresh mktemp -d, removed at the end), REPEATS (3), EPOCHS (2),
# ROWS (125000), TASKS ("retrieval multitask"), BATCHES ("32 8192"), DIMS ("16 32 64"),
# REF (ref_torch.py; default ../shared/reference/ref_torch.py beside the project).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
out=${OUT:-$build/bench-out/train}
repeats=${REPEATS:-3}
epochs=${EPOCHS:-2}
rows=${ROWS:-125000}
tasks=${TASKS:-retrieval multitask}
batches=${BATCHES:-32 8192}
dims=${DIMS:-16 32 64}
ref=${REF:-$root/../shared/reference/ref_torch.py}
PY=/usr/bin/python3
bin=$build/mpirec
gemm=$build/bench/bench_train_gemm
for f in "$bin" "$gemm" "$ref"; do
    [ -e "$f" ] || { echo "bench_train: missing $f (build first: cmake --build $build)" >&2; exit 2; }
done
mkdir -p "$out"
scratch=${SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/mpirec-bench-train.XXXXXX")}
mkdir -p "$scratch"
trap 'rm -rf "$scratch"' EXIT
export OPENBLAS_NUM_THREADS=1
data=$scratch/syn.csv
"$bin" gen --out "$data" --users 20000 --items 2000 --interactions "$rows" --seed 7 > /dev/null 2>&1
sed -i '1s/.*/userId,movieId,rating,timestamp/' "$data"
cat > "$scratch/base.json" <<EOF
{
  "data": {"path": "$data", "format": "csv",
           "columns": {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}},
  "split": {"kind": "random", "test_fraction": 0.2, "seed": 42},
  "vocab": {"from": "all"},
  "model": {"task": "retrieval", "embedding_dim": 32, "ranking_layers": [32, 16]},
  "loss": {"retrieval_weight": 1.0, "rating_weight": 1.0},
  "train": {"batch_size": 32, "epochs": $epochs, "seed": 42, "log_every": 100000000, "progress": "none"},
  "optimizer": {"name": "adagrad", "lr": 0.1},
  "eval": {"every_epochs": 1},
  "checkpoint": {"every_seconds": 0, "at_end": false},
  "index": {"build_at_end": false}
}
EOF
raw=$out/train.jsonl
: > "$raw"
load1() { cut -d' ' -f1 /proc/loadavg; }
gemm_rate() { "$gemm" --batch "$1" --dim "$2" --repeats 3 | sed -n 's/.*"gflops": \([0-9.]*\).*/\1/p'; }
echo "bench_train: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(date -u +%FT%TZ)" >&2
echo "bench_train: $rows interactions, $epochs epochs, $repeats repeats; raw results in $raw" >&2
for rep in $(seq 1 "$repeats"); do
  for task in $tasks; do
    for B in $batches; do
      for d in $dims; do
        l0=$(load1)
        g0=null; g1=null
        [ "$B" -ge 1024 ] && g0=$(gemm_rate "$B" "$d")
        run=$scratch/run
        rm -rf "$run"
        "$bin" train -q --config "$scratch/base.json" --set model.task="$task" \
            --set model.embedding_dim="$d" --set train.batch_size="$B" --out "$run" \
            > "$scratch/mpirec.log" 2>&1 || { cat "$scratch/mpirec.log" >&2; exit 1; }
        [ "$B" -ge 1024 ] && g1=$(gemm_rate "$B" "$d")
        mine=$($PY -c '
import json, sys
m = [json.loads(l) for l in open(sys.argv[1])]
r = [x["examples_per_sec"] for x in m if x.get("split", "test") == "test"]
print(json.dumps({"ex_s": len(r) / sum(1.0 / x for x in r), "epochs": r}))' "$run/metrics.jsonl")
        $PY "$ref" --data "$data" --dataset movielens --task "$task" --dim "$d" --batch "$B" \
            --epochs "$epochs" --seed 42 --no-eval > "$scratch/ref.jsonl" 2> "$scratch/ref.err" \
            || { cat "$scratch/ref.err" >&2; exit 1; }
        theirs=$($PY -c '
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(json.dumps({"ex_s": [e for e in ev if e.get("event") == "done"][0]["train_ex_per_s"],
                  "epochs": [e["train_ex_per_s"] for e in ev if e.get("event") == "epoch"]}))' "$scratch/ref.jsonl")
        line="{\"task\": \"$task\", \"batch\": $B, \"dim\": $d, \"repeat\": $rep, \"load1\": $l0, \"load1_after\": $(load1), \"gflops_before\": $g0, \"gflops_after\": $g1, \"mpirec\": $mine, \"reference\": $theirs}"
        echo "$line" >> "$raw"
        echo "  rep $rep $task B=$B d=$d: mpirec $(echo "$mine" | sed 's/.*"ex_s": \([0-9.]*\).*/\1/') ex/s, reference $(echo "$theirs" | sed 's/.*"ex_s": \([0-9.]*\).*/\1/') ex/s, sgemm $g0/$g1 GF/s, load $l0" >&2
      done
    done
  done
done
$PY - "$raw" "$rows" "$epochs" <<'PY' | tee "$out/table.md"
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = st.median
print("### Training speed, 1 core: mpirec vs the PyTorch reference (%s interactions, %s epochs, median of %d repeats)\n"
      % (sys.argv[2], sys.argv[3], max(r["repeat"] for r in rows)))
print("| task | batch | dim | mpirec ex/s | reference ex/s | mpirec / reference | sgemm GF/s | GEMM bound ex/s | mpirec / bound | goal | load avg |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
keys = []
for r in rows:
    k = (r["task"], r["batch"], r["dim"])
    if k not in keys:
        keys.append(k)
for k in keys:
    rs = [r for r in rows if (r["task"], r["batch"], r["dim"]) == k]
    m = med([r["mpirec"]["ex_s"] for r in rs])
    f = med([r["reference"]["ex_s"] for r in rs])
    ratio = med([r["mpirec"]["ex_s"] / r["reference"]["ex_s"] for r in rs])
    loads = [r["load1"] for r in rs] + [r["load1_after"] for r in rs]
    g = b = fb = None
    if rs[0]["gflops_before"] is not None:
        rates = [(r["gflops_before"] + r["gflops_after"]) / 2 for r in rs]
        g = med(rates)
        b = g * 1e9 / (6 * k[1] * k[2])
        fb = med([r["mpirec"]["ex_s"] / (x * 1e9 / (6 * k[1] * k[2])) for r, x in zip(rs, rates)])
    if k[1] >= 1024:
        goal = "%s (>= 75%% of bound)" % ("met" if fb >= 0.75 else "NOT met")
    else:
        goal = "%s (>= 10x)" % ("met" if ratio >= 10 else "NOT met")
    print("| %s | %d | %d | %.0f | %.0f | %.1fx | %s | %s | %s | %s | %.1f-%.1f |"
          % (k[0], k[1], k[2], m, f, ratio, "%.1f" % g if g else "-", "%.0f" % b if b else "-",
             "%.0f%%" % (100 * fb) if fb else "-", goal, min(loads), max(loads)))
print("\nmpirec / reference and mpirec / bound are medians of per-repeat ratios (the bound of a repeat uses the")
print("mean of the sgemm rates measured right before and right after its mpirec run). Load avg: 1-minute load")
print("average before/after each configuration (range over repeats).")
PY
echo "reproduce: REPEATS=$repeats EPOCHS=$epochs ROWS=$rows TASKS=\"$tasks\" BATCHES=\"$batches\" DIMS=\"$dims\" tools/bench_train.sh" | tee -a "$out/table.md"
