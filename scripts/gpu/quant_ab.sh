#!/usr/bin/env bash
# A/B timings of an experiment knob in one device call (run tool, carry .gpu_carry after
# scripts/gpu/full.sh build), plus the GPU quantization and optimizer tests.
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib
export BNB_GOLDEN_DIR=$PWD/.gpu_carry/golden
timeout 200 .gpu_carry/bin/bnb_gpu_tests --gtest_filter='*Quant*:*Blockwise*:*Optim*:*Compress*' 2>&1 | grep -E "^\[  (PASSED|FAILED)|FAILED  \]" | head -20
timeout 200 .gpu_carry/bin/bnb_tests --gtest_filter='*Optim*:*Golden*' 2>&1 | grep -E "^\[  (PASSED|FAILED)|FAILED  \]|golden\]" | head -20
for v in 0 1 0 1; do
  echo "== BNB_GPU_Q8_PREFETCH=$v"
  BNB_GPU_Q8_PREFETCH=$v .gpu_carry/bin/bnb_bench_gpu_quant --n $((256 << 20)) --reps 30 2>&1 | grep -E "copy|quantize_blockwise|dequantize"
done
.gpu_carry/bin/bnb_bench_optim --backend cuda --iters 10 2>&1 | grep -E "bit|copy"
