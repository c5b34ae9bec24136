// Kernels of the 4-bit inference matmul (docs/OPS.md §4.1): out[M,N] = A[M,K] @ dequant(W)[N,K]^T (+ bias).
//
// gemm4_simt_kernel<D, MB, NR, U, ALIGNED>: the batch-1 GEMV (MB = 1) and small-batch (MB = 2..8)
//   kernel. A warp owns NR consecutive weight rows; per step each lane loads U 16-byte pieces
//   (32 weights each, always inside one quantization block since blocksize >= 32) of all NR
//   rows, so NR * U loads are in flight per lane and every A value read from shared memory
//   serves NR rows. Nibbles are decoded in registers through the unscaled 16-entry table in
//   shared memory (conflict-free: 16 entries, 16 banks). MB <= 2: a piece's 32 products with the
//   unscaled table values are summed in binary32 and the sum scaled once by the block's absmax;
//   MB >= 4: weights RN32(LUT * absmax), each shared by MB rows (absmax nested: code2 from
//   shared memory x absmax2 + offset). MB rows of A sit in shared memory as binary32 (staged with 16-byte
//   loads once per block, swizzled so the lanes' 16-byte reads are free of bank conflicts).
//   binary32 FMA accumulation, a warp tree sum, one rounding to the output dtype with the bias
//   added. blockIdx.y picks a tile of MB rows of A, so any M works. No atomics, no host
//   synchronisation.
// gemm4_fill_bias_kernel<D>: out[m, n] = bias[n], so the library GEMM can add it with beta = 1.
#ifndef BNB_GPU_GEMM4_KERNELS_CUH_
#define BNB_GPU_GEMM4_KERNELS_CUH_

#include <cstdint>

#include "gpu_dtype.h"
#include "gpu_port.h"

