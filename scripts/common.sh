# Shared by the scripts: the Python environment and configure flags that follow what this machine has.
VENV=${BNB_VENV:-build/venv}  # where install_deps.sh puts the Python packages (BNB_VENV names another)
have_nvcc() { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }
cuda_flags() {
  if have_nvcc; then
    export PATH="$PATH:/usr/local/cuda/bin"
    # One architecture keeps CI builds short; release builds use the default list.
    echo "-DBNB_BUILD_CUDA=ON -DBNB_CUDA_ARCHITECTURES=${BNB_CUDA_ARCHITECTURES:-90}"
  else
    echo "-DBNB_BUILD_CUDA=OFF"
  fi
}
hip_flags() {
  if command -v hipcc >/dev/null 2>&1; then echo "-DBNB_BUILD_HIP=ON"; else echo "-DBNB_BUILD_HIP=OFF"; fi
}
jobs() { nproc 2>/dev/null || echo 2; }
step() {  # step NAME COMMAND...: runs it and says how long it took (CI logs show where the time goes)
  local name=$1 start=$SECONDS
  shift
  "$@"
  echo "== $name: $((SECONDS - start)) s"
}
