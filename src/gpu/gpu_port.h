// The one place where CUDA and HIP differ. Kernels and launchers in src/gpu use only the gpu*
// names and macros below, so the same .cu files build with nvcc (CUDA plugin) and hipcc (HIP
// plugin). The HIP build defines BNB_GPU_HIP on the command line.
#ifndef BNB_GPU_GPU_PORT_H_
#define BNB_GPU_GPU_PORT_H_

#include <cstdint>

#if defined(BNB_GPU_HIP)
#include <hip/hip_fp16.h>
#include <hip/hip_runtime.h>

#define BNB_GPU_NAME "hip"
#define BNB_GPU_KIND BNB_BACKEND_HIP
using gpuError_t = hipError_t;
using gpuStream_t = hipStream_t;
using gpuDeviceProp = hipDeviceProp_t;
using gpuPointerAttributes = hipPointerAttribute_t;
#define gpuSuccess hipSuccess
#define gpuErrorNoDevice hipErrorNoDevice
#define gpuErrorInsufficientDriver hipErrorInsufficientDriver
#define gpuGetErrorName hipGetErrorName
#define gpuGetErrorString hipGetErrorString
#define gpuGetLastError hipGetLastError
#define gpuGetDeviceCount hipGetDeviceCount
#define gpuGetDeviceProperties hipGetDeviceProperties
#define gpuDeviceGetAttribute hipDeviceGetAttribute
#define gpuDevAttrMultiProcessorCount hipDeviceAttributeMultiprocessorCount
#define gpuSetDevice hipSetDevice
#define gpuGetDevice hipGetDevice
#define gpuDriverGetVersion hipDriverGetVersion
#define gpuRuntimeGetVersion hipRuntimeGetVersion
#define gpuMalloc hipMalloc
#define gpuFree hipFree
#define gpuMemcpy hipMemcpy
#define gpuMemcpyAsync hipMemcpyAsync
#define gpuMemsetAsync hipMemsetAsync
#define gpuMemcpyDefault hipMemcpyDefault
#define gpuMemcpyHostToDevice hipMemcpyHostToDevice
#define gpuStreamSynchronize hipStreamSynchronize
#define gpuPointerGetAttributes hipPointerGetAttributes
#define gpuOccupancyMaxActiveBlocksPerMultiprocessor hipOccupancyMaxActiveBlocksPerMultiprocessor
#define gpuFuncSetAttribute hipFuncSetAttribute
#define gpuFuncAttributeMaxDynamicSharedMemorySize hipFuncAttributeMaxDynamicSharedMemorySize
#define gpuMallocAsync hipMallocAsync
#define gpuFreeAsync hipFreeAsync
#define gpuDevAttrComputeCapabilityMajor hipDeviceAttributeComputeCapabilityMajor
#define gpuDevAttrConcurrentManagedAccess hipDeviceAttributeConcurrentManagedAccess
#define gpuMallocManaged(ptr, bytes) hipMallocManaged(ptr, bytes, hipMemAttachGlobal)
#define gpuMemset hipMemset
using gpuMemPool_t = hipMemPool_t;
#define gpuDeviceGetDefaultMemPool hipDeviceGetDefaultMemPool
#define gpuMemPoolSetAttribute hipMemPoolSetAttribute
#define gpuMemPoolAttrReleaseThreshold hipMemPoolAttrReleaseThreshold
// ROCm 5.x names the field memoryType and reports unregistered host memory as an error.
#define BNB_GPU_PTR_TYPE(attr) ((attr).memoryType)
#define BNB_GPU_PTR_IS_MANAGED(attr) ((attr).isManaged != 0)
#define gpuMemoryTypeDevice hipMemoryTypeDevice
#define gpuMemoryTypeHost hipMemoryTypeHost

