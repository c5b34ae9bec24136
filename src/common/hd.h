// Functions shared by host and device code: the one spelling of "callable from both" for the
// headers of src/common that the GPU kernels include (nvcc and hipcc compile them as device code
// too; a C++ compiler sees plain inline functions).
#ifndef BNB_COMMON_HD_H_
#define BNB_COMMON_HD_H_

#if defined(__CUDACC__) || defined(__HIPCC__)
#define BNB_HD __host__ __device__
#define BNB_HD_INLINE __host__ __device__ __forceinline__
#else
#define BNB_HD
#define BNB_HD_INLINE inline
#endif

#endif  // BNB_COMMON_HD_H_
