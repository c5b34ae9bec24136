#!/usr/bin/env bash
# Every GPU test suite and benchmark of every op family in ONE device call.
#
#   scripts/gpu/full.sh build    # here: build core + CPU + CUDA (sm_90) + tests + benchmarks and stage
#                                # them in .gpu_carry/ (git-ignored) with bitsandbytes' CUDA 13
#                                # library (from .wheels/, for side-by-sides); the golden vectors
#                                # travel with the working tree (tests/data/golden)
#   scripts/gpu/full.sh device   # on the device (run tool, carry [".gpu_carry"]): C++ GPU tests, the
#                                # unit suites on the CUDA backend, the Python suite with torch, then
#                                # the quantization, gemm_4bit, int8 and optimizer benchmarks; logs and
#                                # JSON under $OUT, summary last.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CARRY=$ROOT/.gpu_carry
BINS="bnb bnb_tests bnb_gpu_tests bnb_bench_gpu_quant bnb_bench_gemm4_cuda bnb_bench_int8_cuda bnb_bench_optim"

build() {
  local build=${BUILD:-build-gpu-full}
  cmake -S . -B "$build" -G Ninja -DBNB_BUILD_CUDA=ON -DBNB_CUDA_ARCHITECTURES="${ARCH:-90}" -DBNB_BUILD_CPU=ON \
    -DBNB_BUILD_TESTS=ON -DBNB_BUILD_BENCH=ON -DBNB_BUILD_TOOLS=ON -DCMAKE_BUILD_TYPE=Release >/dev/null || exit 1
  ninja -C "$build" -j2 bnb bnb_backend_cpu bnb_backend_cuda bnb_cli bnb_tests bnb_gpu_tests bnb_bench_gpu_quant \
    bnb_bench_gemm4_cuda bnb_bench_int8_cuda bnb_bench_optim || exit 1
  rm -rf "$CARRY/lib" "$CARRY/bin"
  mkdir -p "$CARRY/lib" "$CARRY/bin"
  cp -L "$build"/lib/libbnb.so.0 "$build"/lib/libbnb_backend_*.so "$build"/lib/libhwy.so.1 "$build"/lib/_hotcall*.so "$CARRY/lib/"
  ln -sf libbnb.so.0 "$CARRY/lib/libbnb.so"
  for b in $BINS; do cp "$build/bin/$b" "$CARRY/bin/"; done
  # The CUTLASS bench where BNB_INT8_CUTLASS is ON, given or resolved from AUTO (CMakeLists.txt).
  if grep -Eq '^BNB_INT8_CUTLASS:[A-Z]+=ON$' "$build/CMakeCache.txt"; then
    ninja -C "$build" -j2 bnb_bench_int8_cutlass && cp "$build/bin/bnb_bench_int8_cutlass" "$CARRY/bin/" || exit 1
  fi
  local wheel
  wheel=$(ls .wheels/bitsandbytes-*.whl 2>/dev/null | head -1)
  if [ -n "$wheel" ] && [ ! -d "$CARRY/site/bitsandbytes" ]; then
    mkdir -p "$CARRY/site" && python3 -m zipfile -e "$wheel" "$CARRY/site"
    find "$CARRY/site/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name '*cuda130.so' ! -name '*cpu.so' -delete
  fi
  du -sh "$CARRY"
}

