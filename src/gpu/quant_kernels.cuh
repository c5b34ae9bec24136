// Kernels of the quantization family: 8-bit blockwise and NF4/FP4 quantize/dequantize and the
// mean used by double quantization. Bit-exact with the reference CUDA kernels (FORMATS.md 2-4).
//
// Layout shared by every kernel: a CUDA block walks the tensor in tiles (a persistent grid, so the
// per-launch set-up of code tables and search buckets is paid once per resident block). A tile is
// kSub slices; in slice k thread t owns one 16-byte chunk of the wide side (the 16-bit or fp32
// input of a quantizer, the output of a decoder) at chunk index k * threads + t, so every load and
// store instruction of a warp covers one contiguous span. A block of blocksize B is then owned by
// G = B / (chunk elements) consecutive threads of one slice.
#ifndef BNB_GPU_QUANT_KERNELS_CUH_
#define BNB_GPU_QUANT_KERNELS_CUH_

#include <cstdint>

#include "gpu_port.h"

namespace bnb {
namespace gpu {

// dtype tags, numbered as bnb_dtype_t.
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

// Elements in a 16-byte chunk of dtype D: 8 (fp16, bf16) or 4 (fp32).
template <int D>
__host__ __device__ constexpr int chunk_elems() {
  return 16 / static_cast<int>(sizeof(typename Elem<D>::T));
}
__host__ __device__ constexpr int threads_for(int group) { return group > 256 ? group : 256; }
constexpr int kDequantSlices = 4;  // 64 output bytes per thread and tile

// A 16-float table passed by value (4-bit thresholds and decode tables).
struct Table16 {
  float v[16];
};

// ---------------------------------------------------------------- element conversions

template <int D>
__device__ __forceinline__ float to_f32(uint32_t raw) {
  if constexpr (D == kF32) {
    return __uint_as_float(raw);
  } else if constexpr (D == kF16) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(raw)));
  } else {
    return __uint_as_float(raw << 16);
  }
}

// Round-to-nearest-even from binary32 (FORMATS RN16 / RNbf).
template <int D>
__device__ __forceinline__ uint32_t from_f32(float f) {
  if constexpr (D == kF32) {
    return __float_as_uint(f);
  } else if constexpr (D == kF16) {
    return __half_as_ushort(__float2half_rn(f));
  } else {
    const uint32_t b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (b >> 16) | 0x40u;  // quiet NaN
    return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
  }
}

// ---------------------------------------------------------------- loads and stores

// A chunk of kE elements (16 or 32 bytes) at i0 as binary32; elements at or past n read as 0.
template <int D, int kE>
__device__ __forceinline__ void load_chunk(const typename Elem<D>::T* __restrict__ a, int64_t i0, int64_t n,
                                           bool vec, float (&v)[kE]) {
  constexpr int kWords = kE * static_cast<int>(sizeof(typename Elem<D>::T)) / 4;
  static_assert(kWords == 4 || kWords == 8, "chunks are 16 or 32 bytes");
  if (vec && i0 + kE <= n) {
    uint32_t w[kWords];
    const uint4* p = reinterpret_cast<const uint4*>(a + i0);
#pragma unroll
    for (int k = 0; k < kWords / 4; ++k) {
      const uint4 r = p[k];
      w[4 * k] = r.x;
      w[4 * k + 1] = r.y;
      w[4 * k + 2] = r.z;
      w[4 * k + 3] = r.w;
    }
    if constexpr (D == kF32) {
#pragma unroll
      for (int k = 0; k < kWords; ++k) v[k] = __uint_as_float(w[k]);
    } else {
#pragma unroll
      for (int k = 0; k < kWords; ++k) {
        v[2 * k] = to_f32<D>(w[k] & 0xffffu);
        v[2 * k + 1] = to_f32<D>(w[k] >> 16);
      }
    }
  } else {
#pragma unroll
    for (int k = 0; k < kE; ++k) {
      if (i0 + k < n) {
        if constexpr (D == kF32) {
          v[k] = a[i0 + k];
        } else {
          v[k] = to_f32<D>(a[i0 + k]);
        }
      } else {
        v[k] = 0.0f;
      }
    }
  }
}

