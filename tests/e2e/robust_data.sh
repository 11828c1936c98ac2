#!/usr/bin/env bash
# ctest-labels: e2e robust
# ctest-timeout: 600
# robust_data.sh — files nobody cleaned, at the command line (`mpirec data`, and
# `mpirec train`/`recommend` where the case needs a model). Every case checks the
# exit code and that the message names the file, the line, the field and what was
# expected. P = 1 unless said; the cases that involve the byte-range split run at
# P = 2 or more, with the bad record in the last rank's range.
#   4: empty file, header only, missing column (the message lists the columns that
#      exist), column index beyond the header, a directory, a missing file,
#      non-numeric / empty / NaN / Inf / 1e999 / JSON null ratings, JSON NaN,
#      unclosed quote, truncated last record (CSV and JSON), JSON of the wrong shape
#      (an array line, a nested object as the user, a whole JSON array file),
#      too many bad records with data.on_error=skip
#   0: a 100 MB line (CSV quoted field at P = 2, JSON Lines), invalid UTF-8 ids, a
#      UTF-8 BOM, CRLF line ends, duplicate (user, item) pairs (counted in
#      data_summary.json, the same count at P = 1 and 3), more ranks than records
#      (data and train at P = 4 on 3 records), test users/items never seen in
#      training (OOV, counted and reported), k above the number of candidates
#      (eval.ks warns and scores 1, recommend -k clamps and says so)
source "$(dirname "$0")/robust_lib.bash"
rb_init robust_data
cd "$T"

J="--set data.format=jsonl --set data.columns.user=u --set data.columns.item=i \
   --set data.columns.rating=r --set data.columns.timestamp="
R="--set data.columns.rating=rating --set data.columns.timestamp="
summary() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

# ---- the file as a whole --------------------------------------------------------
: > empty.csv
expect 4 "data error" "empty.csv is empty" -- "$BIN" data --set data.path=empty.csv
printf 'user,item,rating\r\n\r\n' > header_only.csv
expect 4 "header_only.csv has no data records (only a header)" -- "$BIN" data --set data.path=header_only.csv $R
printf 'user,item,stars,when\nu1,i1,4,1\n' > nocol.csv
expect 4 "column 'rating' (data.columns.rating) not found in header of nocol.csv" \
    "columns are: user,item,stars,when" -- "$BIN" data --set data.path=nocol.csv $R
expect 4 "column 'rating' (data.columns.rating) not found" "columns are: user,item,stars,when" \
    -- $MPI 3 "$BIN" data --set data.path=nocol.csv $R
printf 'a,b,c\nu1,i1,4\n' > idx.csv
expect 4 "data.columns.item = 5, but the header of idx.csv has 3 columns: a,b,c" -- "$BIN" data \
    --set data.path=idx.csv --set data.columns.user=0 --set data.columns.item=5 $R
printf 'u1\ti1\t4\n' > idx.tsv
expect 4 "idx.tsv:1 (byte 0), field rating: expected at least 8 fields, found 3" -- "$BIN" data \
    --set data.path=idx.tsv --set data.format=delimited --set 'data.separator="\t"' \
    --set data.header=false --set data.columns.user=0 --set data.columns.item=1 \
    --set data.columns.rating=7 --set data.columns.timestamp=
mkdir -p adir
expect 4 "adir" "directory" -- "$BIN" data --set data.path=adir
expect 4 "cannot open data file nothere.csv" "No such file" -- "$BIN" data --set data.path=nothere.csv

# ---- ratings ----------------------------------------------------------------------
bad_rating() { # VALUE SHOWN
    printf 'user,item,rating\nu1,i1,4\nu2,i2,%s\nu3,i3,5\n' "$1" > rating.csv
    expect 4 "rating.csv:3 (byte 25), field rating: the rating '$2' is not a finite number" \
        -- "$BIN" data --set data.path=rating.csv $R
}
bad_rating abc abc
bad_rating '' ''
bad_rating NaN NaN
bad_rating nan nan
bad_rating inf inf
bad_rating -Infinity -Infinity
bad_rating 1e999 1e999
bad_rating '4 stars' '4 stars'
# the bad record in the last rank's byte range: same line number at P = 3
{ echo user,item,rating; for i in $(seq 1 300); do echo "u$i,i$((i % 17)),$((i % 5 + 1))"; done
  echo "u301,i3,five"; echo "u302,i4,2"; } > late.csv
expect 4 "late.csv:302" "field rating: the rating 'five' is not a finite number" \
    -- $MPI 3 "$BIN" data --set data.path=late.csv $R
printf '{"u": "a", "i": "b", "r": 4}\n{"u": "c", "i": "d", "r": null}\n' > null.jsonl
expect 4 "null.jsonl:2 (byte 29), field rating: the rating is null: expected a finite number" \
    -- "$BIN" data --set data.path=null.jsonl $J
