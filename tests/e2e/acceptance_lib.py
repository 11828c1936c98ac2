#!/usr/bin/env python3
"""Helpers for the real-data acceptance tests (tests/e2e/acceptance_*.sh).

Three subcommands, all reading/writing JSON Lines:

  ref        run the PyTorch reference (../shared/reference/ref_torch.py) once per
             seed in ONE Python process (torch is imported once; each seed is a
             call of the reference's own main() with its own argv), and write one
             line per seed: {"seed", "epochs": [per-epoch test metrics], "final",
             "train_ex_per_s"}.
  popularity the "most popular training items" baseline on the same split as the
             reference/mpirec for a seed: item scores = training-split counts; a
             test record is a hit at k iff fewer than k items have a strictly
             higher count than its own item (the same strictly-greater rule as
             the factorized top-k metric, SEMANTICS.md section 2, so ties go to
             the positive: optimistic, like the metric). Candidates are the
             unique items of the whole file (vocab.from = all).
  compare    mpirec's metrics (one metrics.jsonl per seed) against the
             reference's per-seed lines, with the acceptance criteria:
               topk  (higher is better): mpirec's mean over seeds lies in the
                     reference's [min, max] AND within 2 standard errors of the
                     reference's mean (SE = sd / sqrt(n), sd with n - 1);
               rmse  (lower is better, "no worse"): mpirec's mean
                     <= reference mean + max(1e-4, 2 SE of the paired per-seed
                     differences);
               atleast (higher is better, "at least the reference's"): mpirec's
                     mean >= reference mean - max(1e-4, 2 SE of the paired
                     differences).
             1e-4 is a rounding allowance (float sums in a different order); the
             paired SE is 0 when every seed agrees, so then the check is exact up
             to 1e-4. Every seed must be present and finite. Prints a per-seed
             table and a summary line; exits 1 when a criterion fails.

Nothing here hard-codes a metric value: every bound is computed from the
reference's runs in the same test invocation.
"""
import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys


def cmd_ref(a, rest):
    sys.path.insert(0, a.ref)
    import ref_torch as R  # noqa: E402  (path set above)

    out = open(a.out, "w")
    for n, s in enumerate(a.seeds):
        if n == 1:
            # torch aborts (uncatchable c10::Error) when main() sets the inter-op
            # thread count a second time; the first call already set it to 1.
            R.torch.set_num_interop_threads = lambda k: None
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            R.main(rest + ["--seed", str(s)])
        ev = [json.loads(l) for l in buf.getvalue().splitlines() if l.startswith("{")]
        epochs = [e["test"] for e in ev if e.get("event") == "epoch" and "test" in e]
        done = [e for e in ev if e.get("event") == "done"]
        if not epochs or not done:
            sys.exit("reference gave no epoch/done events for seed %d" % s)
        out.write(json.dumps({"seed": s, "epochs": epochs, "final": epochs[-1],
                              "train_ex_per_s": done[0]["train_ex_per_s"]}) + "\n")
        out.flush()
    out.close()


def cmd_popularity(a, rest):
    sys.path.insert(0, a.ref)
    import numpy as np
    import ref_torch as R  # noqa: E402

    ucol, icol, rcol, _ = R.DATASETS[a.dataset]
    users, items, ratings, _ = R.read_csv(a.data, ucol, icol, rcol, None)
    ivocab, iindex = R.build_vocab(items)
    iid = np.array([iindex[i] for i in items], dtype=np.int64)
    res = []
    for s in a.seeds:
        is_test = R.is_test_mask(R.split_hash(s, np.arange(len(iid))), a.test_fraction)
        cnt = np.bincount(iid[~is_test], minlength=len(ivocab) + 1)[1:]  # unique items only
        srt = np.sort(cnt)
        pos = cnt[iid[is_test] - 1]
        # number of candidates with a strictly higher count than the positive
        above = len(srt) - np.searchsorted(srt, pos, side="right")
        line = {"seed": s, "test": int(is_test.sum()), "items": len(ivocab)}
        for k in a.ks:
            line["top_%d" % k] = float(np.mean(above < k))
        res.append(line)
    for line in res:
        print(json.dumps(line))
    for k in a.ks:
        v = [r["top_%d" % k] for r in res]
        print("popularity baseline top_%d: mean %.4f over %d seed(s) (min %.4f, max %.4f)"
              % (k, statistics.mean(v), len(v), min(v), max(v)), file=sys.stderr)


def mean_se(v):
    m = statistics.mean(v)
    se = statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return m, se


