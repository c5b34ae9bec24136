// Entry points: blockwise 8-bit, 4-bit and double quantization.
#include <cstring>

#include "context.h"

using namespace bnb;

namespace {

const float* code_or_default(bnb_context_t ctx, const float* code) {
  return code != nullptr ? code : ctx->backend->ops.default_code(ctx->impl, BNB_CODE_DYNAMIC_SIGNED);
}

}  // namespace

extern "C" {

BNB_API bnb_status_t bnb_quantize_blockwise(bnb_context_t ctx, int32_t dtype, const void* A, int64_t n,
                                            int64_t blocksize, const float* code, uint8_t* out, float* absmax,
                                            void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_float_dtype(dtype, "dtype"));
  BNB_CHECK(check_count(n, "n"));
  BNB_CHECK(check_blocksize(blocksize, kBlocksize8Min, kBlocksize8Max, "blocksize"));
  BNB_CHECK(check_array(ctx, A, "A", dtype_bytes(dtype), n));
  BNB_CHECK(check_memory(ctx, code, "code", kCodeEntries));
  BNB_CHECK(check_array(ctx, out, "out", n));
  BNB_CHECK(check_array(ctx, absmax, "absmax", ceil_div(n, blocksize)));
  BNB_CHECK(check_offered(ctx, BNB_OP_QUANTIZE_BLOCKWISE,
                          "bnb_quantize_blockwise"));
  BNB_CHECK(check_finite(ctx, dtype, A, n, "A", stream));
  return ctx->backend->ops.quantize_blockwise(ctx->impl, dtype, A, n, blocksize, code_or_default(ctx, code), out,
                                              absmax, stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_dequantize_blockwise(bnb_context_t ctx, const uint8_t* q, const float* absmax,
                                              const float* code, int64_t n, int64_t blocksize, int32_t out_dtype,
                                              void* out, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_float_dtype(out_dtype, "out_dtype"));
  BNB_CHECK(check_count(n, "n"));
  BNB_CHECK(check_blocksize(blocksize, kBlocksize8Min, kBlocksize8Max, "blocksize"));
  BNB_CHECK(check_array(ctx, q, "q", n));
  BNB_CHECK(check_array(ctx, absmax, "absmax", ceil_div(n, blocksize)));
  BNB_CHECK(check_memory(ctx, code, "code", kCodeEntries));
  BNB_CHECK(check_array(ctx, out, "out", dtype_bytes(out_dtype), n));
  BNB_CHECK(check_offered(ctx, BNB_OP_DEQUANTIZE_BLOCKWISE,
                          "bnb_dequantize_blockwise"));
  return ctx->backend->ops.dequantize_blockwise(ctx->impl, q, absmax, code_or_default(ctx, code), n, blocksize,
                                                out_dtype, out, stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_scales_init(bnb_scales_t* scales) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_not_null(scales, "scales"));
  std::memset(scales, 0, sizeof *scales);
  scales->struct_size = sizeof *scales;
  scales->blocksize2 = 256;
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_quantize_4bit(bnb_context_t ctx, int32_t quant_type, int32_t dtype, const void* A,
                                       int64_t n, int64_t blocksize, uint8_t* packed, float* absmax, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_quant_type(quant_type));
  BNB_CHECK(check_float_dtype(dtype, "dtype"));
  BNB_CHECK(check_count(n, "n"));
  BNB_CHECK(check_blocksize(blocksize, kBlocksize4Min, kBlocksize4Max, "blocksize"));
  BNB_CHECK(check_array(ctx, A, "A", dtype_bytes(dtype), n));
  BNB_CHECK(check_array(ctx, packed, "packed", ceil_div(n, 2)));
  BNB_CHECK(check_array(ctx, absmax, "absmax", ceil_div(n, blocksize)));
  BNB_CHECK(check_offered(ctx, BNB_OP_QUANTIZE_4BIT, "bnb_quantize_4bit"));
  BNB_CHECK(check_finite(ctx, dtype, A, n, "A", stream));
  return ctx->backend->ops.quantize_4bit(ctx->impl, quant_type, dtype, A, n, blocksize, packed, absmax, stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_dequantize_4bit(bnb_context_t ctx, int32_t quant_type, const uint8_t* packed,
                                         const bnb_scales_t* scales, int64_t n, int64_t blocksize,
                                         int32_t out_dtype, void* out, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_quant_type(quant_type));
  BNB_CHECK(check_float_dtype(out_dtype, "out_dtype"));
  BNB_CHECK(check_count(n, "n"));
  BNB_CHECK(check_blocksize(blocksize, kBlocksize4Min, kBlocksize4Max, "blocksize"));
  BNB_CHECK(check_array(ctx, packed, "packed", ceil_div(n, 2)));
  BNB_CHECK(check_array(ctx, out, "out", dtype_bytes(out_dtype), n));
  bnb_scales_resolved_t resolved;
  BNB_CHECK(resolve_scales(ctx, scales, ceil_div(n, blocksize), &resolved));
  BNB_CHECK(check_offered(ctx, BNB_OP_DEQUANTIZE_4BIT,
                          "bnb_dequantize_4bit"));
  return ctx->backend->ops.dequantize_4bit(ctx->impl, quant_type, packed, &resolved, n, blocksize, out_dtype, out,
                                           stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_compress_absmax(bnb_context_t ctx, const float* absmax, int64_t nblocks,
                                         uint8_t* absmax_q, float* absmax2, float* offset, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_count(nblocks, "nblocks"));
  BNB_CHECK(check_array(ctx, absmax, "absmax", nblocks));
  BNB_CHECK(check_array(ctx, absmax_q, "absmax_q", nblocks));
  BNB_CHECK(check_array(ctx, absmax2, "absmax2", ceil_div(nblocks, kAbsmaxBlock)));
  BNB_CHECK(check_array(ctx, offset, "offset", 1));
  BNB_CHECK(check_offered(ctx, BNB_OP_COMPRESS_ABSMAX,
                          "bnb_compress_absmax"));
  BNB_CHECK(check_finite(ctx, BNB_F32, absmax, nblocks, "absmax", stream));
  return ctx->backend->ops.compress_absmax(ctx->impl, absmax, nblocks, absmax_q, absmax2, offset, stream);
  BNB_API_GUARD_END
}

}  // extern "C"
