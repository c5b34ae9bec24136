#!/usr/bin/env bash
# One device call for issue 20 (carry .gpu_carry after scripts/gpu/full.sh build; a build with
# BNB_INT8_CUTLASS ON adds the CUTLASS plugin path, the default there, and its bench). Stages,
# most wanted first (STAGES="tests cutlass_layer ..." runs a subset); each saves the archive
# $OUT/int8_outliers.tgz again, and a stage that would start after DEADLINE seconds (default 330)
# is skipped, so a call cut short still returns what ran:
#   1. Int8Gpu as built, with BNB_INT8_CUTLASS=0, with BNB_INT8_CUTLASS_PDL=1, and with the tiled
#      outlier path and PDL; the CUDA int8 unit cases with the tiled path.
#   2. Threshold 6 (0.5 % outlier columns), default against tiled; 1 % tiled.
#   3. The layer (threshold 0 and 6, tiled outliers) with BNB_INT8_CUTLASS=0, =1, and with PDL.
#   4. The CUTLASS bench (every configuration, bit-checked; launched with PDL unless CUTLASS_PDL=0).
#   5. The layer through torch: bnb, bitsandbytes and fp16 side by side (bench_int8_torch.py).
#   6. M <= 16, tiled: one-block quantization up to 1 row against up to 16.
#   7. ncu of every kernel of the layer calls at M = NCU_M (256), default and tiled outlier paths.
set -u
source scripts/gpu/nvidia_libs.sh
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib$(nvidia_lib_path)
B=.gpu_carry/bin
O=/tmp/int8_out; rm -rf $O; mkdir -p $O
DEADLINE=${DEADLINE:-330}
save() { (cd /tmp && tar czf $OUT/int8_outliers.tgz int8_out); }
STAGES=" ${STAGES:-tests threshold6 cutlass_layer cutlass_bench torch small_rows ncu} "
stage() {  # stage NAME: false (skip) when not in STAGES or once past the deadline
  [[ "$STAGES" == *" $1 "* ]] || return 1
  if [ $SECONDS -gt $DEADLINE ]; then echo "skipped $1 at ${SECONDS}s" | tee -a $O/skipped.txt; save; return 1; fi
  echo "## $1 at ${SECONDS}s" | tee -a $O/stages.txt
}
bench() { timeout 60 $B/bnb_bench_int8_cuda --reps 10 "$@" 2>&1 | tail -16; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $O/gpu.txt

if stage tests; then
  for v in X=0 BNB_INT8_CUTLASS=0 BNB_INT8_CUTLASS_PDL=1 "BNB_INT8_OUTLIER_TILED=1 BNB_INT8_CUTLASS_PDL=1"; do
    echo "== Int8Gpu, $v"
    env $v timeout 90 $B/bnb_gpu_tests --gtest_filter='Int8Gpu.*' 2>&1 | grep -E "Failure|FAILED|PASSED|error" | head -20
  done 2>&1 | tee $O/tests.log
  echo "== bnb_tests int8 cuda, BNB_INT8_OUTLIER_TILED=1" | tee -a $O/tests.log
  BNB_INT8_OUTLIER_TILED=1 timeout 60 $B/bnb_tests --gtest_filter='*Int8*cuda*:*Int8*Outlier*' 2>&1 \
    | grep -E "FAILED|PASSED" | tail -6 | tee -a $O/tests.log
  save
fi
if stage threshold6; then
  for v in 0 1; do echo "== outlier fraction 0.005, BNB_INT8_OUTLIER_TILED=$v"
    BNB_INT8_OUTLIER_TILED=$v bench --m 1,16,256,2048 --threshold 6 --outlier-fraction 0.005 --json $O/t6_f0.005_tiled$v.json
  done 2>&1 | tee $O/bench.log
  echo "== outlier fraction 0.01, BNB_INT8_OUTLIER_TILED=1" | tee -a $O/bench.log
  BNB_INT8_OUTLIER_TILED=1 bench --m 1,16,256,2048 --threshold 6 --outlier-fraction 0.01 --json $O/t6_f0.01_tiled1.json \
    | tee -a $O/bench.log
  save
fi
if stage cutlass_layer; then
  for v in BNB_INT8_CUTLASS=0 BNB_INT8_CUTLASS=1 BNB_INT8_CUTLASS_PDL=1; do echo "== M >= 64, $v, BNB_INT8_OUTLIER_TILED=1"
    (export $v BNB_INT8_OUTLIER_TILED=1; bench --m ${LAYER_M:-64,256,2048} --threshold 6 --json $O/cutlass_layer_$v.json)
  done 2>&1 | tee -a $O/bench.log
  save
fi
if [ -x $B/bnb_bench_int8_cutlass ] && stage cutlass_bench; then
  BNB_INT8_CUTLASS_PDL=${CUTLASS_PDL:-1} timeout ${CUTLASS_TIMEOUT:-60} $B/bnb_bench_int8_cutlass --m ${CUTLASS_M:-64,256,2048} --nk ${CUTLASS_NK:-4096,8192} --reps 10 \
    --json $O/int8_cutlass.json > $O/int8_cutlass.log 2>&1; echo "cutlass rc $?" >> $O/int8_cutlass.log
  tail -30 $O/int8_cutlass.log
  save
fi
if stage torch; then  # through torch, side by side with bitsandbytes (bench/int8/bench_int8_torch.py)
  PYTHONPATH=$PWD/.gpu_carry/site BNB_LIBRARY_PATH=$PWD/.gpu_carry/lib timeout ${TORCH_TIMEOUT:-240} \
    python3 bench/int8/bench_int8_torch.py --m ${TORCH_M:-1,16,256,2048} --reps 10 --json $O/int8_torch.json \
    2>&1 | tee $O/int8_torch.log | tail -14
  save
fi
if stage small_rows; then
  for rows in 1 16; do echo "== tiled, BNB_INT8_OUTLIER_QUANT_ROWS=$rows"
    BNB_INT8_OUTLIER_TILED=1 BNB_INT8_OUTLIER_QUANT_ROWS=$rows bench --m 2,4,8,16 --nk 4096 --threshold 6 \
      --outlier-fraction 0.005 --json $O/t6_small_rows$rows.json
  done 2>&1 | tee -a $O/bench.log
  save
fi
if stage ncu; then  # every kernel of the layer calls at NCU_M (default 256), N = K = 4096, default and tiled
  for v in 0 1; do
    BNB_INT8_OUTLIER_TILED=$v timeout 60 ncu --clock-control none --metrics gpu__time_duration.sum,launch__grid_size \
      --csv --page raw -c 400 $B/bnb_bench_int8_cuda --m ${NCU_M:-256} --nk 4096 --reps 1 --threshold 6 \
      > $O/ncu_m${NCU_M:-256}_tiled$v.csv 2>&1
  done
fi
echo "done at ${SECONDS}s" | tee -a $O/stages.txt
save
