#!/usr/bin/env bash
# The aarch64 build and its C/C++ test suite under qemu-user: the library, the CPU plugin, the
# `bnb` program and the GoogleTest suites (golden vectors included) cross-compiled with Debian's
# toolchain (cmake/aarch64-linux-gnu.cmake), then CTest runs every test through qemu-aarch64.
# Needs scripts/install_deps.sh --aarch64. Prints how long each step took.
# Usage: scripts/test_aarch64.sh [BUILD_DIR]      (default build-aarch64)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
BUILD=${1:-build-aarch64}

step "aarch64 configure" cmake -S . -B "$BUILD" -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
  -DCMAKE_BUILD_TYPE=Release -DBNB_BUILD_BENCH=OFF -DBNB_BUILD_CUDA=OFF -DBNB_BUILD_HIP=OFF
step "aarch64 build" ninja -C "$BUILD" -j"$(jobs)"
qemu-aarch64 "$BUILD/bin/bnb" info
# Four long-run checks take two thirds of the suite's time under qemu (a minute each, seconds
# natively: bench/results/aarch64_qemu.md); the x86 runs keep them at every cap, and the NEON
# kernels they exercise are covered here by the golden, per-op and per-target tests. Left out to
# keep CI near 30 minutes.
LONG='OptimTracking\.EightBitTracksThirtyTwoBit|OptimMulti\.MatchesOneCallPerTensor|CpuTarget\.LargeQuantizeOutputs|Gemm4\.MatchesFloat64Reference'
step "aarch64 ctest" ctest --test-dir "$BUILD" --output-on-failure -j"$(jobs)" -E "$LONG"
