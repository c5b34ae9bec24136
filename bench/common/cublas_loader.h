// cuBLAS for the dense baselines of the CUDA benchmarks, loaded at run time (only its header is
// needed to build), so the programs run wherever the library can be found.
#ifndef BNB_BENCH_COMMON_CUBLAS_LOADER_H_
#define BNB_BENCH_COMMON_CUBLAS_LOADER_H_

#include <cublas_v2.h>
#include <dlfcn.h>

struct Cublas {
  bool ok = false;
  cublasStatus_t (*create)(cublasHandle_t*) = nullptr;
  cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t) = nullptr;
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
  cublasHandle_t handle = nullptr;

  bool load(cudaStream_t stream) {
    void* lib = nullptr;
    for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
      if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
    }
    if (lib == nullptr) return false;
    create = reinterpret_cast<decltype(create)>(dlsym(lib, "cublasCreate_v2"));
    set_stream = reinterpret_cast<decltype(set_stream)>(dlsym(lib, "cublasSetStream_v2"));
    gemm_ex = reinterpret_cast<decltype(gemm_ex)>(dlsym(lib, "cublasGemmEx"));
    ok = create != nullptr && set_stream != nullptr && gemm_ex != nullptr && create(&handle) == CUBLAS_STATUS_SUCCESS &&
         set_stream(handle, stream) == CUBLAS_STATUS_SUCCESS;
    return ok;
  }
};

#endif  // BNB_BENCH_COMMON_CUBLAS_LOADER_H_
