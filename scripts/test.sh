#!/usr/bin/env bash
# Every test suite: C/C++ (CTest, labels cpu and gpu — GPU tests skip without a device), the same
# C/C++ suites cross-compiled for aarch64 and run under qemu-user, the Python binding and the bitsandbytes
# compatibility layer with transformers/peft/accelerate (pytest, in build/venv), the thread tests
# under ThreadSanitizer, the CPU suites again under AddressSanitizer + UBSan (clang) and a 30-second
# run of each fuzz target from that same build (scripts/fuzz.sh), the Rust and Go bindings and the
# installed-tree examples.
# Usage: scripts/test.sh [--python]
#   --python  only the Python part (deps, `pip install . ./bindings/python/compat`, tests/python and
#             tests/compat). With BNB_LIBRARY_PATH set, bnb is not built into a wheel: the tests use
#             the source tree's package with that library, and only the compatibility layer is
#             installed (a quick check of a clone against an existing build).
# A missing torch/transformers/peft/accelerate fails the run (BNB_REQUIRE_HF=1), and so does a
# pytest run that collects no test (exit status 5).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
PYTHON_ONLY=0
case "${1:-}" in
  --python) PYTHON_ONLY=1 ;;
  "") ;;
  *) echo "usage: $0 [--python]" >&2; exit 2 ;;
esac
if [ "$PYTHON_ONLY" = 1 ]; then scripts/install_deps.sh --hf; else step deps scripts/install_deps.sh --hf --aarch64; fi
PY="$VENV/bin/python"

run_pytest() {  # pytest, with "no tests collected" (exit status 5) counted as a failure
  local rc=0
  BNB_REQUIRE_HF=1 "$PY" -m pytest -q "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then echo "pytest $*: no test ran" >&2; fi
  return "$rc"
}

python_suites() {
  echo "== python: the bnb binding and the bitsandbytes compatibility layer"
  local pip=("$PY" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall)
  if [ -n "${BNB_LIBRARY_PATH:-}" ]; then
    "${pip[@]}" ./bindings/python/compat
    export PYTHONPATH="$PWD/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
  else
    # the README's one step. The wheel's CUDA plugin is left out here (pyproject.toml builds it
    # whenever nvcc is found, for every architecture: many minutes); the Release build above
    # compiles and tests that plugin.
    SKBUILD_CMAKE_DEFINE="BNB_BUILD_CUDA=OFF" "${pip[@]}" . ./bindings/python/compat
    # the wheel carries the compiled hot call (python3-dev is installed): its absence fails a test
    export BNB_EXPECT_HOTCALL=1
  fi
  # from outside the source tree: the installed packages, and the Hugging Face stack is there
  (cd "$VENV" && "$PWD/bin/python" -c "
import bnb, bitsandbytes, torch, transformers, peft, accelerate
print('bnb', bnb.backends(), 'hotcall', bnb._lib.hotcall)
print('bitsandbytes', bitsandbytes.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__,
      'peft', peft.__version__, 'accelerate', accelerate.__version__)")
  local failed=()
  run_pytest tests/python || failed+=(tests/python)
  run_pytest tests/compat || failed+=(tests/compat)
  if [ ${#failed[@]} -gt 0 ]; then echo "python suites failed: ${failed[*]}" >&2; return 1; fi
}

if [ "$PYTHON_ONLY" = 1 ]; then
  python_suites
  echo "== python suites passed"
  exit 0
fi

release() {
  echo "== build (Release, every plugin this machine can compile)"
  # BNB_INT8_CUTLASS as the cache has it (AUTO in a new build directory): nvidia-cutlass is not
  # installed here, so CI builds without the CUTLASS kernel; a build that scripts/setup.sh
  # configured with it (the same directory, already compiled) keeps it and its tests.
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release $(cuda_flags) $(hip_flags)
  ninja -C build -j"$(jobs)"
}

threads() {
  echo "== ThreadSanitizer: 32 threads, shared and private contexts, mixed ops (tests/unit/test_threads.cc)"
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBNB_TSAN=ON \
    -DBNB_BUILD_CUDA=OFF -DBNB_BUILD_HIP=OFF -DBNB_BUILD_BENCH=OFF -DBNB_BUILD_TOOLS=OFF
  ninja -C build-tsan -j"$(jobs)" bnb_tests bnb_backend_cpu
  # oneDNN's OpenMP runtime is not instrumented (its threads would be reported): Highway paths only.
  BNB_ONEDNN_LIBRARY=/nonexistent TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
    build-tsan/bin/bnb_tests --gtest_filter='Threads.*:Api.ErrorMessageIsPerThread'
}

# The sanitizer step is one clang build (ASan + UBSan + fuzzer coverage, scripts/fuzz.sh): ctest -L
# cpu under it, then a 30-second smoke run of each fuzz target (a finding fails CI; the longer
# campaigns are recorded in bench/results/cpu_fuzz_campaign). It runs after the Python step, whose
# venv the Python fuzz target uses.
step release release
step ctest ctest --test-dir build --output-on-failure -j"$(jobs)"
step aarch64 scripts/test_aarch64.sh build-aarch64
step tsan threads
step python python_suites
step sanitizers env BNB_FUZZ_CTEST=1 BNB_VENV="$VENV" scripts/fuzz.sh 30
if [ -x scripts/test_bindings.sh ]; then
  echo "== rust, go, install tree"
  step bindings scripts/test_bindings.sh build
fi
echo "== all test suites passed in $SECONDS s"
