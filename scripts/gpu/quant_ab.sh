#!/usr/bin/env bash
# A/B timings of an environment knob in one device call (run tool, carry .gpu_carry after
# scripts/gpu/full.sh build), so both variants meet the same card in the same state:
#   KNOB=BNB_GEMM4_NO_MMA VALUES="0 1" BENCH=gemm4 bash scripts/gpu/quant_ab.sh
# BENCH: quant (bnb_bench_gpu_quant), gemm4, optim or int8; ARGS: extra benchmark arguments
# (e.g. ARGS="--m 1,16" for gemm4). Each value runs twice, interleaved.
# Knobs kept in the plugin (each also has a CTest run with it on, tests/CMakeLists.txt):
# BNB_GEMM4_NO_MMA, BNB_GEMM4_NO_MMA_SMALL, BNB_GEMM4_NO_CUBLAS, BNB_INT8_MMA_RT; experiments add their own
# (bench/gpu/NOTES.md and bench/gemm4/NOTES.md list the ones that were tried).
set -u
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib
export BNB_GOLDEN_DIR=$PWD/tests/data/golden
source "$(dirname "${BASH_SOURCE[0]}")/nvidia_libs.sh"
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH$(nvidia_lib_path)
KNOB=${KNOB:?set KNOB to the environment variable to compare}
VALUES=${VALUES:-"0 1"}
BENCH=${BENCH:-quant}
case "$BENCH" in
  quant) cmd=(.gpu_carry/bin/bnb_bench_gpu_quant --n $((256 << 20)) --reps 30) ;;
  gemm4) cmd=(.gpu_carry/bin/bnb_bench_gemm4_cuda) ;;
  optim) cmd=(.gpu_carry/bin/bnb_bench_optim --backend cuda --iters 10) ;;
  int8) cmd=(.gpu_carry/bin/bnb_bench_int8_cuda) ;;
  *) echo "unknown BENCH $BENCH" >&2; exit 2 ;;
esac
# shellcheck disable=SC2206  # ARGS is split on purpose
cmd+=(${ARGS:-})
for round in 1 2; do
  for v in $VALUES; do
    echo "== $KNOB=$v (round $round)"
    env "$KNOB=$v" timeout 200 "${cmd[@]}" 2>&1 | tail -60
  done
done
