// The CPU kernel of the 4-bit inference matmul (docs/OPS.md §4.1), callable without the plugin (the
// per-target tests and the benchmark link bnb_cpu_kernels directly). Arguments are assumed valid
// (the core checked them: M, N, K > 0, K % blocksize == 0, blocksize 32..4096 a power of two);
// std::bad_alloc may escape.
#ifndef BNB_BACKEND_CPU_GEMM4_KERNELS_H_
#define BNB_BACKEND_CPU_GEMM4_KERNELS_H_

#include <cstdint>

#include "backend_abi.h"
#include "thread_pool.h"

namespace bnb {
namespace cpu {

// out[M,N] = A[M,K] @ dequant(W)[N,K]^T (+ bias[N]). A, bias and out have `dtype` (BNB_F32,
// BNB_F16, BNB_BF16); W holds the packed nibbles of the row-major [N,K] weight (docs/FORMATS.md §3.4),
// scales its per-block absmax (plain or nested); quant_type BNB_NF4 or BNB_FP4. Products and
// sums are binary32 (weights decoded exactly as RN32(LUT[nibble] * absmax)), one rounding to
// dtype at the end.
void gemm_4bit(ThreadPool& pool, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
               const uint8_t* W, const bnb_scales_resolved_t& scales, int32_t quant_type, int64_t blocksize,
               const void* bias, void* out);

// out[M,K] = A[M,N] @ dequant(W)[N,K], the same packed weight and scales as gemm_4bit (the other
// orientation: bnb_gemm_4bit_transposed). Binary32 products and sums, one rounding at the end.
void gemm_4bit_transposed(ThreadPool& pool, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                          const uint8_t* W, const bnb_scales_resolved_t& scales, int32_t quant_type,
                          int64_t blocksize, void* out);

}  // namespace cpu
}  // namespace bnb

#endif  // BNB_BACKEND_CPU_GEMM4_KERNELS_H_
