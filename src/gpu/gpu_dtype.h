// The element dtypes the GPU kernels are instantiated for: template tags numbered as bnb_dtype_t
// and the storage type of each, and the scales of a 4-bit weight as its kernels read them. Every
// kernel family uses these (host code dispatches a run-time dtype to them with with_dtype, and
// makes Scales4 with scales4_of, gpu_backend.h); tests/gpu_emu compiles them as host code.
#ifndef BNB_GPU_GPU_DTYPE_H_
#define BNB_GPU_GPU_DTYPE_H_

#include <cstdint>

#include "backend_abi.h"

namespace bnb {
namespace gpu {

constexpr int kF32 = BNB_F32;
constexpr int kF16 = BNB_F16;
constexpr int kBF16 = BNB_BF16;

// The storage type of tag D: float, or the 16 bits of an fp16/bf16 value.
template <int D>
struct Elem {
  using T = uint16_t;
};
template <>
struct Elem<kF32> {
  using T = float;
};

// The scales of a 4-bit weight (the core's bnb_scales_resolved_t): plain floats (absmax), or
// double-quantized codes rebuilt as RN32(RN32(code2[q] * absmax2[b >> log2_blocksize2]) + offset)
// (docs/FORMATS.md §4.1). blocksize2 is a power of two (the core checks): a shift, not a division.
struct Scales4 {
  const float* absmax;      // plain, or NULL
  const uint8_t* absmax_q;  // nested
  const float* absmax2;
  const float* code2;
  const float* offset;
  int log2_blocksize2;
};

}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_GPU_DTYPE_H_
