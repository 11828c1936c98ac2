#!/bin/bash
# model_parity.sh — function-level parity of the C model with the live PyTorch reference.
# ctest-labels: parity
# ctest-timeout: 300
#
# Regenerates the fixture from ../shared/reference/ref_torch.py (its Model, retrieval_loss,
# MSE and KerasAdagrad on small configurations; see model_parity.py), then replays it
# through the C model and optimizer (CUnit suite model_parity, tests/test_model_parity.c).
# The unit run checks the committed copy of the fixture; this one checks the reference as
# it is today. Needs /usr/bin/python3 with torch and numpy (Debian's python3-torch).
set -euo pipefail
: "${MPIREC_SHARED:?run through ctest (MPIREC_SHARED unset)}"
: "${MPIREC_TESTS_BIN:?run through ctest (MPIREC_TESTS_BIN unset)}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${MPIREC_TMP:-/tmp}/model_parity"
mkdir -p "$out"
/usr/bin/python3 "$here/model_parity.py" --shared "$MPIREC_SHARED" --out "$out/fixture.txt"
MPIREC_PARITY_FILE="$out/fixture.txt" "$MPIREC_TESTS_BIN" model_parity
