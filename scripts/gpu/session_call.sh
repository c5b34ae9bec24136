# One device call of this session: tests first, then benches, most wanted first (the call may be
# cut short). Carry .gpu_carry (scripts/gpu/full.sh build).
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib:$(python3 -c "import nvidia,os;print(os.path.dirname(nvidia.__file__))")/cu13/lib
B=.gpu_carry/bin
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
(timeout 100 $B/bnb_gpu_tests 2>&1 | grep -E "FAILED|PASSED|tests ran" | tail -8) | tee $OUT/gpu_tests.log
(BNB_GEMM4_SLAB_BYTES=1024 timeout 60 $B/bnb_gpu_tests --gtest_filter='Gemm4Gpu.*' 2>&1 | grep -E "FAILED|PASSED" | tail -4
 BNB_GEMM4_SLAB_BYTES=1024 timeout 60 $B/bnb_tests --gtest_filter='Backends/Gemm4.*/cuda*' 2>&1 | grep -E "FAILED|PASSED" | tail -4) | tee $OUT/slab_tests.log
BNB_LIBRARY_PATH=$PWD/.gpu_carry/lib PYTHONPATH=$PWD/bindings/python timeout 100 python3 -m pytest -q -p no:cacheprovider tests/python/test_torch.py 2>&1 | tail -4 | tee $OUT/pytest_torch.log
BNB_TEST_DEVICE=cuda BNB_LIBRARY_PATH=$PWD/.gpu_carry/lib PYTHONPATH=$PWD/bindings/python timeout 100 python3 -m pytest -q -p no:cacheprovider tests/compat/test_generation.py 2>&1 | tail -4 | tee $OUT/pytest_generation.log
COMPILE=1 STEPS=10 GEN=128 T=300 OUT=$OUT bash scripts/gpu/hf_qlora.sh 2>&1 | tail -45
timeout 60 $B/bnb_bench_int8_cuda --threshold 6 --outlier-fraction 0.005 --json $OUT/int8_outliers.json 2>&1 | tail -14 | tee $OUT/int8_outliers.log
timeout 100 $B/bnb_bench_gemm4_cuda --m 128,256,1024,4096 --dtypes bf16 --json $OUT/gemm4_large_m.json 2>&1 | tail -24 | tee $OUT/gemm4_large_m.log
PYTHONPATH=$PWD/.gpu_carry/site BNB_LIBRARY_PATH=$PWD/.gpu_carry/lib timeout 80 python3 bench/python/qlora_layer.py --json $OUT/qlora_layer.json 2>&1 | grep -v Warn | tail -8
