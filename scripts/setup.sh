#!/usr/bin/env bash
# The main job: install what is missing (Debian packages; Python packages into the venv build/venv,
# never into the system's python3), build bnb, then `bnb info` and `bnb bench` on the best backend
# found (BNB_BACKEND selects another). Usage: scripts/setup.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
BUILD=${1:-build}
scripts/install_deps.sh
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release $(cuda_flags) $(hip_flags)
ninja -C "$BUILD" -j"$(jobs)"
"$BUILD/bin/bnb" info
mkdir -p bench/results
"$BUILD/bin/bnb" bench --n $((64 << 20)) --threads "$(jobs)" --json "$BUILD/bench_quant.json"
echo "Python: ${BNB_VENV:-build/venv}/bin/python (numpy, pytest); the package: ${BNB_VENV:-build/venv}/bin/pip install . ./bindings/python/compat"
