// What the GPU plugin's op families share: the context, error reporting and the device guard.
// Each family (quantization today; gemm, int8, optimizers later) lives in its own .cu file and
// fills its entries of the ops table through a register_*_ops function declared here.
#ifndef BNB_GPU_GPU_BACKEND_H_
#define BNB_GPU_GPU_BACKEND_H_

#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "backend_abi.h"
#include "gpu_dtype.h"
#include "gpu_port.h"

namespace bnb {
namespace gpu {

// One per bnb context: immutable after creation, so many threads may use it at once.
struct GpuContext {
  int device = 0;
  int sm_count = 1;
  // Compute capability major (CUDA; HIP: 0). Gates the tensor-core int8 kernel (8.0) and
  // programmatic dependent launch (9.0).
  int cc_major = 0;
  // Device copies of the built-in tables, indexed by bnb_code_table_t (256 or 16 floats).
  float* tables[4] = {nullptr, nullptr, nullptr, nullptr};
  // The 8-bit optimizers' bucketed DYN8S and DYN8U tables (optim_kernels.cuh, Optim8Table), or
  // null where they do not apply (then the search kernel runs).
  void* optim8_tables = nullptr;
};

// Records `message` (printf-style) as the thread's error and returns `status`.
bnb_status_t fail(bnb_status_t status, const char* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
// BNB_SUCCESS, or BNB_ERR_DEVICE naming `what` and the runtime's error.
bnb_status_t check(gpuError_t err, const char* what);
// Checks the launch that just happened (without synchronising).
bnb_status_t check_launch(const char* kernel);

// Makes the context's device current for the lifetime of the guard, restoring the caller's.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
  int device_ = 0;
};

// Calls fn(std::integral_constant<int, D>{}) with the tag D (gpu_dtype.h) of the run-time dtype and
// returns its status. Any other dtype fails with BNB_ERR_NOT_SUPPORTED naming `what`: the core lets
// only F32, F16 and BF16 through, so this is a guard rather than a check users meet.
template <class Fn>
bnb_status_t with_dtype(int32_t dtype, const char* what, Fn&& fn) {
  switch (dtype) {
    case kF32: return fn(std::integral_constant<int, kF32>{});
    case kF16: return fn(std::integral_constant<int, kF16>{});
    case kBF16: return fn(std::integral_constant<int, kBF16>{});
    default: return fail(BNB_ERR_NOT_SUPPORTED, "%s: dtype %d is not supported (F32, F16 or BF16)", what, dtype);
  }
}

// The plugin's context behind an op's `impl`.
inline const GpuContext& ctx_of(void* impl) { return *static_cast<const GpuContext*>(impl); }
// Whether p is 16-byte aligned (the vectorised loads' requirement).
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
// log2 of a power of two (blocksizes); the next power's for any other v.
inline int log2_of(int64_t v) {
  int l = 0;
  while ((int64_t{1} << l) < v) ++l;
  return l;
}

// A 4-bit weight's scales as the kernels read them.
inline Scales4 scales4_of(const bnb_scales_resolved_t& s) {
  return Scales4{s.absmax, s.absmax_q, s.absmax2, s.code2, s.offset, s.absmax != nullptr ? 0 : log2_of(s.blocksize2)};
}

// Environment switches of the plugin (A/B timings and tests of its other paths): env_on(name) is
// true when `name` is set to anything but "" or "0..."; env_zero(name) when it is set to "0..."
// (the switches of paths that are on by default).
inline bool env_on(const char* name) {
  const char* e = std::getenv(name);
  return e != nullptr && e[0] != '\0' && e[0] != '0';
}
inline bool env_zero(const char* name) {
  const char* e = std::getenv(name);
  return e != nullptr && e[0] == '0';
}

// Resident blocks per multiprocessor of `kernel` launched with `threads` threads and `smem` bytes
// of dynamic shared memory, after raising its dynamic limit where smem is over the default 48 KiB;
// 0 when it can't run so. Ask once per instantiation (keep it in a function-local static).
template <typename Kernel>
int resident_blocks(Kernel kernel, int threads, int smem) {
  int n = 0;
  if ((smem > 48 * 1024 &&
       gpuFuncSetAttribute(reinterpret_cast<const void*>(kernel), gpuFuncAttributeMaxDynamicSharedMemorySize, smem) !=
           gpuSuccess) ||
      gpuOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, static_cast<size_t>(smem)) != gpuSuccess) {
    (void)gpuGetLastError();
    n = 0;
  }
  return n;
}

// Scratch memory ordered in a stream, from the device's default pool (which keeps what it is given
// back between calls, plugin.cu; capturable in a CUDA graph). ok() is false when it could not be
// had (the caller takes another path); 0 bytes asks nothing of the runtime (get() is null, ok()
// true). finish(st, what) gives it back in the stream and returns st, or the release's error
// (naming `what`) when st is a success; otherwise the destructor gives it back.
class StreamScratch {
 public:
  StreamScratch(size_t bytes, gpuStream_t stream) : stream_(stream) {
    if (bytes > 0 && gpuMallocAsync(&p_, bytes, stream) != gpuSuccess) {
      (void)gpuGetLastError();
      p_ = nullptr;
      ok_ = false;
    }
  }
  ~StreamScratch() {
    if (p_ != nullptr) (void)gpuFreeAsync(p_, stream_);
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  bool ok() const { return ok_; }
  template <class T = void>
  T* get() const {
    return static_cast<T*>(p_);
  }
  bnb_status_t finish(bnb_status_t st, const char* what) {
    if (p_ == nullptr) return st;
    const gpuError_t err = gpuFreeAsync(p_, stream_);
    p_ = nullptr;
    return st == BNB_SUCCESS ? check(err, what) : st;
  }

 private:
  void* p_ = nullptr;
  bool ok_ = true;
  gpuStream_t stream_;
};

// Grid size for a persistent kernel: enough blocks to fill every multiprocessor, at most `tiles`.
int64_t persistent_grid(const GpuContext& ctx, int blocks_per_sm, int64_t tiles);
// Empties the plugin's cache of pointer classifications (called when bnb frees memory).
void forget_pointer_kinds();

// dequantize_4bit's work on a context (also the large-M 4-bit matmul's decoder of weight slabs).
bnb_status_t dequantize_4bit_on(const GpuContext& ctx, int32_t quant_type, const uint8_t* packed,
                                const bnb_scales_resolved_t* scales, int64_t n, int64_t blocksize, int32_t out_dtype,
                                void* out, gpuStream_t stream);

// Op families.
void register_quant_ops(bnb_backend_ops_t* ops);
void register_gemm4_ops(bnb_backend_ops_t* ops);
void register_int8_ops(bnb_backend_ops_t* ops);
void register_optim_ops(bnb_backend_ops_t* ops);
void register_finite_ops(bnb_backend_ops_t* ops);
// Context set-up and tear-down of the optimizer family (the bucketed 8-bit tables).
bnb_status_t optim_context_init(GpuContext* ctx);
void optim_context_free(GpuContext* ctx);

}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_GPU_BACKEND_H_