// Stores a chunk of kE values of dtype D computed as binary32 (only those below n).
template <int D>
__device__ __forceinline__ void store_chunk(typename Elem<D>::T* __restrict__ out, int64_t i0, int64_t n, bool vec,
                                            const float (&y)[chunk_elems<D>()]) {
  constexpr int kE = chunk_elems<D>();
  if (vec && i0 + kE <= n) {
    uint32_t w[4];
    if constexpr (D == kF32) {
#pragma unroll
      for (int k = 0; k < 4; ++k) w[k] = __float_as_uint(y[k]);
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) w[k] = from_f32<D>(y[2 * k]) | (from_f32<D>(y[2 * k + 1]) << 16);
    }
    *reinterpret_cast<uint4*>(out + i0) = make_uint4(w[0], w[1], w[2], w[3]);
  } else {
#pragma unroll
    for (int k = 0; k < kE; ++k) {
      if (i0 + k < n) {
        if constexpr (D == kF32) {
          out[i0 + k] = y[k];
        } else {
          out[i0 + k] = static_cast<uint16_t>(from_f32<D>(y[k]));
        }
      }
    }
  }
}

// kE codes of one byte each (8-bit formats) at i0.
template <int kE>
__device__ __forceinline__ void store_codes8(uint8_t* __restrict__ out, int64_t i0, int64_t n, bool vec,
                                             const uint32_t (&q)[kE]) {
  if (vec && i0 + kE <= n) {
    uint32_t w[kE / 4];
#pragma unroll
    for (int k = 0; k < kE / 4; ++k) w[k] = q[4 * k] | (q[4 * k + 1] << 8) | (q[4 * k + 2] << 16) | (q[4 * k + 3] << 24);
    if constexpr (kE == 16) {
      *reinterpret_cast<uint4*>(out + i0) = make_uint4(w[0], w[1], w[2], w[3]);
    } else if constexpr (kE == 8) {
      *reinterpret_cast<uint2*>(out + i0) = make_uint2(w[0], w[1]);
    } else {
      *reinterpret_cast<uint32_t*>(out + i0) = w[0];
    }
  } else {
#pragma unroll
    for (int k = 0; k < kE; ++k) {
      if (i0 + k < n) out[i0 + k] = static_cast<uint8_t>(q[k]);
    }
  }
}

// kE codes packed two per byte, even element in the high nibble (FORMATS 3.4); i0 is even. A
// trailing odd element's partner nibble is the code of 0.0 (the loads padded it with 0).
template <int kE>
__device__ __forceinline__ void store_codes4(uint8_t* __restrict__ packed, int64_t i0, int64_t n, bool vec,
                                             const uint32_t (&q)[kE]) {
  const int64_t nbytes = (n + 1) / 2;
  const int64_t b0 = i0 / 2;
  uint32_t byte[kE / 2];
#pragma unroll
  for (int k = 0; k < kE / 2; ++k) byte[k] = (q[2 * k] << 4) | q[2 * k + 1];
  if (vec && b0 + kE / 2 <= nbytes) {
    if constexpr (kE == 16) {
      *reinterpret_cast<uint2*>(packed + b0) =
          make_uint2(byte[0] | (byte[1] << 8) | (byte[2] << 16) | (byte[3] << 24),
                     byte[4] | (byte[5] << 8) | (byte[6] << 16) | (byte[7] << 24));
    } else if constexpr (kE == 8) {
      *reinterpret_cast<uint32_t*>(packed + b0) = byte[0] | (byte[1] << 8) | (byte[2] << 16) | (byte[3] << 24);
    } else {
      *reinterpret_cast<uint16_t*>(packed + b0) = static_cast<uint16_t>(byte[0] | (byte[1] << 8));
    }
  } else {
#pragma unroll
    for (int k = 0; k < kE / 2; ++k) {
      if (b0 + k < nbytes) packed[b0 + k] = static_cast<uint8_t>(byte[k]);
    }
  }
}

