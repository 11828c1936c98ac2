#!/usr/bin/env bash
# ctest-labels: e2e robust
# ctest-timeout: 300
# robust_config.sh — bad configurations at the command line: exit 3 (2 for a
# malformed --set) with a message naming the file (or --set), the key and what was
# expected; `mpirec train` refuses before it creates the run directory, and at
# P = 2 the ranks agree and the message is printed once.
#   unknown key (with a "did you mean"), a section name in the wrong case, wrong
#   types (string, null, boolean, list, object for a scalar, a section given a
#   number), out-of-range values (negative, too large, 1e30, a list element, too
#   many list elements, a string too long), unknown enum values, cross-field
#   checks, invalid JSON (with line:column), trailing text, an empty file, a
#   duplicate key, a top-level array, a missing file, a directory, the same
#   problems through --set.
source "$(dirname "$0")/robust_lib.bash"
rb_init robust_config
cd "$T"

cfg() { printf '%s' "$1" > c.json; } # write c.json
CFG() { # CODE TEXT... -- JSON [extra args]: `mpirec config --config c.json`
    local code=$1
    shift
    local -a needles=()
    while [ "$1" != "--" ]; do needles+=("$1"); shift; done
    shift
    cfg "$1"
    shift
    expect "$code" "config error" "${needles[@]}" -- "$BIN" config --config c.json "$@"
}

# ---- keys and types --------------------------------------------------------------
CFG 3 "c.json: unknown key 'data.pathh' (did you mean 'data.path'?)" -- '{"data": {"pathh": "x"}}'
CFG 3 "c.json: unknown key 'Train'" "mpirec config --keys" -- '{"Train": {"epochs": 1}}'
CFG 3 "c.json: train.batch_size: expected an integer, got a string" -- '{"train": {"batch_size": "big"}}'
CFG 3 "c.json: train.batch_size: expected an integer, got null" -- '{"train": {"batch_size": null}}'
CFG 3 "c.json: train.batch_size: expected an integer, got a boolean" -- '{"train": {"batch_size": true}}'
CFG 3 "c.json: train.batch_size = 1.5: expected an integer" -- '{"train": {"batch_size": 1.5}}'
CFG 3 "c.json: split.test_fraction: expected a number, got a string" -- '{"split": {"test_fraction": "0.2"}}'
CFG 3 "c.json: eval.ks: expected a list of integers" "got an object" -- '{"eval": {"ks": {"a": 1}}}'
CFG 3 "c.json: 'data' is a section: expected an object" -- '{"data": 5}'
CFG 3 "c.json: the config must be a JSON object of sections" -- '[1, 2]'

# ---- ranges and enums ------------------------------------------------------------
CFG 3 "c.json: train.batch_size = -5 is out of range: expected 1 to 67108864" -- '{"train": {"batch_size": -5}}'
CFG 3 "c.json: train.batch_size = 1e+30 is out of range" -- '{"train": {"batch_size": 1e30}}'
CFG 3 "c.json: split.test_fraction = 1.5 is out of range: expected 0 to 0.99" -- '{"split": {"test_fraction": 1.5}}'
CFG 3 "c.json: optimizer.lr = inf is out of range" -- '{"optimizer": {"lr": 1e400}}'
CFG 3 "c.json: model.query_layers[1] = -1 is out of range: expected 1 to 65536" -- '{"model": {"query_layers": [32, -1]}}'
CFG 3 "c.json: eval.ks has 17 elements: at most 16 allowed" -- \
    '{"eval": {"ks": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}}'
CFG 3 "c.json: data.path is 5000 bytes long: at most 4095 allowed" -- \
    "{\"data\": {\"path\": \"$(printf 'x%.0s' $(seq 1 5000))\"}}"
CFG 3 'c.json: optimizer.name = "adamw": expected one of adagrad, sgd, adam' -- '{"optimizer": {"name": "adamw"}}'
CFG 3 "model.text.enabled needs data.columns.text" -- '{"model": {"text": {"enabled": true}}}'
CFG 3 "data.separator must not be empty" -- '{"data": {"separator": ""}}'

# ---- syntax ---------------------------------------------------------------------------
CFG 3 "c.json:1:2" "invalid JSON near here" -- '{"train": {"batch_size": 64}'
CFG 3 "c.json:3:1" "invalid JSON near here" -- $'{\n  "train": {\n    "epochs": 2,,\n  }\n}'
CFG 3 "c.json:1:31: invalid JSON near here" -- '{"train": {"batch_size": 64}} x'
CFG 3 "c.json:1:1: invalid JSON near here" -- ''
CFG 3 "c.json: key 'train.batch_size' appears twice" -- '{"train": {"batch_size": 64, "batch_size": 32}}'
CFG 3 "c.json: key 'train' appears twice" -- '{"train": {"batch_size": 64}, "train": {"epochs": 2}}'
printf '{"train": {"batch_size": 6\0004}}' > nul.json
expect 3 "nul.json:1:27: invalid JSON near here" -- "$BIN" config --config nul.json

# ---- files ----------------------------------------------------------------------------
expect 3 "config file $T/missing.json: No such file or directory" -- "$BIN" config --config "$T/missing.json"
mkdir -p cdir
expect 3 "config file cdir: is a directory, expected a JSON file" -- "$BIN" config --config cdir
expect 2 "--config needs a file name" -- "$BIN" config --config

# ---- --set ----------------------------------------------------------------------------
expect 3 "--set: unknown key 'train.nope'" -- "$BIN" config --set train.nope=3
expect 3 "--set: train.batch_size: expected an integer, got a string" -- "$BIN" config --set train.batch_size=abc
expect 3 "--set: train.batch_size: expected an integer, got a list" -- "$BIN" config --set 'train.batch_size=[1]'
expect 3 "--set: eval.ks[0] = 0 is out of range: expected 1 to 1048576" -- "$BIN" config --set 'eval.ks=[0]'
expect 3 '--set: model.task = "multi": expected one of retrieval, ranking, multitask' -- "$BIN" config --set model.task=multi
expect 2 "--set train.batch_size: expected key.path=value" -- "$BIN" config --set train.batch_size
expect 2 "--set =5: expected key.path=value" -- "$BIN" config --set =5

# ---- train refuses before touching the run directory, at P = 1 and 2 ------------------
cfg '{"train": {"batch_size": "x"}}'
expect 3 "c.json: train.batch_size: expected an integer, got a string" -- "$BIN" train --config c.json --out run1
[ ! -e run1 ] && ok "no run directory after a config error" || bad "run1 was created"
expect 3 "c.json: train.batch_size: expected an integer, got a string" -- \
    $MPI 2 "$BIN" train --config c.json --out run2
[ "$(grep -c 'config error' "$T/err")" = 1 ] && ok "P=2: the message is printed once" ||
    bad "P=2: config error printed $(grep -c 'config error' "$T/err") times"
[ ! -e run2 ] && ok "P=2: no run directory" || bad "run2 was created"
expect 3 "config file $T/missing.json" -- $MPI 2 "$BIN" data --config "$T/missing.json"

rb_done
