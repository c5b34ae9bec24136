# The kernel and plugin sources shared by the CUDA and HIP plugins (one copy of each kernel).
set(BNB_GPU_DIR ${CMAKE_SOURCE_DIR}/src/gpu)
set(BNB_GPU_SOURCES
  ${BNB_GPU_DIR}/plugin.cu
  ${BNB_GPU_DIR}/quant_ops.cu
  ${BNB_GPU_DIR}/gemm4_ops.cu
  ${BNB_GPU_DIR}/int8_ops.cu
  ${BNB_GPU_DIR}/optim_ops.cu
  ${BNB_GPU_DIR}/finite_ops.cu
)
# CUDA only, where BNB_INT8_CUTLASS resolves ON (src/backend_cuda/CMakeLists.txt): sm_90a,
# CUTLASS's headers.
set(BNB_GPU_CUTLASS_SOURCES ${BNB_GPU_DIR}/int8_cutlass_sm90.cu)
set(BNB_GPU_HEADERS
  ${BNB_GPU_DIR}/gpu_port.h
  ${BNB_GPU_DIR}/gpu_backend.h
  ${BNB_GPU_DIR}/quant_kernels.cuh
  ${BNB_GPU_DIR}/gemm4_kernels.cuh
  ${BNB_GPU_DIR}/int8_kernels.cuh
  ${BNB_GPU_DIR}/int8_cutlass.h
  ${BNB_GPU_DIR}/optim_kernels.cuh
)
set(BNB_GPU_EXPORTS_MAP ${BNB_GPU_DIR}/plugin_exports.map)