// ---------------------------------------------------------------- absmax of a group of threads

// Maximum over the G consecutive threads owning one block, for each of the kS slices. `red` holds
// kS x (warps) floats; the calling loop must be uniform across the CUDA block when G exceeds a warp.
template <int G, int kS>
__device__ __forceinline__ void group_max(float (&v)[kS], float* red) {
  if constexpr (G <= kWarpSize) {
#pragma unroll
    for (int s = G / 2; s > 0; s >>= 1) {
#pragma unroll
      for (int k = 0; k < kS; ++k) v[k] = gpu_max_ftz(v[k], gpu_shfl_xor(v[k], s, G));
    }
  } else {
#pragma unroll
    for (int s = kWarpSize / 2; s > 0; s >>= 1) {
#pragma unroll
      for (int k = 0; k < kS; ++k) v[k] = gpu_max_ftz(v[k], gpu_shfl_xor(v[k], s, kWarpSize));
    }
    constexpr int kWarpsPerGroup = G / kWarpSize;
    const int warps = static_cast<int>(blockDim.x) / kWarpSize;
    const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
    __syncthreads();  // the previous tile's readers are done with red
    if (static_cast<int>(threadIdx.x) % kWarpSize == 0) {
#pragma unroll
      for (int k = 0; k < kS; ++k) red[k * warps + warp] = v[k];
    }
    __syncthreads();
    const int first = (warp / kWarpsPerGroup) * kWarpsPerGroup;
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      float r = red[k * warps + first];
#pragma unroll
      for (int j = 1; j < kWarpsPerGroup; ++j) r = gpu_max_ftz(r, red[k * warps + first + j]);
      v[k] = r;
    }
  }
}

// ---------------------------------------------------------------- 8-bit code selection

// The reference's 7-step search (FORMATS 2.3), used verbatim for tables that are not strictly
// increasing.
__device__ __forceinline__ uint32_t select_code_search7(float x, const float* code) {
  int p = 127;
  int lo_i = 0;
  int hi_i = 255;
  float lo_v = -1.0f;
  float hi_v = 1.0f;
  float v = code[127];
#pragma unroll
  for (int s = 64; s > 0; s >>= 1) {
    if (x > v) {
      lo_i = p;
      lo_v = v;
      p += s;
    } else {
      hi_i = p;
      hi_v = v;
      p -= s;
    }
    v = code[p];
  }
  if (hi_i == 255) hi_v = code[255];
  if (lo_i == 0) lo_v = code[0];
  if (x > v) {
    const float mid = gpu_mul_ftz(gpu_add_ftz(hi_v, v), 0.5f);
    return x > mid ? hi_i : p;
  }
  const float mid = gpu_mul_ftz(gpu_add_ftz(lo_v, v), 0.5f);
  return x < mid ? lo_i : p;
}

// For strictly increasing tables the search equals its closed form (FORMATS 2.3):
// q = #{j : x > m_j} + [x == m_j for an odd j], NaN -> 0, with m_j the binary32 midpoints. The
// count is found through buckets of the binary32 line: a bucket is one 64th of a binade of |x|
// (binades 2^-24 .. 2^0; everything smaller, or from 2 up, shares one bucket per sign). For each
// bucket the table stores lo = #{m_j below the bucket}, how many m_j fall inside it, and m_lo;
// with at most one midpoint inside (always, for the dynamic maps) the code is one look-up away.
constexpr int kMagBuckets = 1 + 25 * 64 + 1;
constexpr int kBuckets = 2 * kMagBuckets;
constexpr int kFirstBinadeBits = 103;  // biased exponent of 2^-24

