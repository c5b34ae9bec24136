#!/usr/bin/env bash
# A/B timings of an experiment knob in one device call (run tool, carry .gpu_carry after
# scripts/gpu/full.sh build), plus the tests of the code it touches.
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib
export BNB_GOLDEN_DIR=$PWD/.gpu_carry/golden
nv=$(python3 -c "import nvidia, os; print(os.path.dirname(nvidia.__file__))" 2>/dev/null)
for d in "$nv"/cublas/lib "$nv"/cu13/lib; do [ -d "$d" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d; done
timeout 200 .gpu_carry/bin/bnb_gpu_tests --gtest_filter='*Gemm4*' 2>&1 | grep -E "^\[  (PASSED|FAILED)|FAILED  \]|Failure|rel" | head -30
timeout 200 .gpu_carry/bin/bnb_tests --gtest_filter='*Gemm4*' 2>&1 | grep -E "^\[  (PASSED|FAILED)|FAILED  \]|golden" | head -20
timeout 200 .gpu_carry/bin/bnb_bench_gemm4_cuda 2>&1 | tail -52
echo "== BNB_GEMM4_NO_MMA=1"
BNB_GEMM4_NO_MMA=1 timeout 200 .gpu_carry/bin/bnb_bench_gemm4_cuda 2>&1 | grep -E " (4|16|64|256) +(f16)" | head -20
