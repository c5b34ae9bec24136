// Kernels of the LLM.int8() family (docs/FORMATS.md §6): row-wise int8 quantization with
// outlier columns, the outlier column list, a bandwidth-bound int8 product for few rows of A
// (and for every shape cuBLASLt can't take), and the dequantization of the int32 product.
// Numerics are the reference's fast-math binary32 (gpu_port.h: *_ftz helpers, rcp.approx).
#ifndef BNB_GPU_INT8_KERNELS_CUH_
#define BNB_GPU_INT8_KERNELS_CUH_

#include <cstdint>

#include "gpu_port.h"

namespace bnb {
namespace gpu {
namespace int8 {

// dtype tags, numbered as bnb_dtype_t.
constexpr int kF32 = 0;
constexpr int kF16 = 1;
constexpr int kBF16 = 2;

// RN32(1 / (127 * 127)) (docs/FORMATS.md §6.3).
constexpr uint32_t kDequantScaleBits = 0x38820610u;

template <int D>
__device__ __forceinline__ float load_f32(const void* p, int64_t i) {
  if constexpr (D == kF32) {
    return static_cast<const float*>(p)[i];
  } else if constexpr (D == kF16) {
    return __half2float(static_cast<const __half*>(p)[i]);
  } else {
    return __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(p)[i]) << 16);
  }
}

__device__ __forceinline__ uint16_t f32_to_f16_bits(float f) { return __half_as_ushort(__float2half_rn(f)); }
__device__ __forceinline__ float f16_bits_to_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  const uint32_t b = __float_as_uint(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float fma_ftz(float a, float b, float c) {
#if defined(BNB_GPU_HIP)
  return __fmaf_rn(a, b, c);
#else
  float r;
  asm("fma.rn.ftz.f32 %0, %1, %2, %3;" : "=f"(r) : "f"(a), "f"(b), "f"(c));
  return r;
#endif
}

// Signed 4 x int8 dot product accumulated into c.
__device__ __forceinline__ int32_t dot4(int32_t a, int32_t b, int32_t c) {
#if defined(BNB_GPU_HIP)
  for (int i = 0; i < 4; ++i) c += static_cast<int32_t>(static_cast<int8_t>(a >> (8 * i))) *
                                  static_cast<int32_t>(static_cast<int8_t>(b >> (8 * i)));
  return c;
#else
  return __dp4a(a, b, c);
#endif
}

template <int kThreads>
__device__ __forceinline__ float block_max(float v, float* smem) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off /= 2) v = gpu_max_ftz(v, gpu_shfl_xor(v, off, kWarpSize));
  constexpr int kWarps = kThreads / kWarpSize;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  __syncthreads();  // smem may still be read by the previous row
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = smem[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) v = gpu_max_ftz(v, smem[w]);
  return v;
}

// One row per block iteration: SCB = NaN-dropping max over |x| < t (all without outliers),
// s = RN32(127 * RCP(SCB)), q = rint(RN32(x * s)) with elements |x| >= t written as 0.
// The conversion gives 0 for NaN (also 0 * inf when SCB = 0), and saturates.
template <int D, int kThreads>
__global__ void __launch_bounds__(kThreads)
    row_quant_kernel(const void* __restrict__ A, int64_t rows, int64_t cols, bool outliers, float t,
                     int8_t* __restrict__ q, float* __restrict__ row_stats) {
  __shared__ float smem[kThreads / kWarpSize];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t base = r * cols;
    float m = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
      const float a = fabsf(load_f32<D>(A, base + c));
      if (!outliers || a < t) m = gpu_max_ftz(m, a);
    }
    m = block_max<kThreads>(m, smem);
    if (threadIdx.x == 0) row_stats[r] = m;
    const float s = gpu_mul_ftz(127.0f, gpu_block_reciprocal(m));
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
      const float x = load_f32<D>(A, base + c);
      int v = __float2int_rn(gpu_mul_ftz(x, s));
      v = v < -128 ? -128 : (v > 127 ? 127 : v);
      if (outliers && fabsf(x) >= t) v = 0;
      q[base + c] = static_cast<int8_t>(v);
    }
  }
}

