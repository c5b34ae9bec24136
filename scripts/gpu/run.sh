#!/usr/bin/env bash
# GPU tests and benchmarks in one device call.
#
#   scripts/gpu/run.sh build     # here (no GPU needed): build core + CPU plugin + CUDA plugin (sm_90
#                                # only) + tests + benchmark, and stage everything the device needs
#                                # in .gpu_carry/ (git-ignored): libs, binaries, bitsandbytes (its
#                                # CUDA 13 library only) for the side-by-side. The golden vectors
#                                # travel with the working tree (tests/data/golden).
#   scripts/gpu/run.sh device    # on the device machine (run tool, carry [".gpu_carry"]): GPU
#                                # tests, golden cases on the CUDA backend, benchmarks vs
#                                # bitsandbytes; logs and JSON under $OUT; summary table last.
#
# Environment: BUILD (default build-gpu-run), ARCH (default 90), N (benchmark elements, 2^28),
# REPS (30), WHEEL (.wheels/bitsandbytes-*.whl).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CARRY=$ROOT/.gpu_carry

build() {
  local build=${BUILD:-build-gpu-run}
  local cpu=OFF
  [ -f src/backend_cpu/CMakeLists.txt ] && cpu=ON
  cmake -S . -B "$build" -DBNB_BUILD_CUDA=ON -DBNB_CUDA_ARCHITECTURES="${ARCH:-90}" -DBNB_BUILD_CPU=$cpu \
    -DBNB_BUILD_TESTS=ON -DBNB_BUILD_BENCH=ON -DBNB_BUILD_TOOLS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null || exit 1
  local targets="bnb bnb_backend_cuda bnb_gpu_tests bnb_tests bnb_bench_gpu_quant"
  [ $cpu = ON ] && targets="$targets bnb_backend_cpu"
  cmake --build "$build" -j2 --target $targets || exit 1
  rm -rf "$CARRY/lib" "$CARRY/bin"
  mkdir -p "$CARRY/lib" "$CARRY/bin"
  cp -L "$build"/lib/libbnb.so.0 "$build"/lib/libbnb_backend_*.so "$CARRY/lib/"
  cp "$build"/bin/bnb_gpu_tests "$build"/bin/bnb_tests "$build"/bin/bnb_bench_gpu_quant "$CARRY/bin/"
  local wheel
  wheel=$(ls ${WHEEL:-.wheels/bitsandbytes-*.whl} 2>/dev/null | head -1)
  if [ -n "$wheel" ] && [ ! -d "$CARRY/site/bitsandbytes" ]; then
    mkdir -p "$CARRY/site"
    python3 -m zipfile -e "$wheel" "$CARRY/site"
    # Keep the CUDA 13.0 library only (the device has torch cu130); the rest is ~40 MB.
    find "$CARRY/site/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name '*cuda130.so' ! -name '*cpu.so' -delete
  fi
  du -sh "$CARRY"
}

device() {
  local out=${OUT:-/tmp/bnb_gpu_out}
  mkdir -p "$out"
  export LD_LIBRARY_PATH=$CARRY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export BNB_GOLDEN_DIR=$ROOT/tests/data/golden  # the build-time default is this machine's path
  local n=${N:-268435456} reps=${REPS:-30}
  {
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
    BNB_LOG_LEVEL=2 timeout 300 "$CARRY/bin/bnb_gpu_tests" 2>&1
    echo "== golden cases on every backend"
    timeout 120 "$CARRY/bin/bnb_tests" --gtest_filter='*Golden*' 2>&1
  } > "$out/tests.log"
  timeout 240 "$CARRY/bin/bnb_bench_gpu_quant" --n "$n" --reps "$reps" --json "$out/bnb.json" > "$out/bench.log" 2>&1
  if [ -d "$CARRY/site/bitsandbytes" ]; then
    PYTHONPATH=$CARRY/site timeout 240 python3 bench/gpu/bench_bitsandbytes.py --n "$n" --reps "$reps" \
      --json "$out/bitsandbytes.json" >> "$out/bench.log" 2>&1
  fi
  echo "== tests"
  grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|tests? FAILED|^\[golden\]|^\[gpu\]|Failure|error' \
    "$out/tests.log" | head -60
  if [ -f "$out/bnb.json" ]; then
    python3 bench/gpu/compare.py "$out/bnb.json" $( [ -f "$out/bitsandbytes.json" ] && echo "$out/bitsandbytes.json") \
      --json "$out/gpu_quant.json" --md "$out/gpu_quant.md"
  fi
}

case "${1:-}" in
  build) build ;;
  device) device ;;
  *) echo "usage: $0 build|device" >&2; exit 2 ;;
esac
