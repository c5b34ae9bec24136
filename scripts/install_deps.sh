#!/usr/bin/env bash
# Installs what building and testing bnb needs on a Debian 12 machine. Idempotent.
#   Debian packages: apt (as root, or through sudo).
#   Python packages: pip, into a virtual environment (default build/venv; BNB_VENV names another).
#     Debian's own python3 refuses `pip install` (externally-managed-environment), so nothing is
#     installed into it. Always: numpy, pytest, ml_dtypes, scikit-build-core.
#     With --hf also torch, transformers, peft, accelerate, safetensors (what tests/compat, the
#     bitsandbytes compatibility layer's tests with the Hugging Face stack, needs; scripts/test.sh
#     passes it), and atheris (the Python fuzz target, scripts/fuzz.sh). PyPI's torch wheel is a
#     large download, a few minutes on a CI machine.
#     With --cutlass also nvidia-cutlass, for CUTLASS's headers (the CUDA plugin's Hopper int8 path,
#     BNB_INT8_CUTLASS in CMakeLists.txt), with --no-deps: the build reads its headers only, and its
#     own dependencies (scipy, cuda-python, networkx) are large. scripts/setup.sh passes it where nvcc
#     is found; scripts/test.sh does not.
#   With --aarch64 also the aarch64 cross build and its test runs (scripts/test_aarch64.sh):
#     Debian's arm64 architecture added to dpkg, the cross compiler, qemu-user and the arm64 -dev
#     packages of the libraries the library and its tests link (about 40 s).
# Usage: scripts/install_deps.sh [--hf] [--aarch64] [--cutlass]      Prints the venv's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh  # VENV
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
HF=0
AARCH64=0
CUTLASS=0
for arg in "$@"; do
  case "$arg" in
    --hf) HF=1 ;;
    --aarch64) AARCH64=1 ;;
    --cutlass) CUTLASS=1 ;;
    *) echo "usage: $0 [--hf] [--aarch64] [--cutlass]" >&2; exit 2 ;;
  esac
done

packages=(cmake ninja-build g++ pkg-config zlib1g-dev libgtest-dev nlohmann-json3-dev
          libhwy-dev libcpu-features-dev libdnnl-dev python3-venv python3-dev)
# python3-dev: Python.h, which torch.compile's CPU (Inductor C++) code needs at run time
# (tests/python's torch.compile tests; pyenv's python carries it, Debian's python3 does not).
# Optional toolchains: the HIP plugin's compiler and the Go binding's toolchain; clang and its
# sanitizer runtimes for the libFuzzer targets (scripts/fuzz.sh).
packages+=(hipcc golang-go clang libclang-rt-14-dev)
# The Rust binding (scripts/test_bindings.sh) needs cargo/rustc >= 1.77 (bindings/rust/Cargo.toml);
# Debian 12's rustc/cargo are 1.63, its rustc-web/cargo-web (bookworm main, updated through
# bookworm-security) are newer and install /usr/bin/rustc and /usr/bin/cargo. They are installed
# when no cargo >= 1.77 is on PATH, unless Debian's rustc, cargo or rustup (which they conflict
# with) is installed: apt would remove those, so that is left to the user.
cargo_minor=$({ cargo --version 2>/dev/null || true; } | sed -n 's/^cargo 1\.\([0-9]*\).*/\1/p')
if [ "${cargo_minor:-0}" -lt 77 ]; then
  if dpkg -s rustc >/dev/null 2>&1 || dpkg -s cargo >/dev/null 2>&1 || dpkg -s rustup >/dev/null 2>&1; then
    echo "note: the Rust binding's tests need cargo >= 1.77; Debian's rustc/cargo/rustup is installed," \
         "so rustc-web cargo-web are not (apt-get install rustc-web cargo-web replaces them)" >&2
  else
    packages+=(rustc-web cargo-web)
  fi
fi
if [ "$AARCH64" = 1 ]; then
  # The arm64 libraries come from Debian's multiarch packages; libc6:arm64 comes with them, and
  # qemu-aarch64 runs the tests against it (cmake/aarch64-linux-gnu.cmake says why not -L).
  dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64
  packages+=(g++-aarch64-linux-gnu qemu-user libhwy-dev:arm64 libgtest-dev:arm64
             libcpu-features-dev:arm64 zlib1g-dev:arm64)
fi
# Installed: for a name without ":arch", an instance of the native architecture (or "all"). Not
# `dpkg -s`, which refuses a name installed for two architectures (zlib1g-dev and zlib1g-dev:arm64).
native=$(dpkg --print-architecture)
installed() {
  local name=${1%%:*} arch=${1#*:}
  [ "$arch" != "$1" ] || arch="($native|all)"
  dpkg-query -W -f='${Architecture} ${Status}\n' "$name" 2>/dev/null | grep -Eq "^$arch .*ok installed"
}
missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating the Python environment $VENV"
  python3 -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
pip_install numpy pytest ml_dtypes scikit-build-core
if [ "$HF" = 1 ]; then
  echo "installing torch, transformers, peft, accelerate, safetensors into $VENV"
  pip_install torch transformers peft accelerate safetensors atheris
fi
if [ "$CUTLASS" = 1 ]; then
  echo "installing nvidia-cutlass (headers; --no-deps) into $VENV"
  pip_install --no-deps nvidia-cutlass
fi
echo "python environment: $VENV"
