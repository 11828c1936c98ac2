#!/usr/bin/env python3
"""Compare an mpirec checkpoint (HDF5, read with h5py) with a reference dump
(ref_dump.py's .npz) or with another checkpoint: every parameter and Adagrad
accumulator, within |a - b| <= atol + rtol * |b|. Prints the worst tensors.

  compare_ckpt.py CKPT.h5 REF.npz  [--atol A --rtol R]
  compare_ckpt.py CKPT.h5 OTHER.h5 [--atol A --rtol R]   (e.g. P=1 vs P=4)
Exit 0 when everything agrees, 1 otherwise.
"""
import argparse
import json
import sys

import h5py
import numpy as np


def ckpt_tensors(path):
    out = {}
    with h5py.File(path, "r") as f:
        meta = f["meta"].attrs
        layout = json.loads(meta["dense_layout"].decode() if isinstance(meta["dense_layout"], bytes)
                            else meta["dense_layout"])
        dense = f["params/dense"][()]
        dstate = f["optim/dense"][()] if "optim/dense" in f else None
        if dstate is not None and dense.size:
            dstate = dstate.reshape(-1, dense.size)  # slot-major
        for t in layout:
            n = int(np.prod(t["shape"]))
            out["param/" + t["name"]] = dense[t["offset"]:t["offset"] + n].reshape(t["shape"])
            if dstate is not None:
                out["acc/" + t["name"]] = dstate[0, t["offset"]:t["offset"] + n].reshape(t["shape"])
        for tab, ref in (("user", "user_emb"), ("item", "item_emb"), ("text", "text_emb")):
            if "params/" + tab in f:
                out["param/" + ref] = f["params/" + tab][()]
                if "optim/%s/slot0" % tab in f:
                    out["acc/" + ref] = f["optim/%s/slot0" % tab][()]
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ckpt")
    p.add_argument("other")
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--only", default="", help="compare only keys starting with this")
    a = p.parse_args()
    mine = ckpt_tensors(a.ckpt)
    if a.other.endswith(".npz"):
        z = np.load(a.other)
        theirs = {k: z[k] for k in z.files if k.startswith(("param/", "acc/"))}
    else:
        theirs = ckpt_tensors(a.other)
    ok = True
    worst = []
    keys = sorted(k for k in theirs if k.startswith(a.only))
    if not keys:
        print("no tensors to compare")
        return 1
    for k in keys:
        if k not in mine:
            print(f"MISSING {k} in {a.ckpt}")
            ok = False
            continue
        x, y = np.asarray(mine[k], np.float64), np.asarray(theirs[k], np.float64)
        if x.shape != y.shape:
            print(f"SHAPE {k}: {x.shape} vs {y.shape}")
            ok = False
            continue
        diff = np.abs(x - y)
        tol = a.atol + a.rtol * np.abs(y)
        bad = int((diff > tol).sum())
        rel = float((diff / (np.abs(y) + 1e-12)).max()) if diff.size else 0.0
        worst.append((float(diff.max()) if diff.size else 0.0, rel, k, bad, x.size))
        if bad:
            ok = False
    worst.sort(reverse=True)
    for d, rel, k, bad, n in worst[:12]:
        print(f"{'FAIL' if bad else 'ok  '} {k:28s} max|diff| {d:.3e}  max rel {rel:.3e}  "
              f"{bad}/{n} outside tolerance")
    print("PARITY OK" if ok else "PARITY FAILED", f"({len(keys)} tensors, atol {a.atol}, rtol {a.rtol})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
