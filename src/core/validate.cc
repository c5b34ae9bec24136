#include "context.h"

namespace bnb {

bnb_status_t check_context(bnb_context_t ctx) {
  if (ctx == nullptr) return fail(BNB_ERR_INVALID_ARGUMENT, "ctx is NULL: create one with bnb_context_create");
  if (ctx->magic != bnb_context::kMagic || ctx->backend == nullptr)
    return fail(BNB_ERR_INVALID_ARGUMENT, "ctx is not a live bnb context (destroyed or corrupted)");
  return BNB_SUCCESS;
}

bnb_status_t check_not_null(const void* ptr, const char* name) {
  if (ptr == nullptr) return failf(BNB_ERR_INVALID_ARGUMENT, "%s is NULL", name);
  return BNB_SUCCESS;
}

bnb_status_t check_count(int64_t n, const char* name) {
  if (n <= 0) return failf(BNB_ERR_INVALID_ARGUMENT, "%s = %lld: must be positive", name, static_cast<long long>(n));
  if (n > kMaxElements)
    return failf(BNB_ERR_INVALID_ARGUMENT, "%s = %lld is too large (at most 2^60)", name, static_cast<long long>(n));
  return BNB_SUCCESS;
}

bnb_status_t check_product(int64_t a, int64_t b, const char* what, int64_t* out) {
  if (a > kMaxElements / b)
    return failf(BNB_ERR_INVALID_ARGUMENT, "%s = %lld x %lld overflows (at most 2^60 elements)", what,
                 static_cast<long long>(a), static_cast<long long>(b));
  *out = a * b;
  return BNB_SUCCESS;
}

const char* dtype_name(int32_t dtype) {
  switch (dtype) {
    case BNB_F32: return "F32";
    case BNB_F16: return "F16";
    case BNB_BF16: return "BF16";
    case BNB_U8: return "U8";
    case BNB_I8: return "I8";
    case BNB_I32: return "I32";
    default: return "unknown";
  }
}

bnb_status_t check_float_dtype(int32_t dtype, const char* name) {
  if (dtype == BNB_F32 || dtype == BNB_F16 || dtype == BNB_BF16) return BNB_SUCCESS;
  return failf(BNB_ERR_INVALID_ARGUMENT, "%s %d (%s) is not supported: use BNB_F32, BNB_F16 or BNB_BF16", name,
               dtype, dtype_name(dtype));
}

bnb_status_t check_quant_type(int32_t quant_type) {
  if (quant_type == BNB_FP4 || quant_type == BNB_NF4) return BNB_SUCCESS;
  return failf(BNB_ERR_INVALID_ARGUMENT, "quant_type %d is not supported: use BNB_FP4 (1) or BNB_NF4 (2)",
               quant_type);
}

bnb_status_t check_blocksize(int64_t blocksize, int64_t lo, int64_t hi, const char* name) {
  if (blocksize < lo || blocksize > hi || (blocksize & (blocksize - 1)) != 0)
    return failf(BNB_ERR_INVALID_ARGUMENT, "%s %lld is not supported: use a power of two from %lld to %lld", name,
                 static_cast<long long>(blocksize), static_cast<long long>(lo), static_cast<long long>(hi));
  return BNB_SUCCESS;
}

size_t dtype_bytes(int32_t dtype) {
  switch (dtype) {
    case BNB_F16: case BNB_BF16: return 2;
    case BNB_U8: case BNB_I8: return 1;
    default: return 4;  // F32, I32
  }
}

// Where a pointer lives, against the context's backend (check_memory's first part).
static bnb_status_t check_memory_kind(bnb_context_t ctx, const void* ptr, const char* name) {
  if (ctx->kind == BNB_BACKEND_CPU) {
    // Host context: reject memory that a loaded GPU backend recognises as device-only.
    for (const Backend& b : backends()) {
      if (!b.available() || b.ops.pointer_kind == nullptr) continue;
      int32_t device = -1;
      if (b.ops.pointer_kind(ptr, &device) == BNB_PTR_DEVICE)
        return failf(BNB_ERR_INVALID_ARGUMENT,
                     "%s is %s device memory (device %d) but the context is cpu: pass host memory or use a %s "
                     "context",
                     name, b.name.c_str(), device, b.name.c_str());
    }
    return BNB_SUCCESS;
  }
  const Backend& b = *ctx->backend;
  if (b.ops.pointer_kind == nullptr) return BNB_SUCCESS;
  int32_t device = -1;
  const int32_t kind = b.ops.pointer_kind(ptr, &device);
  if (kind == BNB_PTR_MANAGED) return BNB_SUCCESS;
  if (kind == BNB_PTR_DEVICE) {
    if (device == ctx->device) return BNB_SUCCESS;
    return failf(BNB_ERR_INVALID_ARGUMENT, "%s is memory of %s device %d but the context is on device %d", name,
                 b.name.c_str(), device, ctx->device);
  }
  return failf(BNB_ERR_INVALID_ARGUMENT,
               "%s is host memory but the context is %s:%d: pass device memory (e.g. from bnb_malloc)", name,
               b.name.c_str(), ctx->device);
}

bnb_status_t check_memory(bnb_context_t ctx, const void* ptr, const char* name, size_t element_bytes,
                          int64_t count) {
  if (ptr == nullptr) return BNB_SUCCESS;
  if (element_bytes > 1 && reinterpret_cast<uintptr_t>(ptr) % element_bytes != 0)
    return failf(BNB_ERR_INVALID_ARGUMENT, "%s (%p) is not aligned to its element size (%zu bytes)", name, ptr,
                 element_bytes);
  BNB_CHECK(check_memory_kind(ctx, ptr, name));
  return check_declared(ptr, name, element_bytes, count);
}

bnb_status_t check_array(bnb_context_t ctx, const void* ptr, const char* name, size_t element_bytes,
                         int64_t count) {
  BNB_CHECK(check_not_null(ptr, name));
  return check_memory(ctx, ptr, name, element_bytes, count);
}

bool backend_offers(const Backend& backend, int32_t op) {
  const bnb_backend_ops_t& o = backend.ops;
  switch (op) {
    case BNB_OP_QUANTIZE_BLOCKWISE: return o.quantize_blockwise != nullptr;
    case BNB_OP_DEQUANTIZE_BLOCKWISE: return o.dequantize_blockwise != nullptr;
    case BNB_OP_QUANTIZE_4BIT: return o.quantize_4bit != nullptr;
    case BNB_OP_DEQUANTIZE_4BIT: return o.dequantize_4bit != nullptr;
    case BNB_OP_COMPRESS_ABSMAX: return o.compress_absmax != nullptr;
    case BNB_OP_GEMM_4BIT: return o.gemm_4bit != nullptr;
    case BNB_OP_INT8_VECTORWISE_QUANT: return o.int8_vectorwise_quant != nullptr;
    case BNB_OP_INT8_OUTLIER_COLUMNS: return o.int8_outlier_columns != nullptr;
    case BNB_OP_INT8_MATMUL: return o.int8_matmul != nullptr;
    case BNB_OP_INT8_MM_DEQUANT: return o.int8_mm_dequant != nullptr;
    case BNB_OP_INT8_LINEAR:  // else the core runs the three steps in turn
      return o.int8_linear != nullptr ||
             (o.int8_vectorwise_quant != nullptr && o.int8_matmul != nullptr && o.int8_mm_dequant != nullptr);
    case BNB_OP_OPTIMIZER_UPDATE: return o.optimizer_update != nullptr;  // multi: else one call per tensor
    case BNB_OP_PAGED_MEMORY:  // paged memory on the CPU is host memory (api_ops.cc)
      return backend.kind == BNB_BACKEND_CPU ||
             (o.paged_alloc != nullptr && o.paged_free != nullptr && o.paged_prefetch != nullptr);
    case BNB_OP_CHECK_FINITE: return o.find_nonfinite != nullptr;
    case BNB_OP_GEMM_4BIT_TRANSPOSED: return o.gemm_4bit_transposed != nullptr;
    case BNB_OP_INT8_LINEAR_OUTLIERS: return o.int8_linear_outliers != nullptr;
    default: return false;
  }
}

bnb_status_t check_offered(bnb_context_t ctx, int32_t op, const char* function) {
  if (backend_offers(*ctx->backend, op)) return BNB_SUCCESS;
  return failf(BNB_ERR_NOT_SUPPORTED, "%s is not supported by the %s backend", function,
               ctx->backend->name.c_str());
}

bnb_status_t check_finite(bnb_context_t ctx, int32_t dtype, const void* x, int64_t n, const char* name,
                          void* stream) {
  if (!ctx->check_finite) return BNB_SUCCESS;
  const auto find = ctx->backend->ops.find_nonfinite;
  if (find == nullptr)
    return failf(BNB_ERR_NOT_SUPPORTED,
                 "the finite check (options.check_finite or BNB_CHECK_FINITE=1) is not supported by the %s backend",
                 ctx->backend->name.c_str());
  int64_t first = -1;
  BNB_CHECK(find(ctx->impl, dtype, x, n, &first, stream));
  if (first < 0) return BNB_SUCCESS;
  return failf(BNB_ERR_INVALID_ARGUMENT,
               "%s[%lld] is not finite (NaN or infinity); nothing was written (the finite check is on: "
               "options.check_finite or BNB_CHECK_FINITE=1)",
               name, static_cast<long long>(first));
}

}  // namespace bnb

