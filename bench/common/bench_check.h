// Shared by the CUDA benchmark programs: stop with a message on the first failed CUDA call, and
// time CUDA-graph replays with events.
#ifndef BNB_BENCH_COMMON_BENCH_CHECK_H_
#define BNB_BENCH_COMMON_BENCH_CHECK_H_

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench_util.h"

#define CUDA_OK(expr)                                                                            \
  do {                                                                                           \
    const cudaError_t e_ = (expr);                                                               \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

// Median milliseconds of one `launch()` on `stream` (CUDA events around each), over `reps` runs
// after `warmups` untimed ones.
template <class F>
double time_events(cudaStream_t stream, int reps, int warmups, const F& launch) {
  for (int i = 0; i < warmups; ++i) launch();
  CUDA_OK(cudaStreamSynchronize(stream));
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    CUDA_OK(cudaEventRecord(a, stream));
    launch();
    CUDA_OK(cudaEventRecord(b, stream));
    CUDA_OK(cudaEventSynchronize(b));
    float ms = 0.0f;
    CUDA_OK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CUDA_OK(cudaEventDestroy(a));
  CUDA_OK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Median milliseconds of one replay of `graph`, over `reps` replays after one warm-up.
inline double time_graph(cudaGraphExec_t graph, cudaStream_t stream, int reps) {
  return time_events(stream, reps, 1, [&] { CUDA_OK(cudaGraphLaunch(graph, stream)); });
}

#endif  // BNB_BENCH_COMMON_BENCH_CHECK_H_
