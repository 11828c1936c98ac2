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
Prints one JSON object per measurement on stdout.

  bench_faiss.py --summarize DIR    (no FAISS run)
reads DIR/mpirec-run*.jsonl and DIR/faiss-run*.jsonl (what tools/bench_index.sh
writes, alternating the two programs run after run) and prints the comparison
table: for every measurement the median over runs of each run's median QPS, and
the ratio mpirec / FAISS of those medians.

Use Debian's build: /usr/bin/python3 (python3-faiss 1.7.3, compiled "GENERIC",
i.e. without the AVX2 kernels of FAISS's own wheels).
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import resource
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


def load_runs(d, prefix):
    runs = []
    for name in sorted(os.listdir(d)):
        if name.startswith(prefix) and name.endswith(".jsonl"):
            runs.append([json.loads(l) for l in open(os.path.join(d, name)) if l.startswith("{")])
    return runs


def key(o):
    return (o["kind"], o["threads"], round(o.get("target", 0), 3))


def summarize(d):
    ours, theirs = load_runs(d, "mpirec-run"), load_runs(d, "faiss-run")
    if not ours or not theirs:
        sys.exit(f"no run files in {d}")

    def med(runs):
        by = {}
        for run in runs:
            for o in run:
                if o["kind"] in ("exact", "ivf"):
                    by.setdefault(key(o), []).append(o)
        return {k: (float(np.median([o["qps"] for o in v])), v) for k, v in by.items()}

    mo, mf = med(ours), med(theirs)
    bs = [o for run in ours for o in run if o["kind"] == "build"]
    b = bs[0]
    fb = [o for run in theirs for o in run if o["kind"] == "build"]
    mem = [o for run in ours for o in run if o["kind"] == "memory"]
    fmem = [o for run in theirs for o in run if o["kind"] == "memory"]
    loads = [o["load1"] for run in ours + theirs for o in run if "load1" in o]
    print(f"{b['items']} items x {b['dim']}, nlist {b['nlist']}; medians over "
          f"{len(ours)} mpirec and {len(theirs)} FAISS runs (each the median of its repeats)"
          + (f"; 1-min load average {min(loads):.1f} .. {max(loads):.1f}" if loads else ""))
    secs = [o["seconds"] for o in bs]
    each = ", ".join(f"{x:.1f}" for x in secs)
    print(f"ivf build ({b['threads']} threads): mpirec median {np.median(secs):.1f} s (runs: {each})"
          + (f"; FAISS IndexIVFFlat train + add {fb[0]['seconds']:.1f} s (first run; later runs "
             f"load it from the cache)" if fb else ""))
    if "index_mib" in b:
        line = (f"memory: mpirec exact {b['exact_mib']:.1f} MiB, ivf {b['index_mib']:.1f} MiB"
                + (f", peak RSS {max(o['peak_rss_mib'] for o in mem):.0f} MiB" if mem else ""))
        if fmem:
            f = fmem[0]
            line += (f"; FAISS IndexFlatIP {f['exact_mib']:.1f} MiB, IndexIVFFlat "
                     f"{f['index_mib']:.1f} MiB, peak RSS {max(o['peak_rss_mib'] for o in fmem):.0f} MiB "
                     f"(both indexes held)")
        print(line)
    print(f"| threads | measure | mpirec nprobe | mpirec recall | mpirec QPS (min-max) | "
          f"FAISS nprobe | FAISS recall | FAISS QPS (min-max) | mpirec / FAISS | "
          f"mpirec ivf / exact |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in sorted(mo, key=lambda k: (k[1], k[0] != "exact", k[2])):
        kind, th, t = k
        q, v = mo[k]
        qf, vf = mf.get(k, (None, None))
        ex = mo.get(("exact", th, 0), (None,))[0]
        name = "exact" if kind == "exact" else f"ivf recall@10 >= {t:.2f}"
        np_o = v[0].get("nprobe", "")
        rec_o = f"{v[0]['recall']:.4f}" if "recall" in v[0] else ""
        np_f = vf[0].get("nprobe", "") if vf else ""
        rec_f = f"{vf[0]['recall']:.4f}" if vf and "recall" in vf[0] else ""
        ratio = f"{q / qf:.2f}" if qf else "n/a"
        spd = f"{q / ex:.1f}x" if kind == "ivf" and ex else ""

        def rng(vs):
            qs = [o["qps"] for o in vs] if vs else []
            return f" ({min(qs):.0f}-{max(qs):.0f})" if len(qs) > 1 else ""
        print(f"| {th} | {name} | {np_o} | {rec_o} | {q:.0f}{rng(v)} | {np_f} | {rec_f} | "
              f"{(qf or 0):.0f}{rng(vf)} | {ratio} | {spd} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--targets", default="0.9,0.95,0.99")
    ap.add_argument("--nlist", type=int, default=0, help="the nlist mpirec used")
    ap.add_argument("--summarize", action="store_true",
                    help="only print the table from DIR's run files")
    ap.add_argument("--time-queries", type=int, default=2000)
    ap.add_argument("--sweep-queries", type=int, default=2000)
    ap.add_argument("--kmeans-iters", type=int, default=20)
    ap.add_argument("--train-per-list", type=int, default=256,
                    help="k-means training points per list (mpirec uses 256)")
    a = ap.parse_args()
    if a.summarize:
        summarize(a.dir)
        return
    if a.nlist <= 0:
        ap.error("--nlist is required (the nlist mpirec used)")

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
    # The trained index and the nprobe found per target are deterministic for these
    # vectors and settings; they are cached next to the vectors so that repeated
    # runs (for medians over runs) only repeat the timing.
    tag = f"nlist{a.nlist}-it{a.kmeans_iters}-tpl{a.train_per_list}"
    cache_ix = os.path.join(a.dir, f"faiss-ivf-{tag}.index")
    cache_sw = os.path.join(a.dir, f"faiss-sweep-{tag}-s{ns}-t{a.targets}.json")
    if os.path.exists(cache_ix):
        ivf = faiss.read_index(cache_ix)
    else:
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
                    "nlist": a.nlist, "seconds": round(build_s, 2), "threads": max(threads),
                    "load1": os.getloadavg()[0]})
        print(json.dumps(out[-1]), flush=True)
        faiss.write_index(ivf, cache_ix)

    def search(np_, m):
        ivf.nprobe = int(np_)
        return ivf.search(Q[:m], k)[1]

    best = {}
    lo, np_ = 0, 1
    if os.path.exists(cache_sw):
        best = {float(t): v for t, v in json.load(open(cache_sw)).items()}
    while len(best) < len(targets):
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
    json.dump({str(t): v for t, v in best.items()}, open(cache_sw, "w"))
    rec = {t: recall(gt, search(best[t], nq)) for t in best}

    for th in threads:
        set_threads(th)
        qps = median_qps(lambda: flat.search(Q[:nt], k), nt, a.repeats)
        out.append({"impl": "faiss", "kind": "exact", "index": "IndexFlatIP", "items": n,
                    "threads": th, "queries": nt, "qps": round(qps, 1),
                    "agreement_with_mpirec_exact": round(agree, 5),
                    "load1": os.getloadavg()[0]})
        print(json.dumps(out[-1]), flush=True)
        for t in targets:
            if t not in best:
                continue
            qps = median_qps(lambda: search(best[t], nt), nt, a.repeats)
            out.append({"impl": "faiss", "kind": "ivf", "index": "IndexIVFFlat", "items": n,
                        "threads": th, "target": t, "nprobe": best[t], "nlist": a.nlist,
                        "recall": round(rec[t], 4), "qps": round(qps, 1),
                        "load1": os.getloadavg()[0]})
            print(json.dumps(out[-1]), flush=True)
    # memory: the index structures (IndexFlatIP: the vectors; IndexIVFFlat: the
    # vectors and an int64 id per item in the inverted lists, plus the centroids),
    # and the process's peak RSS (includes the .npy arrays, as bench_index's does)
    out.append({"impl": "faiss", "kind": "memory", "items": n,
                "exact_mib": round(n * d * 4 / 2**20, 1),
                "index_mib": round((n * d * 4 + n * 8 + a.nlist * d * 4) / 2**20, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
    print(json.dumps(out[-1]), flush=True)


if __name__ == "__main__":
    main()
