# A short device call (little device time left): the merged outlier kernels' GPU tests and A/B
# bench, then greedy_decode's GPU tests. Carry .gpu_carry (scripts/gpu/full.sh build).
export LD_LIBRARY_PATH=$PWD/.gpu_carry/lib:$(python3 -c "import nvidia,os;print(os.path.dirname(nvidia.__file__))")/cu13/lib
B=.gpu_carry/bin
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
(timeout 60 $B/bnb_gpu_tests --gtest_filter='Int8Gpu.*' 2>&1 | grep -E "FAILED|PASSED|tests ran" | tail -12
 BNB_INT8_OUTLIER_MMA=1 timeout 40 $B/bnb_gpu_tests --gtest_filter='Int8Gpu.Linear*' 2>&1 | grep -E "FAILED|PASSED" | tail -4
 timeout 40 $B/bnb_tests --gtest_filter='*Int8*cuda*:*Int8*Outlier*' 2>&1 | grep -E "FAILED|PASSED" | tail -6) | tee $OUT/gpu_tests.log
(timeout 40 $B/bnb_bench_int8_cuda --threshold 6 --outlier-fraction 0.005 --json $OUT/int8_outliers.json 2>&1 | tail -12
 echo "== BNB_INT8_OUTLIER_MMA=1"; BNB_INT8_OUTLIER_MMA=1 timeout 40 $B/bnb_bench_int8_cuda --threshold 6 --outlier-fraction 0.005 2>&1 | tail -9) | tee $OUT/int8_outliers.log
BNB_TEST_DEVICE=cuda BNB_LIBRARY_PATH=$PWD/.gpu_carry/lib PYTHONPATH=$PWD/bindings/python timeout 120 python3 -m pytest -q -p no:cacheprovider tests/compat/test_generation.py 2>&1 | tail -6 | tee $OUT/pytest_generation.log
