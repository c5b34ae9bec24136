#!/usr/bin/env bash
# The main job: install what is missing (Debian packages; Python packages into the venv build/venv,
# never into the system's python3), build bnb, then `bnb info` and `bnb bench` on the best backend
# found (BNB_BACKEND selects another). Usage: scripts/setup.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
BUILD=${1:-build}
# With nvcc, CUTLASS's headers too (nvidia-cutlass in the venv), and CMake asks the venv's Python
# for them: BNB_INT8_CUTLASS=AUTO then builds the Hopper int8 path where BNB_CUDA_ARCHITECTURES has
# sm_90 (CMakeLists.txt). AUTO is passed so that a build directory decides again on each run.
if have_nvcc; then scripts/install_deps.sh --cutlass; else scripts/install_deps.sh; fi
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release $(cuda_flags) $(hip_flags) \
  -DBNB_INT8_CUTLASS=AUTO -DPython3_EXECUTABLE="$(cd "$VENV" && pwd)/bin/python"
ninja -C "$BUILD" -j"$(jobs)"
"$BUILD/bin/bnb" info
mkdir -p bench/results
"$BUILD/bin/bnb" bench --n $((64 << 20)) --threads "$(jobs)" --json "$BUILD/bench_quant.json"
echo "Python: $VENV/bin/python (numpy, pytest); the package: $VENV/bin/pip install . ./bindings/python/compat"
