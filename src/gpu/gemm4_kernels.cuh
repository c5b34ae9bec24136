// Kernels of the 4-bit inference matmul (OPS 4.1): out[M,N] = A[M,K] @ dequant(W)[N,K]^T (+ bias).
//
// gemm4_simt_kernel<D, MB, ALIGNED>: the batch-1 GEMV (MB = 1) and small-batch (MB = 2..16)
//   kernel. One warp per weight row n; each lane streams 16-byte pieces of the row (32 weights,
//   always inside one quantization block since blocksize >= 32), up to four loads in flight,
//   decodes the nibbles in registers through a 16-entry table in shared memory and multiplies
//   them with MB rows of A held in shared memory as binary32 (staged once per block, swizzled so
//   the lanes' 16-byte reads are free of bank conflicts). Per piece the products are summed
//   unscaled, then scaled once by the block's absmax; binary32 accumulation, a warp tree sum,
//   one rounding to the output dtype with the bias added. blockIdx.y picks a tile of MB rows of
//   A, so any M works. No atomics, no host synchronisation.
// gemm4_dequantize_kernel<D>: weight rows [n0, n0 + rows) to dtype D in a workspace, each value
//   RN_D(RN32(LUT[nibble] * absmax)), for the large-M path (workspace x A through cuBLAS).
// gemm4_fill_bias_kernel<D>: out[m, n] = bias[n], so the library GEMM can add it with beta = 1.
#ifndef BNB_GPU_GEMM4_KERNELS_CUH_
#define BNB_GPU_GEMM4_KERNELS_CUH_

#include <cstdint>

#include "gpu_port.h"

