#!/usr/bin/env bash
# bench_scaling.sh — strong and weak scaling of `mpirec train` on a synthetic
# Yelp-sized set (configs/yelp_scale_synthetic.json: 2M users, 150K items, 7M
# interactions, retrieval dim 32), communication share, bytes per step against an
# alpha-beta model, and max RSS per rank in `row` vs `replicated` mode.
#
#   tools/bench_scaling.sh                    # P = 1 and 2, 3 repeats, 40 steps per run
#   PS="1 2 4" REPEATS=5 tools/bench_scaling.sh   # on a machine with more cores
#
# Runs (each `mpirun -np P mpirec train`, OPENBLAS_NUM_THREADS=1, train.max_steps=STEPS,
# split.test_fraction=0.0001 so that the closing evaluation is negligible, no
# checkpoint, no index; every rank under tools/bench_rss.sh for its peak RSS and its
# RSS while training):
#   strong  global batch 8192, global negatives (the default semantics), row mode,
#           at every P: the same model, the work of a step split P ways;
#           efficiency(P) = X(P) / (P X(1)), X = examples/s;
#   repl    the same with dist.embedding_sharding=replicated at P > 1 (memory and speed);
#   weak    per-rank batch 8192 (global batch 8192 P), local negatives
#           (dist.negatives=local, TFRS MirroredStrategy semantics): the work per rank
#           and step is constant, so efficiency(P) = X(P) / (P X(1)) with X(1) from
#           the P = 1 strong run (at P = 1 local and global are the same model);
#   weakg   per-rank batch 8192 with GLOBAL negatives: each rank's logits are
#           [8192 x 8192 P], so its flops grow with P; reported raw and normalised
#           (ideal X(P) = X(1), efficiency = X(P) / X(1)).
# X is the median over steps.jsonl windows (train.log_every=10 steps, the first
# window dropped as warm-up) of examples_per_sec (global examples / slowest rank's
# step time); comm share = comm_seconds / (compute + comm) (means over ranks; the
# comm time includes waiting in a collective for a slower rank); bytes per step =
# bytes_sent_per_rank / steps. Repeats are the outer loop; efficiencies are medians
# of per-repeat ratios.
#
# The alpha-beta model: bench_train_comm (same invocation, P = 2 or the largest P)
# fits alpha (8-byte message) and beta (32 KiB - 4 MiB) of this machine's MPI, and
# times one step's collectives at the sizes given by the unique users/items per rank
# sampled from the data (shuf). Bytes per rank and step (d = 32, B global batch,
# U, I unique users/items in a rank's slice, f = (P-1)/P):
#   candidates (global negatives only): allgatherv + reduce-scatter = 2 f 4 B d
#   row:        per table (16 + 8 d) U f + 16 (P - 1)    (ids out, rows back, (id, grad) to owner)
#   replicated: per table (8 + 4 d) U (P - 1) + 8 (P - 1) (every rank gets every (id, grad))
#   agreement allreduce: 48
#
# Environment: BUILD (default build), OUT (default $BUILD/bench-out/scaling),
# SCRATCH (data directory, default mktemp -d, removed at the end), DATA (an existing
# Yelp-sized CSV to use instead of generating one; kept), PS ("1 2"), REPEATS (3),
# STEPS (40), NP_GEN (ranks for `mpirec gen`, 2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
out=${OUT:-$build/bench-out/scaling}
ps=${PS:-1 2}
repeats=${REPEATS:-3}
steps=${STEPS:-40}
cfg=$root/configs/yelp_scale_synthetic.json
bin=$build/mpirec
comm=$build/bench/bench_train_comm
PY=/usr/bin/python3
for f in "$bin" "$comm"; do
    [ -x "$f" ] || { echo "bench_scaling: missing $f (build first: cmake --build $build)" >&2; exit 2; }