__device__ __forceinline__ int bucket_of(float x) {
  const uint32_t b = __float_as_uint(x);
  int mag = static_cast<int>((b >> 17) & 0x3fffu) - (kFirstBinadeBits * 64 - 1);
  mag = min(max(mag, 0), kMagBuckets - 1);
  const int neg = static_cast<int>(b) >> 31;  // 0 or -1
  return kMagBuckets + (mag ^ neg);
}

__device__ __forceinline__ uint32_t mag_start_bits(int mb) {
  return mb == 0 ? 0u : static_cast<uint32_t>(mb - 1 + kFirstBinadeBits * 64) << 17;
}
__device__ __forceinline__ uint32_t mag_end_bits(int mb) {
  return mb == kMagBuckets - 1 ? 0x7f800000u : mag_start_bits(mb + 1) - 1u;
}

// #{j < 256 : m[j] < v} (or <= v) for the sorted, +inf-terminated midpoints m.
template <bool kOrEqual>
__device__ __forceinline__ int count_below(const float* m, float v) {
  int c = 0;
#pragma unroll
  for (int s = 128; s > 0; s >>= 1) {
    const float t = m[c + s - 1];
    if (kOrEqual ? (t <= v) : (t < v)) c += s;
  }
  return c;
}

struct Quant8Shared {
  float code[256];
  float mid[256];        // m_j for j < 255, then +inf
  uint2 bucket[kBuckets];  // x: lo | (count inside) << 8; y: bits of m_lo (NaN when lo == 255)
  int strict;
};

// Loads the table and builds the buckets; returns whether the fast selection applies.
__device__ inline bool quant8_setup(const float* __restrict__ code, Quant8Shared& sh) {
  for (int j = threadIdx.x; j < 256; j += blockDim.x) sh.code[j] = code[j];
  __syncthreads();
  int bad = 0;
  for (int j = threadIdx.x; j < 256; j += blockDim.x) {
    if (j < 255) {
      const float a = sh.code[j];
      const float b = sh.code[j + 1];
      sh.mid[j] = gpu_mul_ftz(gpu_add_ftz(a, b), 0.5f);
      if (!(a < b)) bad = 1;
    } else {
      sh.mid[j] = __uint_as_float(0x7f800000u);
    }
  }
  __syncthreads();
  for (int j = threadIdx.x; j < 254; j += blockDim.x) {
    if (!(sh.mid[j] < sh.mid[j + 1])) bad = 1;
  }
  const bool strict = __syncthreads_or(bad) == 0;
  if (!strict) return false;
  for (int b = threadIdx.x; b < kBuckets; b += blockDim.x) {
    float lo_v;
    float hi_v;
    if (b >= kMagBuckets) {
      const int mb = b - kMagBuckets;
      lo_v = __uint_as_float(mag_start_bits(mb));
      hi_v = __uint_as_float(mag_end_bits(mb));
    } else {
      const int mb = kMagBuckets - 1 - b;
      lo_v = -__uint_as_float(mag_end_bits(mb));
      hi_v = -__uint_as_float(mag_start_bits(mb));
    }
    const int lo = min(count_below<false>(sh.mid, lo_v), 255);
    const int hi = min(count_below<true>(sh.mid, hi_v), 255);
    const uint32_t m_lo = lo == 255 ? 0x7fc00000u : __float_as_uint(sh.mid[lo]);
    sh.bucket[b] = make_uint2(static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi - lo) << 8), m_lo);
  }
  __syncthreads();
  return true;
}

