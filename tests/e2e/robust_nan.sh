#!/usr/bin/env bash
# ctest-labels: e2e mpi robust
# ctest-timeout: 600
# robust_nan.sh — a NaN or Inf in the loss or in a gradient, injected with
# MPIREC_FAULT_INJECT=V_WHAT_at_step:N[@R] (src/train/step.c, docs/robustness.md):
# the run stops at step N with exit 6 and a message naming the step and the tensor,
# writes no checkpoint (not even when step N is a checkpoint step), leaves every
# checkpoint file and `latest` byte for byte as they were, and they still verify
# (`mpirec inspect`); a resume without the fault then finishes. P = 2 (one rank or
# every rank poisoned) and P = 1; a model with dense layers and one without.
source "$(dirname "$0")/robust_lib.bash"
rb_init robust_nan
cd "$T"

"$BIN" gen --out syn.csv --users 1500 --items 250 --interactions 8000 --seed 11 > /dev/null 2>&1
# 6426 training records / 256 -> 26 steps per epoch
S="--config $SRC/configs/synthetic.json --set data.path=$T/syn.csv --set train.batch_size=256 \
   --set train.epochs=2 --set model.embedding_dim=8 --set checkpoint.every_steps=5 --set checkpoint.keep=10"
snap() { (cd "$1/checkpoints" && sha256sum -- * | sort); }

# Runs stopped after step 10 (checkpoints 5 and 10), at P = 1 and 2; each injection
# works on a fresh copy.
for np in 1 2; do
    expect 0 "done: " -- $MPI $np "$BIN" train $S --set train.max_steps=10 --out pristine$np
    [ "$(cat pristine$np/checkpoints/latest)" = ckpt-000000010.h5 ] ||
        bad "pristine$np: latest is $(cat pristine$np/checkpoints/latest)"
done

# inject FAULT NP CODE TEXT...: resume a copy of the stopped run with the fault
inject() {
    local fault=$1 np=$2 code=$3 dir=run$2
    shift 3
    rm -rf "$dir" && cp -a "pristine$np" "$dir"
    snap "$dir" > "$dir.before"
    MPIREC_FAULT_INJECT=$fault expect "$code" "$@" -- $MPI "$np" "$BIN" train $S --out "$dir" --resume auto
    if [ "$code" = 6 ]; then
        [ "$(grep -c 'numerical failure' "$T/err")" = 1 ] && ok "$fault: reported once" ||
            bad "$fault: 'numerical failure' printed $(grep -c 'numerical failure' "$T/err") times"
    fi
    if snap "$dir" | cmp -s - "$dir.before"; then
        ok "$fault (P=$np): checkpoint files and latest unchanged, no new file"
    else
        bad "$fault (P=$np): the checkpoint directory changed"
        diff <(snap "$dir") "$dir.before" | sed 's/^/     | /'
    fi
    local latest="$dir/checkpoints/$(cat "$dir/checkpoints/latest")"
    "$BIN" inspect "$latest" > inspect.txt 2>&1 && ok "$fault: $latest still verifies" ||
        { bad "$fault: $latest does not verify"; tail -3 inspect.txt; }
}

inject nan_loss_at_step:13 2 6 "numerical failure" "step 13: the loss is NaN" "no parameter was updated"
inject inf_loss_at_step:15@1 2 6 "step 15: the loss is infinite" # 15 is a checkpoint step
inject nan_grad_at_step:12@1 2 6 "step 12: non-finite gradient in rating dense 0 kernel [0, 0] (rank 1)"
inject inf_grad_at_step:11 2 6 "step 11: non-finite gradient in rating dense 0 kernel [0, 0] (rank 0)"
inject inf_user_grad_at_step:14@0 2 6 "step 14: non-finite gradient of the user embedding table on 1 rank(s)"
inject nan_item_grad_at_step:12 2 6 "step 12: non-finite gradient of the item embedding table on 2 rank(s)"
inject nan_loss_at_step:11 1 6 "step 11: the loss is NaN"
inject nan_grad_at_step:15 1 6 "step 15: non-finite gradient in rating dense 0 kernel [0, 0]"
inject nan_loss_at_step:x 2 3 "MPIREC_FAULT_INJECT: bad item 'nan_loss_at_step:x'"
inject nan_loss_at_step:-3 1 3 "MPIREC_FAULT_INJECT: bad item 'nan_loss_at_step:-3'"

# without dense layers (retrieval, no tower layers) "grad" poisons the user table
rm -rf ret
R="--set model.task=retrieval --set model.ranking_layers=[]"
expect 0 -- "$BIN" train $S $R --set train.max_steps=5 --out ret
snap ret > ret.before
MPIREC_FAULT_INJECT=nan_grad_at_step:7 expect 6 "step 7: non-finite gradient of the user embedding table" \
    -- $MPI 2 "$BIN" train $S $R --out ret --resume auto
snap ret | cmp -s - ret.before && ok "retrieval: checkpoints unchanged" || bad "retrieval: checkpoints changed"

# the kept checkpoint is good: resuming without the fault finishes the run
expect 0 "resumed from run2/checkpoints/ckpt-000000010.h5" "done: 52 steps" \
    -- $MPI 2 "$BIN" train $S --out run2 --resume auto
# a fault scheduled after the end never fires; ckpt_* items are left to src/ckpt
MPIREC_FAULT_INJECT=nan_loss_at_step:1000,ckpt_commit:latest@5 expect 0 "done: " \
    -- "$BIN" train $S --set train.epochs=1 --out late

rb_done
