// Kernels of the quantization family: 8-bit blockwise and NF4/FP4 quantize/dequantize and the
// mean used by double quantization. Bit-exact with the reference CUDA kernels (docs/FORMATS.md §2-4).
//
// Layout shared by every kernel: a CUDA block walks the tensor in tiles (a persistent grid, so the
// per-launch set-up of code tables and search buckets is paid once per resident block). Thread t
// owns chunk t of a tile's wide side (the 16-bit or fp32 input of a quantizer, the output of a
// decoder), so every load and store instruction of a warp covers one contiguous span. A decoder's
// tile is kDequantSlices such slices of 16-byte chunks (slice k: chunk index k * threads + t); a
// quantizer's is one slice of 32-byte chunks. A block of blocksize B is then owned by
// G = B / (chunk elements) consecutive threads of one slice.
#ifndef BNB_GPU_QUANT_KERNELS_CUH_
#define BNB_GPU_QUANT_KERNELS_CUH_

#include <cstdint>

#include "code8_select.h"
#include "gpu_dtype.h"
#include "gpu_port.h"
#include "tables.h"

namespace bnb {
namespace gpu {

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

// Round-to-nearest-even from binary32 (docs/FORMATS.md §0 RN16 / RNbf).
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

// The 16-byte words of a full chunk as binary32 values (load_chunk's vector path).
template <int D, int kE>
__device__ __forceinline__ void words_to_f32(const uint4 (&r)[kE * sizeof(typename Elem<D>::T) / 16],
                                             float (&v)[kE]) {
  constexpr int kWords = kE * static_cast<int>(sizeof(typename Elem<D>::T)) / 4;
  uint32_t w[kWords];
#pragma unroll
  for (int k = 0; k < kWords / 4; ++k) {
    w[4 * k] = r[k].x;
    w[4 * k + 1] = r[k].y;
    w[4 * k + 2] = r[k].z;
    w[4 * k + 3] = r[k].w;
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
}

// A chunk of kE elements (16 or 32 bytes) at i0 as binary32; elements at or past n read as 0.
template <int D, int kE>
__device__ __forceinline__ void load_chunk(const typename Elem<D>::T* __restrict__ a, int64_t i0, int64_t n,
                                           bool vec, float (&v)[kE]) {
  constexpr int kWords = kE * static_cast<int>(sizeof(typename Elem<D>::T)) / 4;
  static_assert(kWords == 4 || kWords == 8, "chunks are 16 or 32 bytes");
  if (vec && i0 + kE <= n) {
    const uint4* p = reinterpret_cast<const uint4*>(a + i0);
    uint4 r[kWords / 4];
#pragma unroll
    for (int k = 0; k < kWords / 4; ++k) r[k] = p[k];
    words_to_f32<D, kE>(r, v);
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

// Two binary32 values rounded to nearest-even into one 32-bit word (lo in the low half), one
// conversion instruction on CUDA. fp16: the same conversion as from_f32. bf16: equal to from_f32
// except for NaN (the hardware writes the canonical NaN), so callers use it only where no value
// can be NaN.
template <int D>
__device__ __forceinline__ uint32_t pack2_rn(float lo, float hi) {
#if !defined(BNB_GPU_HIP)
  uint32_t r;
  if constexpr (D == kF16) {
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  } else {
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  }
  return r;
#else
  return from_f32<D>(lo) | (from_f32<D>(hi) << 16);
#endif
}

// Stores a decoder's chunk of kE values of dtype D computed as binary32 (only those below n), with
// the streaming (evict-first) hint on CUDA: the output is not read again soon (H100: 8-bit
// dequantize 89 -> 91 % of copy, NF4 87 -> 88.5 %). `no_nan`: the caller knows no value is NaN
// (bf16 may then use the packed conversion).
template <int D>
__device__ __forceinline__ void store_chunk(typename Elem<D>::T* __restrict__ out, int64_t i0, int64_t n, bool vec,
                                            const float (&y)[chunk_elems<D>()], bool no_nan) {
  constexpr int kE = chunk_elems<D>();
  if (vec && i0 + kE <= n) {
    uint32_t w[4];
    if constexpr (D == kF32) {
#pragma unroll
      for (int k = 0; k < 4; ++k) w[k] = __float_as_uint(y[k]);
    } else if constexpr (D == kF16) {
#pragma unroll
      for (int k = 0; k < 4; ++k) w[k] = pack2_rn<D>(y[2 * k], y[2 * k + 1]);
    } else {
      if (no_nan) {
#pragma unroll
        for (int k = 0; k < 4; ++k) w[k] = pack2_rn<D>(y[2 * k], y[2 * k + 1]);
      } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) w[k] = from_f32<D>(y[2 * k]) | (from_f32<D>(y[2 * k + 1]) << 16);
      }
    }
#if defined(BNB_GPU_HIP)
    *reinterpret_cast<uint4*>(out + i0) = make_uint4(w[0], w[1], w[2], w[3]);
#else
    __stcs(reinterpret_cast<uint4*>(out + i0), make_uint4(w[0], w[1], w[2], w[3]));
#endif
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

// kE codes packed two per byte, even element in the high nibble (docs/FORMATS.md §3.4); i0 is even. A
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

// NaN-dropping max |v| of a thread's chunk, from kAbsmaxEmpty (docs/FORMATS.md §2.2). The elements
// at or past n are load_chunk's zeros and count, as in the reference, whose loads pad a partial
// last block with 0.0: an all-NaN partial last block gets absmax 0, a whole one -FLT_MAX.
template <int kE>
__device__ __forceinline__ float chunk_absmax(const float (&v)[kE]) {
  float m = kAbsmaxEmpty;
#pragma unroll
  for (int j = 0; j < kE; ++j) m = gpu_max_ftz(m, fabsf(v[j]));
  return m;
}

// Maximum over the G consecutive threads owning one block. `red` holds two buffers of one float
// per warp, used by alternate tiles (`parity`), so one barrier per tile suffices: a tile's writers
// cannot overtake the readers of the tile before the previous one. The calling loop must be
// uniform across the CUDA block when G exceeds a warp.
template <int G>
__device__ __forceinline__ float group_max(float v, float* red, int parity) {
  if constexpr (G <= kWarpSize) {
#pragma unroll
    for (int s = G / 2; s > 0; s >>= 1) v = gpu_max_ftz(v, gpu_shfl_xor(v, s, G));
    return v;
  } else {
#pragma unroll
    for (int s = kWarpSize / 2; s > 0; s >>= 1) v = gpu_max_ftz(v, gpu_shfl_xor(v, s, kWarpSize));
    constexpr int kWarpsPerGroup = G / kWarpSize;
    const int warps = static_cast<int>(blockDim.x) / kWarpSize;
    const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
    red += parity * warps;
    if (static_cast<int>(threadIdx.x) % kWarpSize == 0) red[warp] = v;
    __syncthreads();
    const int first = (warp / kWarpsPerGroup) * kWarpsPerGroup;
    float r = red[first];
#pragma unroll
    for (int j = 1; j < kWarpsPerGroup; ++j) r = gpu_max_ftz(r, red[first + j]);
    return r;
  }
}

// The blockwise quantizers' scale step, once per tile: the block maximum of this thread's chunk
// maximum m (group_max on this tile's buffer, `round` then counts the tile), stored by the block's
// first thread where the block, the one holding element i0, is inside the tensor; returns its
// reciprocal, by which every thread scales its values. i0 is taken by reference, as the former
// per-slice arrays were: by value, NVVM emits the store's condition as two branches instead of one
// combined predicate (equivalent, but different machine code).
template <int B, int kG>
__device__ __forceinline__ float block_scales(float m, float* red, int& round, const int64_t& i0, int64_t nblocks,
                                              float* __restrict__ absmax) {
  m = group_max<kG>(m, red, round & 1);
  ++round;
  if (static_cast<int>(threadIdx.x) % kG == 0 && i0 / B < nblocks) absmax[i0 / B] = m;
  return gpu_block_reciprocal(m);
}

// ---------------------------------------------------------------- 8-bit code selection

// The plan, the search and the binary16-keyed buckets are bnb::code8_* (src/common/code8_select.h):
// fast tables select codes through those buckets, one packed conversion per two elements, one
// shared-memory look-up and one compare each; other tables run the reference's search verbatim.
struct Quant8Shared {
  float code[256];
  float thr[256];              // the plan's thresholds t_j, then +inf
  Code8F16Bucket bucket[kC8F16Keys];
};

// How a launch selects codes.
constexpr int kQ8Search = 0;   // the verbatim 7-step search
constexpr int kQ8Fast = 1;     // buckets, at most one threshold inside each
constexpr int kQ8Crowded = 2;  // buckets, some holding several thresholds (a second pass)

// Loads the table, makes its plan (bnb::code8_plan_entry with the device's flushed arithmetic, one
// entry per thread) and builds the buckets; returns kQ8Search, kQ8Fast or kQ8Crowded. The table
// is a device pointer the caller owns, so the plan is made here, once per resident block.
__device__ inline int quant8_setup(const float* __restrict__ code, Quant8Shared& sh) {
  for (int j = threadIdx.x; j < 256; j += blockDim.x) sh.code[j] = code[j];
  __syncthreads();
  bool ok = true;
  for (int j = threadIdx.x; j < 256; j += blockDim.x)
    sh.thr[j] = j < 255 ? code8_plan_entry(sh.code, j, true, &ok) : __uint_as_float(0x7f800000u);
  if (__syncthreads_or(!ok) != 0) return kQ8Search;
  // c8_f16_bucket for 8 keys per thread at once: the 16 binary searches (code8_bucket's two
  // counts) advance in lockstep, so their shared-memory loads overlap (the set-up is paid before
  // any tile is loaded).
  int crowded = 0;
  constexpr int kBatch = 8;
  for (int k0 = threadIdx.x; k0 < kC8F16Keys; k0 += kBatch * blockDim.x) {
    float v[2 * kBatch];
    bool nan[kBatch];
    int c[2 * kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int key = k0 + b * static_cast<int>(blockDim.x);
      nan[b] = key >= kC8F16Keys || !c8_f16_key_range(static_cast<uint32_t>(key), &v[2 * b], &v[2 * b + 1]);
      if (nan[b]) v[2 * b] = v[2 * b + 1] = 0.0f;
      c[2 * b] = c[2 * b + 1] = 0;
    }
#pragma unroll
    for (int step = 128; step > 0; step >>= 1) {
#pragma unroll
      for (int r = 0; r < 2 * kBatch; ++r) c[r] += sh.thr[c[r] + step - 1] < v[r] ? step : 0;
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int key = k0 + b * static_cast<int>(blockDim.x);
      if (key >= kC8F16Keys) continue;
      const Code8F16Bucket e = c8_f16_bucket_entry(sh.thr, nan[b], Code8Bucket{c[2 * b], c[2 * b + 1] - c[2 * b]});
      sh.bucket[key] = e;
      if ((e.info >> 8) > 1) crowded = 1;
    }
  }
  if (__syncthreads_or(crowded) != 0) return kQ8Crowded;
  // No bucket holds two thresholds: keep lo alone, so the selection needs no mask.
  for (int k = threadIdx.x; k < kC8F16Keys; k += blockDim.x) sh.bucket[k].info &= 0xffu;
  __syncthreads();
  return kQ8Fast;
}

// Bucket keys of two values: the top 12 bits of each rounded toward zero to binary16.
__device__ __forceinline__ void q8_keys2(float a, float b, uint32_t& ka, uint32_t& kb) {
#if defined(BNB_GPU_HIP)
  ka = static_cast<uint32_t>(__half_as_ushort(__float2half_rz(a))) >> 4;
  kb = static_cast<uint32_t>(__half_as_ushort(__float2half_rz(b))) >> 4;
#else
  uint32_t h;
  asm("cvt.rz.f16x2.f32 %0, %1, %2;" : "=r"(h) : "f"(b), "f"(a));  // b in the upper half
  ka = (h >> 4) & 0xfffu;
  kb = h >> 20;
#endif
}

// Codes of kE values: all look-ups issued before any is used; a crowded table resolves its
// crowded buckets in a second pass.
template <int kE>
__device__ __forceinline__ void select_codes_fast(const float (&x)[kE], const Quant8Shared& sh, int mode,
                                                  uint32_t (&q)[kE]) {
  static_assert(kE % 2 == 0, "keys are made in pairs");
  const uint2* buckets = reinterpret_cast<const uint2*>(sh.bucket);
  uint2 e[kE];
#pragma unroll
  for (int k = 0; k < kE; k += 2) {
    uint32_t ka, kb;
    q8_keys2(x[k], x[k + 1], ka, kb);
    e[k] = buckets[ka];
    e[k + 1] = buckets[kb];
  }
#pragma unroll
  for (int k = 0; k < kE; ++k) q[k] = e[k].x + (x[k] > __uint_as_float(e[k].y) ? 1u : 0u);  // kQ8Fast: x = lo
  if (mode == kQ8Crowded) {
#pragma unroll
    for (int k = 0; k < kE; ++k) {
      const uint32_t lo = e[k].x & 0xffu;
      const uint32_t inside = e[k].x >> 8;
      uint32_t c = lo + (x[k] > __uint_as_float(e[k].y) ? 1u : 0u);
      if (inside > 1) {
        const uint32_t end = lo + inside;
        while (c < end && x[k] > sh.thr[c]) ++c;
      }
      q[k] = c;
    }
  }
}

// ---------------------------------------------------------------- 8-bit blockwise kernels

// The quantizers' unit of work: 32 contiguous bytes of input per thread and tile (one slice). Two
// 16-byte slices, the decoders' layout, measured slower for the quantizers on the H100
// (bench/gpu/NOTES.md, run 4) and were dropped, and with them the quantizers' slice dimension.
constexpr int kQuantChunkBytes = 32;
template <int D>
__host__ __device__ constexpr int quant_chunk_elems() {
  return kQuantChunkBytes / static_cast<int>(sizeof(typename Elem<D>::T));
}

// With one chunk per thread and tile, the next tile's input is loaded before this tile's block
// reduction, so a block whose G spans several warps keeps loads in flight across the barrier
// (H100 bs 4096: 78 -> 81-82 % of copy).
template <int D, int B>
__global__ void __launch_bounds__(threads_for(B / quant_chunk_elems<D>()))
    quantize_blockwise_kernel(const typename Elem<D>::T* __restrict__ a, const float* __restrict__ code,
                              uint8_t* __restrict__ out, float* __restrict__ absmax, int64_t n, int vec,
                              const float* __restrict__ offset) {
  constexpr int kE = quant_chunk_elems<D>();
  constexpr int kG = B / kE;
  constexpr int kThreads = threads_for(kG);
  constexpr int64_t kTile = int64_t{kThreads} * kE;
  __shared__ Quant8Shared sh;
  __shared__ float red[2 * kThreads / 32];  // two buffers of one float per warp
  const int mode = quant8_setup(code, sh);
  // Double quantization subtracts the mean first: r_i = RN32(absmax_i - offset) (docs/FORMATS.md §4.1).
  const float sub = offset != nullptr ? *offset : 0.0f;
  const int64_t ntiles = (n + kTile - 1) / kTile;
  const int64_t nblocks = (n + B - 1) / B;
  int round = 0;  // tiles this block has walked (group_max alternates buffers by it)
  constexpr int kVecWords = kE * static_cast<int>(sizeof(typename Elem<D>::T)) / 16;
  uint4 next[kVecWords];
  bool have_next = false;
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const int64_t i0 = t * kTile + static_cast<int64_t>(threadIdx.x) * kE;
    float v[kE];
    if (have_next) {
      words_to_f32<D, kE>(next, v);
    } else {
      load_chunk<D, kE>(a, i0, n, vec != 0, v);
    }
    {  // the next tile's input, in flight across this tile's reduction
      const int64_t j0 = (t + gridDim.x) * kTile + static_cast<int64_t>(threadIdx.x) * kE;
      have_next = vec != 0 && t + gridDim.x < ntiles && j0 + kE <= n;
      if (have_next) {
        const uint4* src = reinterpret_cast<const uint4*>(a + j0);
#pragma unroll
        for (int k = 0; k < kVecWords; ++k) next[k] = src[k];
      }
    }
    if (offset != nullptr) {
#pragma unroll
      for (int j = 0; j < kE; ++j) v[j] = i0 + j < n ? gpu_add_ftz(v[j], -sub) : 0.0f;
    }
    const float inv = block_scales<B, kG>(chunk_absmax<kE>(v), red, round, i0, nblocks, absmax);
    float x[kE];
#pragma unroll
    for (int j = 0; j < kE; ++j) x[j] = gpu_mul_ftz(v[j], inv);
    uint32_t q[kE];
    if (mode != kQ8Search) {
      constexpr int kH = kE < 8 ? kE : 8;  // look-ups in flight per batch (bounds registers)
#pragma unroll
      for (int h = 0; h < kE; h += kH) {
        float xh[kH];
        uint32_t qh[kH];
#pragma unroll
        for (int j = 0; j < kH; ++j) xh[j] = x[h + j];
        select_codes_fast<kH>(xh, sh, mode, qh);
#pragma unroll
        for (int j = 0; j < kH; ++j) q[h + j] = qh[j];
      }
    } else {
#pragma unroll
      for (int j = 0; j < kE; ++j) q[j] = static_cast<uint32_t>(code8_search(sh.code, x[j]));
    }
    store_codes8<kE>(out, i0, n, vec != 0, q);
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
  // A finite table times a finite scale is never NaN (FTZ products: finite or +-inf).
  const bool table_finite = __syncthreads_or(!(fabsf(code[threadIdx.x]) <= 3.40282347e38f)) == 0;
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
      store_chunk<D>(out, i0[k], n, vec != 0, y, table_finite && fabsf(s[k]) <= 3.40282347e38f);
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

template <int D, int B, int QT>
__global__ void __launch_bounds__(threads_for(B / quant_chunk_elems<D>()))
    quantize_4bit_kernel(const typename Elem<D>::T* __restrict__ a, Table16 thresholds,
                         uint8_t* __restrict__ packed, float* __restrict__ absmax, int64_t n, int vec) {
  constexpr int kE = quant_chunk_elems<D>();
  constexpr int kG = B / kE;
  constexpr int kThreads = threads_for(kG);
  constexpr int64_t kTile = int64_t{kThreads} * kE;
  __shared__ float t16[16];
  __shared__ float red[2 * kThreads / 32];  // two buffers of one float per warp
  if (threadIdx.x < 16) t16[threadIdx.x] = thresholds.v[threadIdx.x];
  __syncthreads();
  const int64_t ntiles = (n + kTile - 1) / kTile;
  const int64_t nblocks = (n + B - 1) / B;
  int round = 0;  // tiles this block has walked (group_max alternates buffers by it)
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const int64_t i0 = t * kTile + static_cast<int64_t>(threadIdx.x) * kE;
    float v[kE];
    load_chunk<D, kE>(a, i0, n, vec != 0, v);
    const float inv = block_scales<B, kG>(chunk_absmax<kE>(v), red, round, i0, nblocks, absmax);
    uint32_t q[kE];
#pragma unroll
    for (int j = 0; j < kE; ++j) {
      const float x = gpu_mul_ftz(v[j], inv);
      q[j] = QT == kNF4 ? encode_nf4(x, t16) : encode_fp4(x, t16);
    }
    store_codes4<kE>(packed, i0, n, vec != 0, q);
  }
}


template <int D, bool kNested>
__global__ void __launch_bounds__(256)
    dequantize_4bit_kernel(const uint8_t* __restrict__ packed, Table16 lut, Scales4 scales, int64_t n,
                           int log2_block, typename Elem<D>::T* __restrict__ out, int vec) {
  constexpr int kE = chunk_elems<D>();
  constexpr int kS = kDequantSlices;  // 2 and 8 measured the same on the H100
  constexpr int64_t kTile = int64_t{256} * kE * kS;
  __shared__ float table[16];
  __shared__ float code2[kNested ? 256 : 1];  // the nested scales' table, next to the decoder's
  if (threadIdx.x < 16) table[threadIdx.x] = lut.v[threadIdx.x];
  if constexpr (kNested) {
    for (int j = threadIdx.x; j < 256; j += blockDim.x) code2[j] = scales.code2[j];
  }
  // Loaded once: for all the compiler knows, the stores to out could change it.
  const float offset = kNested ? *scales.offset : 0.0f;
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
      if constexpr (kNested) {
        const int64_t blk = i0[k] >> log2_block;
        const float s2 = i0[k] < n ? scales.absmax2[blk >> scales.log2_blocksize2] : 0.0f;
        s[k] = i0[k] < n ? gpu_add_ftz(gpu_mul_ftz(code2[scales.absmax_q[blk]], s2), offset) : 0.0f;
      } else {
        s[k] = i0[k] < n ? scales.absmax[i0[k] >> log2_block] : 0.0f;
      }
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
      // The NF4/FP4 tables are finite: only a non-finite scale can make a NaN.
      store_chunk<D>(out, i0[k], n, vec != 0, y, fabsf(s[k]) <= 3.40282347e38f);
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