namespace bnb {
namespace gpu {
namespace gemm4 {

// The 16-entry decode table, passed by value.
struct Table16 {
  float v[16];
};

// The dynamic shared memory declaration; tests/gpu_emu runs these kernels as host code with
// one thread per CUDA thread and declares it differently.
#ifndef BNB_GEMM4_DYNAMIC_SHARED
#define BNB_GEMM4_DYNAMIC_SHARED extern __shared__
#endif

constexpr int kGemm4Warps = 8;                      // warps per block of the SIMT kernel
constexpr int kGemm4PieceWeights = 32;              // weights per lane per 16-byte load
constexpr int kGemm4WarpStep = 32 * kGemm4PieceWeights;  // weights per warp per load round: 1024

__device__ __forceinline__ float gemm4_block_scale(const Scales4& s, int64_t b) {
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

// The bits of an element of dtype D, zero-extended.
template <int D>
__device__ __forceinline__ uint32_t gemm4_bits(typename Elem<D>::T v) {
  if constexpr (D == kF32) {
    return __float_as_uint(v);
  } else {
    return static_cast<uint32_t>(v);
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

// Stages rows [m0, m0 + mb) of A, elements [k0, k0 + klen), into a_s ([MB][kc] binary32,
// swizzled; rows past mb are zeros). klen % 32 == 0. 16-byte loads where A is aligned, several in
// flight per thread before the first store.
template <int D, int MB>
__device__ __forceinline__ void gemm4_stage_a(const typename Elem<D>::T* __restrict__ A, float* __restrict__ a_s,
                                              int64_t m0, int mb, int64_t K, int64_t k0, int klen, int kc) {
  using T = typename Elem<D>::T;
  constexpr int kThreads = kGemm4Warps * 32;
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte load: 4 or 8
  const int tid = static_cast<int>(threadIdx.x);
  if ((reinterpret_cast<uintptr_t>(A) & 15u) == 0) {
    const int per_row = klen / kVec;
    const int total = MB * per_row;
    constexpr int kUnroll = 4;
    for (int base = tid; base < total; base += kUnroll * kThreads) {
      uint4 v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = base + u * kThreads;
        const int m = i / per_row;
        v[u] = make_uint4(0, 0, 0, 0);
        if (i < total && m < mb) {
          const int k = (i - m * per_row) * kVec;
          v[u] = __ldg(reinterpret_cast<const uint4*>(A + (m0 + m) * K + k0 + k));
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = base + u * kThreads;
        if (i < total) {
          const int m = i / per_row;
          const int k = (i - m * per_row) * kVec;
          float* row = a_s + m * kc;
          if constexpr (kVec == 4) {
            *reinterpret_cast<float4*>(row + gemm4_swizzle(k)) = float4{__uint_as_float(v[u].x), __uint_as_float(v[u].y),
                                                                        __uint_as_float(v[u].z), __uint_as_float(v[u].w)};
          } else {
            const uint32_t w[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
            float f[8];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              f[2 * e] = gemm4_to_f32<D>(static_cast<uint16_t>(w[e] & 0xffffu));
              f[2 * e + 1] = gemm4_to_f32<D>(static_cast<uint16_t>(w[e] >> 16));
            }
            *reinterpret_cast<float4*>(row + gemm4_swizzle(k)) = float4{f[0], f[1], f[2], f[3]};
            *reinterpret_cast<float4*>(row + gemm4_swizzle(k + 4)) = float4{f[4], f[5], f[6], f[7]};
          }
        }
      }
    }
  } else {
    for (int i = tid; i < MB * klen; i += kThreads) {
      const int m = i / klen, k = i - m * klen;
      const float v = m < mb ? gemm4_to_f32<D>(A[(m0 + m) * K + k0 + k]) : 0.0f;
      a_s[m * kc + gemm4_swizzle(k)] = v;
    }
  }
}

// The SIMT kernel. A warp owns NR consecutive W rows; per step every lane loads U pieces (16
// bytes, 32 weights, inside one quantization block) of each of the NR rows: NR * U independent
// 16-byte loads in flight, a warp-wide load covering 512 contiguous bytes. A piece's 32 weights
// are decoded through the unscaled 16-entry table in shared memory and multiplied with MB staged
// rows of A (each A value read once for the NR rows). MB <= 2: the piece's sum is scaled by its
// block's absmax (one FMA per piece and A row instead of one multiply per weight); MB >= 4: each
// weight is scaled (RN32(LUT * absmax)) once and serves the MB rows.
template <int D, int MB, int NR, int U, bool ALIGNED>
__global__ void __launch_bounds__(kGemm4Warps * 32)
    gemm4_simt_kernel(const typename Elem<D>::T* __restrict__ A, const uint8_t* __restrict__ W, Scales4 scales,
                      Table16 table, const typename Elem<D>::T* __restrict__ bias, typename Elem<D>::T* __restrict__ out,
                      int64_t M, int64_t N, int64_t K, int log2_blocksize, int kc) {
  BNB_GEMM4_DYNAMIC_SHARED float smem[];
  float* __restrict__ a_s = smem;               // [MB][kc], swizzled rows
  float* __restrict__ lut = smem + MB * kc;     // [16]
  float* __restrict__ code2_s = lut + 16;       // [256] (nested scales)
  const bool nested = scales.absmax == nullptr;
  if (threadIdx.x < 16) lut[threadIdx.x] = table.v[threadIdx.x];
  if (nested) {
    for (int i = static_cast<int>(threadIdx.x); i < 256; i += kGemm4Warps * 32) code2_s[i] = __ldg(scales.code2 + i);
  }
  const float offset = nested ? __ldg(scales.offset) : 0.0f;

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int lane_swizzle = (lane & 7) << 2;  // gemm4_swizzle of this lane's elements
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * MB;
  const int mb = M - m0 < MB ? static_cast<int>(M - m0) : MB;
  const int64_t row_bytes = K / 2;
  const int64_t blocks_per_row = K >> log2_blocksize;
  const int nchunks = static_cast<int>((K + kc - 1) / kc);
  constexpr int64_t kRowsPerBlock = int64_t{kGemm4Warps} * NR;
  constexpr int kStep = kGemm4WarpStep * U;  // weights of a row per warp step
  constexpr bool kScaleWeights = MB >= 4;
  bool staged = false;

  for (int64_t nbase = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock; nbase < N;
       nbase += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {  // uniform across the block
    const int64_t n0 = nbase + static_cast<int64_t>(warp) * NR;       // this warp's NR rows
    float acc[NR][MB];
#pragma unroll
    for (int r = 0; r < NR; ++r) {
#pragma unroll
      for (int m = 0; m < MB; ++m) acc[r][m] = 0.0f;
    }

    for (int c = 0; c < nchunks; ++c) {
      const int64_t k0 = static_cast<int64_t>(c) * kc;
      const int klen = K - k0 < kc ? static_cast<int>(K - k0) : kc;
      if (!staged || nchunks > 1) {
        __syncthreads();  // every warp is done with the previous chunk
        gemm4_stage_a<D, MB>(A, a_s, m0, mb, K, k0, klen, kc);
        __syncthreads();
        staged = true;
      }
      if (n0 >= N) continue;
      for (int kb = 0; kb < klen; kb += kStep) {
        // NR * U 16-byte loads in flight, with their scales' inputs.
        uint4 piece[U][NR];
        float s_a[U][NR];   // plain: absmax; nested: absmax2
        uint32_t s_q[U][NR];  // nested: absmax_q
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int k = kb + u * kGemm4WarpStep + lane * kGemm4PieceWeights;
#pragma unroll
          for (int r = 0; r < NR; ++r) {
            piece[u][r] = make_uint4(0, 0, 0, 0);
            s_a[u][r] = 0.0f;
            s_q[u][r] = 0;
            if (k < klen && n0 + r < N) {
              piece[u][r] = gemm4_load_piece<ALIGNED>(W + (n0 + r) * row_bytes + (k0 + k) / 2);
              const int64_t b = (n0 + r) * blocks_per_row + ((k0 + k) >> log2_blocksize);
              if (nested) {
                s_q[u][r] = __ldg(scales.absmax_q + b);
                s_a[u][r] = __ldg(scales.absmax2 + (b >> scales.log2_blocksize2));
              } else {
                s_a[u][r] = __ldg(scales.absmax + b);
              }
            }
          }
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int k = kb + u * kGemm4WarpStep + lane * kGemm4PieceWeights;
          if (k >= klen) continue;  // past the chunk: only in a chunk's last step
          // The blocks' absmax (rows past N compute garbage that is never stored).
          float scale[NR];
#pragma unroll
          for (int r = 0; r < NR; ++r) {
            scale[r] = nested ? __fadd_rn(__fmul_rn(code2_s[s_q[u][r]], s_a[u][r]), offset) : s_a[u][r];
          }
          if constexpr (kScaleWeights) {
            // MB >= 4: each weight RN32(LUT * absmax) once, shared by the MB rows of A.
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              float w[NR][8];
#pragma unroll
              for (int r = 0; r < NR; ++r) {
                const uint4& pc = piece[u][r];
                const uint32_t word = j == 0 ? pc.x : j == 1 ? pc.y : j == 2 ? pc.z : pc.w;
#pragma unroll
                for (int b = 0; b < 4; ++b) {
                  w[r][2 * b] = __fmul_rn(lut[(word >> (8 * b + 4)) & 15u], scale[r]);
                  w[r][2 * b + 1] = __fmul_rn(lut[(word >> (8 * b)) & 15u], scale[r]);
                }
              }
#pragma unroll
              for (int m = 0; m < MB; ++m) {
                const float* row = a_s + m * kc;
                const float4 lo = *reinterpret_cast<const float4*>(row + ((k + 8 * j) ^ lane_swizzle));
                const float4 hi = *reinterpret_cast<const float4*>(row + ((k + 8 * j + 4) ^ lane_swizzle));
#pragma unroll
                for (int r = 0; r < NR; ++r) {
                  float p = acc[r][m];
                  p = __fmaf_rn(w[r][0], lo.x, p);
                  p = __fmaf_rn(w[r][1], lo.y, p);
                  p = __fmaf_rn(w[r][2], lo.z, p);
                  p = __fmaf_rn(w[r][3], lo.w, p);
                  p = __fmaf_rn(w[r][4], hi.x, p);
                  p = __fmaf_rn(w[r][5], hi.y, p);
                  p = __fmaf_rn(w[r][6], hi.z, p);
                  p = __fmaf_rn(w[r][7], hi.w, p);
                  acc[r][m] = p;
                }
              }
            }
          } else {
            // MB <= 2: unscaled table values; the piece's sums scaled once.
            float part[NR][MB];
#pragma unroll
            for (int r = 0; r < NR; ++r) {
#pragma unroll
              for (int m = 0; m < MB; ++m) part[r][m] = 0.0f;
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              // Word j of a piece holds elements k + 8j .. k + 8j + 7: byte b gives 2b (high
              // nibble) and 2b + 1. Their A values are loaded once and used by all NR rows.
              float4 a_lo[MB], a_hi[MB];
#pragma unroll
              for (int m = 0; m < MB; ++m) {
                const float* row = a_s + m * kc;
                a_lo[m] = *reinterpret_cast<const float4*>(row + ((k + 8 * j) ^ lane_swizzle));
                a_hi[m] = *reinterpret_cast<const float4*>(row + ((k + 8 * j + 4) ^ lane_swizzle));
              }
#pragma unroll
              for (int r = 0; r < NR; ++r) {
                const uint4& pc = piece[u][r];
                const uint32_t word = j == 0 ? pc.x : j == 1 ? pc.y : j == 2 ? pc.z : pc.w;
                float w[8];
#pragma unroll
                for (int b = 0; b < 4; ++b) {
                  w[2 * b] = lut[(word >> (8 * b + 4)) & 15u];
                  w[2 * b + 1] = lut[(word >> (8 * b)) & 15u];
                }
#pragma unroll
                for (int m = 0; m < MB; ++m) {
                  float p = part[r][m];
                  p = __fmaf_rn(w[0], a_lo[m].x, p);
                  p = __fmaf_rn(w[1], a_lo[m].y, p);
                  p = __fmaf_rn(w[2], a_lo[m].z, p);
                  p = __fmaf_rn(w[3], a_lo[m].w, p);
                  p = __fmaf_rn(w[4], a_hi[m].x, p);
                  p = __fmaf_rn(w[5], a_hi[m].y, p);
                  p = __fmaf_rn(w[6], a_hi[m].z, p);
                  p = __fmaf_rn(w[7], a_hi[m].w, p);
                  part[r][m] = p;
                }
              }
            }
#pragma unroll
            for (int r = 0; r < NR; ++r) {
#pragma unroll
              for (int m = 0; m < MB; ++m) acc[r][m] = __fmaf_rn(part[r][m], scale[r], acc[r][m]);
            }
          }
        }
      }
    }
    if (n0 < N) {
#pragma unroll
      for (int r = 0; r < NR; ++r) {
#pragma unroll
        for (int m = 0; m < MB; ++m) {
          float v = acc[r][m];
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) v += gpu_shfl_xor(v, off, 32);
          acc[r][m] = v;
        }
      }
      if (lane == 0) {
#pragma unroll
        for (int r = 0; r < NR; ++r) {
          const int64_t n = n0 + r;
          if (n < N) {
            const float b = bias != nullptr ? gemm4_to_f32<D>(bias[n]) : 0.0f;
#pragma unroll
            for (int m = 0; m < MB; ++m) {
              if (m < mb) out[(m0 + m) * N + n] = gemm4_from_f32<D>(__fadd_rn(acc[r][m], b));
            }
          }
        }
      }
    }
  }
}

// out[m, n] = RN_D(partial[m, n] + bias[n]) after a launch that split the reduction over blocks
// (their binary32 sums added into partial with atomics).
template <int D>
__global__ void gemm4_finish_kernel(const float* __restrict__ partial, const typename Elem<D>::T* __restrict__ bias,
                                    typename Elem<D>::T* __restrict__ out, int64_t M, int64_t N) {
  const int64_t total = M * N;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float y = partial[i];
    if (bias != nullptr) y = __fadd_rn(y, gemm4_to_f32<D>(bias[i % N]));
    out[i] = gemm4_from_f32<D>(y);
  }
}

// ---------------------------------------------------------------- the transposed product, SIMT
// out[M,K] = A[M,N] @ dequant(W)[N,K] without a workspace: the path where no BLAS library is
// there (HIP, or CUDA without cuBLAS). A thread owns 8 consecutive columns k of out (4 packed
// bytes of each W row: a warp reads 128 contiguous bytes per row) for MB rows of A, so a block
// of kTransposedThreads covers kTransposedCols columns; blockIdx.y picks the rows of A and
// blockIdx.z the W rows [z n_split, (z + 1) n_split) it sums (more than one: binary32 partial
// sums added atomically into `partial`, then gemm4_finish_kernel rounds). Each weight is
// RN32(LUT * absmax) as dequantize_4bit makes it (8 consecutive k lie in one block: blocksize
// >= 32), products and sums binary32, one rounding to D. Rows of A are staged per chunk of W
// rows as binary32 in shared memory (every thread reads the same element: a broadcast).
constexpr int kTransposedThreads = 256;
constexpr int kTransposedCols = 8 * kTransposedThreads;
constexpr int kTransposedChunk = 64;  // W rows per staged chunk of A

template <int D, int MB>
__global__ void __launch_bounds__(kTransposedThreads)
    gemm4_transposed_simt_kernel(const typename Elem<D>::T* __restrict__ A, const uint8_t* __restrict__ W,
                                 Scales4 scales, Table16 table, float* __restrict__ partial,
                                 typename Elem<D>::T* __restrict__ out, int64_t M, int64_t N, int64_t K,
                                 int log2_blocksize, int64_t n_split) {
  __shared__ float lut[16];
  __shared__ float a_s[kTransposedChunk][MB];
  const int tid = static_cast<int>(threadIdx.x);
  if (tid < 16) lut[tid] = table.v[tid];
  const int64_t k0 = (static_cast<int64_t>(blockIdx.x) * kTransposedThreads + tid) * 8;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * MB;
  const int64_t n_begin = static_cast<int64_t>(blockIdx.z) * n_split;
  const int64_t n_end = n_begin + n_split < N ? n_begin + n_split : N;
  float acc[MB][8];
#pragma unroll
  for (int mb = 0; mb < MB; ++mb) {
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[mb][j] = 0.0f;
  }
  for (int64_t nc = n_begin; nc < n_end; nc += kTransposedChunk) {
    const int rows = static_cast<int>(n_end - nc < kTransposedChunk ? n_end - nc : kTransposedChunk);
    __syncthreads();  // the previous chunk's readers are done (and lut is written)
    for (int i = tid; i < kTransposedChunk * MB; i += kTransposedThreads) {
      const int r = i / MB, mb = i % MB;
      a_s[r][mb] = r < rows && m0 + mb < M ? gemm4_to_f32<D>(A[(m0 + mb) * N + nc + r]) : 0.0f;
    }
    __syncthreads();
    if (k0 < K) {  // K % 32 == 0: a thread's 8 columns are all in or all out
      for (int r = 0; r < rows; ++r) {
        const int64_t e = (nc + r) * K + k0;
        const uint8_t* src = W + e / 2;
        const uint32_t bytes = static_cast<uint32_t>(__ldg(src)) | (static_cast<uint32_t>(__ldg(src + 1)) << 8) |
                               (static_cast<uint32_t>(__ldg(src + 2)) << 16) |
                               (static_cast<uint32_t>(__ldg(src + 3)) << 24);
        const float s = gemm4_block_scale(scales, e >> log2_blocksize);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const uint32_t nibble = (bytes >> (8 * (j / 2) + ((j & 1) != 0 ? 0 : 4))) & 15u;  // high nibble first
          const float w = __fmul_rn(lut[nibble], s);
#pragma unroll
          for (int mb = 0; mb < MB; ++mb) acc[mb][j] = __fmaf_rn(a_s[r][mb], w, acc[mb][j]);
        }
      }
    }
  }
  if (k0 >= K) return;
#pragma unroll
  for (int mb = 0; mb < MB; ++mb) {
    const int64_t m = m0 + mb;
    if (m >= M) break;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (partial != nullptr) {
        atomicAdd(partial + m * K + k0 + j, acc[mb][j]);
      } else {
        out[m * K + k0 + j] = gemm4_from_f32<D>(acc[mb][j]);
      }
    }
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
