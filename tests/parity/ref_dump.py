#!/usr/bin/env python3
"""Run the PyTorch reference (../shared/reference/ref_torch.py) for a fixed number
of steps and dump every parameter and the Adagrad accumulators to an .npz file,
so mpirec's checkpoint can be compared tensor by tensor (tests/parity/*.sh).

It imports the reference as a module and drives its own building blocks (data
reading, vocabularies, split, epoch order, Model, KerasAdagrad, retrieval_loss):
the training loop below mirrors ref_torch.main() line for line, plus a step
limit. Usage:
  /usr/bin/python3 ref_dump.py --ref DIR --steps N --dump OUT.npz [ref_torch args...]
"""
import argparse
import os
import sys

import numpy as np


def main():
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--ref", required=True, help="directory holding ref_torch.py")
    pre.add_argument("--steps", type=int, required=True)
    pre.add_argument("--dump", required=True)
    own, rest = pre.parse_known_args()
    sys.path.insert(0, own.ref)
    import torch
    import ref_torch as R

    a = R.parse_args(rest)
    torch.set_num_threads(1)
    R.set_blas_threads(1)
    ucol, icol, rcol, tcol = R.DATASETS[a.dataset]
    users, items, ratings, texts = R.read_csv(a.data, ucol, icol, rcol, tcol if a.text else None)
    uvocab, uindex = R.build_vocab(users)
    ivocab, iindex = R.build_vocab(items)
    N = len(users)
    D = {"uid": np.array([uindex[u] for u in users], dtype=np.int64),
         "iid": np.array([iindex[i] for i in items], dtype=np.int64),
         "rating": ratings, "n_items": len(ivocab), "tok": None}
    n_text = 0
    if a.text:
        tvocab = R.build_text_vocab(texts, a.max_tokens)
        D["tok"] = R.encode_texts(texts, tvocab)
        n_text = a.max_tokens
    is_test = R.is_test_mask(R.split_hash(a.seed, np.arange(N)), a.test_fraction)
    train_rows = np.nonzero(~is_test)[0]
    logq_p = None
    if a.logq:
        cnt = np.bincount(D["iid"][train_rows], minlength=len(ivocab) + 1).astype(np.float32)
        logq_p = torch.from_numpy(cnt / cnt.sum())
    model = R.Model(a, len(uvocab), len(ivocab), n_text)
    opt = R.KerasAdagrad(model.dense_params(), model.sparse_params(), a.lr, a.init_acc, a.eps)
    step = 0
    losses = []
    for epoch in range(a.epochs):
        order = R.epoch_order(a.seed, epoch, train_rows)
        for s in range(0, len(order), a.batch):
            if step >= own.steps:
                break
            b = order[s: s + a.batch]
            uid = torch.from_numpy(D["uid"][b])
            iid = torch.from_numpy(D["iid"][b])
            tok = R.pad_batch(D["tok"], b) if a.text else None
            opt.zero_grad()
            q = model.query(uid, tok)
            c = model.candidate(iid)
            loss = 0.0
            if a.task in ("retrieval", "multitask"):
                lq = logq_p[iid] if logq_p is not None else None
                rl = R.retrieval_loss(a, q, c, iid, lq)
                loss = rl if a.task == "retrieval" else a.retrieval_weight * rl
            if a.task in ("ranking", "multitask"):
                r = torch.from_numpy(D["rating"][b])
                mse = ((model.rating(q, c) - r) ** 2).mean()
                loss = mse if a.task == "ranking" else loss + a.rating_weight * mse
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
    out = {"losses": np.array(losses, dtype=np.float64), "steps": np.array(step)}
    for name, p in model.named_params():
        out["param/" + name] = p.detach().numpy().astype(np.float32)
        out["acc/" + name] = opt.acc[id(p)].numpy().astype(np.float32)
    np.savez(own.dump, **out)
    print(f"ref_dump: {step} steps, last loss {losses[-1] if losses else float('nan'):.6f}")


if __name__ == "__main__":
    main()