// Codes of a thread's chunk: all bucket look-ups are issued before any result is used, and the
// rare bucket holding several midpoints is resolved in a second pass, so the common path has no
// branches and the shared-memory latencies overlap.
template <int kE>
__device__ __forceinline__ void select_codes_fast(const float (&x)[kE], const Quant8Shared& sh, uint32_t (&q)[kE]) {
  uint2 e[kE];
#pragma unroll
  for (int k = 0; k < kE; ++k) e[k] = sh.bucket[bucket_of(x[k])];
  bool crowded = false;
#pragma unroll
  for (int k = 0; k < kE; ++k) {
    const uint32_t lo = e[k].x & 0xffu;
    const float m_lo = __uint_as_float(e[k].y);
    crowded |= (e[k].x >> 8) > 1;
    q[k] = lo + (x[k] > m_lo ? 1u : 0u) + ((x[k] == m_lo) ? (lo & 1u) : 0u);
  }
  if (crowded) {
#pragma unroll
    for (int k = 0; k < kE; ++k) {
      const uint32_t inside = e[k].x >> 8;
      if (inside > 1) {
        const uint32_t hi = (e[k].x & 0xffu) + inside;
        uint32_t c = e[k].x & 0xffu;
        float m = __uint_as_float(e[k].y);
        while (c < hi && x[k] > m) {
          ++c;
          m = sh.mid[c];
        }
        if (c < hi && x[k] == m) c += c & 1u;
        q[k] = c;
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kE; ++k) q[k] = x[k] == x[k] ? q[k] : 0u;  // NaN -> 0
}

// ---------------------------------------------------------------- 8-bit blockwise kernels

// kChunk = bytes of input a thread owns per slice: 32 (one slice, 32 contiguous bytes per thread)
// or 16 (two slices; each warp load instruction covers 512 contiguous bytes).
template <int D, int kChunk>
__host__ __device__ constexpr int quant_chunk_elems() {
  return kChunk / static_cast<int>(sizeof(typename Elem<D>::T));
}

template <int D, int B, int kChunk>
__global__ void __launch_bounds__(threads_for(B / quant_chunk_elems<D, kChunk>()))
    quantize_blockwise_kernel(const typename Elem<D>::T* __restrict__ a, const float* __restrict__ code,
                              uint8_t* __restrict__ out, float* __restrict__ absmax, int64_t n, int vec,
                              const float* __restrict__ offset) {
  constexpr int kE = quant_chunk_elems<D, kChunk>();
  constexpr int kG = B / kE;
  constexpr int kThreads = threads_for(kG);
  constexpr int kS = 32 / kChunk;
  constexpr int64_t kTile = int64_t{kThreads} * kE * kS;
  __shared__ Quant8Shared sh;
  __shared__ float red[kS * kThreads / 32];  // one float per warp and slice (warps hold >= 32 threads)
  const bool fast = quant8_setup(code, sh);
  // Double quantization subtracts the mean first: r_i = RN32(absmax_i - offset) (FORMATS 4.1).
  const float sub = offset != nullptr ? *offset : 0.0f;
  const int64_t ntiles = (n + kTile - 1) / kTile;
  const int64_t nblocks = (n + B - 1) / B;
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    int64_t i0[kS];
    float v[kS][kE];
    float m[kS];
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      i0[k] = t * kTile + (static_cast<int64_t>(k) * kThreads + threadIdx.x) * kE;
      load_chunk<D, kE>(a, i0[k], n, vec != 0, v[k]);
    }
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      if (offset != nullptr) {
#pragma unroll
        for (int j = 0; j < kE; ++j) v[k][j] = i0[k] + j < n ? gpu_add_ftz(v[k][j], -sub) : 0.0f;
      }
      m[k] = 0.0f;
#pragma unroll
      for (int j = 0; j < kE; ++j) m[k] = gpu_max_ftz(m[k], fabsf(v[k][j]));
    }
    group_max<kG, kS>(m, red);
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      if (static_cast<int>(threadIdx.x) % kG == 0 && i0[k] / B < nblocks) absmax[i0[k] / B] = m[k];
      const float inv = gpu_block_reciprocal(m[k]);
      float x[kE];
#pragma unroll
      for (int j = 0; j < kE; ++j) x[j] = gpu_mul_ftz(v[k][j], inv);
      uint32_t q[kE];
      if (fast) {
        constexpr int kH = kE < 8 ? kE : 8;  // look-ups in flight per batch (bounds registers)
#pragma unroll
        for (int h = 0; h < kE; h += kH) {
          float xh[kH];
          uint32_t qh[kH];
#pragma unroll
          for (int j = 0; j < kH; ++j) xh[j] = x[h + j];
          select_codes_fast<kH>(xh, sh, qh);
#pragma unroll
          for (int j = 0; j < kH; ++j) q[h + j] = qh[j];
        }
      } else {
#pragma unroll
        for (int j = 0; j < kE; ++j) q[j] = select_code_search7(x[j], sh.code);
      }
      store_codes8<kE>(out, i0[k], n, vec != 0, q);
    }
  }
}

