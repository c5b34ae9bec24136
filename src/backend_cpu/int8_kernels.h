// The CPU kernels of the LLM.int8() family (docs/FORMATS.md §6, docs/OPS.md §5), callable
// without the plugin (the benchmark links bnb_cpu_kernels directly). Arguments are assumed
// valid (the core checked them); std::bad_alloc may escape.
//
// Semantics decided here, beyond the one-line comments of bnb.h:
//  * threshold > 0 is first rounded to the input dtype (fp16: RN16, bf16: RNbf), as the
//    reference compares an fp16 tensor with a Python float in fp16. An element is an outlier
//    iff |x| >= that value; row_stats take the absmax over |x| < it, and every element of a
//    column holding an outlier is written as 0 in q (docs/FORMATS.md §6.1, what the golden
//    threshold-6.0 case shows; for rows == 1 this is "outliers written as 0").
//  * outlier columns: *count is the total number of outlier columns; the first
//    min(count, capacity) of them, ascending, go to `columns`.
//  * mm_dequant: bias has out_dtype. For fp16 it is fused (docs/FORMATS.md §6.3:
//    RN16(fma(t, K_DQ, bias))); for fp32 / bf16 it is added after the fp16 result, in binary32,
//    and rounded to fp16 again (the reference's handling of a non-fp16 bias), then converted.
#ifndef BNB_BACKEND_CPU_INT8_KERNELS_H_
#define BNB_BACKEND_CPU_INT8_KERNELS_H_

#include <cstdint>

#include "thread_pool.h"

namespace bnb {
namespace cpu {

// q[rows, cols] and row_stats[rows] of a fp32/fp16/bf16 matrix (docs/FORMATS.md §6.1).
void int8_vectorwise_quant(ThreadPool& pool, int32_t dtype, int64_t rows, int64_t cols, const void* A,
                           float threshold, int8_t* q, float* row_stats);

// Number of columns holding an element with |x| >= threshold (> 0); the first `capacity` of
// them, ascending, are written to `columns`.
int64_t int8_outlier_columns(ThreadPool& pool, int32_t dtype, int64_t rows, int64_t cols, const void* A,
                             float threshold, int32_t* columns, int64_t capacity);

// C[M, N] = A[M, K] @ B[N, K]^T, exact int32. Chooses oneDNN or the Highway kernel below.
void int8_matmul(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                 int32_t* C);

// The Highway kernel for any M: each row of B is read once and multiplied with every row of A
// (bandwidth-bound for small M, which is what it is chosen for).
void int8_matmul_rows(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                      int32_t* C);

// oneDNN's s8 x s8 -> s32 matmul on `threads` threads; false (nothing written) when oneDNN is
// unavailable or declines the problem.
bool int8_matmul_onednn(int32_t threads, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                        int32_t* C);

// out[M, N] (out_dtype) from the int32 product (docs/FORMATS.md §6.3); bias NULL or N values of out_dtype.
void int8_mm_dequant(ThreadPool& pool, int64_t M, int64_t N, const int32_t* C, const float* row_stats,
                     const float* col_stats, const void* bias, int32_t out_dtype, void* out);

// The outlier product of bnb_int8_linear_outliers (docs/OPS.md §5.10), added to out[M, N]
// (dtype, already the int8 layer's result): for each of the `count` columns c of A in
// `columns` (ascending), s = fma(A[m,c], RN_D(W[n,c] * SCB[n] * RN32(1/127)), s) in binary32
// with subnormals flushed, then out = RN_D(out + RN_D(s)). count == 0 leaves out untouched.
void int8_add_outlier_product(ThreadPool& pool, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                              const int8_t* W, const float* SCB, const int32_t* columns, int64_t count, void* out);

// Rows of A up to which int8_matmul uses int8_matmul_rows rather than oneDNN.
int64_t int8_rows_kernel_max_m();

}  // namespace cpu
}  // namespace bnb

#endif  // BNB_BACKEND_CPU_INT8_KERNELS_H_