printf '{"u": "a", "i": "b", "r": 4}\n{"u": "c", "i": "d", "r": NaN}\n' > nan.jsonl
expect 4 "nan.jsonl:2" "JSON syntax error at byte 27 of the line" "found 'N'" \
    -- "$BIN" data --set data.path=nan.jsonl $J
printf '{"u": "a", "i": "b", "r": 4}\n{"u": "c", "i": "d", "r": "4.5x"}\n' > strnum.jsonl
expect 4 "strnum.jsonl:2" "the rating '4.5x' is not a finite number" \
    -- "$BIN" data --set data.path=strnum.jsonl $J

# ---- structure ----------------------------------------------------------------------
printf 'user,item,rating\nu1,i1,4\nu2,"i2,5\nu3,i3,5\n' > quote.csv
expect 4 "quote.csv:3" "field item: quote never closed: field 2 opens a quoted value that runs to the end of the file" \
    -- "$BIN" data --set data.path=quote.csv $R
printf 'user,item,rating\nu1,i1,4\nu2,i2' > trunc.csv
expect 4 "trunc.csv:3 (byte 25)" "expected at least 3 fields, found 2" \
    -- "$BIN" data --set data.path=trunc.csv $R
printf '{"u": "a", "i": "b", "r": 4}\n{"u": "c", "i": "d", "r": 3' > trunc.jsonl
expect 4 "trunc.jsonl:2" "truncated JSON" -- "$BIN" data --set data.path=trunc.jsonl $J
printf '{"u": "a", "i": "b", "r": 4}\n["c", "d", 3]\n' > array.jsonl
expect 4 "array.jsonl:2" "not a JSON object: the line holds an array" -- "$BIN" data --set data.path=array.jsonl $J
printf '{"u": "a", "i": "b", "r": 4}\n{"u": {"id": "c"}, "i": "d", "r": 3}\n' > nested.jsonl
expect 4 "nested.jsonl:2" "field user" "field 'u' (data.columns.user) is a JSON object; expected a string, number, boolean or null" \
    -- "$BIN" data --set data.path=nested.jsonl $J
printf '[\n  {"u": "a", "i": "b", "r": 4},\n  {"u": "c", "i": "d", "r": 3}\n]\n' > whole_array.json
expect 4 "whole_array.json:1" "not a JSON object" -- "$BIN" data --set data.path=whole_array.json $J
# data.on_error=skip: counted up to data.max_bad_records, then an error naming the first
{ echo user,item,rating; for i in $(seq 1 20); do echo "u$i,i$i,4"; echo "u$i,i$i,bad$i"; done; } > many.csv
expect 0 -- "$BIN" data --set data.path=many.csv $R --set data.on_error=skip --set data.max_bad_records=20 --out skip
[ "$(summary skip/data_summary.json bad_records)" = 20 ] && ok "20 skipped bad records counted" ||
    bad "bad_records in data_summary.json: $(summary skip/data_summary.json bad_records)"
grep -q "many.csv:3" skip/data_summary.json && ok "first_bad names many.csv:3" || bad "first_bad: $(cat skip/data_summary.json)"
expect 4 "20 bad records, more than data.max_bad_records = 19" "many.csv:3" \
    -- "$BIN" data --set data.path=many.csv $R --set data.on_error=skip --set data.max_bad_records=19

# ---- accepted as they are -------------------------------------------------------------
# A 100 MB quoted field in the middle of the file: one record, split between two ranks.
python3 - << 'EOF'
with open('long.csv', 'w') as f:
    f.write('user,item,rating,review\n')
    for i in range(40):
        f.write(f'u{i},i{i % 9},{i % 5 + 1},short\n')
    f.write('u99,i1,3,"' + 'a, b ""quoted""\n' * 6_250_000 + '"\n')
    for i in range(40):
        f.write(f'u{i},i{i % 7},{i % 5 + 1},x\n')
with open('long.jsonl', 'w') as f:
    f.write('{"u": "a", "i": "b", "r": 4}\n')
    f.write('{"u": "c", "i": "d", "r": 3, "text": "' + 'z' * 100_000_000 + '"}\n')
    f.write('{"u": "e", "i": "f", "r": 2}\n')
EOF
expect 0 -- $MPI 2 "$BIN" data --set data.path=long.csv $R --out long
[ "$(summary long/data_summary.json records)" = 81 ] && ok "100 MB CSV line: 81 records at P=2" ||
    bad "100 MB CSV line: $(cat long/data_summary.json)"
expect 0 -- "$BIN" data --set data.path=long.jsonl $J --out longj
[ "$(summary longj/data_summary.json records)" = 3 ] && ok "100 MB JSON line: 3 records" ||
    bad "100 MB JSON line: $(cat longj/data_summary.json)"
rm -f long.csv long.jsonl

