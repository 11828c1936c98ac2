#!/usr/bin/env python3
"""Function-level parity fixture for the mpirec model (tests/test_model_parity.c).

Imports the PyTorch reference ($MPIREC_SHARED/reference/ref_torch.py) as a module and,
for a handful of small configurations, records what ITS functions produce:

  * the initial tables and dense kernels of ref_torch.Model (counter-based init),
  * one batch (users, items, token lists with OOV and repeated tokens, ratings),
  * the forward tower outputs, the loss as the reference's training loop computes it
    (retrieval_loss / MSE mean / weighted multitask sum), every dense gradient and
    the dense form of every embedding gradient,
  * the parameters and tables after one ref_torch.KerasAdagrad step,
  * two function-level retrieval_loss calls with more candidates than queries.

Biases are moved off zero (uniform +-0.2, recorded) so that ReLU patterns and bias
gradients are not trivial. The C suite reads the fixture, rebuilds everything
through include/mpirec/model.h and optim.h, and compares.

Usage: /usr/bin/python3 model_parity.py --out FIXTURE [--shared DIR]
Format: one item per line, "case NAME" ... "end"; "i NAME n v..." (integers) and
"f NAME n v..." (float32 values written as exact decimal doubles).
"""
import argparse
import os
import sys

import numpy as np
import torch


def put(f, kind, name, values):
    flat = values.detach().reshape(-1).tolist() if torch.is_tensor(values) else list(values)
    if kind == "i":
        f.write("i %s %d %s\n" % (name, len(flat), " ".join(str(int(v)) for v in flat)))
    else:
        f.write("f %s %d %s\n" % (name, len(flat), " ".join(repr(float(v)) for v in flat)))


# One batch of 8 examples over 6 users / 7 items (vocab rows 1..n, row 0 = OOV):
# user 1 and 3 repeat, items 2 and 4 repeat (accidental hits), item 0 is the OOV row.
UID = [1, 3, 3, 0, 5, 2, 1, 6]
IID = [2, 4, 2, 7, 1, 4, 0, 3]
TOKENS = [[2, 5, 1], [3], [4, 4, 7], [1], [9, 2, 11, 3], [5], [6, 2], [10, 8]]
RATING = [4.0, 2.0, 5.0, 3.0, 1.0, 4.5, 3.5, 2.0]
N_USERS, N_ITEMS, MAX_TOKENS = 6, 7, 12
# sampling probabilities per item id (logQ); item 3's is below the 1e-6 clip
ITEM_P = [0.05, 0.2, 0.1, 1e-8, 0.15, 0.3, 0.12, 0.08]

CASES = [
    # name, task, text, query layers, candidate layers, options, weights (retrieval, rating)
    ("retrieval_text_layers", "retrieval", True, "6,5", "5", [], (1.0, 0.0)),
    ("retrieval_options", "retrieval", True, "6,5", "5",
     ["--temperature", "0.5", "--logq", "--remove-accidental-hits"], (1.0, 0.0)),
    ("retrieval_hard_negatives", "retrieval", False, "4", "", ["--num-hard-negatives", "3",
                                                               "--temperature", "0.8"], (1.0, 0.0)),
    ("multitask_text", "multitask", True, "6,4", "4", ["--remove-accidental-hits",
                                                        "--retrieval-weight", "0.7",
                                                        "--rating-weight", "0.3"], (0.7, 0.3)),
    ("ranking", "ranking", False, "", "", [], (0.0, 1.0)),
]


