#!/usr/bin/env bash
# compute-sanitizer over the GPU test suite (issue 17): memcheck (with leak check), racecheck,
# synccheck and initcheck on bnb_gpu_tests, and memcheck on the unit suites, whose tests run on
# every available backend (the CUDA one included).
#   here:   scripts/gpu/full.sh build        (stages the Release build in .gpu_carry)
#   device: run tool, carry [".gpu_carry"]:  TOOLS="memcheck racecheck" bash scripts/gpu/sanitize.sh
# TOOLS picks the checks (default: all four, then memcheck of the unit suites as "unit");
# FILTER is a gtest filter for the slow checks (racecheck, synccheck, initcheck), which by default
# leave out the two tests whose time is host-side references over 2^31 elements and every model
# shape; T bounds each check in seconds (default 240). Logs go to $OUT (default /tmp/sanitize); the
# summary lines are printed last. A check passes when the tests pass and the sanitizer reports
# 0 errors.
set -uo pipefail
cd "$(dirname "$0")/../.."
C=$PWD/.gpu_carry
OUT=${OUT:-/tmp/sanitize}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$C/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
source "$(dirname "${BASH_SOURCE[0]}")/nvidia_libs.sh"
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH$(nvidia_lib_path)
export BNB_GOLDEN_DIR=$PWD/tests/data/golden
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
[ -x "$CS" ] || { echo "compute-sanitizer not found" >&2; exit 2; }
SLOW_FILTER=${FILTER:--Gemm4Gpu.ModelShapesEveryPath:GpuTest.QuantizePast2To31Elements}
"$CS" --version | tail -1 > "$OUT/sanitizer_version.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> "$OUT/sanitizer_version.txt"

check() {  # name tool binary [gtest args...]
  local name=$1 tool=$2 bin=$3
  shift 3
  local extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check full)
  local t0=$SECONDS rc=0
  timeout "${T:-240}" "$CS" --tool "$tool" "${extra[@]}" --error-exitcode 99 --print-limit 50 \
    "$C/bin/$bin" "$@" > "$OUT/sanitize_$name.log" 2>&1 || rc=$?
  local tests errors
  tests=$(grep -E '^\[  (PASSED|FAILED)  \]' "$OUT/sanitize_$name.log" | tr '\n' ' ')
  errors=$(grep -E 'ERROR SUMMARY' "$OUT/sanitize_$name.log" | tail -1)
  echo "== $name ($tool, $bin $*): rc=$rc, $((SECONDS - t0)) s; ${tests:-no gtest summary}; ${errors:-no sanitizer summary}" \
    | tee -a "$OUT/summary.txt"
}

for t in ${TOOLS:-memcheck racecheck synccheck initcheck unit}; do
  case $t in
    memcheck) check memcheck memcheck bnb_gpu_tests ;;
    racecheck|synccheck|initcheck) check "$t" "$t" bnb_gpu_tests --gtest_filter="$SLOW_FILTER" ;;
    unit) check unit_memcheck memcheck bnb_tests ;;
    *) echo "unknown check $t" >&2; exit 2 ;;
  esac
done
cat "$OUT/sanitizer_version.txt"