// Decoders: y = RN_T(RN32(code[q] * absmax)); a thread writes kDequantSlices 16-byte chunks per tile.
template <int D>
__global__ void __launch_bounds__(256)
    dequantize_blockwise_kernel(const uint8_t* __restrict__ q, const float* __restrict__ absmax,
                                const float* __restrict__ code, int64_t n, int log2_block,
                                typename Elem<D>::T* __restrict__ out, int vec) {
  constexpr int kE = chunk_elems<D>();
  constexpr int kS = kDequantSlices;
  constexpr int64_t kTile = int64_t{256} * kE * kS;
  __shared__ float table[256];
  table[threadIdx.x] = code[threadIdx.x];
  __syncthreads();
  const int64_t ntiles = (n + kTile - 1) / kTile;
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    int64_t i0[kS];
    uint32_t w[kS][kE / 4];
    float s[kS];
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      i0[k] = t * kTile + (static_cast<int64_t>(k) * 256 + threadIdx.x) * kE;
      s[k] = i0[k] < n ? absmax[i0[k] >> log2_block] : 0.0f;
      if (vec && i0[k] + kE <= n) {
        if constexpr (kE == 8) {
          const uint2 r = *reinterpret_cast<const uint2*>(q + i0[k]);
          w[k][0] = r.x;
          w[k][1] = r.y;
        } else {
          w[k][0] = *reinterpret_cast<const uint32_t*>(q + i0[k]);
        }
      } else {
#pragma unroll
        for (int j = 0; j < kE / 4; ++j) w[k][j] = 0;
#pragma unroll
        for (int j = 0; j < kE; ++j) {
          if (i0[k] + j < n) w[k][j / 4] |= static_cast<uint32_t>(q[i0[k] + j]) << (8 * (j % 4));
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      if (i0[k] >= n) continue;
      float y[kE];
#pragma unroll
      for (int j = 0; j < kE; ++j) y[j] = gpu_mul_ftz(table[(w[k][j / 4] >> (8 * (j % 4))) & 0xffu], s[k]);
      store_chunk<D>(out, i0[k], n, vec != 0, y);
    }
  }
}

// ---------------------------------------------------------------- 4-bit kernels

constexpr int kFP4 = 1;  // bnb_quant4_t
constexpr int kNF4 = 2;

// NF4: nibble = #{k : x > t_k} (strict), by a 4-step search over t[1..15].
__device__ __forceinline__ uint32_t encode_nf4(float x, const float* t) {
  uint32_t c = 0;
  if (x > t[8]) c = 8;
  if (x > t[c + 4]) c += 4;
  if (x > t[c + 2]) c += 2;
  if (x > t[c + 1]) c += 1;
  return c;
}

// FP4: sign bit for x < 0, then k = #{j : |x| > thr_j} over t[1..7] mapped to its bit pattern.
__device__ __forceinline__ uint32_t encode_fp4(float x, const float* t) {
  const float a = fabsf(x);
  uint32_t c = 0;
  if (a > t[4]) c = 4;
  if (a > t[c + 2]) c += 2;
  if (a > t[c + 1]) c += 1;
  const uint32_t pattern = (0x32547610u >> (4 * c)) & 0xfu;  // {0,1,6,7,4,5,2,3}[c]
  return (x < 0.0f ? 8u : 0u) | pattern;
}

