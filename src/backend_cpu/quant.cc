// The quantization family's ops: thin adapters from the plugin ABI to quant_kernels.h.
#include "plugin.h"
#include "quant_kernels.h"

namespace bnb {
namespace cpu {
namespace {

bnb_status_t op_quantize_blockwise(void* impl, int32_t dtype, const void* A, int64_t n, int64_t blocksize,
                                   const float* code, uint8_t* out, float* absmax, void* /*stream*/) {
  return guarded("quantize_blockwise", [&] {
    quantize_blockwise(context_of(impl)->pool, dtype, A, n, blocksize, code, out, absmax);
  });
}

bnb_status_t op_dequantize_blockwise(void* impl, const uint8_t* q, const float* absmax, const float* code,
                                     int64_t n, int64_t blocksize, int32_t out_dtype, void* out,
                                     void* /*stream*/) {
  return guarded("dequantize_blockwise", [&] {
    dequantize_blockwise(context_of(impl)->pool, q, absmax, code, n, blocksize, out_dtype, out);
  });
}

bnb_status_t op_quantize_4bit(void* impl, int32_t quant_type, int32_t dtype, const void* A, int64_t n,
                              int64_t blocksize, uint8_t* packed, float* absmax, void* /*stream*/) {
  return guarded("quantize_4bit", [&] {
    quantize_4bit(context_of(impl)->pool, quant_type, dtype, A, n, blocksize, packed, absmax);
  });
}

bnb_status_t op_dequantize_4bit(void* impl, int32_t quant_type, const uint8_t* packed,
                                const bnb_scales_resolved_t* scales, int64_t n, int64_t blocksize,
                                int32_t out_dtype, void* out, void* /*stream*/) {
  return guarded("dequantize_4bit", [&] {
    dequantize_4bit(context_of(impl)->pool, quant_type, packed, *scales, n, blocksize, out_dtype, out);
  });
}

bnb_status_t op_compress_absmax(void* impl, const float* absmax, int64_t nblocks, uint8_t* absmax_q,
                                float* absmax2, float* offset, void* /*stream*/) {
  return guarded("compress_absmax", [&] {
    compress_absmax(context_of(impl)->pool, absmax, nblocks, absmax_q, absmax2, offset);
  });
}

}  // namespace

void register_quant_ops(bnb_backend_ops_t* ops) {
  ops->quantize_blockwise = op_quantize_blockwise;
  ops->dequantize_blockwise = op_dequantize_blockwise;
  ops->quantize_4bit = op_quantize_4bit;
  ops->dequantize_4bit = op_dequantize_4bit;
  ops->compress_absmax = op_compress_absmax;
}

}  // namespace cpu
}  // namespace bnb
