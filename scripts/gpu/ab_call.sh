#!/usr/bin/env bash
# Before/after of the GPU benchmarks in one device call (issue 18's done-when: nothing slower than
# the noise), on the same card, interleaved: before, after, before, after.
#   here:   BUILD=build-gpu-full DEST=.gpu_carry_after scripts/gpu/ab_call.sh stage   (after)
#           BUILD=/path/to/old/build DEST=.gpu_carry_before scripts/gpu/ab_call.sh stage   (before:
#           the old tree built with -DBNB_BUILD_CUDA=ON -DBNB_BUILD_BENCH=ON, targets bnb
#           bnb_backend_cpu bnb_backend_cuda and the four GPU benchmarks). Each staging holds the
#           libraries and the benchmarks only (.gpu_carry with its tests does not fit beside another
#           in the device tool's 64 MiB).
#   device: run tool, carry [".gpu_carry_after", ".gpu_carry_before"]:  bash scripts/gpu/ab_call.sh
# BENCHES (default: quant optim gemm4 int8) picks a subset. Logs and JSON: $OUT/ab.tgz (unpacked,
# scripts/gpu/ab_table.py DIR prints the before/after tables).
set -uo pipefail
cd "$(dirname "$0")/../.."
BENCH_BINS="bnb_bench_gpu_quant bnb_bench_optim bnb_bench_gemm4_cuda bnb_bench_int8_cuda"

if [ "${1:-}" = stage ]; then
  dst=${DEST:?DEST=.gpu_carry_after or .gpu_carry_before}
  rm -rf "$dst" && mkdir -p "$dst/lib" "$dst/bin"
  cp -L "$BUILD"/lib/libbnb.so.0 "$BUILD"/lib/libbnb_backend_cpu.so "$BUILD"/lib/libbnb_backend_cuda.so \
    "$BUILD"/lib/libhwy.so.1 "$dst/lib/"
  for b in $BENCH_BINS; do cp "$BUILD/bin/$b" "$dst/bin/"; done
  du -sh "$dst"
  exit 0
fi

out=/tmp/bnb_ab_out
rm -rf "$out" && mkdir -p "$out"
source scripts/gpu/nvidia_libs.sh
extra=$(nvidia_lib_path)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$out/gpu.txt"

run_side() {  # side (before|after), round, bench
  local side=$1 round=$2 bench=$3 dir=.gpu_carry_$1
  local tag="$out/${bench}_${side}_$round"
  export LD_LIBRARY_PATH=$PWD/$dir/lib$extra
  case "$bench" in
    quant) timeout 150 "$dir/bin/bnb_bench_gpu_quant" --n $((256 << 20)) --reps 30 --json "$tag.json" ;;
    optim) timeout 150 "$dir/bin/bnb_bench_optim" --backend cuda --json "$tag.json" ;;
    gemm4) timeout 150 "$dir/bin/bnb_bench_gemm4_cuda" --json "$tag.json" ;;
    int8) timeout 150 "$dir/bin/bnb_bench_int8_cuda" --json "$tag.json" ;;
  esac > "$tag.log" 2>&1
  echo "$bench $side $round: rc=$? $(wc -l < "$tag.log") lines"
}

for bench in ${BENCHES:-quant optim gemm4 int8}; do
  for round in 1 2; do
    run_side before "$round" "$bench"
    run_side after "$round" "$bench"
  done
done
[ -n "${OUT:-}" ] && tar czf "$OUT/ab.tgz" -C "$out" .