device() {
  # Logs and JSON go to a scratch folder, then into one archive under $OUT (the device tool
  # returns at most 8 files).
  local out=/tmp/bnb_gpu_out
  rm -rf "$out" && mkdir -p "$out"
  export LD_LIBRARY_PATH=$CARRY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  # cuBLAS/cuBLASLt (dlopened by the gemm_4bit and int8 paths) come with torch's CUDA wheels there.
  source "$ROOT/scripts/gpu/nvidia_libs.sh"
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH$(nvidia_lib_path)
  export BNB_GOLDEN_DIR=$ROOT/tests/data/golden  # the build-time default is this machine's path
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > "$out/gpu.txt" 2>&1
  "$CARRY/bin/bnb" info > "$out/info.txt" 2>&1
  # STAGES (default: all) picks a subset: tests unit python cli quant bnbquant gemm4 int8 optim torchoptim layer
  local stages=" ${STAGES:-tests unit python cli quant bnbquant gemm4 int8 optim torchoptim layer} "
  want() { [[ "$stages" == *" $1 "* ]]; }
  want tests && timeout 240 "$CARRY/bin/bnb_gpu_tests" > "$out/gpu_tests.log" 2>&1
  if want tests; then  # the plugin's path switches, as tests/CMakeLists.txt runs them
    for knob in BNB_GEMM4_NO_MMA BNB_GEMM4_NO_MMA_SMALL BNB_GEMM4_NO_CUBLAS BNB_GEMM4_TILE; do
      env "$knob=1" timeout 120 "$CARRY/bin/bnb_gpu_tests" --gtest_filter='Gemm4Gpu.*' > "$out/gpu_tests_$knob.log" 2>&1
    done
    BNB_GEMM4_TILE=0 timeout 120 "$CARRY/bin/bnb_gpu_tests" --gtest_filter='Gemm4Gpu.*' > "$out/gpu_tests_tile0.log" 2>&1
    BNB_INT8_MMA_RT=2 timeout 120 "$CARRY/bin/bnb_gpu_tests" --gtest_filter='Int8Gpu.*' > "$out/gpu_tests_int8_rt2.log" 2>&1
    BNB_INT8_OUTLIER_MMA=1 timeout 120 "$CARRY/bin/bnb_gpu_tests" --gtest_filter='Int8Gpu.*' > "$out/gpu_tests_int8_outlier_mma.log" 2>&1
    BNB_GEMM4_NO_CUBLAS=1 timeout 120 "$CARRY/bin/bnb_tests" --gtest_filter='Backends/Gemm4.Transposed*/cuda*' \
      > "$out/gpu_tests_transposed_simt.log" 2>&1
  fi
  want unit && timeout 240 "$CARRY/bin/bnb_tests" > "$out/unit_tests.log" 2>&1
  want python && BNB_LIBRARY_PATH=$CARRY/lib timeout 300 python3 -m pytest -q -rs -p no:cacheprovider tests/python > "$out/python_tests.log" 2>&1
  want cli && timeout 150 "$CARRY/bin/bnb" bench --backend cuda --n $((256 << 20)) --dtype all --reps 20 --json "$out/cli_bench_cuda.json" > "$out/cli_bench.log" 2>&1
  want quant && timeout 200 "$CARRY/bin/bnb_bench_gpu_quant" --n $((256 << 20)) --reps 30 --json "$out/quant.json" > "$out/quant.log" 2>&1
  if want bnbquant && [ -d "$CARRY/site/bitsandbytes" ]; then
    PYTHONPATH=$CARRY/site timeout 200 python3 bench/gpu/bench_bitsandbytes.py --n $((256 << 20)) --reps 30 \
      --json "$out/quant_bitsandbytes.json" >> "$out/quant.log" 2>&1
  fi
  want gemm4 && timeout 200 "$CARRY/bin/bnb_bench_gemm4_cuda" --json "$out/gemm4.json" > "$out/gemm4.log" 2>&1
  want int8 && timeout 200 "$CARRY/bin/bnb_bench_int8_cuda" --json "$out/int8.json" > "$out/int8.log" 2>&1
  want optim && timeout 200 "$CARRY/bin/bnb_bench_optim" --backend cuda --json "$out/optim.json" > "$out/optim.log" 2>&1
  if want torchoptim; then
    PYTHONPATH=$CARRY/site BNB_LIBRARY_PATH=$CARRY/lib timeout 300 python3 bench/optim/bench_torch_optim.py \
      --json "$out/torch_optim.json" > "$out/torch_optim.log" 2>&1
  fi
  if want layer && [ -f bench/python/layer4bit.py ]; then
    BNB_LIBRARY_PATH=$CARRY/lib timeout 200 python3 bench/python/layer4bit.py --device cuda --json "$out/layer4bit.json" > "$out/layer4bit.log" 2>&1
  fi
  echo "== gpu: $(tail -1 "$out/gpu.txt")"
  for f in gpu_tests gpu_tests_BNB_GEMM4_NO_MMA gpu_tests_BNB_GEMM4_NO_MMA_SMALL gpu_tests_BNB_GEMM4_NO_CUBLAS gpu_tests_BNB_GEMM4_TILE gpu_tests_tile0 gpu_tests_int8_rt2 gpu_tests_transposed_simt unit_tests; do
    [ -f "$out/$f.log" ] || continue
    echo "== $f: $(grep -E '^\[  (PASSED|FAILED) ' "$out/$f.log" | tr '\n' ' ')"
    grep -E '^\[  FAILED  \]' "$out/$f.log" | head -15
  done
  [ -f "$out/unit_tests.log" ] && grep -E '^\[golden\]' "$out/unit_tests.log"
  [ -f "$out/python_tests.log" ] && echo "== python: $(tail -1 "$out/python_tests.log")"
  for f in cli_bench quant gemm4 int8 optim torch_optim layer4bit; do
    [ -f "$out/$f.log" ] && { echo "== $f"; tail -25 "$out/$f.log"; }
  done
  if [ -n "${OUT:-}" ]; then tar czf "$OUT/gpu_full.tgz" -C "$out" .; fi
}

case "${1:-}" in
  build) build ;;
  device) device ;;
  *) echo "usage: $0 build|device" >&2; exit 2 ;;
esac
