#!/usr/bin/env bash
# Every test suite: C/C++ (CTest, labels cpu and gpu — GPU tests skip without a device), the CPU
# suites again under AddressSanitizer + UBSan, the Python binding (pytest), the Rust and Go
# bindings and the installed-tree examples. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
scripts/install_deps.sh

echo "== build (Release, every plugin this machine can compile)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release $(cuda_flags) $(hip_flags)
ninja -C build -j"$(jobs)"
echo "== ctest"
ctest --test-dir build --output-on-failure -j"$(jobs)"

echo "== ctest under AddressSanitizer + UndefinedBehaviorSanitizer (cpu label)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBNB_SANITIZE=ON \
  -DBNB_BUILD_CUDA=OFF -DBNB_BUILD_HIP=OFF -DBNB_BUILD_BENCH=OFF
ninja -C build-asan -j"$(jobs)"
# oneDNN is left out here (BNB_ONEDNN_LIBRARY names no library, so int8 products take the
# Highway path): its OpenMP worker threads crash LeakSanitizer's tracer at exit. The Release run
# above covers the oneDNN path.
BNB_ONEDNN_LIBRARY=/nonexistent ASAN_OPTIONS=detect_leaks=1 \
  ctest --test-dir build-asan --output-on-failure -L cpu -j"$(jobs)"

if [ -f pyproject.toml ]; then
  echo "== python binding"
  python3 -m venv --system-site-packages build/venv
  build/venv/bin/pip install -q --disable-pip-version-check .
  (cd build && venv/bin/python -c "import bnb; print(bnb.backends())")
  build/venv/bin/python -m pytest -q tests/python
fi

if [ -x scripts/test_bindings.sh ]; then
  echo "== rust, go, install tree"
  scripts/test_bindings.sh build
fi
echo "== all test suites passed"
