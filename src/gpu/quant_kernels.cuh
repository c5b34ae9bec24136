// Kernels of the quantization family: 8-bit blockwise and NF4/FP4 quantize/dequantize and the
// mean used by double quantization. Bit-exact with the reference CUDA kernels (FORMATS.md 2-4).
//
// Layout shared by every kernel: a thread owns kEpt consecutive elements (32 bytes of a 16-bit
// input, 32 bytes of fp32), a block of blocksize B is owned by G = B / kEpt consecutive threads,
// and a CUDA block of max(256, G) threads walks the tensor in tiles (a persistent grid), so the
// per-launch set-up (code table, search buckets) is paid once per resident block.
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

template <int D>
__host__ __device__ constexpr int elems_per_thread() {
  return 32 / static_cast<int>(sizeof(typename Elem<D>::T));
}
__host__ __device__ constexpr int threads_for(int group) { return group > 256 ? group : 256; }

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

// A thread's 32 input bytes as loaded, before conversion.
struct Raw32 {
  uint4 lo, hi;
};

template <int D>
__device__ __forceinline__ void unpack_chunk(const Raw32& r, float (&v)[elems_per_thread<D>()]) {
  const uint32_t w[8] = {r.lo.x, r.lo.y, r.lo.z, r.lo.w, r.hi.x, r.hi.y, r.hi.z, r.hi.w};
  if constexpr (D == kF32) {
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = __uint_as_float(w[k]);
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      v[2 * k] = to_f32<D>(w[k] & 0xffffu);
      v[2 * k + 1] = to_f32<D>(w[k] >> 16);
    }
  }
}

