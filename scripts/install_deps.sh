#!/usr/bin/env bash
# Installs what building and testing bnb needs on a Debian 12 machine (apt + pip). Idempotent.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(cmake ninja-build g++ pkg-config zlib1g-dev libgtest-dev nlohmann-json3-dev
          libhwy-dev libcpu-features-dev libdnnl-dev python3-venv)
# Optional toolchains: the HIP plugin's compiler and the Go binding's toolchain.
packages+=(hipcc golang-go)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
python3 -m pip install -q --disable-pip-version-check numpy pytest ml_dtypes scikit-build-core