// Columns holding any |x| >= t. Block (32, kRowPhases): x = column of a 32-column tile, y = row
// phase. kZero: writes 0 over the whole column of q; else stores the flag per column.
template <int D, bool kZero>
__global__ void outlier_columns_kernel(const void* __restrict__ A, int64_t rows, int64_t cols, float t,
                                       int8_t* __restrict__ q, int32_t* __restrict__ flags) {
  __shared__ int32_t hit[32];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  if (threadIdx.y == 0) hit[threadIdx.x] = 0;
  __syncthreads();
  bool any = false;
  if (c < cols) {
    for (int64_t r = threadIdx.y; r < rows && !any; r += blockDim.y) any = fabsf(load_f32<D>(A, r * cols + c)) >= t;
  }
  if (any) hit[threadIdx.x] = 1;
  __syncthreads();
  if (c >= cols) return;
  if constexpr (kZero) {
    if (hit[threadIdx.x]) {
      for (int64_t r = threadIdx.y; r < rows; r += blockDim.y) q[r * cols + c] = 0;
    }
  } else {
    if (threadIdx.y == 0) flags[c] = hit[threadIdx.x];
  }
}

// Ascending indices of the flagged columns (one block of 1024 threads); count = how many.
__global__ void __launch_bounds__(1024)
    compact_columns_kernel(const int32_t* __restrict__ flags, int64_t cols, int32_t* __restrict__ columns,
                           int64_t capacity, int64_t* __restrict__ count) {
  __shared__ int32_t warp_totals[1024 / 32];
  int64_t base = 0;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t c0 = 0; c0 < cols; c0 += 1024) {
    const int64_t c = c0 + threadIdx.x;
    const bool f = c < cols && flags[c] != 0;
#if defined(BNB_GPU_HIP)
    // Wave64: count within aligned groups of 32 lanes through shared memory.
    __shared__ int32_t bits[1024];
    bits[threadIdx.x] = f;
    __syncthreads();
    int before = 0, total = 0;
    for (int i = 0; i < 32; ++i) {
      const int b = bits[warp * 32 + i];
      before += (i < lane) ? b : 0;
      total += b;
    }
#else
    const unsigned ballot = __ballot_sync(0xffffffffu, f);
    const int before = __popc(ballot & ((1u << lane) - 1u));
    const int total = __popc(ballot);
#endif
    if (lane == 0) warp_totals[warp] = total;
    __syncthreads();
    int64_t offset = base;
    for (int w = 0; w < warp; ++w) offset += warp_totals[w];
    if (f && offset + before < capacity) columns[offset + before] = static_cast<int32_t>(c);
    int64_t all = 0;
    for (int w = 0; w < 1024 / 32; ++w) all += warp_totals[w];
    base += all;
    __syncthreads();
  }
  if (threadIdx.x == 0) *count = base;
}