namespace bnb {
namespace gpu {
namespace gemm4 {

// dtype tags, numbered as bnb_dtype_t, and the storage type of each.
constexpr int kF32 = 0;
constexpr int kF16 = 1;
constexpr int kBF16 = 2;
template <int D>
struct Elem {
  using T = uint16_t;
};
template <>
struct Elem<kF32> {
  using T = float;
};

// The 16-entry decode table, passed by value.
struct Table16 {
  float v[16];
};

constexpr int kGemm4Warps = 8;                      // warps per block of the SIMT kernel
constexpr int kGemm4PieceWeights = 32;              // weights per lane per 16-byte load
constexpr int kGemm4Unroll = 4;                     // loads in flight per lane
constexpr int kGemm4WarpStep = 32 * kGemm4PieceWeights;  // weights per warp per load round: 1024

// The scales of a 4-bit weight, as the core resolved them (backend_abi.h).
struct Gemm4Scales {
  const float* absmax;      // plain, or NULL
  const uint8_t* absmax_q;  // nested
  const float* absmax2;
  const float* code2;
  const float* offset;
  int log2_blocksize2;
};

__device__ __forceinline__ float gemm4_block_scale(const Gemm4Scales& s, int64_t b) {
  if (s.absmax != nullptr) return __ldg(s.absmax + b);
  const float c = __ldg(s.code2 + __ldg(s.absmax_q + b));
  const float m = __ldg(s.absmax2 + (b >> s.log2_blocksize2));
  return __fadd_rn(__fmul_rn(c, m), __ldg(s.offset));
}

// Word index of element k of a staged A row: k ^ (((k >> 5) & 7) << 2). A lane reads the 32
// consecutive elements [32 l, 32 l + 32) as eight 16-byte groups; the swizzle moves lane l's
// group j to group j ^ (l & 7), so the eight lanes of each quarter-warp hit distinct banks.
__device__ __forceinline__ int gemm4_swizzle(int k) { return k ^ (((k >> 5) & 7) << 2); }

// An element of dtype D widened to binary32, and binary32 rounded (RNE) to dtype D.
template <int D>
__device__ __forceinline__ float gemm4_to_f32(typename Elem<D>::T v) {
  if constexpr (D == kF32) {
    return v;
  } else if constexpr (D == kF16) {
    return __half2float(__ushort_as_half(v));
  } else {
    return __uint_as_float(static_cast<uint32_t>(v) << 16);
  }
}
template <int D>
__device__ __forceinline__ typename Elem<D>::T gemm4_from_f32(float f) {
  if constexpr (D == kF32) {
    return f;
  } else if constexpr (D == kF16) {
    return __half_as_ushort(__float2half_rn(f));
  } else {
    const uint32_t b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);  // quiet NaN
    return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
  }
}

template <bool ALIGNED>
__device__ __forceinline__ uint4 gemm4_load_piece(const uint8_t* __restrict__ p) {
  if constexpr (ALIGNED) {
#if defined(BNB_GPU_HIP)
    return *reinterpret_cast<const uint4*>(p);
#else
    return __ldcs(reinterpret_cast<const uint4*>(p));  // streamed: read once, evict first
#endif
  } else {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      w[i] = static_cast<uint32_t>(__ldg(p + 4 * i)) | (static_cast<uint32_t>(__ldg(p + 4 * i + 1)) << 8) |
             (static_cast<uint32_t>(__ldg(p + 4 * i + 2)) << 16) | (static_cast<uint32_t>(__ldg(p + 4 * i + 3)) << 24);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
  }
}

template <int D, int MB, bool ALIGNED>
__global__ void __launch_bounds__(kGemm4Warps * 32)
    gemm4_simt_kernel(const typename Elem<D>::T* __restrict__ A, const uint8_t* __restrict__ W, Gemm4Scales scales,
                      Table16 table, const typename Elem<D>::T* __restrict__ bias, typename Elem<D>::T* __restrict__ out,
                      int64_t M, int64_t N, int64_t K, int log2_blocksize, int kc) {
  extern __shared__ float smem[];
  float* __restrict__ a_s = smem;               // [MB][kc], swizzled rows
  float* __restrict__ lut = smem + MB * kc;     // [16]
  if (threadIdx.x < 16) lut[threadIdx.x] = table.v[threadIdx.x];

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * MB;
  const int mb = M - m0 < MB ? static_cast<int>(M - m0) : MB;
  const int64_t row_bytes = K / 2;
  const int64_t blocks_per_row = K >> log2_blocksize;
  const int nchunks = static_cast<int>((K + kc - 1) / kc);
  bool staged = false;

  for (int64_t nbase = static_cast<int64_t>(blockIdx.x) * kGemm4Warps; nbase < N;
       nbase += static_cast<int64_t>(gridDim.x) * kGemm4Warps) {  // uniform across the block
    const int64_t n = nbase + warp;
    const bool active = n < N;
    float acc[MB];
#pragma unroll
    for (int m = 0; m < MB; ++m) acc[m] = 0.0f;

    for (int c = 0; c < nchunks; ++c) {
      const int64_t k0 = static_cast<int64_t>(c) * kc;
      const int klen = K - k0 < kc ? static_cast<int>(K - k0) : kc;
      if (!staged || nchunks > 1) {
        __syncthreads();  // every warp is done with the previous chunk
        for (int i = static_cast<int>(threadIdx.x); i < MB * klen; i += kGemm4Warps * 32) {
          const int m = i / klen, k = i - m * klen;
          const float v = m < mb ? gemm4_to_f32<D>(A[(m0 + m) * K + k0 + k]) : 0.0f;
          a_s[m * kc + gemm4_swizzle(k)] = v;
        }
        __syncthreads();
        staged = true;
      }
      if (!active) continue;
      const uint8_t* __restrict__ wrow = W + n * row_bytes + k0 / 2;
      const int64_t block0 = n * blocks_per_row;
      for (int kk = lane * kGemm4PieceWeights; kk < klen; kk += kGemm4Unroll * kGemm4WarpStep) {
        uint4 piece[kGemm4Unroll];
        float scale[kGemm4Unroll];
#pragma unroll
        for (int u = 0; u < kGemm4Unroll; ++u) {
          const int k = kk + u * kGemm4WarpStep;
          if (k < klen) {
            piece[u] = gemm4_load_piece<ALIGNED>(wrow + k / 2);
            scale[u] = gemm4_block_scale(scales, block0 + ((k0 + k) >> log2_blocksize));
          }
        }
#pragma unroll
        for (int u = 0; u < kGemm4Unroll; ++u) {
          const int k = kk + u * kGemm4WarpStep;
          if (k >= klen) break;
          const uint32_t words[4] = {piece[u].x, piece[u].y, piece[u].z, piece[u].w};
          float part[MB];
#pragma unroll
          for (int m = 0; m < MB; ++m) part[m] = 0.0f;
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            // Word j holds elements k + 8j .. k + 8j + 7: byte b gives 2b (high nibble), 2b+1.
            float w[8];
#pragma unroll
            for (int b = 0; b < 4; ++b) {
              w[2 * b] = lut[(words[j] >> (8 * b + 4)) & 15u];
              w[2 * b + 1] = lut[(words[j] >> (8 * b)) & 15u];
            }
#pragma unroll
            for (int m = 0; m < MB; ++m) {
              const float* row = a_s + m * kc;
              const float4 a0 = *reinterpret_cast<const float4*>(row + gemm4_swizzle(k + 8 * j));
              const float4 a1 = *reinterpret_cast<const float4*>(row + gemm4_swizzle(k + 8 * j + 4));
              float p = part[m];
              p = __fmaf_rn(w[0], a0.x, p);
              p = __fmaf_rn(w[1], a0.y, p);
              p = __fmaf_rn(w[2], a0.z, p);
              p = __fmaf_rn(w[3], a0.w, p);
              p = __fmaf_rn(w[4], a1.x, p);
              p = __fmaf_rn(w[5], a1.y, p);
              p = __fmaf_rn(w[6], a1.z, p);
              p = __fmaf_rn(w[7], a1.w, p);
              part[m] = p;
            }
          }
#pragma unroll
          for (int m = 0; m < MB; ++m) acc[m] = __fmaf_rn(part[m], scale[u], acc[m]);
        }
      }
    }
    if (active) {
#pragma unroll
      for (int m = 0; m < MB; ++m) {
        float v = acc[m];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v += gpu_shfl_xor(v, off, 32);
        acc[m] = v;
      }
      if (lane == 0) {
        const float b = bias != nullptr ? gemm4_to_f32<D>(bias[n]) : 0.0f;
#pragma unroll
        for (int m = 0; m < MB; ++m) {
          if (m < mb) out[(m0 + m) * N + n] = gemm4_from_f32<D>(__fadd_rn(acc[m], b));
        }
      }
    }
  }
}

// Rows [n0, n0 + rows) of the weight to dtype D at ws (row-major, K per row). One thread per
// 16 packed bytes (32 weights, one block).
template <int D, bool ALIGNED>
__global__ void gemm4_dequantize_kernel(const uint8_t* __restrict__ W, Gemm4Scales scales, Table16 table, int64_t n0,
                                        int64_t rows, int64_t K, int log2_blocksize,
                                        typename Elem<D>::T* __restrict__ ws) {
  using T = typename Elem<D>::T;
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = table.v[threadIdx.x];
  __syncthreads();
  const int64_t pieces = rows * (K / kGemm4PieceWeights);
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < pieces;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = p * kGemm4PieceWeights;  // element index within the slab
    const int64_t g = n0 * K + e;               // within the whole weight
    const uint4 piece = gemm4_load_piece<ALIGNED>(W + g / 2);
    const float s = gemm4_block_scale(scales, g >> log2_blocksize);
    const uint32_t words[4] = {piece.x, piece.y, piece.z, piece.w};
    alignas(16) T vals[kGemm4PieceWeights];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        vals[8 * j + 2 * b] = gemm4_from_f32<D>(__fmul_rn(lut[(words[j] >> (8 * b + 4)) & 15u], s));
        vals[8 * j + 2 * b + 1] = gemm4_from_f32<D>(__fmul_rn(lut[(words[j] >> (8 * b)) & 15u], s));
      }
    }
    // The workspace comes from the stream-ordered allocator: 16-byte aligned rows (K % 32 == 0).
    uint4* dst = reinterpret_cast<uint4*>(ws + e);
    const uint4* src = reinterpret_cast<const uint4*>(vals);
#pragma unroll
    for (int i = 0; i < static_cast<int>(sizeof vals / 16); ++i) dst[i] = src[i];
  }
}

template <int D>
__global__ void gemm4_fill_bias_kernel(const typename Elem<D>::T* __restrict__ bias, typename Elem<D>::T* __restrict__ out,
                                       int64_t M, int64_t N) {
  const int64_t total = M * N;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = bias[i % N];
  }
}

}  // namespace gemm4
}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_GEMM4_KERNELS_CUH_
