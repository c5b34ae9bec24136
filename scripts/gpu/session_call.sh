# One device call: tests first, then benches, most wanted first (the call may be cut short).
# Carry .gpu_carry (scripts/gpu/full.sh build). SHORT=1 (little device time left) stops before the
# QLoRA + generate() side by side.
# The device tool returns a limited number of files: the JSON files travel as one archive.
trap 'cd "$OUT" && ls *.json >/dev/null 2>&1 && tar czf json.tgz *.json && rm -f *.json' EXIT
trap 'exit 143' TERM
source scripts/gpu/nvidia_libs.sh
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib$(nvidia_lib_path)
B=.gpu_carry/bin
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
(timeout 100 $B/bnb_gpu_tests 2>&1 | grep -E "FAILED|PASSED|tests ran" | tail -12
 BNB_INT8_OUTLIER_MMA=1 timeout 40 $B/bnb_gpu_tests --gtest_filter='Int8Gpu.*' 2>&1 | grep -E "FAILED|PASSED" | tail -4
 timeout 90 $B/bnb_tests --gtest_filter='*Int8*cuda*:*Int8*Outlier*:*Optim*cuda*' 2>&1 | grep -E "FAILED|PASSED" | tail -6
 BNB_INT8_FUSED_QUANT=1 timeout 40 $B/bnb_tests --gtest_filter='*Int8*cuda*' 2>&1 | grep -E "FAILED|PASSED" | tail -4) | tee $OUT/gpu_tests.log
for h in 1 0; do  # the layer's library call through bnb._hotcall, then through ctypes (BNB_HOTCALL=0)
  BNB_HOTCALL=$h BNB_LIBRARY_PATH=$PWD/.gpu_carry/lib timeout 120 python3 bench/python/layer4bit.py --device cuda --rank 3 \
    --shapes 4096x4096 --json $OUT/layer4bit_hotcall$h.json 2>&1 | tail -5 | tee $OUT/layer4bit_hotcall$h.log
done
(timeout 40 $B/bnb_bench_int8_cuda --threshold 6 --outlier-fraction 0.005 --json $OUT/int8_outliers.json 2>&1 | tail -12
 for knob in BNB_INT8_OUTLIER_MMA=1 BNB_INT8_OUTLIER_DEQUANT=0; do echo "== $knob"
   env $knob timeout 40 $B/bnb_bench_int8_cuda --threshold 6 --outlier-fraction 0.005 2>&1 | tail -9; done) | tee $OUT/int8_outliers.log
(for knob in X=1 BNB_INT8_LT_SEARCH=0 BNB_INT8_LT_WORKSPACE=0 BNB_INT8_FUSED_QUANT=1 BNB_INT8_MMA_WIDE=0; do echo "== threshold 0, $knob"
   env $knob timeout 60 $B/bnb_bench_int8_cuda --m 1,16,256,1024,2048 2>&1 | tail -11; done) | tee $OUT/int8_t0.log
timeout 90 $B/bnb_bench_gpu_quant --n $((128 << 20)) --reps 20 --json $OUT/quant.json 2>&1 | grep -E "dequantize_4bit|device" | tee $OUT/quant.log
BNB_EXPECT_HOTCALL=1 BNB_TEST_DEVICE=cuda BNB_LIBRARY_PATH=$PWD/.gpu_carry/lib PYTHONPATH=$PWD/bindings/python timeout 120 python3 -m pytest -q -p no:cacheprovider tests/python/test_hotcall.py tests/compat/test_generation.py 2>&1 | tail -6 | tee $OUT/pytest_generation.log
[ "${SHORT:-0}" = 1 ] && exit 0
COMPILE=1 STEPS=10 GEN=256 T=${HF_T:-330} OUT=$OUT bash scripts/gpu/hf_qlora.sh 2>&1 | tail -50
