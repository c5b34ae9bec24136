// cuBLAS for the dense baselines of the CUDA benchmarks, loaded at run time (only its header is
// needed to build), so the programs run wherever the library can be found.
#ifndef BNB_BENCH_COMMON_CUBLAS_LOADER_H_
#define BNB_BENCH_COMMON_CUBLAS_LOADER_H_

#include "cublas_api.h"  // src/gpu

struct Cublas : bnb::gpu::CublasApi {
  cublasHandle_t handle = nullptr;

  bool load(cudaStream_t stream) {
    static_cast<bnb::gpu::CublasApi&>(*this) = bnb::gpu::load_cublas_api();
    ok = ok && create(&handle) == CUBLAS_STATUS_SUCCESS && set_stream(handle, stream) == CUBLAS_STATUS_SUCCESS;
    return ok;
  }
};

#endif  // BNB_BENCH_COMMON_CUBLAS_LOADER_H_
