#!/usr/bin/env bash
# One device call (carry .gpu_carry after scripts/gpu/full.sh build): Nsight Compute's GPU time of
# every kernel of the LLM.int8() layer at threshold 6 (bnb_bench_int8_cuda, one replay each, caches
# flushed per kernel), M = 1, 16, 256, 2048 and N = K = 4096, 8192, and the full sections of one
# outlier_product_kernel launch at M = 1 and 2048. Everything in one archive under $OUT
# (bench/results/h100_run20 summarises one run).
set -u
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib
source scripts/gpu/nvidia_libs.sh
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH$(nvidia_lib_path)
B=.gpu_carry/bin
O=/tmp/o; mkdir -p $O
nvidia-smi --query-gpu=name --format=csv > $O/gpu.txt
for M in 1 16 256 2048; do for NK in 4096 8192; do
  timeout 100 ncu --clock-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__registers_per_thread \
    --csv --page raw -c 500 $B/bnb_bench_int8_cuda --m $M --nk $NK --reps 1 --threshold 6 > $O/ncu_m${M}_$NK.csv 2>&1
done; done
for M in 1 2048; do
  timeout 60 ncu --clock-control none -k regex:outlier_product --launch-skip 2 --launch-count 1 --set full --import-source no \
    $B/bnb_bench_int8_cuda --m $M --nk 4096 --reps 1 --threshold 6 > $O/full_outlier_m$M.txt 2>&1
done
cd /tmp && tar czf $OUT/ncu1.tgz o