#else  // CUDA
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define BNB_GPU_NAME "cuda"
#define BNB_GPU_KIND BNB_BACKEND_CUDA
using gpuError_t = cudaError_t;
using gpuStream_t = cudaStream_t;
using gpuDeviceProp = cudaDeviceProp;
using gpuPointerAttributes = cudaPointerAttributes;
#define gpuSuccess cudaSuccess
#define gpuErrorNoDevice cudaErrorNoDevice
#define gpuErrorInsufficientDriver cudaErrorInsufficientDriver
#define gpuGetErrorName cudaGetErrorName
#define gpuGetErrorString cudaGetErrorString
#define gpuGetLastError cudaGetLastError
#define gpuGetDeviceCount cudaGetDeviceCount
#define gpuGetDeviceProperties cudaGetDeviceProperties
#define gpuDeviceGetAttribute cudaDeviceGetAttribute
#define gpuDevAttrMultiProcessorCount cudaDevAttrMultiProcessorCount
#define gpuSetDevice cudaSetDevice
#define gpuGetDevice cudaGetDevice
#define gpuDriverGetVersion cudaDriverGetVersion
#define gpuRuntimeGetVersion cudaRuntimeGetVersion
#define gpuMalloc cudaMalloc
#define gpuFree cudaFree
#define gpuMemcpy cudaMemcpy
#define gpuMemcpyAsync cudaMemcpyAsync
#define gpuMemsetAsync cudaMemsetAsync
#define gpuMemcpyDefault cudaMemcpyDefault
#define gpuMemcpyHostToDevice cudaMemcpyHostToDevice
#define gpuStreamSynchronize cudaStreamSynchronize
#define gpuPointerGetAttributes cudaPointerGetAttributes
#define gpuOccupancyMaxActiveBlocksPerMultiprocessor cudaOccupancyMaxActiveBlocksPerMultiprocessor
#define gpuFuncSetAttribute cudaFuncSetAttribute
#define gpuFuncAttributeMaxDynamicSharedMemorySize cudaFuncAttributeMaxDynamicSharedMemorySize
#define gpuMallocAsync cudaMallocAsync
#define gpuFreeAsync cudaFreeAsync
#define gpuDevAttrComputeCapabilityMajor cudaDevAttrComputeCapabilityMajor
#define gpuDevAttrConcurrentManagedAccess cudaDevAttrConcurrentManagedAccess
#define gpuMallocManaged(ptr, bytes) cudaMallocManaged(ptr, bytes, cudaMemAttachGlobal)
#define gpuMemset cudaMemset
using gpuMemPool_t = cudaMemPool_t;
#define gpuDeviceGetDefaultMemPool cudaDeviceGetDefaultMemPool
#define gpuMemPoolSetAttribute cudaMemPoolSetAttribute
#define gpuMemPoolAttrReleaseThreshold cudaMemPoolAttrReleaseThreshold
// CUDA only (no HIP counterpart used): events and capture status (the int8 product's algorithm
// search, int8_ops.cu) and programmatic dependent launch (int8_ops.cu)
using gpuEvent_t = cudaEvent_t;
#define gpuEventCreate cudaEventCreate
#define gpuEventRecord cudaEventRecord
#define gpuEventSynchronize cudaEventSynchronize
#define gpuEventElapsedTime cudaEventElapsedTime
#define gpuEventDestroy cudaEventDestroy
using gpuStreamCaptureStatus = cudaStreamCaptureStatus;
#define gpuStreamIsCapturing cudaStreamIsCapturing
#define gpuStreamCaptureStatusNone cudaStreamCaptureStatusNone
using gpuLaunchConfig_t = cudaLaunchConfig_t;
using gpuLaunchAttribute = cudaLaunchAttribute;
#define gpuLaunchKernelEx cudaLaunchKernelEx
#define gpuLaunchAttributeProgrammaticStreamSerialization cudaLaunchAttributeProgrammaticStreamSerialization
#define BNB_GPU_PTR_TYPE(attr) ((attr).type)
#define BNB_GPU_PTR_IS_MANAGED(attr) ((attr).type == cudaMemoryTypeManaged)
#define gpuMemoryTypeDevice cudaMemoryTypeDevice
#define gpuMemoryTypeHost cudaMemoryTypeHost
#endif

// A kernel parameter read with a run-time index in place (CUDA keeps it in the parameter space
// instead of copying it to local memory); HIP's kernel arguments are in memory already.
#if defined(BNB_GPU_HIP)
#define BNB_GRID_CONSTANT
#else
#define BNB_GRID_CONSTANT __grid_constant__
#endif

