#!/usr/bin/env bash
# A/B timings of an experiment knob in one device call (run tool, carry .gpu_carry after
# scripts/gpu/full.sh build), plus the tests of the code it touches.
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib
export BNB_GOLDEN_DIR=$PWD/.gpu_carry/golden
for v in 0 1 2; do
  BNB_GPU_DQ4_PAIRS=$v timeout 200 .gpu_carry/bin/bnb_gpu_tests --gtest_filter='*Quant4*:*Compress*' 2>&1 | grep -E "^\[  (PASSED|FAILED)|FAILED  \]" | head -5
done
for v in 0 1 2 0 1 2; do
  echo "== BNB_GPU_DQ4_PAIRS=$v"
  BNB_GPU_DQ4_PAIRS=$v .gpu_carry/bin/bnb_bench_gpu_quant --n $((256 << 20)) --reps 30 2>&1 | grep -E "device_copy|dequantize_4bit"
done
