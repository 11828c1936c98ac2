#!/usr/bin/env bash
# Build mpirec (release, -Werror) and run the whole test suite except the `slow`
# label: unit, MPI (P = 1..4), end-to-end, reference parity and the SLURM test.
# Usage: tools/test.sh [extra ctest args]      (run from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMPIREC_WERROR=ON
cmake --build build -j "$(nproc)"
cd build
ctest --output-on-failure --label-exclude slow -j 2 "$@"
