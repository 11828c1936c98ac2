#!/usr/bin/python3
"""bench_faiss.py — FAISS on the vectors bench_index wrote, for comparison.

Reads DIR/items.npy, DIR/queries.npy and DIR/gt.npy (the exact top k found by
mpirec's exact search), then for the thread count given (OpenMP threads via
faiss.omp_set_num_threads; set OPENBLAS_NUM_THREADS in the environment to the same
number, as tools/bench_index.sh does) measures:
  - IndexFlatIP: batch search of the queries, median QPS of --repeats runs, and its
    agreement with gt (a cross-check of both exact searches);
  - IndexIVFFlat (METRIC_INNER_PRODUCT, FAISS's own k-means and probing, the same
    nlist as mpirec): the smallest nprobe reaching each target recall@k, found by
    the same sweep-then-bisect as bench_index, and its median QPS.
Prints one JSON object per measurement. With --ours FILE (bench_index's JSON
lines) it also prints a comparison table with the ratios mpirec / FAISS.

Use Debian's build: /usr/bin/python3 (python3-faiss 1.7.3).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import faiss


def median_qps(fn, nq, repeats):
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(nq / (time.perf_counter() - t0))
    return float(np.median(runs))


def recall(gt, got):
    k = gt.shape[1]
    hit = 0
    for a, b in zip(gt, got):
        hit += len(set(a.tolist()) & set(b.tolist()))
    return hit / (gt.shape[0] * k)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--targets", default="0.9,0.95,0.99")
    ap.add_argument("--nlist", type=int, required=True, help="the nlist mpirec used")
    ap.add_argument("--exact-queries", type=int, default=0)
    ap.add_argument("--kmeans-iters", type=int, default=20)
    ap.add_argument("--train-per-list", type=int, default=64,
                    help="k-means training points per list (mpirec uses 64)")
    ap.add_argument("--ours", help="bench_index JSON lines to compare with")
    a = ap.parse_args()

    faiss.omp_set_num_threads(a.threads)
    X = np.load(os.path.join(a.dir, "items.npy"))
    Q = np.load(os.path.join(a.dir, "queries.npy"))
    gt = np.load(os.path.join(a.dir, "gt.npy"))
    n, d = X.shape
    nq, k = gt.shape
    ne = a.exact_queries if 0 < a.exact_queries < nq else nq
    targets = [float(t) for t in a.targets.split(",")]
    out = []

    flat = faiss.IndexFlatIP(d)
    flat.add(X)
    _, I = flat.search(Q[:ne], k)
    agree = recall(gt[:ne], I)
    qps = median_qps(lambda: flat.search(Q[:ne], k), ne, a.repeats)
    out.append({"impl": "faiss", "kind": "exact", "index": "IndexFlatIP", "items": n,
                "threads": a.threads, "queries": ne, "qps": round(qps, 1),
                "agreement_with_mpirec_exact": round(agree, 5)})
    print(json.dumps(out[-1]), flush=True)
    del flat

    quant = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quant, d, a.nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = a.kmeans_iters
    ivf.cp.max_points_per_centroid = a.train_per_list
    ivf.cp.seed = 42
    t0 = time.perf_counter()
    ivf.train(X)
    ivf.add(X)
    build_s = time.perf_counter() - t0
    print(json.dumps({"impl": "faiss", "kind": "build", "index": "IndexIVFFlat", "items": n,
                      "nlist": a.nlist, "seconds": round(build_s, 2), "threads": a.threads}),
          flush=True)

    def rec_at(np_):
        ivf.nprobe = int(np_)
        _, I = ivf.search(Q, k)
        return recall(gt, I)

    best = {}
    lo, np_ = 0, 1
    while True:
        r = rec_at(np_)
        print(f"  faiss nprobe {np_:5d}  recall@{k} {r:.4f}", file=sys.stderr)
        for t in targets:
            if t in best or r < t:
                continue
            lo_t, hi_t, r_hi = lo, np_, r
            while hi_t - lo_t > 1:
                mid = (lo_t + hi_t) // 2
                rm = rec_at(mid)
                if rm >= t:
                    hi_t, r_hi = mid, rm
                else:
                    lo_t = mid
            best[t] = (hi_t, r_hi)
        if len(best) == len(targets) or np_ >= a.nlist:
            break
        lo = np_
        np_ = np_ + 1 if np_ < 8 else np_ + np_ // 4
        np_ = min(np_, a.nlist)

    for t in targets:
        if t not in best:
            continue
        np_, r = best[t]
        ivf.nprobe = np_
        qps = median_qps(lambda: ivf.search(Q, k), nq, a.repeats)
        out.append({"impl": "faiss", "kind": "ivf", "index": "IndexIVFFlat", "items": n,
                    "threads": a.threads, "target": t, "nprobe": np_, "nlist": a.nlist,
                    "recall": round(r, 4), "qps": round(qps, 1)})
        print(json.dumps(out[-1]), flush=True)

    if a.ours:
        ours = [json.loads(l) for l in open(a.ours) if l.startswith("{")]
        print(f"\n{n} items x {d}, {nq} queries, k={k}, {a.threads} thread(s)", file=sys.stderr)
        print(f"{'measure':34s} {'mpirec QPS':>11s} {'FAISS QPS':>11s} {'ratio':>7s}",
              file=sys.stderr)
        fx = [o for o in out if o["kind"] == "exact"][0]
        ox = [o for o in ours if o["kind"] == "exact" and o["threads"] == a.threads
              and o["items"] == n]
        if ox:
            print(f"{'exact':34s} {ox[0]['qps']:11.0f} {fx['qps']:11.0f} "
                  f"{ox[0]['qps'] / fx['qps']:7.2f}", file=sys.stderr)
        for o in ours:
            if o["kind"] != "ivf" or o["threads"] != a.threads or o["items"] != n:
                continue
            f = [x for x in out if x["kind"] == "ivf" and abs(x["target"] - o["target"]) < 1e-9]
            label = (f"ivf recall>={o['target']:.2f} (np {o['nprobe']}"
                     + (f" vs {f[0]['nprobe']})" if f else ")"))
            if f:
                print(f"{label:34s} {o['qps']:11.0f} {f[0]['qps']:11.0f} "
                      f"{o['qps'] / f[0]['qps']:7.2f}", file=sys.stderr)
            else:
                print(f"{label:34s} {o['qps']:11.0f} {'n/a':>11s}", file=sys.stderr)


if __name__ == "__main__":
    main()