template <int D, int B, int QT, int kChunk>
__global__ void __launch_bounds__(threads_for(B / quant_chunk_elems<D, kChunk>()))
    quantize_4bit_kernel(const typename Elem<D>::T* __restrict__ a, Table16 thresholds,
                         uint8_t* __restrict__ packed, float* __restrict__ absmax, int64_t n, int vec) {
  constexpr int kE = quant_chunk_elems<D, kChunk>();
  constexpr int kG = B / kE;
  constexpr int kThreads = threads_for(kG);
  constexpr int kS = 32 / kChunk;
  constexpr int64_t kTile = int64_t{kThreads} * kE * kS;
  __shared__ float t16[16];
  __shared__ float red[kS * kThreads / 32];  // one float per warp and slice (warps hold >= 32 threads)
  if (threadIdx.x < 16) t16[threadIdx.x] = thresholds.v[threadIdx.x];
  __syncthreads();
  const int64_t ntiles = (n + kTile - 1) / kTile;
  const int64_t nblocks = (n + B - 1) / B;
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    int64_t i0[kS];
    float v[kS][kE];
    float m[kS];
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      i0[k] = t * kTile + (static_cast<int64_t>(k) * kThreads + threadIdx.x) * kE;
      load_chunk<D, kE>(a, i0[k], n, vec != 0, v[k]);
    }
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      m[k] = 0.0f;
#pragma unroll
      for (int j = 0; j < kE; ++j) m[k] = gpu_max_ftz(m[k], fabsf(v[k][j]));
    }
    group_max<kG, kS>(m, red);
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      if (static_cast<int>(threadIdx.x) % kG == 0 && i0[k] / B < nblocks) absmax[i0[k] / B] = m[k];
      const float inv = gpu_block_reciprocal(m[k]);
      uint32_t q[kE];
#pragma unroll
      for (int j = 0; j < kE; ++j) {
        const float x = gpu_mul_ftz(v[k][j], inv);
        q[j] = QT == kNF4 ? encode_nf4(x, t16) : encode_fp4(x, t16);
      }
      store_codes4<kE>(packed, i0[k], n, vec != 0, q);
    }
  }
}

// Scales of a 4-bit tensor: plain floats, or double-quantized codes rebuilt as
// RN32(RN32(code2[q] * absmax2[b / blocksize2]) + offset) (FORMATS 4.1).
struct Scales4 {
  const float* absmax;
  const uint8_t* absmax_q;
  const float* absmax2;
  const float* code2;
  const float* offset;
  int64_t blocksize2;
};

template <bool kNested>
__device__ __forceinline__ float block_scale(Scales4 s, int64_t block) {
  if constexpr (kNested) {
    return gpu_add_ftz(gpu_mul_ftz(s.code2[s.absmax_q[block]], s.absmax2[block / s.blocksize2]), *s.offset);
  } else {
    return s.absmax[block];
  }
}

