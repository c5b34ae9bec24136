// The element dtypes the GPU kernels are instantiated for: template tags numbered as bnb_dtype_t
// and the storage type of each. Every kernel family uses these (host code dispatches a run-time
// dtype to them with with_dtype, gpu_backend.h); tests/gpu_emu compiles them as host code.
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

}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_GPU_DTYPE_H_
