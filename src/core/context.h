// The context object behind bnb_context_t, and the argument checks every entry point shares.
#ifndef BNB_CORE_CONTEXT_H_
#define BNB_CORE_CONTEXT_H_

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <string>

#include "error.h"
#include "int_math.h"
#include "registry.h"

struct bnb_context {
  static constexpr uint64_t kMagic = 0x626e62637478ull;  // "bnbctx"
  uint64_t magic = kMagic;
  const bnb::Backend* backend = nullptr;
  void* impl = nullptr;
  int32_t kind = 0;
  int32_t device = 0;
  bool check_finite = false;  // options.check_finite / $BNB_CHECK_FINITE, resolved at creation
};

namespace bnb {

// Largest element count accepted anywhere: keeps every byte count of every dtype inside int64_t.
constexpr int64_t kMaxElements = INT64_C(1) << 60;
// Most CPU threads a context may ask for (options->num_threads, $BNB_NUM_THREADS).
constexpr int32_t kMaxThreads = 4096;
// The limits the checks apply on every backend (bnb_backend_get_capabilities reports them).
constexpr int64_t kBlocksize8Min = 64, kBlocksize8Max = 4096;  // blockwise 8-bit, scales->blocksize2
constexpr int64_t kBlocksize4Min = 32, kBlocksize4Max = 4096;  // 4-bit, gemm_4bit
constexpr int64_t kInt8MaxK = 131071;                          // 127 * 128 * K < 2^31: exact int32 sums
constexpr int64_t kOptimBlock = 256;                           // elements per 8-bit optimizer state block
constexpr int64_t kAbsmaxBlock = 256;                          // bnb_compress_absmax's blocksize2

bnb_status_t check_context(bnb_context_t ctx);
bnb_status_t check_not_null(const void* ptr, const char* name);
bnb_status_t check_count(int64_t n, const char* name);
// Product of two positive counts, failing if it exceeds kMaxElements.
bnb_status_t check_product(int64_t a, int64_t b, const char* what, int64_t* out);
bnb_status_t check_float_dtype(int32_t dtype, const char* name);
bnb_status_t check_quant_type(int32_t quant_type);
bnb_status_t check_blocksize(int64_t blocksize, int64_t lo, int64_t hi, const char* name);
// The pointer must live in the memory of the context's backend (host for CPU, device or managed
// memory of the context's device for GPU backends), be aligned to its element size (docs/API.md,
// "Arrays": kernels access elements through typed pointers), and hold the `count` elements the
// op reads or writes when it lies in a buffer the caller declared (check_declared). NULL passes.
bnb_status_t check_memory(bnb_context_t ctx, const void* ptr, const char* name, size_t element_bytes,
                          int64_t count);
// NULL check + check_memory in one.
bnb_status_t check_array(bnb_context_t ctx, const void* ptr, const char* name, size_t element_bytes,
                         int64_t count);
// Typed pointers carry their element size; `void*` arrays name theirs (dtype_bytes of their dtype).
template <typename T, typename = std::enable_if_t<!std::is_void_v<T>>>
bnb_status_t check_memory(bnb_context_t ctx, const T* ptr, const char* name, int64_t count) {
  return check_memory(ctx, static_cast<const void*>(ptr), name, sizeof(T), count);
}
template <typename T, typename = std::enable_if_t<!std::is_void_v<T>>>
bnb_status_t check_array(bnb_context_t ctx, const T* ptr, const char* name, int64_t count) {
  return check_array(ctx, static_cast<const void*>(ptr), name, sizeof(T), count);
}
// Buffers the calling thread declared with bnb_buffer_declare (declared.cc): when `ptr` lies in
// one, the `count` elements of `element_bytes` from ptr must end inside it. Undeclared: passes.
bnb_status_t check_declared(const void* ptr, const char* name, size_t element_bytes, int64_t count);
// Drops the calling thread's declaration of a buffer starting at `ptr`, if any (memory freed).
void forget_declared(const void* ptr);
// Entries of the built-in 8-bit code tables (code, qmap1/2, scales->code2).
constexpr int64_t kCodeEntries = 256;
// Bytes of one element of a dtype the caller has checked.
size_t dtype_bytes(int32_t dtype);
// When the context has the finite check on: the n elements of `x` (a float dtype) hold no NaN or
// infinity, else BNB_ERR_INVALID_ARGUMENT naming `name` and the first such index. Off: nothing.
bnb_status_t check_finite(bnb_context_t ctx, int32_t dtype, const void* x, int64_t n, const char* name,
                          void* stream);
// The backend runs `op` (bnb_op_t): it offers the op, or the ops the core composes it from.
bool backend_offers(const Backend& backend, int32_t op);
// One past the last bnb_op_t (bnb.h): the ops bnb_backend_get_capabilities reports.
constexpr int32_t kOpEnd = BNB_OP_INT8_LINEAR_OUTLIERS + 1;
// The context's backend runs `op`, else BNB_ERR_NOT_SUPPORTED naming `function`.
bnb_status_t check_offered(bnb_context_t ctx, int32_t op, const char* function);

const char* dtype_name(int32_t dtype);

}  // namespace bnb

#define BNB_CHECK(expr)                       \
  do {                                        \
    const bnb_status_t bnb_check_s_ = (expr); \
    if (bnb_check_s_ != BNB_SUCCESS) return bnb_check_s_; \
  } while (0)

#endif  // BNB_CORE_CONTEXT_H_

namespace bnb {
// Checks a caller's bnb_scales_t for a tensor of `nblocks` blocks and fills the backend's form.
bnb_status_t resolve_scales(bnb_context_t ctx, const bnb_scales_t* scales, int64_t nblocks,
                            bnb_scales_resolved_t* out);
}  // namespace bnb
