#!/usr/bin/env bash
# Nsight Compute profiles of chosen kernels in one device call (run tool, carry .gpu_carry after
# scripts/gpu/full.sh build). Each PROFILE entry is "name|kernel regex|bench command"; the full
# section set of one launch (after a few warm-up launches) goes to $OUT/<name>.txt.
#   bash scripts/gpu/profile.sh            # the default set below
set -u
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib
source "$(dirname "${BASH_SOURCE[0]}")/nvidia_libs.sh"
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH$(nvidia_lib_path)
B=.gpu_carry/bin
OUTDIR=${OUT:-/tmp/prof}
mkdir -p "$OUTDIR"
default=(
  "gemv_m1|gemm4_simt|$B/bnb_bench_gemm4_cuda --shapes 28672x8192 --m 1 --dtypes f16 --reps 3"
  "mma_m16|gemm4_mma|$B/bnb_bench_gemm4_cuda --shapes 28672x8192 --m 16 --dtypes f16 --reps 3"
  "deq4|dequantize_4bit|$B/bnb_bench_gpu_quant --n $((256 << 20)) --reps 2"
  "deq8|dequantize_blockwise|$B/bnb_bench_gpu_quant --n $((256 << 20)) --reps 2"
)
if [ -n "${PROFILE:-}" ]; then IFS=';' read -r -a list <<< "$PROFILE"; else list=("${default[@]}"); fi
for e in "${list[@]}"; do
  IFS='|' read -r name regex cmd <<< "$e"
  echo "== $name ($regex)"
  timeout 150 ncu --clock-control none -k "regex:$regex" --launch-skip 2 --launch-count 1 --set full \
    --import-source no $cmd > "$OUTDIR/$name.txt" 2>&1
  grep -E "Duration|DRAM Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Theoretical Occ|Block Limit|Issue Slots Busy|L1/TEX Hit|Mem Busy|Max Bandwidth|Executed Ipc A|Shared Memory Config|Dynamic Shared|Grid Size|Block Size|Waves Per SM" "$OUTDIR/$name.txt" | head -40
done
