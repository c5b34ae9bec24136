#!/usr/bin/env bash
# Issue 16's QLoRA + generate() side by side on the device (bench/hf/qlora_bench.py), in one call:
#   here:   scripts/gpu/full.sh build       (the CUDA build in .gpu_carry/lib), then unpack the real
#           bitsandbytes wheel beside it:   python3 -m zipfile -e bitsandbytes-0.50.2-*.whl .gpu_carry/site
#           (its libbitsandbytes_cuda130.so and _cpu.so are all it needs; delete the others to fit the carry)
#   device: run tool, carry [".gpu_carry"]:  bash scripts/gpu/hf_qlora.sh
# STEPS (50) and GEN (256) pick the run's size; T (300) bounds it in seconds; COMPILE=1 adds generate()
# under torch.compile(mode="reduce-overhead") (CUDA graphs).
set -uo pipefail
C=$PWD/.gpu_carry
export LD_LIBRARY_PATH=$C/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
source "$(dirname "${BASH_SOURCE[0]}")/nvidia_libs.sh"
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH$(nvidia_lib_path)
# bnb's side: this library and bindings/python/compat; bitsandbytes' side: the unpacked wheel.
export BNB_LIBRARY_PATH=$C/lib PYTHONPATH=$C/site HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout "${T:-300}" python3 bench/hf/qlora_bench.py --steps "${STEPS:-50}" --profile-steps 3 --gen-tokens "${GEN:-256}" ${COMPILE:+--compile} \
  --model-dir /tmp/qlora_model --out "${OUT:-/tmp}/hf_qlora.json" 2>&1 | tee "${OUT:-/tmp}/hf_qlora.log" | grep -v Warning | tail -80
