// The CUDA driver API reached through dlopen, for GPU tests that need streams, graphs or managed
// memory of their own: the tests then need no CUDA toolkit to build and skip where libcuda is absent.
#ifndef BNB_TESTS_CUDA_DRIVER_H_
#define BNB_TESTS_CUDA_DRIVER_H_

#include <dlfcn.h>

#include <cstddef>

namespace bnb_test {

struct CudaDriver {
  void* lib = nullptr;
  int (*cuInit)(unsigned) = nullptr;
  int (*cuDevicePrimaryCtxRetain)(void**, int) = nullptr;
  int (*cuCtxSetCurrent)(void*) = nullptr;
  int (*cuStreamCreate)(void**, unsigned) = nullptr;
  int (*cuStreamDestroy)(void*) = nullptr;
  int (*cuStreamSynchronize)(void*) = nullptr;
  int (*cuStreamBeginCapture)(void*, int) = nullptr;
  int (*cuStreamEndCapture)(void*, void**) = nullptr;
  int (*cuGraphInstantiateWithFlags)(void**, void*, unsigned long long) = nullptr;
  int (*cuGraphLaunch)(void*, void*) = nullptr;
  int (*cuGraphExecDestroy)(void*) = nullptr;
  int (*cuGraphDestroy)(void*) = nullptr;
  int (*cuMemAllocManaged)(unsigned long long*, size_t, unsigned) = nullptr;
  int (*cuMemFree)(unsigned long long) = nullptr;

  template <typename F>
  bool get(F& f, const char* name, const char* alt = nullptr) {
    void* p = dlsym(lib, name);
    if (p == nullptr && alt != nullptr) p = dlsym(lib, alt);
    f = reinterpret_cast<F>(p);
    return p != nullptr;
  }

  // Resolves every entry point and makes device 0's primary context current; false if any step fails.
  bool load() {
    lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return false;
    const bool ok = get(cuInit, "cuInit") && get(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain") &&
                    get(cuCtxSetCurrent, "cuCtxSetCurrent") && get(cuStreamCreate, "cuStreamCreate") &&
                    get(cuStreamDestroy, "cuStreamDestroy_v2", "cuStreamDestroy") &&
                    get(cuStreamSynchronize, "cuStreamSynchronize") &&
                    get(cuStreamBeginCapture, "cuStreamBeginCapture_v2", "cuStreamBeginCapture") &&
                    get(cuStreamEndCapture, "cuStreamEndCapture") &&
                    get(cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags") &&
                    get(cuGraphLaunch, "cuGraphLaunch") && get(cuGraphExecDestroy, "cuGraphExecDestroy") &&
                    get(cuGraphDestroy, "cuGraphDestroy") && get(cuMemAllocManaged, "cuMemAllocManaged") &&
                    get(cuMemFree, "cuMemFree_v2", "cuMemFree");
    if (!ok) return false;
    void* ctx = nullptr;
    return cuInit(0) == 0 && cuDevicePrimaryCtxRetain(&ctx, 0) == 0 && cuCtxSetCurrent(ctx) == 0;
  }
};

}  // namespace bnb_test

#endif  // BNB_TESTS_CUDA_DRIVER_H_
