#!/usr/bin/env bash
# ctest-labels: e2e mpi
# ctest-timeout: 300
# --resume auto and config changes on resume (amazon_reviews.csv, P = 2; the
# refused cases run at P = 1, a rank change alone being allowed):
#   - no checkpoint (no run directory yet): starts fresh and says so;
#     the result is bitwise the uninterrupted run's;
#   - the newest checkpoint corrupt (one flipped byte; truncated; both newest
#     two; `latest` naming garbage): falls back to the previous valid one, names
#     the skipped file(s) and why, and still ends bitwise equal to the
#     uninterrupted run with the same metrics lines; all corrupt: starts fresh;
#   - --resume PATH naming a corrupt file: refused with exit 9 (nothing loaded);
#   - harmless config changes are accepted: train.epochs (the result equals an
#     uninterrupted run with the new epoch count, bitwise), checkpoint interval and
#     keep, logging, a copy of the data file at another path;
#   - model-shape / vocabulary-source / optimizer changes are refused with exit 3
#     and a message naming the key; a data file giving other user/item or
#     text-token vocabularies is refused naming the vocabulary; a refused run
#     leaves the checkpoints alone.
set -euo pipefail
source "$(dirname "$0")/resume_lib.bash"
rl_init resume_auto

AMZ="--config $SRC/configs/amazon_reviews_retrieval.json --set data.path=$DATA/amazon_reviews.csv"
rl_train ref 2 $AMZ --set checkpoint.every_steps=1 --set checkpoint.keep=100000
rl_expect_rc 0 "reference run" ref

