// Shared by the CUDA benchmark programs: stop with a message on the first failed CUDA call, time
// CUDA-graph replays with events, upload host data.
#ifndef BNB_BENCH_COMMON_BENCH_CHECK_H_
#define BNB_BENCH_COMMON_BENCH_CHECK_H_

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
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

// enqueue(i), i = 0 .. calls - 1, captured into one CUDA graph (each call may use its own copy of
// the data, e.g. more weight copies than the L2 cache holds), after two calls as warm-up outside
// the capture.
inline cudaGraphExec_t capture_calls(cudaStream_t stream, int calls, const std::function<void(int)>& enqueue) {
  for (int i = 0; i < std::min(calls, 2); ++i) enqueue(i);
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < calls; ++i) enqueue(i);
  cudaGraph_t graph;
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_OK(cudaGraphDestroy(graph));
  return exec;
}

// Milliseconds per call of capture_calls' graph: time_graph's median over `reps` replays, divided
// by `calls`.
inline double time_calls(cudaStream_t stream, int calls, int reps, const std::function<void(int)>& enqueue) {
  const cudaGraphExec_t exec = capture_calls(stream, calls, enqueue);
  const double ms = time_graph(exec, stream, reps) / calls;
  CUDA_OK(cudaGraphExecDestroy(exec));
  return ms;
}

// A device copy of `bytes` bytes of host memory (cudaMalloc; the caller frees it).
inline void* device_upload(const void* host, size_t bytes) {
  void* d = nullptr;
  CUDA_OK(cudaMalloc(&d, bytes));
  CUDA_OK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
  return d;
}

#endif  // BNB_BENCH_COMMON_BENCH_CHECK_H_
