#!/usr/bin/env bash
# ctest-labels: slow
# ctest-timeout: 3600
# acceptance_ml100k.sh over seeds 0..9 (about 10 minutes on 2 cores): the same
# criterion (mpirec's mean top_100 at least the reference's) on a wider sample.
set -euo pipefail
export ACCEPT_SEEDS=${ACCEPT_SEEDS:-0,1,2,3,4,5,6,7,8,9}
MPIREC_TMP=${MPIREC_TMP:?}/seeds10 exec bash "$(dirname "$0")/acceptance_ml100k.sh"
