#!/usr/bin/env python3
"""bench_estimate.py — memory per rank and bytes per step of `row`-mode training at a
scale this machine cannot run (the default: 1B users x 64 dims with Adagrad), from
the same model that tools/bench_scaling.sh checks against measured bytes.

    tools/bench_estimate.py                         # 1B users, 10M items, d 64, B 65536
    tools/bench_estimate.py --users 2e9 --dim 128 --nodes 8,16 --ranks-per-node 64

Per rank (P = nodes x ranks per node, f = (P-1)/P):
  tables   (users + 1 + items + 1) x d x 4 x (1 + optimizer slots) / P   (row mode)
  data     records / P x bytes_per_record  (--bytes-per-record: 64 is the pre-flight
           estimate of src/train/train.c; 210 is what tools/bench_scaling.sh measured
           resident per record on the Yelp-sized synthetic set, strings included)
Per step (global batch B, global negatives; U_r, I_r unique users/items in a rank's
slice of B/P records, taken as B/P and min(B/P, items) — every id distinct, the worst
case for the exchange):
  candidates  allgatherv + reduce-scatter of B x d floats: 2 f 4 B d bytes per rank
  embeddings  (16 + 8 d)(U_r + I_r) f per rank (ids out, rows back, (id, grad) to owner)
  NIC bytes per node: with node-aware collectives the candidates cross the NIC once
  per node (2 x 4 B d (N-1)/N); the embedding exchange leaves the node for (N-1)/N of
  the owners: ranks_per_node x embeddings x (N-1)/N / f. With flat (not node-aware)
  ring/pairwise collectives every rank's bytes cross the NIC:
  ranks_per_node x (candidates + embeddings) x (N-1)/N / f.
  time = NIC bytes / link bandwidth + collectives x latency term (log2 P x alpha,
  Bruck/recursive-doubling algorithms; 13 collectives per step in row mode)
  compute = 6 (B/P) B d flops (the three GEMMs) / sgemm rate per core
Prints a markdown table. Every input is a flag; nothing here is measured.
"""
import argparse
import math


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=float, default=1e9)
    p.add_argument("--items", type=float, default=1e7)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--slots", type=int, default=1, help="optimizer slots (Adagrad 1, Adam 2)")
    p.add_argument("--records-per-user", type=float, default=20)
    p.add_argument("--bytes-per-record", default="64,210")
    p.add_argument("--batch", type=int, default=65536)
    p.add_argument("--nodes", default="4,8,16,32")
    p.add_argument("--ranks-per-node", type=int, default=32)
    p.add_argument("--link-gb-s", default="12.5,25", help="NIC bandwidth per node, GB/s")
    p.add_argument("--alpha-us", type=float, default=2.0, help="network latency per message")
    p.add_argument("--gflops", type=float, default=50.0, help="sgemm rate per core")
    a = p.parse_args()
    d, B, rpn = a.dim, a.batch, a.ranks_per_node
    links = [float(x) for x in a.link_gb_s.split(",")]
    bprs = [float(x) for x in a.bytes_per_record.split(",")]
    records = a.users * a.records_per_user
    table_total = (a.users + 1 + a.items + 1) * d * 4 * (1 + a.slots)
    print("### Estimate: %.3g users x %.3g items, d = %d, %d optimizer slot(s), %.3g records, global batch %d, %d ranks per node\n"
          % (a.users, a.items, d, a.slots, records, B, rpn))
    print("Tables + optimizer state in total: %.1f GiB (replicated mode would need this on every rank).\n"
          % (table_total / 2**30))
    hdr = ["nodes", "ranks P", "tables/rank (GiB)"] + ["data/rank at %g B/rec (GiB)" % b for b in bprs]
    hdr += ["bytes/step/rank (MB)", "NIC bytes/step/node, node-aware (MB)", "flat (MB)"]
    hdr += ["comm/step at %g GB/s (ms)" % l for l in links]
    hdr += ["compute/step (ms)", "comm share node-aware", "comm share flat"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for N in [int(x) for x in a.nodes.split(",")]:
        P = N * rpn
        f = (P - 1) / P
        sl = B / P
        U, I = sl, min(sl, a.items)
        cand = 2 * f * 4 * B * d
        emb = (16 + 8 * d) * (U + I) * f
        off = (N - 1) / N
        nic = 2 * 4 * B * d * off + rpn * (16 + 8 * d) * (U + I) * off
        lat = 13 * math.ceil(math.log2(P)) * a.alpha_us * 1e-6
        comp = 6 * sl * B * d / (a.gflops * 1e9)
        row = [str(N), str(P), "%.2f" % (table_total / P / 2**30)]
        row += ["%.2f" % (records / P * b / 2**30) for b in bprs]
        flat = rpn * (cand + emb) * off / f
        row += ["%.1f" % ((cand + emb) / 1e6), "%.1f" % (nic / 1e6), "%.0f" % (flat / 1e6)]
        times = [nic / (l * 1e9) + lat for l in links]
        tflat = [flat / (l * 1e9) + lat for l in links]
        row += ["%.2f" % (t * 1e3) for t in times]
        share = lambda ts: "%.1f-%.1f%%" % (100 * min(ts) / (comp + min(ts)), 100 * max(ts) / (comp + max(ts)))
        row += ["%.0f" % (comp * 1e3), share(times), share(tflat)]
        print("| " + " | ".join(row) + " |")
    print("\nlatency term: 13 collectives x ceil(log2 P) x %.1f us; compute at %.0f GF/s per core (this machine's"
          " blocked sgemm rate, tools/bench_train.sh)." % (a.alpha_us, a.gflops))


if __name__ == "__main__":
    main()