def cmd_compare(a, rest):
    ref = {}
    for l in open(a.ref_jsonl):
        r = json.loads(l)
        ref[r["seed"]] = r["final"]
    mine = {}
    for spec in a.mine:
        seed, path = spec.split("=", 1)
        lines = [json.loads(l) for l in open(path) if l.strip()]
        lines = [l for l in lines if l.get("split", "test") == "test"]
        if not lines:
            sys.exit("no test metrics in %s" % path)
        mine[int(seed)] = lines[-1]
    seeds = sorted(ref)
    if sorted(mine) != seeds:
        print("FAIL seeds differ: reference %s, mpirec %s" % (seeds, sorted(mine)))
        return 1
    fails = 0
    for spec in a.check:
        metric, kind = spec.split(":")
        r = [float(ref[s][metric]) for s in seeds]
        m = [float(mine[s][metric]) for s in seeds]
        if not all(math.isfinite(x) for x in r + m):
            print("FAIL %s: non-finite values (reference %s, mpirec %s)" % (metric, r, m))
            fails += 1
            continue
        print("%-6s %12s %12s %10s" % ("seed", "reference", "mpirec", "diff"))
        for s, x, y in zip(seeds, r, m):
            print("%-6d %12.4f %12.4f %+10.4f" % (s, x, y, y - x))
        rm, rse = mean_se(r)
        mm, mse = mean_se(m)
        d = [y - x for x, y in zip(r, m)]
        dm, dse = mean_se(d)
        same = sum(abs(x) <= 1e-4 for x in d)
        print("%s over %d seeds: reference mean %.4f (sd %.4f, SE %.4f, min %.4f, max %.4f); "
              "mpirec mean %.4f (SE %.4f, min %.4f, max %.4f); paired diff %+.5f (SE %.5f); "
              "%d/%d seeds equal within 1e-4"
              % (metric, len(seeds), rm, statistics.stdev(r) if len(r) > 1 else 0.0, rse,
                 min(r), max(r), mm, mse, min(m), max(m), dm, dse, same, len(seeds)))
        slack = max(1e-4, 2 * dse)
        if kind == "topk":
            ok_range = min(r) - 1e-9 <= mm <= max(r) + 1e-9
            ok_se = abs(mm - rm) <= 2 * rse + 1e-9
            ok = ok_range and ok_se
            why = "mean in reference [min,max]: %s; |mean diff| %.4f <= 2 SE %.4f: %s" % (
                ok_range, abs(mm - rm), 2 * rse, ok_se)
        elif kind == "rmse":
            ok = mm <= rm + slack
            why = "mpirec mean %.4f <= reference mean %.4f + %.4f" % (mm, rm, slack)
        elif kind == "atleast":
            ok = mm >= rm - slack
            why = "mpirec mean %.4f >= reference mean %.4f - %.4f" % (mm, rm, slack)
        else:
            sys.exit("unknown check kind " + kind)
        print("%s %s (%s): %s" % ("ok  " if ok else "FAIL", metric, kind, why))
        if a.summary:
            with open(a.summary, "a") as f:
                f.write(json.dumps({"metric": metric, "kind": kind, "seeds": seeds, "ok": ok,
                                    "ref_mean": rm, "ref_se": rse, "ref_min": min(r),
                                    "ref_max": max(r), "mpirec_mean": mm, "mpirec_se": mse,
                                    "mpirec_min": min(m), "mpirec_max": max(m),
                                    "paired_diff_mean": dm, "paired_diff_se": dse,
                                    "seeds_equal_1e-4": same}) + "\n")
        fails += not ok
    return 1 if fails else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("ref")
    r.add_argument("--ref", required=True, help="directory with ref_torch.py")
    r.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], required=True)
    r.add_argument("--out", required=True)
    q = sub.add_parser("popularity")
    q.add_argument("--ref", required=True)
    q.add_argument("--data", required=True)
    q.add_argument("--dataset", required=True)
    q.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], required=True)
    q.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100])
    q.add_argument("--test-fraction", type=float, default=0.2)
    c = sub.add_parser("compare")
    c.add_argument("--ref-jsonl", required=True)
    c.add_argument("--mine", nargs="+", required=True, help="SEED=metrics.jsonl ...")
    c.add_argument("--check", nargs="+", required=True, help="metric:topk|rmse|atleast ...")
    c.add_argument("--summary", help="append one JSON line per check here")
    a, rest = p.parse_known_args()
    if a.cmd != "ref" and rest:
        p.error("unknown arguments: %s" % rest)
    return {"ref": cmd_ref, "popularity": cmd_popularity, "compare": cmd_compare}[a.cmd](a, rest) or 0


if __name__ == "__main__":
    sys.exit(main())