done
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
export OPENBLAS_NUM_THREADS=1
mkdir -p "$out"
scratch=${SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/mpirec-bench-scaling.XXXXXX")}
mkdir -p "$scratch"
trap 'rm -rf "$scratch"' EXIT
maxp=$(echo "$ps" | tr ' ' '\n' | sort -n | tail -1)
echo "bench_scaling: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(date -u +%FT%TZ), P in {$ps}" >&2
if [ -n "${DATA:-}" ]; then
    data=$DATA
else
    data=$scratch/yelp_scale.csv
    echo "bench_scaling: generating $data (mpirun -np ${NP_GEN:-2} mpirec gen --config $cfg)" >&2
    mpirun -np "${NP_GEN:-2}" "$bin" gen --config "$cfg" --out "$data" > "$out/gen.json" 2> /dev/null
fi

# Unique users / items in a rank's slice of s records (mean over 40 random slices).
echo "bench_scaling: sampling unique users/items per slice" >&2
tail -n +2 "$data" | shuf -n $((8192 * 40)) > "$scratch/sample.csv"
uniq_json=$(awk -F, -v sizes="512 1024 2048 4096 8192" '
  { u[NR] = $1; it[NR] = $2 }
  END {
    n = split(sizes, S, " "); printf "{"
    for (k = 1; k <= n; k++) {
      s = S[k]; chunks = int(NR / s); tu = 0; ti = 0
      for (c = 0; c < chunks; c++) {
        delete su; delete si; nu = 0; ni = 0
        for (r = c * s + 1; r <= (c + 1) * s; r++) {
          if (!(u[r] in su)) { su[u[r]] = 1; nu++ }
          if (!(it[r] in si)) { si[it[r]] = 1; ni++ }
        }
        tu += nu; ti += ni
      }
      printf "%s\"%d\": [%.1f, %.1f]", (k > 1 ? ", " : ""), s, tu / chunks, ti / chunks
    }
    printf "}\n"
  }' "$scratch/sample.csv")
echo "$uniq_json" > "$out/unique_per_slice.json"

# alpha-beta at the largest P, with the sampled unique counts of a slice of 8192/P.
slice=$((8192 / maxp))
read -r U I < <(echo "$uniq_json" | $PY -c 'import json,sys; d=json.load(sys.stdin); s=sys.argv[1]; print(int(d[s][0]), int(d[s][1]))' "$slice" 2>/dev/null || echo "$slice $((slice / 2))")
if [ "$maxp" -ge 2 ]; then
    mpirun -np "$maxp" "$comm" --batch 8192 --dim 32 --users "$U" --items "$I" --repeats 30 > "$out/comm.jsonl"
else
    : > "$out/comm.jsonl"
fi

raw=$out/scaling.jsonl
: > "$raw"
run_one() { # name P batch negatives sharding rep
    local name=$1 P=$2 B=$3 neg=$4 shard=$5 rep=$6
    local run=$scratch/$name.$P.$rep
    rm -rf "$run"; mkdir -p "$run"
    local l0; l0=$(cut -d' ' -f1 /proc/loadavg)
    mpirun -np "$P" -x OPENBLAS_NUM_THREADS=1 "$root/tools/bench_rss.sh" "$run/rss" "$run/out/steps.jsonl" \
        "$bin" train --config "$cfg" --set data.path="$data" --set train.batch_size="$B" \
        --set dist.negatives="$neg" --set dist.embedding_sharding="$shard" \
        --set train.max_steps="$steps" --set train.log_every=10 --set split.test_fraction=0.0001 \
        --set train.progress=plain --set index.build_at_end=false --set checkpoint.at_end=false \
        --set checkpoint.every_seconds=0 --out "$run/out" > "$run/log" 2>&1 \
        || { echo "bench_scaling: $name P=$P failed:" >&2; tail -20 "$run/log" >&2; exit 1; }
    $PY - "$run" "$name" "$P" "$B" "$neg" "$shard" "$rep" "$l0" "$(cut -d' ' -f1 /proc/loadavg)" >> "$raw" <<'PY'
import glob, json, re, sys
run, name, P, B, neg, shard, rep, l0, l1 = sys.argv[1:]
P, B = int(P), int(B)
w = [json.loads(l) for l in open(run + "/out/steps.jsonl")]
win = w[1:] if len(w) > 1 else w
rss, rss_train, core = [], [], []
for f in sorted(glob.glob(run + "/rss.*")):
    v = open(f).read().split()  # peak_kb training_kb wall_s train_cpu_s train_wall_s (tools/bench_rss.sh)
    rss.append(int(v[0]))
    rss_train.append(int(v[1]))
    if len(v) >= 5 and float(v[4]) > 0:
        core.append(round(float(v[3]) / float(v[4]), 3))
ds = json.load(open(run + "/out/data_summary.json"))
est = re.search(r"memory: about ([0-9.]+) MiB per rank", open(run + "/log").read())
print(json.dumps({
    "name": name, "ranks": P, "batch": B, "negatives": neg, "sharding": shard, "repeat": int(rep),
    "load1": float(l0), "load1_after": float(l1),
    "windows": [{"ex_s": x["examples_per_sec"], "steps": x["steps"], "compute_s": x["compute_seconds"],
                 "comm_s": x["comm_seconds"], "bytes": x["bytes_sent_per_rank"],
                 "imbalance": x["load_imbalance"]} for x in win],
    "max_rss_kb": rss, "train_rss_kb": rss_train, "core_share": core, "memory_estimate_mib": float(est.group(1)) if est else None,
    "ingest_s": ds["seconds"], "bytes_file": ds["bytes"], "users": ds["users"], "items": ds["items"]}))
PY
    echo "  rep $rep $name P=$P B=$B $neg $shard: load $l0 -> $(tail -1 "$raw" | $PY -c 'import json,sys,statistics as s; r=json.load(sys.stdin); print("%.0f ex/s, peak RSS %s MiB, training RSS %s MiB" % (s.median(w["ex_s"] for w in r["windows"]), [k // 1024 for k in r["max_rss_kb"]], [k // 1024 for k in r["train_rss_kb"]]))')" >&2
}
for rep in $(seq 1 "$repeats"); do
    for P in $ps; do
        run_one strong "$P" 8192 global row "$rep"
        if [ "$P" -gt 1 ]; then
            run_one repl "$P" 8192 global replicated "$rep"
            run_one weak "$P" $((8192 * P)) local row "$rep"
            run_one weakg "$P" $((8192 * P)) global row "$rep"
        fi
    done
done
$PY - "$raw" "$out/comm.jsonl" "$out/unique_per_slice.json" "$steps" "${PREDICT_PS:-4 8 16}" <<'PY' | tee "$out/table.md"
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
comm = [json.loads(l) for l in open(sys.argv[2])]
uniq = json.load(open(sys.argv[3]))
steps = sys.argv[4]
med = st.median
D = 32
ab = [c for c in comm if c["kind"] == "alphabeta"]
alpha = ab[0]["alpha_us"] * 1e-6 if ab else None
beta = ab[0]["beta_gb_s"] * 1e9 if ab else None

def per_run(r):
    w = r["windows"]
    ns = sum(x["steps"] for x in w)
    comp = sum(x["compute_s"] for x in w) / ns
    cm = sum(x["comm_s"] for x in w) / ns
    return {"ex_s": med([x["ex_s"] for x in w]), "compute": comp, "comm": cm,
            "share": cm / (comp + cm) if comp + cm > 0 else 0,
            "bytes": sum(x["bytes"] for x in w) / ns, "imb": med([x["imbalance"] for x in w]),
            "rss": max(r["max_rss_kb"]) / 1024, "rss_train": max(r["train_rss_kb"]) / 1024,
            "est": r["memory_estimate_mib"] or 0, "ingest": r["ingest_s"],
            "core": st.mean(r["core_share"]) if r.get("core_share") else float("nan")}

def model_bytes(P, B, neg, shard):
    if P == 1:
        return 0.0, 0
    sl = B // P
    key = str(sl) if str(sl) in uniq else min(uniq, key=lambda k: abs(int(k) - sl))
    U, I = uniq[key]
    f = (P - 1) / P
    b = 48.0
    ncoll = 1
    if neg == "global":
        b += 2 * f * 4 * B * D
        ncoll += 2
    for n in (U, I):
        if shard == "row":
            b += (16 + 8 * D) * n * f + 16 * (P - 1)
            ncoll += 5
        else:
            b += (8 + 4 * D) * n * (P - 1) + 8 * (P - 1)
            ncoll += 2
    return b, ncoll

groups = {}
for r in rows:
    groups.setdefault((r["name"], r["ranks"]), []).append(r)
base = groups.get(("strong", 1))
print("### Scaling: synthetic Yelp-sized set (7M interactions, 2M users, 150K items), retrieval d = 32, %s steps per run, median of %d repeats\n"
      % (steps, max(r["repeat"] for r in rows)))
print("| run | P | global batch | negatives | tables | examples/s | step (ms) | compute (ms) | comm (ms) | comm share | load imbalance | bytes/step/rank measured | model | model comm (ms) | peak RSS/rank (MiB) | ingest (s) | core share/rank | load avg |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
summ = {}
for (name, P), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    pr = [per_run(r) for r in rs]
    m = {k: med([p[k] for p in pr]) for k in pr[0]}
    summ[(name, P)] = (pr, m)
    r0 = rs[0]
    mb, nc = model_bytes(P, r0["batch"], r0["negatives"], r0["sharding"])
    mt = nc * (P - 1) * alpha + mb / beta if (alpha and P > 1) else 0.0
    loads = [r["load1"] for r in rs] + [r["load1_after"] for r in rs]
    print("| %s | %d | %d | %s | %s | %.0f | %.1f | %.1f | %.2f | %.1f%% | %.3f | %.0f | %.0f | %.3f | %.0f | %.1f | %.2f | %.1f-%.1f |"
          % (name, P, r0["batch"], r0["negatives"], r0["sharding"], m["ex_s"],
             1e3 * r0["batch"] / m["ex_s"], 1e3 * m["compute"], 1e3 * m["comm"], 100 * m["share"],
             m["imb"], m["bytes"], mb, 1e3 * mt, m["rss"], m["ingest"], m["core"], min(loads), max(loads)))
print("\nstep (ms) = global batch / examples/s; compute and comm are per step, means over ranks (comm includes waiting")
print("for the slowest rank). core share/rank = CPU time / wall time of a rank while training (tools/bench_rss.sh;")
print("1.00 = a whole core; below 1, other jobs took the rest). model = the bytes formula above with the sampled unique users/items per slice %s;" % json.dumps(uniq))
if alpha:
    print("model comm = collectives x (P-1) x alpha + bytes / beta with alpha = %.2f us, beta = %.2f GB/s (bench_train_comm)."
          % (alpha * 1e6, beta / 1e9))

def eff(name, P, normalise=False, per_core=False):
    # per_core: divide by the core share each run received (X / core share = examples/s
    # per core actually received), i.e. what the efficiency would be if every rank had
    # had the same share of a core as the P = 1 run; NaN when not recorded.
    if base is None or (name, P) not in summ:
        return None
    bp = {r["repeat"]: per_run(r) for r in base}
    vals = []
    for r in groups[(name, P)]:
        if r["repeat"] in bp:
            pr, b1 = per_run(r), bp[r["repeat"]]
            x, x1 = pr["ex_s"], b1["ex_s"]
            if per_core:
                x, x1 = x / pr["core"], x1 / b1["core"]
            vals.append(x / x1 if normalise else x / (P * x1))
    vals = [v for v in vals if v == v]
    return med(vals) if vals else None

print("\n| scaling | P | efficiency | definition | goal |")
print("|---|---|---|---|---|")
for P in sorted({p for (_, p) in groups if p > 1}):
    e = eff("strong", P)
    if e is not None:
        print("| strong (global batch 8192, global negatives, row) | %d | %.0f%% | X(P) / (P X(1)) | |" % (P, 100 * e))
    e = eff("repl", P)
    if e is not None:
        print("| strong, replicated tables | %d | %.0f%% | X(P) / (P X(1)) | |" % (P, 100 * e))
    e = eff("weak", P)
    if e is not None:
        print("| weak (8192 per rank, local negatives, row) | %d | %.0f%% | X(P) / (P X(1)) | >= 90%%: %s |"
              % (P, 100 * e, "met" if e >= 0.9 else "NOT met"))
    for nm, lab in (("strong", "strong"), ("weak", "weak")):
        e = eff(nm, P, per_core=True)
        if e is not None:
            print("| %s, per core received (CPU-time normalised) | %d | %.0f%% | X(P)/c(P) / (P X(1)/c(1)), c = core share per rank | |"
                  % (lab, P, 100 * e))
    e, en = eff("weakg", P), eff("weakg", P, True)
    if e is not None:
        print("| weak, global negatives (per-rank flops x P) | %d | %.0f%% raw, %.0f%% normalised | raw X(P)/(P X(1)); normalised X(P)/X(1) | |"
              % (P, 100 * e, 100 * en))

print("\n| memory | P | peak RSS per rank (MiB) | RSS while training (MiB) | mpirec's pre-flight estimate (MiB) | table + Adagrad per rank (MiB, computed) |")
print("|---|---|---|---|---|---|")
for (name, P), (pr, m) in sorted(summ.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    if name not in ("strong", "repl"):
        continue
    r0 = groups[(name, P)][0]
    tb = (r0["users"] + 1 + r0["items"] + 1) * D * 4 * 2 / 2**20
    if name == "strong" and P > 1:
        tb /= P
    print("| %s (%s) | %d | %.0f | %.0f | %.0f | %.0f |" % (name, r0["sharding"], P, m["rss"], m["rss_train"], m["est"], tb))
for P in sorted({p for (_, p) in groups if p > 1}):
    if ("strong", P) in summ and ("repl", P) in summ:
        a, b = summ[("strong", P)][1], summ[("repl", P)][1]
        print("\nrow / replicated per rank at P = %d: peak RSS %.2f, RSS while training %.2f (whole process: tables,"
              " data, buffers; the tables alone are 1/P by construction)" % (P, a["rss"] / b["rss"], a["rss_train"] / b["rss_train"]))

# Prediction for rank counts this machine cannot run (PREDICT_PS), from the same model.
pps = [int(x) for x in sys.argv[5].split()] if len(sys.argv) > 5 else []
if alpha and base and pps:
    comp1 = med([per_run(r)["compute"] for r in base])
    st_row = [c for c in comm if c.get("kind") == "step" and c.get("mode") == "row"]
    k = st_row[0]["measured_ms"] / st_row[0]["model_ms"] if st_row and st_row[0]["model_ms"] > 0 else 1.0
    print("\n#### PREDICTION, not measured: P = %s from the alpha-beta model and the P = 1 compute time\n"
          % ", ".join(map(str, pps)))
    print("| P | run | compute per rank and step (ms) | model bytes/step/rank | model comm/step (ms) | predicted efficiency | comm x %.1f (measured/model, bench_train_comm row step) | efficiency then |" % k)
    print("|---|---|---|---|---|---|---|---|")
    for P in pps:
        for name, B, neg, cp in (("weak, 8192 per rank, local negatives, row", 8192 * P, "local", comp1),
                                 ("strong, global batch 8192, global negatives, row", 8192, "global", comp1 / P)):
            mb, nc = model_bytes(P, B, neg, "row")
            t = nc * (P - 1) * alpha + mb / beta
            print("| %d | %s | %.1f | %.0f | %.2f | %.0f%% | %.2f | %.0f%% |" % (P, name, 1e3 * cp, mb, 1e3 * t,
                  100 * cp / (cp + t), 1e3 * k * t, 100 * cp / (cp + k * t)))
    print("\nAssumes one dedicated core per rank at the P = 1 rate (compute %.1f ms per 8192-example step measured here),"
          " the 2-rank shared-memory alpha = %.2f us and beta = %.2f GB/s for every pair (memory-bandwidth contention"
          " between 16 ranks, NICs and load imbalance are not modelled), and unique ids per slice sampled from the data."
          % (1e3 * comp1, alpha * 1e6, beta / 1e9))
PY
echo "reproduce: PS=\"$ps\" REPEATS=$repeats STEPS=$steps tools/bench_scaling.sh" | tee -a "$out/table.md"
