// Shared by the CUDA benchmark programs: stop with a message on the first failed CUDA or bnb call.
#ifndef BNB_BENCH_COMMON_BENCH_CHECK_H_
#define BNB_BENCH_COMMON_BENCH_CHECK_H_

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "bnb.h"

#define CUDA_OK(expr)                                                                            \
  do {                                                                                           \
    const cudaError_t e_ = (expr);                                                               \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

#define BNB_OK(expr)                                                                               \
  do {                                                                                             \
    const bnb_status_t s_ = (expr);                                                                \
    if (s_ != BNB_SUCCESS) {                                                                       \
      std::fprintf(stderr, "%s:%d %s: %s: %s\n", __FILE__, __LINE__, #expr, bnb_status_string(s_), \
                   bnb_last_error_message());                                                      \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)

#endif  // BNB_BENCH_COMMON_BENCH_CHECK_H_
