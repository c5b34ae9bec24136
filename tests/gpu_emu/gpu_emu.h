// What the host emulations of GPU kernels (tests/gpu_emu) share: the kernel qualifiers as host
// C++, the thread and block indices (one std::thread per GPU thread, blocks one at a time), and a
// reusable barrier standing in for __syncthreads and the warp-level exchanges. Include it before
// the kernel headers; each emulation adds the intrinsics its kernels use.
#ifndef BNB_TESTS_GPU_EMU_GPU_EMU_H_
#define BNB_TESTS_GPU_EMU_GPU_EMU_H_

#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "half.h"

#define BNB_GPU_GPU_PORT_H_  // the real gpu_port.h needs a GPU compiler
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one copy shared by the block's threads (blocks run one at a time)

namespace {

struct Dim {
  unsigned x = 0, y = 0, z = 0;
};
thread_local Dim threadIdx, blockIdx;
Dim blockDim, gridDim;

}  // namespace

// Bit casts and fp16 conversions as the device does them (round to nearest even).
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
struct __half {
  uint16_t bits;
};
inline __half __ushort_as_half(uint16_t b) { return {b}; }
inline uint16_t __half_as_ushort(__half h) { return h.bits; }
inline float __half2float(__half h) { return bnb::f16_to_f32(h.bits); }
inline __half __float2half_rn(float f) { return {bnb::f32_to_f16(f)}; }

namespace bnb_emu {

// A reusable barrier for `count` threads.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t gen = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_, arrived_ = 0;
  int64_t generation_ = 0;
};

}  // namespace bnb_emu

#endif  // BNB_TESTS_GPU_EMU_GPU_EMU_H_