namespace bnb {

bnb_status_t resolve_scales(bnb_context_t ctx, const bnb_scales_t* scales, int64_t nblocks,
                            bnb_scales_resolved_t* out) {
  BNB_CHECK(check_not_null(scales, "scales"));
  if (scales->struct_size < sizeof(bnb_scales_t))
    return failf(BNB_ERR_INVALID_ARGUMENT,
                 "scales->struct_size %u is smaller than sizeof(bnb_scales_t) = %zu: call bnb_scales_init first",
                 scales->struct_size, sizeof(bnb_scales_t));
  *out = bnb_scales_resolved_t{};
  if (scales->absmax != nullptr) {
    if (scales->absmax_q != nullptr || scales->absmax2 != nullptr || scales->offset != nullptr)
      return fail(BNB_ERR_INVALID_ARGUMENT,
                  "scales: set either absmax (plain) or absmax_q/absmax2/offset (nested), not both");
    BNB_CHECK(check_memory(ctx, scales->absmax, "scales->absmax", nblocks));
    out->absmax = scales->absmax;
    return BNB_SUCCESS;
  }
  if (scales->absmax_q == nullptr)
    return fail(BNB_ERR_INVALID_ARGUMENT, "scales: absmax and absmax_q are both NULL (plain or nested scales needed)");
  BNB_CHECK(check_blocksize(scales->blocksize2, kBlocksize8Min, kBlocksize8Max, "scales->blocksize2"));
  BNB_CHECK(check_array(ctx, scales->absmax_q, "scales->absmax_q", nblocks));
  BNB_CHECK(check_array(ctx, scales->absmax2, "scales->absmax2", ceil_div(nblocks, scales->blocksize2)));
  BNB_CHECK(check_array(ctx, scales->offset, "scales->offset", 1));
  BNB_CHECK(check_memory(ctx, scales->code2, "scales->code2", kCodeEntries));
  out->absmax_q = scales->absmax_q;
  out->absmax2 = scales->absmax2;
  out->offset = scales->offset;
  out->blocksize2 = scales->blocksize2;
  out->code2 = scales->code2 != nullptr ? scales->code2
                                        : ctx->backend->ops.default_code(ctx->impl, BNB_CODE_DYNAMIC_SIGNED);
  return BNB_SUCCESS;
}

}  // namespace bnb
