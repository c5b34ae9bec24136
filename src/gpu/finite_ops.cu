// The finite check (backend_abi.h, find_nonfinite): the index of the first NaN or infinity of a
// float array, found on the device. The core calls it before an op only when a context asks for
// the check, and the op's contract then allows it to wait for the stream (docs/API.md).
#include <cstdint>

#include "gpu_backend.h"
#include "half.h"

namespace bnb {
namespace gpu {
namespace {

constexpr int kThreads = 256;

// Each thread walks its grid-stride elements in increasing order, so its first hit is its
// smallest; the minimum over threads is the array's first.
template <typename Bits>
__global__ void find_nonfinite_kernel(const Bits* __restrict__ x, int64_t n, Bits mask,
                                      unsigned long long* first) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    if ((x[i] & mask) == mask) {
      atomicMin(first, static_cast<unsigned long long>(i));
      return;
    }
  }
}

template <typename Bits>
void launch(const GpuContext& ctx, const void* x, int64_t n, Bits mask, unsigned long long* first,
            gpuStream_t stream) {
  const int64_t grid = persistent_grid(ctx, 8, (n + kThreads - 1) / kThreads);
  find_nonfinite_kernel<Bits><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(static_cast<const Bits*>(x), n,
                                                                                     mask, first);
}

bnb_status_t op_find_nonfinite(void* impl, int32_t dtype, const void* x, int64_t n, int64_t* first, void* stream) {
  const GpuContext& ctx = *static_cast<const GpuContext*>(impl);
  DeviceGuard guard(ctx.device);
  const auto s = static_cast<gpuStream_t>(stream);
  unsigned long long* dfirst = nullptr;
  bnb_status_t st =
      check(gpuMalloc(reinterpret_cast<void**>(&dfirst), sizeof *dfirst), "allocating the finite check's index");
  if (st != BNB_SUCCESS) return st;
  st = check(gpuMemsetAsync(dfirst, 0xff, sizeof *dfirst, s), "clearing the finite check's index");  // = no index
  if (st == BNB_SUCCESS) {
    switch (dtype) {
      case BNB_F32: launch<uint32_t>(ctx, x, n, kF32ExponentMask, dfirst, s); break;
      case BNB_F16: launch<uint16_t>(ctx, x, n, kF16ExponentMask, dfirst, s); break;
      default: launch<uint16_t>(ctx, x, n, kBF16ExponentMask, dfirst, s); break;
    }
    st = check_launch("find_nonfinite_kernel");
  }
  unsigned long long host = ~0ull;
  if (st == BNB_SUCCESS)
    st = check(gpuMemcpyAsync(&host, dfirst, sizeof host, gpuMemcpyDefault, s), "reading the finite check's index");
  if (st == BNB_SUCCESS) st = check(gpuStreamSynchronize(s), "waiting for the finite check");
  const bnb_status_t freed = check(gpuFree(dfirst), "freeing the finite check's index");
  if (st == BNB_SUCCESS) st = freed;
  if (st == BNB_SUCCESS) *first = host == ~0ull ? -1 : static_cast<int64_t>(host);
  return st;
}

}  // namespace

void register_finite_ops(bnb_backend_ops_t* ops) { ops->find_nonfinite = op_find_nonfinite; }

}  // namespace gpu
}  // namespace bnb
