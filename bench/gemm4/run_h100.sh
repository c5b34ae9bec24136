#!/usr/bin/env bash
# One device call for the CUDA gemm_4bit work (bench/gemm4/NOTES.md): the Gemm4 GPU and unit
# tests, then the benchmark. Expects a carry folder (default .g4carry) with lib/ (libbnb.so.0,
# libbnb_backend_*.so, libhwy.so.1) and bin/ (bnb_gpu_tests, bnb_tests, bnb_bench_gemm4_cuda); the
# golden vectors are the working tree's tests/data/golden. Logs go to $OUT/gemm4_logs.tgz.
C=$PWD/${1:-.g4carry}
export LD_LIBRARY_PATH=$C/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nv=$(python3 -c "import nvidia, os; print(os.path.dirname(nvidia.__file__))" 2>/dev/null)
for d in "$nv"/cublas/lib "$nv"/cu13/lib; do [ -d "$d" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d; done
export BNB_GOLDEN_DIR=$PWD/tests/data/golden
L=$OUT/gemm4_logs; mkdir -p "$L"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > "$L/gpu.txt" 2>&1
timeout 150 "$C/bin/bnb_gpu_tests" --gtest_filter='Gemm4*' > "$L/gpu_tests.log" 2>&1
timeout 120 "$C/bin/bnb_tests" --gtest_filter='*Gemm4*' > "$L/unit_tests.log" 2>&1
timeout 200 "$C/bin/bnb_bench_gemm4_cuda" --json "$OUT/gemm4.json" > "$L/bench.log" 2>&1
tar czf "$OUT/gemm4_logs.tgz" -C "$OUT" gemm4_logs && rm -rf "$L"
tar xzf "$OUT/gemm4_logs.tgz" -C /tmp
echo "== gpu: $(tail -1 /tmp/gemm4_logs/gpu.txt)"
for f in gpu_tests unit_tests; do
  echo "== $f: $(grep -E '^\[  (PASSED|FAILED) ' /tmp/gemm4_logs/$f.log | tr '\n' ' ')"
  grep -E '^\[  FAILED  \]|Failure|rel' /tmp/gemm4_logs/$f.log | head -20
done
echo "== bench"; cat /tmp/gemm4_logs/bench.log | tail -60
