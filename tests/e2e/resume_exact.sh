#!/usr/bin/env bash
# ctest-labels: e2e mpi
# ctest-timeout: 300
# Exact resume, deterministically: a reference run writes a checkpoint after
# EVERY step (checkpoint.every_steps=1, all kept). For chosen steps k, a run
# directory holding only ckpt-k (what a job killed right after that checkpoint
# leaves: SIGKILL, node loss) is resumed with --resume auto, and must end
#   - on the same P (2): bitwise equal to the reference (hash_params.py over all
#     params and optimizer state), with the same metrics.jsonl evaluation lines;
#   - on another P (1, 4; replicated or row-sharded): equal within the tolerance
#     of the distributed test (atol 1e-5, rtol 1e-4), metrics within 1e-4.
# The k include the first step, mid-epoch, the last batch of an epoch (cursor
# past the end: the epoch's evaluation is still to do), the first batch of the
# next, the last step, and the final end-of-run checkpoint (resuming a finished
# run must be a no-op: no duplicate metrics line, same model); and runs ended by
# train.max_steps inside and at the end of an epoch.
# Data: amazon_reviews.csv, retrieval (26 steps/epoch, 3 epochs), and multitask
# with Adam (bias correction depends on the restored step counter) and train-split
# evaluation lines. A negative control shows the comparison can fail.
set -euo pipefail
source "$(dirname "$0")/resume_lib.bash"
rl_init resume_exact

AMZ="--config $SRC/configs/amazon_reviews_retrieval.json --set data.path=$DATA/amazon_reviews.csv"
MT="--config $SRC/configs/amazon_reviews_multitask.json --set data.path=$DATA/amazon_reviews.csv \
    --set optimizer.name=adam --set optimizer.lr=0.01 --set eval.train_split=true --set train.epochs=2"
EVERY="--set checkpoint.every_steps=1 --set checkpoint.keep=100000"

# --- retrieval, reference at P=2 ---------------------------------------------
rl_train ref 2 $AMZ $EVERY
rl_expect_rc 0 "reference run (P=2, checkpoint every step)" ref
nb=26 # batches per epoch: 813 training records / 32
[ -f "$T/ref/checkpoints/$(printf 'ckpt-%09d.h5' $((3 * nb)))" ] || bad "reference: expected $((3 * nb)) steps"

for k in 1 $((nb - 1)) $nb $((nb + 1)) $((3 * nb - 1)) $((3 * nb)); do
    rl_seed_dir ref "k$k" "$k"
    rl_train "k$k" 2 $AMZ --resume auto
    rl_expect_rc 0 "resume from step $k (P=2)" "k$k"
    grep -q "resumed from .*ckpt-0*$k.h5" "$T/k$k.log" || bad "step $k: no 'resumed from' line"
    rl_same_hash ref "k$k" "resume from step $k, P=2"
    rl_same_metrics ref "k$k" "resume from step $k, P=2"
done
grep -q "final checkpoint of a finished run: nothing to train" "$T/k$((3 * nb)).log" ||
    bad "resuming the end-of-run checkpoint did not say there is nothing to train"

# --- another rank count: saved at 2, resumed at 1 and 4 ------------------------
for spec in "1 replicated $nb" "4 row 40"; do
    set -- $spec
    name="p$1_$2_k$3"
    rl_seed_dir ref "$name" "$3"
    rl_train "$name" "$1" $AMZ --resume auto --set dist.embedding_sharding="$2"
    rl_expect_rc 0 "resume from step $3 at P=$1 ($2)" "$name"
    grep -q "saved with 2 ranks, now $1" "$T/$name.log" || bad "$name: rank change not reported"
    rl_close ref "$name" "saved at P=2, resumed at P=$1 $2 from step $3"
    rl_same_metrics ref "$name" "saved at P=2, resumed at P=$1 $2 from step $3 (tol 1e-4)" 1e-4
done

# --- multitask + Adam + train-split evaluation -----------------------------------
rl_train mref 2 $MT $EVERY
rl_expect_rc 0 "multitask/Adam reference (P=2)" mref
for k in 7 $nb; do
    rl_seed_dir mref "m$k" "$k"
    rl_train "m$k" 2 $MT --resume auto
    rl_expect_rc 0 "multitask/Adam: resume from step $k" "m$k"
    rl_same_hash mref "m$k" "multitask/Adam: resume from step $k, P=2"
    rl_same_metrics mref "m$k" "multitask/Adam: resume from step $k, P=2"
done

# --- train.max_steps: the run ends inside an epoch (40) or at its end (52) --------
# A checkpoint at step == max_steps that is not the end-of-run one (a job killed
# between the two; reproduced with checkpoint.at_end=false) must resume to the
# same evaluation without training a step more; the end-of-run one to nothing.
for ms in 40 52; do
    rl_train "ms$ms" 2 $AMZ $EVERY --set train.max_steps=$ms
    rl_expect_rc 0 "reference with train.max_steps=$ms" "ms$ms"
    rl_train "ms${ms}_noend" 2 $AMZ $EVERY --set train.max_steps=$ms --set checkpoint.at_end=false
    rl_expect_rc 0 "train.max_steps=$ms without the end-of-run checkpoint" "ms${ms}_noend"
    rl_same_metrics "ms$ms" "ms${ms}_noend" "max_steps=$ms with and without the end-of-run checkpoint"
    rl_seed_dir "ms${ms}_noend" "ms${ms}_a" "$ms"
    rl_train "ms${ms}_a" 2 $AMZ --resume auto --set train.max_steps=$ms
    rl_same_hash "ms$ms" "ms${ms}_a" "max_steps=$ms: resume from the periodic checkpoint at step $ms"
    rl_same_metrics "ms$ms" "ms${ms}_a" "max_steps=$ms: resume from the periodic checkpoint at step $ms"
done
for k in 39 40; do
    rl_seed_dir ms40 "ms40_k$k" "$k"
    rl_train "ms40_k$k" 2 $AMZ --resume auto --set train.max_steps=40
    rl_same_hash ms40 "ms40_k$k" "max_steps=40: resume from step $k"
    rl_same_metrics ms40 "ms40_k$k" "max_steps=40: resume from step $k"
done

# --- negative control: the checks detect a different run ------------------------
rl_seed_dir ref neg 40
rl_train neg 2 $AMZ --resume auto --set optimizer.lr=0.1000001
rl_expect_rc 0 "control run (resumed with a learning rate changed by 1e-7)" neg
if [ "$(rl_hash "$(rl_ck ref)")" != "$(rl_hash "$(rl_ck neg)")" ]; then
    ok "control: hash_params.py tells the changed run apart"
else
    bad "control: the bitwise comparison did not detect a different run"
fi
mkdir -p "$T/neg2"
cp "$T/k$nb/metrics.jsonl" "$T/neg2/"
sed -i '0,/"train_loss_last": [0-9.e+-]*/s//"train_loss_last": 0/' "$T/neg2/metrics.jsonl"
if rl_metrics_cmp ref neg2 0 > /dev/null; then
    bad "control: the metrics comparison did not detect a changed value"
else
    ok "control: the metrics comparison detects a changed train_loss_last"
fi
rl_done