// C[m, n] = sum_k A[m, k] * B[n, k]. One warp per kRowsB rows of B; lanes split K. Each chunk
// of B is loaded once and multiplied with up to kMaxM rows of A (A stays in L1/L2); larger M
// walks A in tiles of kMaxM, reloading B from cache. kVec: 16-byte loads (K % 16 == 0 and 16-byte
// aligned A and B), else byte loads.
template <int kMaxM, int kRowsB, bool kVec>
__global__ void __launch_bounds__(256)
    rows_matmul_kernel(const int8_t* __restrict__ A, const int8_t* __restrict__ B, int32_t* __restrict__ C,
                       int64_t M, int64_t N, int64_t K) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int64_t n0 = warp * kRowsB;
  if (n0 >= N) return;
  for (int64_t m0 = 0; m0 < M; m0 += kMaxM) {
    int32_t acc[kMaxM][kRowsB];
#pragma unroll
    for (int i = 0; i < kMaxM; ++i)
#pragma unroll
      for (int j = 0; j < kRowsB; ++j) acc[i][j] = 0;
    if constexpr (kVec) {
#pragma unroll 2
      for (int64_t k = int64_t{lane} * 16; k < K; k += int64_t{kWarpSize} * 16) {
        int4 b[kRowsB];
#pragma unroll
        for (int j = 0; j < kRowsB; ++j) {
          b[j] = n0 + j < N ? __ldg(reinterpret_cast<const int4*>(B + (n0 + j) * K + k)) : make_int4(0, 0, 0, 0);
        }
#pragma unroll
        for (int i = 0; i < kMaxM; ++i) {
          if (m0 + i < M) {
            const int4 a = __ldg(reinterpret_cast<const int4*>(A + (m0 + i) * K + k));
#pragma unroll
            for (int j = 0; j < kRowsB; ++j) {
              int32_t s = acc[i][j];
              s = dot4(a.x, b[j].x, s);
              s = dot4(a.y, b[j].y, s);
              s = dot4(a.z, b[j].z, s);
              s = dot4(a.w, b[j].w, s);
              acc[i][j] = s;
            }
          }
        }
      }
    } else {
      for (int64_t k = lane; k < K; k += kWarpSize) {
        int32_t b[kRowsB];
#pragma unroll
        for (int j = 0; j < kRowsB; ++j) b[j] = n0 + j < N ? B[(n0 + j) * K + k] : 0;
#pragma unroll
        for (int i = 0; i < kMaxM; ++i) {
          if (m0 + i < M) {
            const int32_t a = A[(m0 + i) * K + k];
#pragma unroll
            for (int j = 0; j < kRowsB; ++j) acc[i][j] += a * b[j];
          }
        }
      }
    }
    // Warp sums; lane (i * kRowsB + j) % warp writes C[m0 + i, n0 + j].
#pragma unroll
    for (int i = 0; i < kMaxM; ++i) {
#pragma unroll
      for (int j = 0; j < kRowsB; ++j) {
        int32_t s = acc[i][j];
#pragma unroll
        for (int off = kWarpSize / 2; off > 0; off /= 2) {
#if defined(BNB_GPU_HIP)
          s += __shfl_xor(s, off, kWarpSize);
#else
          s += __shfl_xor_sync(0xffffffffu, s, off, kWarpSize);
#endif
        }
        if (lane == (i * kRowsB + j) % kWarpSize && m0 + i < M && n0 + j < N) C[(m0 + i) * N + n0 + j] = s;
      }
    }
  }
}

// out[m, n] from the int32 product (docs/FORMATS.md §6.3): t = RN32(RN32(C * row) * col); fp16 bias fused
// (RN16(fma(t, K_DQ, bias))), else RN16(t * K_DQ) and a bias of out_dtype added in binary32 and
// rounded to fp16 again; then converted to out_dtype. Grid: x over tiles of kDequantCols columns
// (each thread kDequantCols / 256 of them, a warp's accesses contiguous), y over rows.
constexpr int kDequantCols = 1024;

template <int O, bool kBias>
__global__ void __launch_bounds__(256)
    dequant_kernel(const int32_t* __restrict__ C, const float* __restrict__ row_stats,
                   const float* __restrict__ col_stats, const void* __restrict__ bias, int64_t M, int64_t N,
                   void* __restrict__ out) {
  const float kdq = __uint_as_float(kDequantScaleBits);
  const int64_t n_tile = static_cast<int64_t>(blockIdx.x) * kDequantCols + threadIdx.x;
  for (int64_t m = blockIdx.y; m < M; m += gridDim.y) {
    const float rs = row_stats[m];
#pragma unroll
    for (int j = 0; j < kDequantCols / 256; ++j) {
      const int64_t n = n_tile + j * 256;
      if (n >= N) break;
      const int64_t e = m * N + n;
      const float t = gpu_mul_ftz(gpu_mul_ftz(__int2float_rn(C[e]), rs), col_stats[n]);
      uint16_t h;
      if constexpr (kBias && O == kF16) {
        h = f32_to_f16_bits(fma_ftz(t, kdq, load_f32<kF16>(bias, n)));
      } else {
        h = f32_to_f16_bits(gpu_mul_ftz(t, kdq));
        if constexpr (kBias) h = f32_to_f16_bits(gpu_add_ftz(f16_bits_to_f32(h), load_f32<O>(bias, n)));
      }
      if constexpr (O == kF16) {
        static_cast<uint16_t*>(out)[e] = h;
      } else if constexpr (O == kF32) {
        static_cast<float*>(out)[e] = f16_bits_to_f32(h);
      } else {
        static_cast<uint16_t*>(out)[e] = f32_to_bf16_bits(f16_bits_to_f32(h));
      }
    }
  }
}

}  // namespace int8
}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_INT8_KERNELS_CUH_