// Loads a thread's kEpt elements starting at i0 as binary32; elements at or past n read as 0.
template <int D>
__device__ __forceinline__ void load_chunk(const typename Elem<D>::T* __restrict__ a, int64_t i0, int64_t n,
                                           bool vec, float (&v)[elems_per_thread<D>()]) {
  constexpr int kEpt = elems_per_thread<D>();
  if (vec && i0 + kEpt <= n) {
    const uint4* p = reinterpret_cast<const uint4*>(a + i0);
    unpack_chunk<D>(Raw32{p[0], p[1]}, v);
  } else {
#pragma unroll
    for (int k = 0; k < kEpt; ++k) {
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

// Walks a thread's chunks tile by tile with the next tile's 32 bytes already in flight while the
// current one is processed (the quantizers spend long enough on a tile that a single outstanding
// load per thread leaves the memory system idle). kPrefetch = 0 loads on demand.
template <int D, int kPrefetch>
struct ChunkReader {
  static constexpr int kEpt = elems_per_thread<D>();
  const typename Elem<D>::T* __restrict__ a;
  int64_t n;
  bool vec;
  Raw32 next{};

  __device__ __forceinline__ bool whole(int64_t i0) const { return vec && i0 + kEpt <= n; }
  __device__ __forceinline__ void prefetch(int64_t i0) {
    if (kPrefetch && whole(i0)) {
      const uint4* p = reinterpret_cast<const uint4*>(a + i0);
      next = Raw32{p[0], p[1]};
    }
  }
  // Elements of the chunk at i0 (the one last prefetched); then starts loading the chunk at i0_next
  // (pass a negative value when there is none).
  __device__ __forceinline__ void read(int64_t i0, int64_t i0_next, float (&v)[kEpt]) {
    if (kPrefetch && whole(i0)) {
      const Raw32 cur = next;
      if (i0_next >= 0) prefetch(i0_next);
      unpack_chunk<D>(cur, v);
    } else {
      if (kPrefetch && i0_next >= 0) prefetch(i0_next);
      load_chunk<D>(a, i0, n, vec, v);
    }
  }
};

// Stores kEpt output elements of dtype D computed as binary32 (only those below n).
template <int D, int kEpt>
__device__ __forceinline__ void store_values(typename Elem<D>::T* __restrict__ out, int64_t i0, int64_t n, bool vec,
                                             const float (&y)[kEpt]) {
  if (vec && i0 + kEpt <= n) {
    if constexpr (D == kF32) {
      uint4* p = reinterpret_cast<uint4*>(out + i0);
#pragma unroll
      for (int k = 0; k < kEpt / 4; ++k) {
        p[k] = make_uint4(__float_as_uint(y[4 * k]), __float_as_uint(y[4 * k + 1]), __float_as_uint(y[4 * k + 2]),
                          __float_as_uint(y[4 * k + 3]));
      }
    } else {
      uint4* p = reinterpret_cast<uint4*>(out + i0);
#pragma unroll
      for (int k = 0; k < kEpt / 8; ++k) {
        uint32_t w[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          w[j] = from_f32<D>(y[8 * k + 2 * j]) | (from_f32<D>(y[8 * k + 2 * j + 1]) << 16);
        }
        p[k] = make_uint4(w[0], w[1], w[2], w[3]);
      }
    }
  } else {
#pragma unroll
    for (int k = 0; k < kEpt; ++k) {
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

// One byte per code (8-bit formats).
template <int kEpt>
__device__ __forceinline__ void store_codes8(uint8_t* __restrict__ out, int64_t i0, int64_t n, bool vec,
                                             const uint32_t (&q)[kEpt]) {
  if (vec && i0 + kEpt <= n) {
    uint32_t w[kEpt / 4];
#pragma unroll
    for (int k = 0; k < kEpt / 4; ++k) {
      w[k] = q[4 * k] | (q[4 * k + 1] << 8) | (q[4 * k + 2] << 16) | (q[4 * k + 3] << 24);
    }
    if constexpr (kEpt == 16) {
      *reinterpret_cast<uint4*>(out + i0) = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
      *reinterpret_cast<uint2*>(out + i0) = make_uint2(w[0], w[1]);
    }
  } else {
#pragma unroll
    for (int k = 0; k < kEpt; ++k) {
      if (i0 + k < n) out[i0 + k] = static_cast<uint8_t>(q[k]);
    }
  }
}

// Two codes per byte, even element in the high nibble (FORMATS 3.4); i0 is even. A trailing odd
// element's partner nibble is the code of 0.0 (the loads padded it with 0).
template <int kEpt>
__device__ __forceinline__ void store_codes4(uint8_t* __restrict__ packed, int64_t i0, int64_t n, bool vec,
                                             const uint32_t (&q)[kEpt]) {
  const int64_t nbytes = (n + 1) / 2;
  const int64_t b0 = i0 / 2;
  uint32_t byte[kEpt / 2];
#pragma unroll
  for (int k = 0; k < kEpt / 2; ++k) byte[k] = (q[2 * k] << 4) | q[2 * k + 1];
  if (vec && b0 + kEpt / 2 <= nbytes) {
    uint32_t w[kEpt / 8];
#pragma unroll
    for (int k = 0; k < kEpt / 8; ++k) {
      w[k] = byte[4 * k] | (byte[4 * k + 1] << 8) | (byte[4 * k + 2] << 16) | (byte[4 * k + 3] << 24);
    }
    if constexpr (kEpt == 16) {
      *reinterpret_cast<uint2*>(packed + b0) = make_uint2(w[0], w[1]);
    } else {
      *reinterpret_cast<uint32_t*>(packed + b0) = w[0];
    }
  } else {
#pragma unroll
    for (int k = 0; k < kEpt / 2; ++k) {
      if (b0 + k < nbytes) packed[b0 + k] = static_cast<uint8_t>(byte[k]);
    }
  }
}

// ---------------------------------------------------------------- absmax of a group of threads

// Maximum over the G consecutive threads owning one block. `red` holds one float per warp; the
// calling loop must be uniform across the CUDA block when G exceeds a warp.
template <int G>
__device__ __forceinline__ float group_max(float v, float* red) {
  if constexpr (G <= kWarpSize) {
#pragma unroll
    for (int s = G / 2; s > 0; s >>= 1) v = gpu_max_ftz(v, gpu_shfl_xor(v, s, G));
    return v;
  } else {
#pragma unroll
    for (int s = kWarpSize / 2; s > 0; s >>= 1) v = gpu_max_ftz(v, gpu_shfl_xor(v, s, kWarpSize));
    constexpr int kWarpsPerGroup = G / kWarpSize;
    const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
    __syncthreads();  // the previous tile's readers are done with red
    if (static_cast<int>(threadIdx.x) % kWarpSize == 0) red[warp] = v;
    __syncthreads();
    const int first = (warp / kWarpsPerGroup) * kWarpsPerGroup;
    float r = red[first];
#pragma unroll
    for (int k = 1; k < kWarpsPerGroup; ++k) r = gpu_max_ftz(r, red[first + k]);
    return r;
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
  float red[32];
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

__device__ __forceinline__ uint32_t select_code_fast(float x, const Quant8Shared& sh) {
  const uint2 e = sh.bucket[bucket_of(x)];
  const uint32_t lo = e.x & 0xffu;
  const uint32_t inside = e.x >> 8;
  const float m_lo = __uint_as_float(e.y);
  uint32_t q;
  if (inside <= 1) {
    q = lo + (x > m_lo ? 1u : 0u) + ((x == m_lo) ? (lo & 1u) : 0u);
  } else {
    const uint32_t hi = lo + inside;
    q = lo;
    float m = m_lo;
    while (q < hi && x > m) {
      ++q;
      m = sh.mid[q];
    }
    if (q < hi && x == m) q += q & 1u;
  }
  return x == x ? q : 0u;
}

// ---------------------------------------------------------------- 8-bit blockwise kernels

template <int D, int B, int kPrefetch>
__global__ void __launch_bounds__(threads_for(B / elems_per_thread<D>()))
    quantize_blockwise_kernel(const typename Elem<D>::T* __restrict__ a, const float* __restrict__ code,
                              uint8_t* __restrict__ out, float* __restrict__ absmax, int64_t n, int vec,
                              const float* __restrict__ offset) {
  constexpr int kEpt = elems_per_thread<D>();
  constexpr int kG = B / kEpt;
  constexpr int kThreads = threads_for(kG);
  constexpr int kTile = kThreads * kEpt;
  __shared__ Quant8Shared sh;
  const bool fast = quant8_setup(code, sh);
  // Double quantization subtracts the mean first: r_i = RN32(absmax_i - offset) (FORMATS 4.1).
  const float sub = offset != nullptr ? *offset : 0.0f;
  const int64_t ntiles = (n + kTile - 1) / kTile;
  const int64_t nblocks = (n + B - 1) / B;
  const int64_t lane0 = static_cast<int64_t>(threadIdx.x) * kEpt;
  ChunkReader<D, kPrefetch> reader{a, n, vec != 0};
  reader.prefetch(static_cast<int64_t>(blockIdx.x) * kTile + lane0);
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const int64_t i0 = t * kTile + lane0;
    float v[kEpt];
    reader.read(i0, t + gridDim.x < ntiles ? (t + gridDim.x) * kTile + lane0 : -1, v);
    if (offset != nullptr) {
#pragma unroll
      for (int k = 0; k < kEpt; ++k) v[k] = i0 + k < n ? gpu_add_ftz(v[k], -sub) : 0.0f;
    }
    float m = 0.0f;
#pragma unroll
    for (int k = 0; k < kEpt; ++k) m = gpu_max_ftz(m, fabsf(v[k]));
    m = group_max<kG>(m, sh.red);
    if (static_cast<int>(threadIdx.x) % kG == 0 && i0 / B < nblocks) absmax[i0 / B] = m;
    const float inv = gpu_block_reciprocal(m);
    uint32_t q[kEpt];
    if (fast) {
#pragma unroll
      for (int k = 0; k < kEpt; ++k) q[k] = select_code_fast(gpu_mul_ftz(v[k], inv), sh);
    } else {
#pragma unroll
      for (int k = 0; k < kEpt; ++k) q[k] = select_code_search7(gpu_mul_ftz(v[k], inv), sh.code);
    }
    store_codes8<kEpt>(out, i0, n, vec != 0, q);
  }
}

// Every thread decodes 16 codes of one block: y = RN_T(RN32(code[q] * absmax)). With kPrefetch
// the next tile's codes and scale are loaded before the current tile is decoded.
template <int D, int kPrefetch>
__global__ void __launch_bounds__(256)
    dequantize_blockwise_kernel(const uint8_t* __restrict__ q, const float* __restrict__ absmax,
                                const float* __restrict__ code, int64_t n, int log2_block,
                                typename Elem<D>::T* __restrict__ out, int vec) {
  constexpr int kEpt = 16;
  constexpr int kTile = 256 * kEpt;
  __shared__ float table[256];
  table[threadIdx.x] = code[threadIdx.x];
  __syncthreads();
  const int64_t ntiles = (n + kTile - 1) / kTile;
  const int64_t lane0 = static_cast<int64_t>(threadIdx.x) * kEpt;
  auto whole = [&](int64_t i0) { return vec != 0 && i0 + kEpt <= n; };
  uint4 next = make_uint4(0, 0, 0, 0);
  float next_s = 0.0f;
  auto fetch = [&](int64_t i0) {
    if (i0 < n) {
      next_s = absmax[i0 >> log2_block];
      if (whole(i0)) next = *reinterpret_cast<const uint4*>(q + i0);
    }
  };
  if (kPrefetch) fetch(static_cast<int64_t>(blockIdx.x) * kTile + lane0);
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const int64_t i0 = t * kTile + lane0;
    if (i0 >= n) break;  // later tiles start further out
    if (!kPrefetch) fetch(i0);
    const uint4 r = next;
    const float s = next_s;
    if (kPrefetch && t + gridDim.x < ntiles) fetch((t + gridDim.x) * kTile + lane0);
    float y[kEpt];
    if (whole(i0)) {
      const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
      for (int k = 0; k < kEpt; ++k) y[k] = gpu_mul_ftz(table[(w[k / 4] >> (8 * (k % 4))) & 0xffu], s);
    } else {
#pragma unroll
      for (int k = 0; k < kEpt; ++k) y[k] = i0 + k < n ? gpu_mul_ftz(table[q[i0 + k]], s) : 0.0f;
    }
    store_values<D, kEpt>(out, i0, n, vec != 0, y);
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

template <int D, int B, int QT, int kPrefetch>
__global__ void __launch_bounds__(threads_for(B / elems_per_thread<D>()))
    quantize_4bit_kernel(const typename Elem<D>::T* __restrict__ a, Table16 thresholds,
                         uint8_t* __restrict__ packed, float* __restrict__ absmax, int64_t n, int vec) {
  constexpr int kEpt = elems_per_thread<D>();
  constexpr int kG = B / kEpt;
  constexpr int kThreads = threads_for(kG);
  constexpr int kTile = kThreads * kEpt;
  __shared__ float t[16];
  __shared__ float red[32];
  if (threadIdx.x < 16) t[threadIdx.x] = thresholds.v[threadIdx.x];
  __syncthreads();
  const int64_t ntiles = (n + kTile - 1) / kTile;
  const int64_t nblocks = (n + B - 1) / B;
  const int64_t lane0 = static_cast<int64_t>(threadIdx.x) * kEpt;
  ChunkReader<D, kPrefetch> reader{a, n, vec != 0};
  reader.prefetch(static_cast<int64_t>(blockIdx.x) * kTile + lane0);
  for (int64_t tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
    const int64_t i0 = tile * kTile + lane0;
    float v[kEpt];
    reader.read(i0, tile + gridDim.x < ntiles ? (tile + gridDim.x) * kTile + lane0 : -1, v);
    float m = 0.0f;
#pragma unroll
    for (int k = 0; k < kEpt; ++k) m = gpu_max_ftz(m, fabsf(v[k]));
    m = group_max<kG>(m, red);
    if (static_cast<int>(threadIdx.x) % kG == 0 && i0 / B < nblocks) absmax[i0 / B] = m;
    const float inv = gpu_block_reciprocal(m);
    uint32_t q[kEpt];
#pragma unroll
    for (int k = 0; k < kEpt; ++k) {
      const float x = gpu_mul_ftz(v[k], inv);
      q[k] = QT == kNF4 ? encode_nf4(x, t) : encode_fp4(x, t);
    }
    store_codes4<kEpt>(packed, i0, n, vec != 0, q);
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

// Every thread decodes 16 elements (8 bytes) of one block; kPrefetch as above.
template <int D, bool kNested, int kPrefetch>
__global__ void __launch_bounds__(256)
    dequantize_4bit_kernel(const uint8_t* __restrict__ packed, Table16 lut, Scales4 scales,
                           int64_t n, int log2_block, typename Elem<D>::T* __restrict__ out, int vec) {
  constexpr int kEpt = 16;
  constexpr int kTile = 256 * kEpt;
  __shared__ float table[16];
  if (threadIdx.x < 16) table[threadIdx.x] = lut.v[threadIdx.x];
  __syncthreads();
  const int64_t ntiles = (n + kTile - 1) / kTile;
  const int64_t nbytes = (n + 1) / 2;
  const int64_t lane0 = static_cast<int64_t>(threadIdx.x) * kEpt;
  auto whole = [&](int64_t i0) { return vec != 0 && i0 / 2 + kEpt / 2 <= nbytes; };
  uint2 next = make_uint2(0, 0);
  float next_s = 0.0f;
  auto fetch = [&](int64_t i0) {
    if (i0 < n) {
      next_s = block_scale<kNested>(scales, i0 >> log2_block);
      if (whole(i0)) next = *reinterpret_cast<const uint2*>(packed + i0 / 2);
    }
  };
  if (kPrefetch) fetch(static_cast<int64_t>(blockIdx.x) * kTile + lane0);
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const int64_t i0 = t * kTile + lane0;
    if (i0 >= n) break;  // later tiles start further out
    if (!kPrefetch) fetch(i0);
    const uint2 r = next;
    const float s = next_s;
    if (kPrefetch && t + gridDim.x < ntiles) fetch((t + gridDim.x) * kTile + lane0);
    float y[kEpt];
    const int64_t b0 = i0 / 2;
    if (whole(i0)) {
      const uint32_t w[2] = {r.x, r.y};
#pragma unroll
      for (int k = 0; k < kEpt / 2; ++k) {
        const uint32_t byte = (w[k / 4] >> (8 * (k % 4))) & 0xffu;
        y[2 * k] = gpu_mul_ftz(table[byte >> 4], s);
        y[2 * k + 1] = gpu_mul_ftz(table[byte & 0xfu], s);
      }
    } else {
#pragma unroll
      for (int k = 0; k < kEpt / 2; ++k) {
        const uint32_t byte = b0 + k < nbytes ? packed[b0 + k] : 0u;
        y[2 * k] = gpu_mul_ftz(table[byte >> 4], s);
        y[2 * k + 1] = gpu_mul_ftz(table[byte & 0xfu], s);
      }
    }
    store_values<D, kEpt>(out, i0, n, vec != 0, y);
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
