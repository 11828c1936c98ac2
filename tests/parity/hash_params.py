#!/usr/bin/env python3
"""Print one SHA-256 over every parameter and optimizer-state dataset of an mpirec
checkpoint (params/*, optim/*, read by h5py in a fixed order). Two runs with the
same P and seed must print the same hash."""
import hashlib
import sys

import h5py


def walk(g, out, prefix=""):
    for k in sorted(g.keys()):
        o = g[k]
        if isinstance(o, h5py.Group):
            walk(o, out, prefix + k + "/")
        else:
            out.append((prefix + k, o[()].tobytes()))


h = hashlib.sha256()
with h5py.File(sys.argv[1], "r") as f:
    items = []
    for top in ("params", "optim"):
        if top in f:
            walk(f[top], items, top + "/")
for name, data in items:
    h.update(name.encode())
    h.update(data)
print(h.hexdigest())
