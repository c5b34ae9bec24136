#!/usr/bin/env bash
# Quick device check of the 4-bit layer path: gemm_4bit unit tests on CUDA, the nn tests with torch
# on the GPU, and the batch-1 layer benchmark (run tool, carry .gpu_carry after full.sh build).
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib
export BNB_GOLDEN_DIR=$PWD/tests/data/golden
source "$(dirname "${BASH_SOURCE[0]}")/nvidia_libs.sh"
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH$(nvidia_lib_path)
timeout 120 .gpu_carry/bin/bnb_tests --gtest_filter='*Gemm4*' 2>&1 | grep -E "^\[  (PASSED|FAILED)|FAILED  \]"
BNB_LIBRARY_PATH=$PWD/.gpu_carry/lib timeout 200 python3 -m pytest -q -p no:cacheprovider tests/python/test_nn.py 2>&1 | tail -1
BNB_LIBRARY_PATH=$PWD/.gpu_carry/lib timeout 200 python3 bench/python/layer4bit.py --device cuda --json "${OUT:-/tmp}/layer4bit.json" 2>&1 | tail -9
