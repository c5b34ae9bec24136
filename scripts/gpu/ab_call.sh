#!/usr/bin/env bash
# Before/after of the GPU benchmarks in one device call (issue 18's done-when: nothing slower than
# the noise), on the same card, interleaved: before, after, before, after.
#   here:   scripts/gpu/full.sh build                    (after: .gpu_carry)
#           BUILD=/path/to/old/build scripts/gpu/ab_call.sh stage   (before: .gpu_carry_before; the old
#           tree built with -DBNB_BUILD_CUDA=ON -DBNB_BUILD_BENCH=ON, targets bnb bnb_backend_cpu
#           bnb_backend_cuda and the four GPU benchmarks)
#   device: run tool, carry [".gpu_carry", ".gpu_carry_before"]:  bash scripts/gpu/ab_call.sh
# BENCHES (default: quant optim gemm4 int8) picks a subset. Logs and JSON: $OUT/ab.tgz (unpacked,
# scripts/gpu/ab_table.py DIR prints the before/after tables).
set -uo pipefail
cd "$(dirname "$0")/../.."
AFTER=${AFTER:-.gpu_carry}
BENCH_BINS="bnb_bench_gpu_quant bnb_bench_optim bnb_bench_gemm4_cuda bnb_bench_int8_cuda"

if [ "${1:-}" = stage ]; then
  dst=.gpu_carry_before
  rm -rf "$dst" && mkdir -p "$dst/lib" "$dst/bin"
  cp -L "$BUILD"/lib/libbnb.so.0 "$BUILD"/lib/libbnb_backend_cpu.so "$BUILD"/lib/libbnb_backend_cuda.so \
    "$BUILD"/lib/libhwy.so.1 "$dst/lib/"
  for b in $BENCH_BINS; do cp "$BUILD/bin/$b" "$dst/bin/"; done
  du -sh "$dst"
  exit 0
fi

out=/tmp/bnb_ab_out
rm -rf "$out" && mkdir -p "$out"
nv=$(python3 -c "import nvidia, os; print(os.path.dirname(nvidia.__file__))" 2>/dev/null)
extra=""
for d in "$nv"/cublas/lib "$nv"/cu13/lib; do [ -d "$d" ] && extra=$extra:$d; done
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$out/gpu.txt"

run_side() {  # side (before|after), round, bench
  local side=$1 round=$2 bench=$3 dir=$AFTER
  [ "$side" = before ] && dir=.gpu_carry_before
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