# seed NAME: a run directory with ckpt-20, -30, -40 of the reference, latest -> 40
seed() {
    rl_seed_dir ref "$1" 20
    cp "$T/ref/checkpoints/ckpt-000000030.h5" "$T/ref/checkpoints/ckpt-000000040.h5" \
        "$T/$1/checkpoints/"
    echo ckpt-000000040.h5 > "$T/$1/checkpoints/latest"
}
flip() { # flip one byte in the middle of a file
    $PY -c 'import os,sys
p=sys.argv[1]; n=os.path.getsize(p)
with open(p,"r+b") as f:
    f.seek(n//2); b=f.read(1); f.seek(n//2); f.write(bytes([b[0]^0x5a]))' "$1"
}
truncate_half() { truncate -s $(($(stat -c %s "$1") / 2)) "$1"; }
ckfile() { echo "$T/$1/checkpoints/ckpt-0000000$2.h5"; }

# resumed_from NAME STEP WHAT: the run resumed from ckpt-STEP, ended bitwise equal
resumed_ok() {
    rl_expect_rc 0 "$3" "$1"
    if grep -q "resumed from .*ckpt-0*$2.h5" "$T/$1.log"; then ok "$3: resumed from step $2"
    else bad "$3: did not resume from step $2"; grep -E "resumed|skipped|fresh" "$T/$1.log" || true; fi
    rl_same_hash ref "$1" "$3"
    rl_same_metrics ref "$1" "$3"
}

# --- no checkpoint -------------------------------------------------------------
rl_train fresh1 2 $AMZ --resume auto
rl_expect_rc 0 "--resume auto, no run directory yet" fresh1
grep -q "no usable checkpoint .* starting a fresh run" "$T/fresh1.log" && ok "says it starts fresh" ||
    bad "no 'starting a fresh run' message"
rl_same_hash ref fresh1 "fresh start equals the uninterrupted run"

# --- corrupt newest ----------------------------------------------------------------
seed flip40
flip "$(ckfile flip40 40)"
rl_train flip40 2 $AMZ --resume auto
resumed_ok flip40 30 "newest checkpoint with a flipped byte"
grep -q "skipped unusable checkpoints: ckpt-000000040.h5 (named by latest)" "$T/flip40.log" &&
    ok "the flipped file is named as skipped" || bad "no warning naming the skipped file"

seed trunc40
truncate_half "$(ckfile trunc40 40)"
rl_train trunc40 2 $AMZ --resume auto
resumed_ok trunc40 30 "newest checkpoint truncated"
grep -q "skipped unusable checkpoints: ckpt-000000040.h5 (named by latest): .*" "$T/trunc40.log" &&
    ok "the truncated file is named as skipped" || bad "no warning naming the truncated file"

seed two
flip "$(ckfile two 40)"
truncate_half "$(ckfile two 30)"
rl_train two 2 $AMZ --resume auto
resumed_ok two 20 "two newest checkpoints corrupt"
grep -q "ckpt-000000030.h5: " "$T/two.log" && ok "both skipped files named" || bad "ckpt-30 not named as skipped"

seed badlatest
echo "../../etc/passwd" > "$T/badlatest/checkpoints/latest"
rl_train badlatest 2 $AMZ --resume auto
resumed_ok badlatest 40 "\`latest\` names garbage: newest by step"

seed allbad
flip "$(ckfile allbad 40)"; flip "$(ckfile allbad 30)"; truncate_half "$(ckfile allbad 20)"
rl_train allbad 2 $AMZ --resume auto
rl_expect_rc 0 "every checkpoint corrupt" allbad
grep -q "skipped unusable" "$T/allbad.log" && grep -q "starting a fresh run" "$T/allbad.log" &&
    ok "every checkpoint corrupt: warns and starts fresh" || bad "every checkpoint corrupt: no warning/fresh start"
rl_same_hash ref allbad "every checkpoint corrupt: fresh run"

seed explicit
flip "$(ckfile explicit 40)"
rl_train explicit 1 $AMZ --resume "$(ckfile explicit 40)"
rl_expect_rc 9 "--resume PATH of a corrupt file is refused" explicit
grep -q "checksum\|digest\|damaged" "$T/explicit.log" && ok "the refusal says the file is damaged" ||
    { bad "no damage message"; tail -3 "$T/explicit.log"; }

# --- harmless config changes -----------------------------------------------------
cp "$DATA/amazon_reviews.csv" "$T/copy.csv"
seed harmless
rl_train harmless 2 $AMZ --resume auto --set checkpoint.every_steps=7 --set checkpoint.keep=2 \
    --set train.log_every=3 --set checkpoint.every_seconds=5 --set data.path="$T/copy.csv"
resumed_ok harmless 40 "checkpoint interval/keep, logging and data.path (same data) changed"
rl_train ref4 2 $AMZ --set train.epochs=4
seed epochs4
rl_train epochs4 2 $AMZ --resume auto --set train.epochs=4
rl_expect_rc 0 "train.epochs raised on resume" epochs4
rl_same_hash ref4 epochs4 "train.epochs 3 -> 4 on resume equals an uninterrupted 4-epoch run"
rl_same_metrics ref4 epochs4 "train.epochs 3 -> 4 on resume"

# --- refused config changes --------------------------------------------------------
refused() { # refused NAME KEY-TEXT ARGS...
    local name=$1 key=$2
    shift 2
    seed "$name"
    local before
    before=$(cd "$T/$name/checkpoints" && md5sum ckpt-* latest)
    rl_train "$name" 1 $AMZ --resume auto "$@" # P = 1: a rank change alone is allowed
    rl_expect_rc 3 "refused: $*" "$name"
    if grep -q "$key" "$T/$name.log"; then ok "refusal names '$key'"
    else bad "refusal does not name '$key'"; tail -3 "$T/$name.log"; fi
    [ "$before" = "$(cd "$T/$name/checkpoints" && md5sum ckpt-* latest)" ] &&
        ok "refused run left the checkpoints untouched" || bad "refused run changed the checkpoints"
}
refused dim model.embedding_dim --set model.embedding_dim=8
refused vfrom vocab.from --set vocab.from=train
refused opt optimizer.name --set optimizer.name=adam
head -900 "$DATA/amazon_reviews.csv" > "$T/fewer.csv"
refused vocab "vocabulary than the checkpoint" --set data.path="$T/fewer.csv"

# Same users and items, one review summary changed: the text-token vocabulary
# differs (multitask model with the text tower), refused too.
MT="--config $SRC/configs/amazon_reviews_multitask.json --set data.path=$DATA/amazon_reviews.csv"
rl_train mt 1 $MT --set train.max_steps=5 --set checkpoint.every_steps=5
rl_expect_rc 0 "multitask run with the text tower" mt
$PY - "$DATA/amazon_reviews.csv" "$T/text.csv" <<'PYEOF'
import csv, sys
with open(sys.argv[1], newline="") as f, open(sys.argv[2], "w", newline="") as g:
    r, w = csv.reader(f), csv.writer(g)
    rows = list(r)
    col = rows[0].index("summary")
    rows[1][col] = "qwzxv unheardofword"
    w.writerows(rows)
PYEOF
before=$(cd "$T/mt/checkpoints" && md5sum ckpt-* latest)
rl_train mt 1 $MT --resume auto --set data.path="$T/text.csv"
rl_expect_rc 3 "refused: data with another text-token vocabulary" mt
grep -q "different text-token vocabulary" "$T/mt.log" && ok "refusal names the text-token vocabulary" ||
    { bad "refusal does not name the text vocabulary"; tail -3 "$T/mt.log"; }
[ "$before" = "$(cd "$T/mt/checkpoints" && md5sum ckpt-* latest)" ] && ok "checkpoints untouched" ||
    bad "refused run changed the checkpoints"
rl_train mt 1 $MT --resume auto --set train.max_steps=8
rl_expect_rc 0 "the same data resumes (text tower)" mt
rl_done