# BOM + CRLF + invalid UTF-8 ids (bytes passed through) + no final newline
printf '\xef\xbb\xbfuser,item,rating\r\nu\xff\xfe,i\xc3\x28,4\r\nu2,i1,5\r\nu3,i\xe9,2' > bom.csv
expect 0 -- "$BIN" data --set data.path=bom.csv $R --set split.test_fraction=0 --out bom
[ "$(summary bom/data_summary.json records)/$(summary bom/data_summary.json users)/$(summary bom/data_summary.json items)" = 3/3/3 ] &&
    ok "BOM, CRLF, invalid UTF-8: 3 records, 3 users, 3 items" || bad "BOM/CRLF: $(cat bom/data_summary.json)"
printf 'user,item,rating\r\nu1,i1,4.5\r\n' > crlf.csv
expect 0 -- "$BIN" data --set data.path=crlf.csv $R --set split.test_fraction=0 --out crlf
[ "$(summary crlf/data_summary.json bad_records)" = 0 ] && ok "CRLF: the rating '4.5\\r' is read as 4.5" ||
    bad "CRLF: $(cat crlf/data_summary.json)"

# duplicate (user, item) pairs: kept and counted, the same at any P
{ echo user,item,rating; for i in $(seq 1 60); do echo "u$((i % 10)),i$((i % 6)),$((i % 5 + 1))"; done; } > dup.csv
# pairs (i mod 10, i mod 6) repeat with period 30: 30 distinct pairs, 30 duplicates
expect 0 "60 records" "30 duplicate (user,item) pairs" \
    -- "$BIN" data --set data.path=dup.csv $R --set split.test_fraction=0 --out dup1
expect 0 "60 records" "30 duplicate (user,item) pairs" \
    -- $MPI 3 "$BIN" data --set data.path=dup.csv $R --set split.test_fraction=0 --out dup3
[ "$(summary dup1/data_summary.json duplicate_pairs)/$(summary dup1/data_summary.json records)" = 30/60 ] &&
    ok "60 records kept, 30 duplicate pairs counted (P=1)" || bad "duplicates P=1: $(cat dup1/data_summary.json)"
[ "$(summary dup3/data_summary.json duplicate_pairs)" = 30 ] && ok "30 duplicate pairs at P=3" ||
    bad "duplicates P=3: $(cat dup3/data_summary.json)"

# more ranks than records
printf 'user,item,rating\nu1,i1,4\nu2,i2,5\nu1,i2,3\n' > three.csv
expect 0 -- $MPI 4 "$BIN" data --set data.path=three.csv $R --set split.test_fraction=0 --out three
[ "$(summary three/data_summary.json records)" = 3 ] && ok "3 records read by 4 ranks" ||
    bad "P=4 > records: $(cat three/data_summary.json)"
expect 0 "done: " -- $MPI 4 "$BIN" train --set data.path=three.csv $R --set split.test_fraction=0 \
    --set model.embedding_dim=4 --set train.epochs=2 --set 'eval.ks=[1]' --out three_run

# OOV: a temporal split whose test part holds users and items never seen in training
{ echo user,item,rating,ts; for i in $(seq 1 30); do echo "u$((i % 5)),i$((i % 4)),4,$i"; done
  echo "new1,i1,3,100"; echo "u1,newitem,3,101"; echo "new2,newitem2,3,102"; } > oov.csv
# 33 records, temporal split, test_fraction 0.1: the last 3 by time are the test split
expect 0 "test records have a user and" "not in the vocabulary (OOV)" -- "$BIN" data --set data.path=oov.csv \
    --set data.columns.rating=rating --set data.columns.timestamp=ts --set split.kind=temporal \
    --set split.test_fraction=0.1 --out oov
[ "$(summary oov/data_summary.json test_oov_users)/$(summary oov/data_summary.json test_oov_items)" = 2/2 ] &&
    ok "OOV counted: 2 test users, 2 test items" || bad "OOV: $(cat oov/data_summary.json)"

# k above the number of candidates: 4 items
{ echo user,item,rating; for i in $(seq 1 40); do echo "u$((i % 8)),i$((i % 4)),$((i % 5 + 1))"; done; } > four.csv
expect 0 "eval.ks: k = 50 is not smaller than the number of candidate items (4): top_50 is 1 by definition" \
    -- "$BIN" train --set data.path=four.csv $R --set model.embedding_dim=4 --set 'eval.ks=[1,50]' \
    --set index.kind=exact --out k
python3 -c "import json; m=[json.loads(l) for l in open('k/metrics.jsonl')]; assert m[-1]['top_50'] == 1, m[-1]" &&
    ok "top_50 over 4 candidates is 1" || bad "top_50 with 4 candidates: $(tail -1 k/metrics.jsonl)"
expect 0 "k = 50 is larger than the 4 items of the index" '"k_clamped": true' \
    -- "$BIN" recommend --index k/index.h5 --user u1 -k 50
python3 -c "import json,sys; a=json.loads(open(sys.argv[1]).readline()); assert len(a['items']) == 4, a" "$T/out" &&
    ok "recommend -k 50 answers the 4 items" || bad "recommend -k 50: $(cat "$T/out")"
expect 2 "-k needs an integer >= 1 (got '0')" -- "$BIN" recommend --index k/index.h5 --user u1 -k 0

rb_done
