#!/usr/bin/env bash
# Fuzzing the C ABI (libFuzzer, tests/fuzz/*.cc) and QuantState.from_dict (atheris,
# tests/fuzz/fuzz_quant_state.py). tests/fuzz/README.md says what each target covers.
#   scripts/fuzz.sh [SECONDS]   each target for SECONDS (default 60: the CI smoke run)
# Builds build-fuzz with clang (BNB_FUZZ=ON: ASan + UBSan + fuzzer coverage in the library and the
# CPU plugin). Each target starts from its seed corpus (tests/fuzz/corpus/<target>, read-only) and
# grows a scratch copy under build-fuzz/corpus. A finding leaves crash-*/leak-*/timeout-* files in
# build-fuzz/findings and fails the script. Python: BNB_VENV's interpreter (scripts/install_deps.sh
# installs atheris there), bnb from that venv or BNB_LIBRARY_PATH.
# BNB_FUZZ_CTEST=1 (scripts/test.sh): the C/C++ suites and the CLI are built in the same
# configuration and `ctest -L cpu` runs under its ASan + UBSan first, so one sanitizer build serves
# both the suites and the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh  # VENV
SECONDS_EACH=${1:-60}
BUILD=build-fuzz
SUITES=OFF
[ "${BNB_FUZZ_CTEST:-0}" = 1 ] && SUITES=ON
CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBNB_FUZZ=ON \
  -DBNB_BUILD_CUDA=OFF -DBNB_BUILD_HIP=OFF -DBNB_BUILD_TESTS=$SUITES -DBNB_BUILD_TOOLS=$SUITES -DBNB_BUILD_BENCH=OFF >/dev/null
# verify_asan_link_order: the library links the shared sanitizer runtime (root CMakeLists.txt),
# which the executables load after libstdc++. oneDNN stays out: its OpenMP worker threads crash
# LeakSanitizer's tracer at exit (the Release ctest run covers the oneDNN path).
export ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=1 BNB_ONEDNN_LIBRARY=/nonexistent
if [ "$SUITES" = ON ]; then
  echo "== ctest under AddressSanitizer + UndefinedBehaviorSanitizer (clang, cpu label)"
  ninja -C "$BUILD" -j"$(nproc)"
  ctest --test-dir "$BUILD" --output-on-failure -L cpu -j"$(nproc)"
else
  ninja -C "$BUILD" -j"$(nproc)" bnb_fuzz_quant bnb_fuzz_matmul bnb_fuzz_optim
fi

mkdir -p "$BUILD/findings"
failed=()
for target in fuzz_quant fuzz_matmul fuzz_optim; do
  corpus="$BUILD/corpus/$target"
  mkdir -p "$corpus"
  seeds=()
  [ -d "tests/fuzz/corpus/$target" ] && seeds=("tests/fuzz/corpus/$target")
  echo "== $target: ${SECONDS_EACH}s"
  if ! "$BUILD/bin/bnb_$target" -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 \
      -artifact_prefix="$BUILD/findings/$target-" "$corpus" "${seeds[@]}" > "$BUILD/$target.log" 2>&1; then
    failed+=("$target")
    grep -E "ERROR|SUMMARY|#[0-9]+ in " "$BUILD/$target.log" | head -20
  fi
  grep -E "^stat::number_of_executed_units|^Done" "$BUILD/$target.log" | tr '\n' ' '; echo
done

PY=$VENV/bin/python
if [ -x "$PY" ] && "$PY" -c "import atheris, bnb" 2>/dev/null; then
  echo "== fuzz_quant_state (atheris): ${SECONDS_EACH}s"
  corpus="$BUILD/corpus/quant_state"
  mkdir -p "$corpus"
  if ! "$PY" tests/fuzz/fuzz_quant_state.py -max_total_time="$SECONDS_EACH" -timeout=30 \
      -artifact_prefix="$BUILD/findings/quant_state-" "$corpus" tests/fuzz/corpus/quant_state \
      > "$BUILD/fuzz_quant_state.log" 2>&1; then
    failed+=(fuzz_quant_state)
    tail -30 "$BUILD/fuzz_quant_state.log"
  fi
  grep -E "^Done|DONE" "$BUILD/fuzz_quant_state.log" | tail -1
else
  echo "== fuzz_quant_state: skipped here (no atheris or bnb in $PY); CI installs both" >&2
  [ "${CI:-}" = true ] && failed+=("fuzz_quant_state (not run)")
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]} (inputs in $BUILD/findings)" >&2
  exit 1
fi
echo "== fuzzing: no finding"
