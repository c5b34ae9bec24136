// The LLM.int8() product's choice of kernel: oneDNN's s8 x s8 -> s32 matmul (onednn.h) for the
// large-M shapes, the Highway kernel (int8_simd.cc) for small M and whenever oneDNN is missing or
// declines. B[N, K] row-major is read in place as B^T and packed by oneDNN per call (no cache
// keyed on user pointers: the caller may change B).
#include <cstdint>

#include "int8_kernels.h"
#include "onednn.h"

namespace bnb {
namespace cpu {

bool int8_matmul_onednn(int32_t threads, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                        int32_t* C) {
  const OnednnMatmul shape{M, N, K, OnednnType::kS8, OnednnType::kS8, OnednnType::kS32, OnednnType::kNone,
                           K,  K, N, true};
  return onednn_matmul(threads, shape, A, B, nullptr, C);
}

int64_t int8_rows_kernel_max_m() { return 4; }

void int8_matmul(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                 int32_t* C) {
  // Best first: oneDNN (when it could be loaded) above a few rows, the bandwidth-bound kernel
  // for the rest and whenever oneDNN is unavailable or declines.
  if (M > int8_rows_kernel_max_m() && int8_matmul_onednn(pool.num_threads(), M, N, K, A, B, C)) return;
  int8_matmul_rows(pool, M, N, K, A, B, C);
}

}  // namespace cpu
}  // namespace bnb