def model_case(R, f, rng, name, task, text, ql, cl, opts, weights):
    argv = ["--task", task, "--dim", "4", "--seed", "42", "--rating-hidden", "6",
            "--layer-sizes", ql, "--cand-layer-sizes", cl, "--lr", "0.1"] + opts
    if text:
        argv += ["--text", "--text-dim", "3", "--max-tokens", str(MAX_TOKENS)]
    a = R.parse_args(argv)
    model = R.Model(a, N_USERS, N_ITEMS, MAX_TOKENS if text else 0)
    f.write("case %s\n" % name)
    put(f, "i", "task", [{"retrieval": 0, "ranking": 1, "multitask": 2}[task]])
    put(f, "i", "text", [1 if text else 0])
    put(f, "i", "dim", [4])
    put(f, "i", "text_dim", [3])
    put(f, "i", "max_tokens", [MAX_TOKENS])
    put(f, "i", "seed", [42])
    put(f, "i", "n_users", [N_USERS])
    put(f, "i", "n_items", [N_ITEMS])
    put(f, "i", "query_layers", a.layer_sizes)
    put(f, "i", "candidate_layers", a.cand_layer_sizes)
    put(f, "i", "ranking_layers", a.rating_hidden if task != "retrieval" else [])
    put(f, "f", "temperature", [a.temperature or 0.0])
    put(f, "i", "logq", [1 if a.logq else 0])
    put(f, "i", "remove_accidental_hits", [1 if a.remove_accidental_hits else 0])
    put(f, "i", "num_hard_negatives", [a.num_hard_negatives or 0])
    put(f, "f", "weights", list(weights))
    # initial values, before anything moves
    put(f, "f", "init_user_emb", model.user_emb)
    put(f, "f", "init_item_emb", model.item_emb)
    if text:
        put(f, "f", "init_text_emb", model.text_emb)
    dense = model.dense_params()
    put(f, "f", "init_params", torch.cat([p.reshape(-1) for p in dense]))
    with torch.no_grad():
        for layer in model.qlayers + model.clayers + model.rlayers:
            layer.b.add_(torch.from_numpy(rng.uniform(-0.2, 0.2, layer.b.shape).astype(np.float32)))
    put(f, "f", "params", torch.cat([p.reshape(-1) for p in dense]))

    uid, iid = torch.tensor(UID), torch.tensor(IID)
    put(f, "i", "uid", UID)
    put(f, "i", "iid", IID)
    tok = None
    if text:
        tok = R.pad_batch(TOKENS, list(range(len(TOKENS))))
        put(f, "i", "tok_len", [len(t) for t in TOKENS])
        put(f, "i", "tok", [t for seq in TOKENS for t in seq])
    r = torch.tensor(RATING)
    put(f, "f", "rating", RATING)
    p_items = torch.tensor(ITEM_P, dtype=torch.float32)
    put(f, "f", "item_p", p_items)

    # the reference's training step (ref_torch.main's loop body)
    opt = R.KerasAdagrad(model.dense_params(), model.sparse_params(), a.lr, a.init_acc, a.eps)
    opt.zero_grad()
    q = model.query(uid, tok)
    c = model.candidate(iid)
    loss = 0.0
    if task in ("retrieval", "multitask"):
        lq = p_items[iid] if a.logq else None
        rl = R.retrieval_loss(a, q, c, iid, lq)
        loss = rl if task == "retrieval" else a.retrieval_weight * rl
    if task in ("ranking", "multitask"):
        pred = model.rating(q, c)
        mse = ((pred - r) ** 2).mean()
        loss = mse if task == "ranking" else loss + a.rating_weight * mse
        put(f, "f", "pred", pred)
    loss.backward()
    put(f, "f", "loss", [float(loss)])
    put(f, "f", "Q", q)
    put(f, "f", "C", c)
    put(f, "f", "grad_params", torch.cat([p.grad.reshape(-1) for p in dense]))
    for tname, t in (("user_emb", model.user_emb), ("item_emb", model.item_emb),
                     ("text_emb", model.text_emb)):
        if t is not None:
            put(f, "f", "grad_" + tname, t.grad.coalesce().to_dense())
    opt.step()
    put(f, "f", "new_params", torch.cat([p.reshape(-1) for p in dense]))
    for tname, t in (("user_emb", model.user_emb), ("item_emb", model.item_emb),
                     ("text_emb", model.text_emb)):
        if t is not None:
            put(f, "f", "new_" + tname, t)
    f.write("end\n")


def global_case(R, f, rng, name, opts):
    """retrieval_loss with 5 queries against 9 candidates (positives are columns 0..4,
    the extra 4 act only as negatives): the C side's G > B path with pos_offset 0."""
    a = R.parse_args(opts)
    q = torch.from_numpy(rng.uniform(-1, 1, (5, 4)).astype(np.float32)).requires_grad_()
    c = torch.from_numpy(rng.uniform(-1, 1, (9, 4)).astype(np.float32)).requires_grad_()
    ids = torch.tensor([3, 1, 3, 2, 5, 1, 3, 7, 2])
    p = torch.tensor([0.1, 0.2, 0.05, 1e-9, 0.3, 0.02, 0.15, 0.04, 0.5], dtype=torch.float32)
    loss = R.retrieval_loss(a, q, c, ids, p if a.logq else None)
    loss.backward()
    f.write("case %s\n" % name)
    put(f, "f", "temperature", [a.temperature or 0.0])
    put(f, "i", "logq", [1 if a.logq else 0])
    put(f, "i", "remove_accidental_hits", [1 if a.remove_accidental_hits else 0])
    put(f, "i", "num_hard_negatives", [a.num_hard_negatives or 0])
    put(f, "f", "q", q)
    put(f, "f", "c", c)
    put(f, "i", "ids", ids)
    put(f, "f", "p", p)
    put(f, "f", "loss", [float(loss)])
    put(f, "f", "dq", q.grad)
    put(f, "f", "dc", c.grad)
    f.write("end\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", default=os.environ.get("MPIREC_SHARED", "/work/shared"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(args.shared, "reference"))
    import ref_torch as R

    torch.set_num_threads(1)
    rng = np.random.RandomState(20261123)
    with open(args.out, "w") as f:
        f.write("# generated by tests/parity/model_parity.py from %s/reference/ref_torch.py "
                "(torch %s)\n" % (args.shared, torch.__version__))
        for case in CASES:
            model_case(R, f, rng, *case)
        global_case(R, f, rng, "global_options",
                    ["--temperature", "0.5", "--logq", "--remove-accidental-hits"])
        global_case(R, f, rng, "global_hard_negatives", ["--num-hard-negatives", "2"])


if __name__ == "__main__":
    main()
