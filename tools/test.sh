#!/usr/bin/env bash
# Build mpirec (release, -Werror) and run the whole test suite except the `slow`
# label: unit, MPI (P = 1..4), end-to-end, reference parity and the SLURM test.
# Then the robustness tools of docs/robustness.md, each in its own build tree:
#   tools/sanitize.sh -f          clang ASan + UBSan: unit, MPI and robust_* e2e tests
#   tools/fuzz.sh -b build/asan   fuzz smoke: every libFuzzer target 20 s from its seeds
#   tools/valgrind_train.sh       a short training run (P = 1, 2) + serving under memcheck
# Each step prints its wall time; all of them run, and any failure fails the script.
# Usage: tools/test.sh [extra ctest args]      (run from anywhere)
#   MPIREC_TEST_TOOLS=0  skip the robustness tools (the ctest part only)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
fails=()
step() { # NAME CMD...: run one step, time it, remember a failure
  local name=$1 t0=$SECONDS rc=0
  shift
  echo "==== test.sh: $name"
  "$@" || rc=$?
  echo "==== test.sh: $name: $([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || fails+=("$name")
}
ctest_release() {
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMPIREC_WERROR=ON &&
    cmake --build build -j "$(nproc)" &&
    (cd build && ctest --output-on-failure --label-exclude slow -j 2 "$@")
}
step "release build + ctest" ctest_release "$@"
if [ "${MPIREC_TEST_TOOLS:-1}" != 0 ]; then
  step "ASan+UBSan (tools/sanitize.sh -f)" tools/sanitize.sh -f
  step "fuzz smoke (tools/fuzz.sh -t 20)" tools/fuzz.sh -b build/asan -t 20
  step "valgrind (tools/valgrind_train.sh)" tools/valgrind_train.sh
fi
if [ "${#fails[@]}" -gt 0 ]; then
  echo "test.sh: FAILED: ${fails[*]}"
  exit 1
fi
echo "test.sh: all passed"
