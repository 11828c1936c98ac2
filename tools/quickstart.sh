#!/usr/bin/env bash
# The main job on an embedded default: install what is missing, build, generate a
# synthetic dataset with planted structure, train a multitask model on it with 2
# MPI ranks, and show the results. Everything lands in runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
OUT=runs/quickstart
mkdir -p "$OUT"
MPIRUN=(mpirun --oversubscribe -np 2 -x OPENBLAS_NUM_THREADS=1)
"${MPIRUN[@]}" build/mpirec gen --config configs/synthetic.json --out "$OUT/synthetic.csv"
"${MPIRUN[@]}" build/mpirec train --config configs/synthetic.json \
    --set data.path="$OUT/synthetic.csv" --out "$OUT" --resume auto
echo
echo "== results ($OUT)"
echo "-- metrics.jsonl (one line per evaluation)"
cat "$OUT/metrics.jsonl"
echo "-- summary.json"
cat "$OUT/summary.json"
echo "-- recommendations for three users (top 5, re-ranked by the rating model)"
head -n 3 "$OUT/users.txt" 2>/dev/null || printf 'u0\nu1\nu2\n' > "$OUT/users.txt"
build/mpirec recommend --index "$OUT/index.h5" --checkpoint "$OUT/checkpoints/latest" \
    --users "$OUT/users.txt" -k 5 --rerank 20 --exclude-seen || true
