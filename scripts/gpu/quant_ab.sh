#!/usr/bin/env bash
# A/B timings of an experiment knob in one device call (run tool, carry .gpu_carry after
# scripts/gpu/full.sh build), plus the GPU quantization and optimizer tests.
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib
export BNB_GOLDEN_DIR=$PWD/.gpu_carry/golden
for v in 4 8 2 4 8 2; do
  echo "== BNB_GPU_DQ4_SLICES=$v"
  BNB_GPU_DQ4_SLICES=$v .gpu_carry/bin/bnb_bench_gpu_quant --n $((256 << 20)) --reps 30 2>&1 | grep -E "copy|dequantize_4bit"
done
BNB_GPU_DQ4_SLICES=8 timeout 200 .gpu_carry/bin/bnb_gpu_tests --gtest_filter='*Quant*:*Blockwise*:*Compress*' 2>&1 | grep -E "^\[  (PASSED|FAILED)|FAILED  \]" | head -20
.gpu_carry/bin/bnb_bench_optim --backend cuda --iters 10 2>&1 | grep -E "bit|copy"
