#!/usr/bin/env bash
# Install what mpirec needs from Debian 12 packages (idempotent: a no-op when
# everything is present). Needs root (or sudo) for apt-get.
#   build:  compiler, CMake/Ninja, Open MPI, parallel HDF5, OpenBLAS, cJSON, CUnit
#   tests:  python3-torch/numpy/h5py (reference parity), clang + compiler-rt
#           (sanitizers, fuzzing), valgrind, SLURM + munge (the SLURM test), gnuplot
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config
      libopenmpi-dev openmpi-bin libopenblas-dev libhdf5-openmpi-dev hdf5-tools
      libcjson-dev libcunit1-dev
      python3 python3-numpy python3-torch python3-h5py
      clang libclang-rt-14-dev valgrind
      slurmctld slurmd slurm-client munge
      gnuplot-nox)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
