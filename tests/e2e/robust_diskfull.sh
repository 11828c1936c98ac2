#!/usr/bin/env bash
# ctest-labels: e2e mpi robust
# ctest-timeout: 600
# robust_diskfull.sh — a write error or a full disk while `mpirec train` writes a
# checkpoint: exit 5 with a message naming the file, within the time limit (no
# hang, no crash), the previous checkpoints byte for byte as they were, `latest`
# naming a complete checkpoint that verifies, no half-written file left as
# `latest` (and no .tmp left behind), and `--resume auto` continuing once there is
# room again.
#   1. injected failures (MPIREC_FAULT_INJECT, include/mpirec/ckpt.h) at P = 2: the
#      first dataset write on every rank, a write in the middle of one rank's
#      table, and the commit stages close, fsync, rename, latest;
#   2. a real full disk: the run directory on a small tmpfs, at P = 1 and P = 2
#      (skipped with a notice where mounting is not permitted).
source "$(dirname "$0")/robust_lib.bash"
rb_init robust_diskfull
cd "$T"
RB_TIMEOUT=90

"$BIN" gen --out syn.csv --users 1500 --items 250 --interactions 8000 --seed 13 > /dev/null 2>&1
S="--config $SRC/configs/synthetic.json --set data.path=$T/syn.csv --set train.batch_size=256 \
   --set train.epochs=2 --set model.embedding_dim=8 --set checkpoint.every_steps=5 \
   --set checkpoint.keep=10 --set index.build_at_end=false"
snap() { (cd "$1/checkpoints" && sha256sum -- * | sort); }

# the state after step 10 (checkpoints 5 and 10); each case works on a copy
expect 0 "done: " -- $MPI 2 "$BIN" train $S --set train.max_steps=10 --out pristine

latest_ok() { # DIR LABEL: latest names a complete checkpoint that verifies; no .tmp
    local l
    l="$1/checkpoints/$(cat "$1/checkpoints/latest")"
    "$BIN" inspect "$l" > inspect.txt 2>&1 && ok "$2: latest ($(basename "$l")) verifies" ||
        { bad "$2: latest $l does not verify"; tail -3 inspect.txt; }
    if ls "$1"/checkpoints/*.tmp > /dev/null 2>&1; then
        bad "$2: a .tmp is left: $(ls "$1"/checkpoints/*.tmp)"
    else
        ok "$2: no .tmp left"
    fi
}

# inject FAULT TEXT...: resume a copy with the fault; the next checkpoint (step 15) fails
inject() {
    local fault=$1
    shift
    rm -rf run && cp -a pristine run
    snap run > before
    MPIREC_FAULT_INJECT=$fault expect 5 "I/O error" "$@" -- $MPI 2 "$BIN" train $S --out run --resume auto
    if [ "$fault" = ckpt_commit:latest ]; then
        # the new file is complete, only `latest` could not be updated
        snap run | grep -v ckpt-000000015.h5 | cmp -s - before &&
            ok "$fault: the old files unchanged" || bad "$fault: old checkpoint files changed"
        [ "$(cat run/checkpoints/latest)" = ckpt-000000010.h5 ] && ok "$fault: latest still names step 10" ||
            bad "$fault: latest is $(cat run/checkpoints/latest)"
    else
        snap run | cmp -s - before && ok "$fault: checkpoint files and latest unchanged" ||
            { bad "$fault: the checkpoint directory changed"; diff <(snap run) before | sed 's/^/     | /'; }
    fi
    latest_ok run "$fault"
}

inject ckpt_write_after:0 "writing run/checkpoints/ckpt-000000015.h5.tmp" "injected by MPIREC_FAULT_INJECT=ckpt_write_after:0"
inject ckpt_write_after:20000@1 "rank 1 failed" "ckpt-000000015.h5.tmp" "ckpt_write_after:20000@1"
inject ckpt_commit:close "ckpt-000000015.h5" "close" "injected"
inject ckpt_commit:fsync "ckpt-000000015.h5" "fsync" "injected"
inject ckpt_commit:rename "ckpt-000000015.h5" "rename" "injected"
inject ckpt_commit:latest "ckpt-000000015.h5" "latest" "injected"
# the run goes on from the last good checkpoint once the fault is gone
expect 0 "resumed from run/checkpoints/ckpt-000000010.h5" "done: " -- $MPI 2 "$BIN" train $S --out run --resume auto

# ---- a real full disk ---------------------------------------------------------------
# With embedding_dim 32 a checkpoint is about 0.63 MB: 6 MB fill up after a few of
# the 11 the run writes (sooner where the writer reserves room ahead).
F="$S --set model.embedding_dim=32"
full_disk() { # NP
    local np=$1 d=fs$1
    mkdir -p "$d"
    if ! mount -t tmpfs -o size=6m tmpfs "$d" 2> /dev/null; then
        echo "skip: full-disk run at P=$np (mounting a tmpfs is not permitted here)"
        return
    fi
    RB_CLEANUP_HOOKS+=("umount '$T/$d' 2> /dev/null")
    expect 5 "I/O error" "$d/run/checkpoints/ckpt-" "No space left on device" \
        -- $MPI "$np" "$BIN" train $F --out "$d/run"
    local l
    l=$(cat "$d/run/checkpoints/latest" 2> /dev/null)
    [ -n "$l" ] && [ -f "$d/run/checkpoints/$l" ] && ok "P=$np full disk: latest names $l" ||
        bad "P=$np full disk: latest is '$l'"
    latest_ok "$d/run" "P=$np full disk"
    # make room: move the run to the big disk and resume it there
    cp -a "$d/run" "moved$np" && umount "$d"
    expect 0 "resumed from moved$np/checkpoints/$l" "done: " -- $MPI "$np" "$BIN" train $F --out "moved$np" --resume auto
}
full_disk 1
full_disk 2

rb_done
