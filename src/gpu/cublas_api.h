// The few cuBLAS entry points bnb uses (cublasGemmEx on a handle bound to a stream; handles
// created and destroyed), resolved
// from the shared library at run time so nothing links it: the CUDA plugin's large-M gemm_4bit
// path and the benchmarks' dense baselines share this loader. CUDA only.
#ifndef BNB_GPU_CUBLAS_API_H_
#define BNB_GPU_CUBLAS_API_H_

#include <cublas_v2.h>
#include <dlfcn.h>

namespace bnb {
namespace gpu {

struct CublasApi {
  bool ok = false;
  cublasStatus_t (*create)(cublasHandle_t*) = nullptr;
  cublasStatus_t (*destroy)(cublasHandle_t) = nullptr;
  cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t) = nullptr;
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
};

// libcublas.so.13, .12 or .so, whichever loads first; ok is false when none does or a symbol is
// missing. The library stays loaded for the life of the process.
inline CublasApi load_cublas_api() {
  CublasApi api;
  void* lib = nullptr;
  for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
    if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
  }
  if (lib == nullptr) return api;
  api.create = reinterpret_cast<decltype(api.create)>(dlsym(lib, "cublasCreate_v2"));
  api.destroy = reinterpret_cast<decltype(api.destroy)>(dlsym(lib, "cublasDestroy_v2"));
  api.set_stream = reinterpret_cast<decltype(api.set_stream)>(dlsym(lib, "cublasSetStream_v2"));
  api.gemm_ex = reinterpret_cast<decltype(api.gemm_ex)>(dlsym(lib, "cublasGemmEx"));
  api.ok = api.create != nullptr && api.destroy != nullptr && api.set_stream != nullptr && api.gemm_ex != nullptr;
  return api;
}

}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_CUBLAS_API_H_
