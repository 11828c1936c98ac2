#!/usr/bin/python3
"""bench_faiss.py — FAISS on the vectors bench_index wrote, for comparison.

Reads DIR/items.npy, DIR/queries.npy and DIR/gt.npy (the exact top k found by
mpirec's exact search) and, with the same procedure as bench/bench_index.c, for
each thread count (FAISS's OpenMP threads and OpenBLAS's, both set in-process):
  - IndexFlatIP: batch search of the first --time-queries queries, median QPS of
    --repeats runs; its agreement with gt cross-checks both exact searches;
  - IndexIVFFlat (METRIC_INNER_PRODUCT: FAISS's own inner-product k-means and
    probing; the same nlist, k-means iterations and training points per list as
    mpirec): the smallest nprobe reaching each target recall@k on the first
    --sweep-queries queries (sweep up, then bisect), its recall over all
    queries, and its median QPS.
Prints one JSON object per measurement on stdout. With --ours FILE (bench_index's
JSON lines) it also prints a table with the ratios mpirec / FAISS on stderr.

Use Debian's build: /usr/bin/python3 (python3-faiss 1.7.3, compiled "GENERIC",
i.e. without the AVX2 kernels of FAISS's own wheels).
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import sys
import time

import numpy as np
import faiss


def set_threads(t):
    faiss.omp_set_num_threads(t)
    # FAISS's flat search calls sgemm: OpenBLAS has its own thread pool.
    for name in ("openblas", "openblas64"):
        path = ctypes.util.find_library(name)
        if path:
            try:
                ctypes.CDLL(path).openblas_set_num_threads(t)
                return
            except (OSError, AttributeError):
                pass


def median_qps(fn, nq, repeats):
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(nq / (time.perf_counter() - t0))
    return float(np.median(runs))


def recall(gt, got):
    hit = 0
    for a, b in zip(gt, got):
        hit += len(set(a.tolist()) & set(b.tolist()))
    return hit / gt.size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--targets", default="0.9,0.95,0.99")
    ap.add_argument("--nlist", type=int, required=True, help="the nlist mpirec used")
    ap.add_argument("--time-queries", type=int, default=2000)
    ap.add_argument("--sweep-queries", type=int, default=2000)
    ap.add_argument("--kmeans-iters", type=int, default=20)
    ap.add_argument("--train-per-list", type=int, default=64,
                    help="k-means training points per list (mpirec uses 64)")
    ap.add_argument("--ours", help="bench_index JSON lines to compare with")
    a = ap.parse_args()

    X = np.load(os.path.join(a.dir, "items.npy"))
    Q = np.load(os.path.join(a.dir, "queries.npy"))
    gt = np.load(os.path.join(a.dir, "gt.npy"))
    n, d = X.shape
    nq, k = gt.shape
    nt = a.time_queries if 0 < a.time_queries < nq else nq
    ns = a.sweep_queries if 0 < a.sweep_queries < nq else nq
    targets = [float(t) for t in a.targets.split(",")]
    threads = [int(t) for t in a.threads.split(",")]
    out = []

    set_threads(max(threads))
    flat = faiss.IndexFlatIP(d)
    flat.add(X)
    _, I = flat.search(Q, k)
    agree = recall(gt, I)
    quant = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quant, d, a.nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = a.kmeans_iters
    ivf.cp.max_points_per_centroid = a.train_per_list
    ivf.cp.seed = 42
    t0 = time.perf_counter()
    ivf.train(X)
    ivf.add(X)
    build_s = time.perf_counter() - t0
    out.append({"impl": "faiss", "kind": "build", "index": "IndexIVFFlat", "items": n,
                "nlist": a.nlist, "seconds": round(build_s, 2), "threads": max(threads)})
    print(json.dumps(out[-1]), flush=True)

    def search(np_, m):
        ivf.nprobe = int(np_)
        return ivf.search(Q[:m], k)[1]

    best = {}
    lo, np_ = 0, 1
    while True:
        r = recall(gt[:ns], search(np_, ns))
        print(f"  faiss nprobe {np_:5d}  recall@{k} {r:.4f} (first {ns} queries)",
              file=sys.stderr)
        for t in targets:
            if t in best or r < t:
                continue
            lo_t, hi_t = lo, np_
            while hi_t - lo_t > 1:
                mid = (lo_t + hi_t) // 2
                if recall(gt[:ns], search(mid, ns)) >= t:
                    hi_t = mid
                else:
                    lo_t = mid
            best[t] = hi_t
        if len(best) == len(targets) or np_ >= a.nlist:
            break
        lo = np_
        np_ = np_ + 1 if np_ < 8 else np_ + np_ // 4
        np_ = min(np_, a.nlist)
    rec = {t: recall(gt, search(best[t], nq)) for t in best}

    for th in threads:
        set_threads(th)
        qps = median_qps(lambda: flat.search(Q[:nt], k), nt, a.repeats)
        out.append({"impl": "faiss", "kind": "exact", "index": "IndexFlatIP", "items": n,
                    "threads": th, "queries": nt, "qps": round(qps, 1),
                    "agreement_with_mpirec_exact": round(agree, 5)})
        print(json.dumps(out[-1]), flush=True)
        for t in targets:
            if t not in best:
                continue
            qps = median_qps(lambda: search(best[t], nt), nt, a.repeats)
            out.append({"impl": "faiss", "kind": "ivf", "index": "IndexIVFFlat", "items": n,
                        "threads": th, "target": t, "nprobe": best[t], "nlist": a.nlist,
                        "recall": round(rec[t], 4), "qps": round(qps, 1)})
            print(json.dumps(out[-1]), flush=True)

    if not a.ours:
        return
    ours = [json.loads(line) for line in open(a.ours) if line.startswith("{")]
    for th in threads:
        print(f"\n{n} items x {d}, {nq} queries (timed: {nt}), k={k}, {th} thread(s)",
              file=sys.stderr)
        print(f"{'measure':40s} {'mpirec QPS':>11s} {'FAISS QPS':>11s} {'ratio':>7s}",
              file=sys.stderr)
        fx = [o for o in out if o["kind"] == "exact" and o["threads"] == th][0]
        ox = [o for o in ours if o["kind"] == "exact" and o["threads"] == th and o["items"] == n]
        if ox:
            print(f"{'exact (IndexFlatIP)':40s} {ox[0]['qps']:11.0f} {fx['qps']:11.0f} "
                  f"{ox[0]['qps'] / fx['qps']:7.2f}", file=sys.stderr)
        for o in ours:
            if o["kind"] != "ivf" or o["threads"] != th or o["items"] != n:
                continue
            f = [x for x in out if x["kind"] == "ivf" and x["threads"] == th
                 and abs(x["target"] - o["target"]) < 1e-9]
            label = f"ivf recall>={o['target']:.2f} nprobe {o['nprobe']}"
            if f:
                label += f" vs {f[0]['nprobe']}"
                print(f"{label:40s} {o['qps']:11.0f} {f[0]['qps']:11.0f} "
                      f"{o['qps'] / f[0]['qps']:7.2f}", file=sys.stderr)
            else:
                print(f"{label:40s} {o['qps']:11.0f} {'n/a':>11s}", file=sys.stderr)


if __name__ == "__main__":
    main()
