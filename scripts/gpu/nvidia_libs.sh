# Sourced by the device scripts: nvidia_lib_path prints ":DIR..." for the CUDA libraries PyTorch's
# nvidia wheels carry on the device (cuBLAS and cuBLASLt, which the gemm_4bit and int8 paths load
# with dlopen), to append to LD_LIBRARY_PATH. `nvidia` is a namespace package there (no
# __file__): its directory is the first entry of __path__.
nvidia_lib_path() {
  local nv d out=""
  nv=$(python3 -c "import nvidia; print(list(nvidia.__path__)[0])" 2>/dev/null)
  [ -n "$nv" ] || return 0
  for d in "$nv"/cublas/lib "$nv"/cu13/lib; do [ -d "$d" ] && out=$out:$d; done
  printf '%s' "$out"
}
