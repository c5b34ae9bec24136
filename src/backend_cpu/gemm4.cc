// The 4-bit matmul family's op: a thin adapter from the plugin ABI to gemm4_kernels.h.
#include "gemm4_kernels.h"
#include "plugin.h"

namespace bnb {
namespace cpu {
namespace {

bnb_status_t op_gemm_4bit(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                          const uint8_t* W, const bnb_scales_resolved_t* scales, int32_t quant_type,
                          int64_t blocksize, const void* bias, void* out, void* /*stream*/) {
  return guarded("gemm_4bit", [&] {
    gemm_4bit(context_of(impl)->pool, dtype, M, N, K, A, W, *scales, quant_type, blocksize, bias, out);
  });
}

bnb_status_t op_gemm_4bit_transposed(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                                     const uint8_t* W, const bnb_scales_resolved_t* scales, int32_t quant_type,
                                     int64_t blocksize, void* out, void* /*stream*/) {
  return guarded("gemm_4bit_transposed", [&] {
    gemm_4bit_transposed(context_of(impl)->pool, dtype, M, N, K, A, W, *scales, quant_type, blocksize, out);
  });
}

}  // namespace

void register_gemm4_ops(bnb_backend_ops_t* ops) {
  ops->gemm_4bit = op_gemm_4bit;
  ops->gemm_4bit_transposed = op_gemm_4bit_transposed;
}

}  // namespace cpu
}  // namespace bnb