template <int D, bool kNested>
__global__ void __launch_bounds__(256)
    dequantize_4bit_kernel(const uint8_t* __restrict__ packed, Table16 lut, Scales4 scales, int64_t n,
                           int log2_block, typename Elem<D>::T* __restrict__ out, int vec) {
  constexpr int kE = chunk_elems<D>();
  constexpr int kS = kDequantSlices;
  constexpr int64_t kTile = int64_t{256} * kE * kS;
  __shared__ float table[16];
  if (threadIdx.x < 16) table[threadIdx.x] = lut.v[threadIdx.x];
  __syncthreads();
  const int64_t ntiles = (n + kTile - 1) / kTile;
  const int64_t nbytes = (n + 1) / 2;
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    int64_t i0[kS];
    uint32_t w[kS];
    float s[kS];
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      i0[k] = t * kTile + (static_cast<int64_t>(k) * 256 + threadIdx.x) * kE;
      s[k] = i0[k] < n ? block_scale<kNested>(scales, i0[k] >> log2_block) : 0.0f;
      const int64_t b0 = i0[k] / 2;
      if (vec && b0 + kE / 2 <= nbytes) {
        if constexpr (kE == 8) {
          w[k] = *reinterpret_cast<const uint32_t*>(packed + b0);
        } else {
          w[k] = *reinterpret_cast<const uint16_t*>(packed + b0);
        }
      } else {
        w[k] = 0;
#pragma unroll
        for (int j = 0; j < kE / 2; ++j) {
          if (b0 + j < nbytes) w[k] |= static_cast<uint32_t>(packed[b0 + j]) << (8 * j);
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kS; ++k) {
      if (i0[k] >= n) continue;
      float y[kE];
#pragma unroll
      for (int j = 0; j < kE / 2; ++j) {
        const uint32_t byte = (w[k] >> (8 * j)) & 0xffu;
        y[2 * j] = gpu_mul_ftz(table[byte >> 4], s[k]);
        y[2 * j + 1] = gpu_mul_ftz(table[byte & 0xfu], s[k]);
      }
      store_chunk<D>(out, i0[k], n, vec != 0, y);
    }
  }
}

// ---------------------------------------------------------------- mean of absmax

// Deterministic mean in binary64: block b sums its contiguous chunk; with one block the result
// is final, otherwise the partial sums go to `partials` and mean_finish_kernel adds them in order.
constexpr int kMeanThreads = 256;

__device__ __forceinline__ double block_sum(double v, double* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int s = kMeanThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  return red[0];
}

// Partial sums travel as two 32-bit words each, so any float buffer can hold them.
__device__ __forceinline__ void store_partial(uint32_t* partials, int i, double v) {
  const unsigned long long b = static_cast<unsigned long long>(__double_as_longlong(v));
  partials[2 * i] = static_cast<uint32_t>(b);
  partials[2 * i + 1] = static_cast<uint32_t>(b >> 32);
}
__device__ __forceinline__ double load_partial(const uint32_t* partials, int i) {
  const unsigned long long b =
      static_cast<unsigned long long>(partials[2 * i]) | (static_cast<unsigned long long>(partials[2 * i + 1]) << 32);
  return __longlong_as_double(static_cast<long long>(b));
}

__global__ void __launch_bounds__(kMeanThreads)
    mean_partial_kernel(const float* __restrict__ x, int64_t n, int64_t chunk, uint32_t* partials,
                        float* __restrict__ mean) {
  __shared__ double red[kMeanThreads];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t end = min(begin + chunk, n);
  double acc = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kMeanThreads) acc += static_cast<double>(x[i]);
  const double sum = block_sum(acc, red);
  if (threadIdx.x == 0) {
    if (gridDim.x == 1) {
      *mean = static_cast<float>(sum / static_cast<double>(n));
    } else {
      store_partial(partials, static_cast<int>(blockIdx.x), sum);
    }
  }
}

__global__ void __launch_bounds__(kMeanThreads)
    mean_finish_kernel(const uint32_t* partials, int nparts, int64_t n, float* __restrict__ mean) {
  __shared__ double red[kMeanThreads];
  // Each thread adds a contiguous run so the order is fixed for a given nparts.
  const int per = (nparts + kMeanThreads - 1) / kMeanThreads;
  double acc = 0.0;
  for (int i = threadIdx.x * per; i < min(nparts, (static_cast<int>(threadIdx.x) + 1) * per); ++i) {
    acc += load_partial(partials, i);
  }
  const double sum = block_sum(acc, red);
  if (threadIdx.x == 0) *mean = static_cast<float>(sum / static_cast<double>(n));
}

}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_QUANT_KERNELS_CUH_
