#!/usr/bin/env bash
# One device call for issue 20's outlier step (carry .gpu_carry after scripts/gpu/full.sh build):
# the int8 GPU tests on the default path and on BNB_INT8_OUTLIER_TILED=1, then the threshold-6
# layer with each (0.5 % and 1 % outlier columns), the one-block quantization for M <= 16
# (BNB_INT8_OUTLIER_QUANT_ROWS), threshold 0 at M = 12, 16 with each BNB_INT8_MMA_RT, the layer at
# M >= 64 with BNB_INT8_CUTLASS=1, per-kernel GPU times (ncu) of the tiled path at M = 2048, and the
# CUTLASS bench when it is in .gpu_carry/bin. Logs and JSON go into one archive under $OUT.
set -u
source scripts/gpu/nvidia_libs.sh
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib$(nvidia_lib_path)
B=.gpu_carry/bin
O=/tmp/int8_out; rm -rf $O; mkdir -p $O
trap 'cd /tmp && tar czf $OUT/int8_outliers.tgz int8_out' EXIT
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $O/gpu.txt
for v in 1 0; do echo "== BNB_INT8_OUTLIER_TILED=$v"
  BNB_INT8_OUTLIER_TILED=$v timeout 60 $B/bnb_gpu_tests --gtest_filter='Int8Gpu.*' 2>&1 | grep -E "FAILED|PASSED" | tail -6
  [ $v = 1 ] && BNB_INT8_OUTLIER_TILED=1 timeout 90 $B/bnb_tests --gtest_filter='*Int8*cuda*:*Int8*Outlier*' 2>&1 | grep -E "FAILED|PASSED" | tail -6
done 2>&1 | tee $O/tests.log
for v in "BNB_INT8_OUTLIER_TILED=1 BNB_INT8_OUTLIER_QUANT_ROWS=16" BNB_INT8_MMA_RT=2w BNB_INT8_CUTLASS=1 \
         "BNB_INT8_CUTLASS=1 BNB_INT8_OUTLIER_TILED=1"; do echo "== $v"
  env $v timeout 60 $B/bnb_gpu_tests --gtest_filter='Int8Gpu.*' 2>&1 | grep -E "FAILED|PASSED" | tail -6
done 2>&1 | tee -a $O/tests.log
for f in 0.005 0.01; do for v in 0 1; do echo "== outlier fraction $f, BNB_INT8_OUTLIER_TILED=$v"
  BNB_INT8_OUTLIER_TILED=$v timeout 60 $B/bnb_bench_int8_cuda --m 1,16,256,2048 --threshold 6 --outlier-fraction $f \
    --reps 10 --json $O/t6_f${f}_tiled$v.json 2>&1 | tail -9
done; done 2>&1 | tee $O/bench.log
# M <= 16 with the one-block quantization (row_quant_outliers_kernel) for every row count, against
# the tiled default (one block for M = 1 only) in the same call.
for rows in 1 16; do echo "== tiled, BNB_INT8_OUTLIER_QUANT_ROWS=$rows"
  BNB_INT8_OUTLIER_TILED=1 BNB_INT8_OUTLIER_QUANT_ROWS=$rows timeout 60 $B/bnb_bench_int8_cuda --m 2,4,8,16 \
    --threshold 6 --outlier-fraction 0.005 --reps 10 --json $O/t6_small_rows$rows.json 2>&1 | tail -9
done 2>&1 | tee -a $O/bench.log
# Threshold 0, 8 < M <= 16: one tile of W rows a block, two, two with 8 warps (BNB_INT8_MMA_RT).
for run in 1 2 2w 1-again; do rt=${run%-again}; echo "== threshold 0, BNB_INT8_MMA_RT=$rt"
  BNB_INT8_MMA_RT=$rt timeout 60 $B/bnb_bench_int8_cuda --m 12,16 --threshold 0 --reps 10 --json $O/t0_rt$run.json 2>&1 \
    | tail -5
done 2>&1 | tee -a $O/bench.log
# M >= 64 with the CUTLASS product + dequantization (BNB_INT8_CUTLASS=1; its plugin build), threshold
# 0 and 6 (tiled), against the default in the same call.
for v in X=0 BNB_INT8_CUTLASS=1; do echo "== M >= 64, $v"
  env $v BNB_INT8_OUTLIER_TILED=1 timeout 60 $B/bnb_bench_int8_cuda --m 64,256,2048 --threshold 6 --reps 10 \
    --json $O/cutlass_layer_$v.json 2>&1 | tail -9
done 2>&1 | tee -a $O/bench.log
[ "${NCU:-1}" = 1 ] && BNB_INT8_OUTLIER_TILED=1 timeout 40 ncu --clock-control none \
  -k 'regex:outlier_epilogue|zero_outlier|row_quant' --metrics gpu__time_duration.sum,launch__grid_size \
  --csv --page raw -c 40 $B/bnb_bench_int8_cuda --m 2048 --nk 4096 --reps 1 --threshold 6 > $O/ncu_tiled_m2048.csv 2>&1
# The CUTLASS sm90 int8 GEMM with the dequantization in its epilogue (bench/int8/bench_int8_cutlass.cu,
# built with -DBNB_INT8_CUTLASS=ON and copied into .gpu_carry/bin), when it is there. Its "linear us"
# column times the plugin beside libbnb; with BNB_INT8_CUTLASS=1 set and a plugin of that build,
# the plugin's CUTLASS path.
if [ -x $B/bnb_bench_int8_cutlass ]; then
  timeout 45 $B/bnb_bench_int8_cutlass --m ${CUTLASS_M:-64,256,2048} --nk ${CUTLASS_NK:-4096,8192} --reps 10 \
    --json $O/int8_cutlass.json > $O/int8_cutlass.log 2>&1; echo "cutlass rc $?" >> $O/int8_cutlass.log
  tail -30 $O/int8_cutlass.log
fi
echo done