namespace bnb {
namespace gpu {

// Moves managed memory to `device` (the host when device < 0) ahead of use, in `stream`. (CUDA 13
// names the destination with a cudaMemLocation.)
inline gpuError_t gpu_prefetch_managed(const void* ptr, size_t bytes, int device, gpuStream_t stream) {
#if defined(BNB_GPU_HIP)
  return hipMemPrefetchAsync(ptr, bytes, device >= 0 ? device : hipCpuDeviceId, stream);
#elif CUDART_VERSION >= 13000
  cudaMemLocation loc{};
  loc.type = device >= 0 ? cudaMemLocationTypeDevice : cudaMemLocationTypeHost;
  loc.id = device >= 0 ? device : 0;
  return cudaMemPrefetchAsync(ptr, bytes, loc, 0, stream);
#else
  return cudaMemPrefetchAsync(ptr, bytes, device >= 0 ? device : cudaCpuDeviceId, stream);
#endif
}

// Threads of a warp (NVIDIA) or wavefront (AMD) in device code, known at compile time: 64 on
// gfx90a, 32 on gfx1030 and every NVIDIA GPU. Host code never needs it.
#if defined(BNB_GPU_HIP) && defined(__AMDGCN_WAVEFRONT_SIZE)
constexpr int kWarpSize = __AMDGCN_WAVEFRONT_SIZE;
#elif defined(BNB_GPU_HIP)
constexpr int kWarpSize = 64;  // host pass of hipcc: unused there
#else
constexpr int kWarpSize = 32;
#endif

#if defined(__CUDACC__) || defined(__HIPCC__)

// Exchange within aligned groups of `width` lanes (a power of two up to the warp size).
__device__ __forceinline__ float gpu_shfl_xor(float v, int mask, int width) {
#if defined(BNB_GPU_HIP)
  return __shfl_xor(v, mask, width);
#else
  return __shfl_xor_sync(0xffffffffu, v, mask, width);
#endif
}

// Lane `src` of this lane's aligned group of `width` lanes.
__device__ __forceinline__ float gpu_shfl(float v, int src, int width) {
#if defined(BNB_GPU_HIP)
  return __shfl(v, src, width);
#else
  return __shfl_sync(0xffffffffu, v, src, width);
#endif
}

// The reciprocal the reference takes of each block's absmax. CUDA: the fast-math instruction
// the reference's `1.0f / absmax` compiles to (docs/FORMATS.md §0, RCP). HIP: IEEE division,
// as the reference's ROCm build (rare last-ulp differences, documented in src/gpu/README.md).
__device__ __forceinline__ float gpu_block_reciprocal(float m) {
#if defined(BNB_GPU_HIP)
  return 1.0f / m;
#else
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(m));
  return r;
#endif
}

// binary32 arithmetic rounded once per operation (never contracted into a fused multiply-add)
// with denormal results and operands flushed to zero, as the reference's fast-math build does.
// HIP gets the flushing from -fgpu-flush-denormals-to-zero.
__device__ __forceinline__ float gpu_mul_ftz(float a, float b) {
#if defined(BNB_GPU_HIP)
  return __fmul_rn(a, b);
#else
  float r;
  asm("mul.rn.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#endif
}
__device__ __forceinline__ float gpu_add_ftz(float a, float b) {
#if defined(BNB_GPU_HIP)
  return __fadd_rn(a, b);
#else
  float r;
  asm("add.rn.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#endif
}
// fma(a, b, c) rounded once, denormals flushed (the LLM.int8() dequantization's bias step and the
// outlier sums, docs/OPS.md §5.10).
__device__ __forceinline__ float gpu_fma_ftz(float a, float b, float c) {
#if defined(BNB_GPU_HIP)
  return __fmaf_rn(a, b, c);
#else
  float r;
  asm("fma.rn.ftz.f32 %0, %1, %2, %3;" : "=f"(r) : "f"(a), "f"(b), "f"(c));
  return r;
#endif
}
// NaN-dropping maximum (a NaN operand yields the other one).
__device__ __forceinline__ float gpu_max_ftz(float a, float b) {
#if defined(BNB_GPU_HIP)
  return fmaxf(a, b);
#else
  float r;
  asm("max.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#endif
}

#if !defined(BNB_GPU_HIP)
// Asynchronous 16-byte copies from global to shared memory (sm_80 and later, CUDA only): issue
// any number, close them into a group with gpu_cp_async_commit, and wait until at most N of the
// committed groups are still in flight (N = 0: all of them). Both addresses 16-byte aligned.
__device__ __forceinline__ void gpu_cp_async16(void* smem, const void* gmem) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(gmem) : "memory");
}
__device__ __forceinline__ void gpu_cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void gpu_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
#endif

#endif  // __CUDACC__ || __HIPCC__

}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_GPU_PORT_H_
