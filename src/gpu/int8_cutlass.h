// The CUDA plugin's optional Hopper path for the LLM.int8() product with its dequantization in one
// kernel (int8_cutlass_sm90.cu; built with -DBNB_INT8_CUTLASS=ON, which defines BNB_INT8_CUTLASS
// on the plugin and its CUTLASS TU). int8_ops.cu calls it where the layer would run op_matmul +
// op_mm_dequant.
#ifndef BNB_GPU_INT8_CUTLASS_H_
#define BNB_GPU_INT8_CUTLASS_H_

#include <cstdint>

#include "gpu_backend.h"

namespace bnb {
namespace gpu {

// out [M, N] (fp16) = bnb_int8_mm_dequant(q [M, K] W [N, K]^T, row_stats [M], SCB [N], bias [N]
// (fp16, or null)), bit for bit, in one CUTLASS sm_90a kernel on stream s. The caller passes an
// fp16 out (and bias) only. Returns false, launching nothing, when the path is off
// (BNB_INT8_CUTLASS=0) or does not apply: a device other than compute capability 9.x,
// K % 16 != 0 or N % 8 != 0, a pointer not 16-byte aligned, M, N or K not in 1 .. INT32_MAX, or the
// configuration's can_implement declines. Otherwise it launches and returns true with *status
// the launch's (BNB_ERR_DEVICE and a message when it failed). No host synchronisation, no
// allocation unless a configuration asks for a workspace (stream-ordered scratch): capturable.
// Without BNB_INT8_CUTLASS (the default build, and HIP) it is always false.
#if defined(BNB_INT8_CUTLASS)
bool int8_cutlass_linear(const GpuContext& ctx, int64_t M, int64_t N, int64_t K, const int8_t* q, const int8_t* W,
                         const float* row_stats, const float* SCB, const void* bias, void* out, gpuStream_t s,
                         bnb_status_t* status);
#else
inline bool int8_cutlass_linear(const GpuContext&, int64_t, int64_t, int64_t, const int8_t*, const int8_t*,
                                const float*, const float*, const void*, void*, gpuStream_t, bnb_status_t*) {
  return false;
}
#endif

}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_INT8_CUTLASS_H_
