// Kernels of the LLM.int8() family (docs/FORMATS.md §6): row-wise int8 quantization with
// outlier columns, the outlier column list, a bandwidth-bound int8 product for few rows of A
// (and for every shape cuBLASLt can't take), and the dequantization of the int32 product.
// Numerics are the reference's fast-math binary32 (gpu_port.h: *_ftz helpers, rcp.approx).
#ifndef BNB_GPU_INT8_KERNELS_CUH_
#define BNB_GPU_INT8_KERNELS_CUH_

#include <cstdint>
#include <type_traits>

#include "gpu_dtype.h"
#include "gpu_port.h"
#include "tables.h"

namespace bnb {
namespace gpu {
namespace int8 {


// A value of dtype D's storage as binary32 (exact).
template <int D>
__device__ __forceinline__ float f32_of(typename Elem<D>::T v) {
  if constexpr (D == kF32) {
    return v;
  } else if constexpr (D == kF16) {
    return __half2float(__ushort_as_half(v));
  } else {
    return __uint_as_float(static_cast<uint32_t>(v) << 16);
  }
}

template <int D>
__device__ __forceinline__ float load_f32(const void* p, int64_t i) {
  return f32_of<D>(static_cast<const typename Elem<D>::T*>(p)[i]);
}

// Four consecutive elements of dtype D at p (16-byte aligned for fp32, 8-byte else) as binary32,
// in one load; store4 stores four as D's storage the same way.
template <int D>
__device__ __forceinline__ void load4(const void* p, float (&v)[4]) {
  if constexpr (D == kF32) {
    const float4 f = *static_cast<const float4*>(p);
    v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
  } else {
    const uint2 u = *static_cast<const uint2*>(p);
    v[0] = f32_of<D>(static_cast<uint16_t>(u.x & 0xffffu));
    v[1] = f32_of<D>(static_cast<uint16_t>(u.x >> 16));
    v[2] = f32_of<D>(static_cast<uint16_t>(u.y & 0xffffu));
    v[3] = f32_of<D>(static_cast<uint16_t>(u.y >> 16));
  }
}

template <int D>
__device__ __forceinline__ void store4(void* p, const typename Elem<D>::T (&v)[4]) {
  if constexpr (D == kF32) {
    *static_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    *static_cast<uint2*>(p) = make_uint2(v[0] | (static_cast<uint32_t>(v[1]) << 16),
                                         v[2] | (static_cast<uint32_t>(v[3]) << 16));
  }
}

__device__ __forceinline__ uint16_t f32_to_f16_bits(float f) { return __half_as_ushort(__float2half_rn(f)); }
__device__ __forceinline__ float f16_bits_to_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  const uint32_t b = __float_as_uint(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
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

// Programmatic dependent launch (compute capability 9.0; no-ops elsewhere and on HIP): a kernel
// launched as a programmatic dependent may start while the one before it runs, and waits for it
// (its completion and memory) in grid_dependency_wait; the one before lets it start early with
// grid_dependents_may_launch.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void grid_dependents_may_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
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

// The statistic of a row (row_stat_from_max, tables.h) from the block's maximum of the values each
// thread counted (NaN-dropping max over |x| < t, all without outliers, from kAbsmaxEmpty).
template <int kThreads>
__device__ __forceinline__ float block_row_stat(float m, float* smem) {
  return row_stat_from_max(block_max<kThreads>(m, smem));
}

// The code of x under scale s (threshold t when outliers): RN32(x * s) rounded to the nearest
// integer, saturated, and 0 for an outlier element.
__device__ __forceinline__ int32_t quant_code(float x, float s, bool outliers, float t) {
  int v = __float2int_rn(gpu_mul_ftz(x, s));
  v = v < -128 ? -128 : (v > 127 ? 127 : v);
  if (outliers && fabsf(x) >= t) v = 0;
  return v;
}

// 16 consecutive activations of dtype D at element `at` (16-byte aligned) as binary32, or 0 when
// !ok: two to four 16-byte loads.
template <int D>
__device__ __forceinline__ void load_run16(const void* A, int64_t at, bool ok, float (&v)[16]) {
  if constexpr (D == kF32) {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(A) + at);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float4 f = ok ? __ldg(p + j) : make_float4(0.f, 0.f, 0.f, 0.f);
      v[4 * j] = f.x;
      v[4 * j + 1] = f.y;
      v[4 * j + 2] = f.z;
      v[4 * j + 3] = f.w;
    }
  } else {
    const int4* p = reinterpret_cast<const int4*>(static_cast<const uint16_t*>(A) + at);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int4 r = ok ? __ldg(p + j) : make_int4(0, 0, 0, 0);
      const uint32_t w[4] = {uint32_t(r.x), uint32_t(r.y), uint32_t(r.z), uint32_t(r.w)};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if constexpr (D == kF16) {
          v[8 * j + 2 * e] = f16_bits_to_f32(static_cast<uint16_t>(w[e] & 0xffffu));
          v[8 * j + 2 * e + 1] = f16_bits_to_f32(static_cast<uint16_t>(w[e] >> 16));
        } else {
          v[8 * j + 2 * e] = __uint_as_float(w[e] << 16);
          v[8 * j + 2 * e + 1] = __uint_as_float(w[e] & 0xffff0000u);
        }
      }
    }
  }
}

// 16 activations quantized into 4 words of 4 codes in memory order.
__device__ __forceinline__ void quant_run16(const float (&v)[16], float s, bool outliers, float t, uint32_t* words) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    uint32_t word = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e)
      word |= (static_cast<uint32_t>(quant_code(v[4 * j + e], s, outliers, t)) & 0xffu) << (8 * e);
    words[j] = word;
  }
}

// The row statistic's running max m with x counted: NaN-dropping, over |x| < t (every x without
// outliers).
__device__ __forceinline__ float row_stat_take(float m, float x, bool outliers, float t) {
  const float a = fabsf(x);
  return !outliers || a < t ? gpu_max_ftz(m, a) : m;
}

// A run's 16 codes stored at q (16-byte aligned).
__device__ __forceinline__ void store_codes16(const float (&v)[16], float s, bool outliers, float t, int8_t* q) {
  uint32_t w[4];
  quant_run16(v, s, outliers, t, w);
  *reinterpret_cast<int4*>(q) = make_int4(int(w[0]), int(w[1]), int(w[2]), int(w[3]));
}

// One row per block iteration: SCB = NaN-dropping max over |x| < t (all without outliers),
// s = RN32(127 * RCP(SCB)), q = rint(RN32(x * s)) with elements |x| >= t written as 0.
// The conversion gives 0 for NaN (also 0 * inf when SCB = +-0), and saturates.
// vec (cols % 16 == 0, A and q 16-byte aligned): runs of 16 elements a thread with 16-byte loads
// and stores (a 4096-wide fp16 row is one run a thread: the row's loads all in flight at once);
// else one element a thread per step. The max does not depend on the order: the same codes.
// flag_bits (non-null, with outliers): bit c % 32 of word c / 32 set for every column c holding an
// |x| >= t (the caller cleared them), and block 0 writes *arrivals = 0 for the outlier step after
// it (outlier_epilogue_kernel).
template <int D, int kThreads>
__global__ void __launch_bounds__(kThreads)
    row_quant_kernel(const void* __restrict__ A, int64_t rows, int64_t cols, bool outliers, float t,
                     int8_t* __restrict__ q, float* __restrict__ row_stats, bool vec,
                     uint32_t* __restrict__ flag_bits, int64_t* __restrict__ arrivals) {
  __shared__ float smem[kThreads / kWarpSize];
  grid_dependents_may_launch();  // a dependent product waits for this grid's end anyway
  if (arrivals != nullptr && blockIdx.x == 0 && threadIdx.x == 0) *arrivals = 0;
  const int64_t step = vec ? int64_t{kThreads} * 16 : kThreads;
  const int64_t first = vec ? int64_t{threadIdx.x} * 16 : threadIdx.x;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t base = r * cols;
    float m = kAbsmaxEmpty;
    if (vec) {
#pragma unroll 2
      for (int64_t c = first; c < cols; c += step) {
        float v[16];
        load_run16<D>(A, base + c, true, v);
#pragma unroll
        for (int e = 0; e < 16; ++e) m = row_stat_take(m, v[e], outliers, t);
      }
    } else {
      for (int64_t c = first; c < cols; c += step) m = row_stat_take(m, load_f32<D>(A, base + c), outliers, t);
    }
    m = block_row_stat<kThreads>(m, smem);
    if (threadIdx.x == 0) row_stats[r] = m;
    const float s = gpu_mul_ftz(127.0f, gpu_block_reciprocal(m));
    if (vec) {
      for (int64_t c = first; c < cols; c += step) {
        float v[16];
        load_run16<D>(A, base + c, true, v);  // (the first pass brought the row into L1)
        store_codes16(v, s, outliers, t, q + base + c);
        if (flag_bits != nullptr) {  // c % 16 == 0: the run's 16 bits lie in one word
          uint32_t bits = 0;
#pragma unroll
          for (int e = 0; e < 16; ++e) bits |= (fabsf(v[e]) >= t ? 1u : 0u) << e;
          if (bits != 0) atomicOr(flag_bits + c / 32, bits << (c % 32));
        }
      }
    } else {
      for (int64_t c = first; c < cols; c += step) {
        const float x = load_f32<D>(A, base + c);
        q[base + c] = static_cast<int8_t>(quant_code(x, s, outliers, t));
        if (flag_bits != nullptr && fabsf(x) >= t) atomicOr(flag_bits + c / 32, 1u << (c % 32));
      }
    }
  }
}

// Columns holding any |x| >= t. Block (32, kRowPhases): x = column of a 32-column tile, y = row
// phase. Each output is optional: q (non-null) gets 0 over every outlier column, flags[c] (non-null)
// gets 1 for an outlier column and 0 for any other, and block 0 writes *arrivals = 0 (non-null)
// for the kernel that takes the outlier step after it in the stream and counts its blocks there
// (publish_outlier_columns).
template <int D>
__global__ void outlier_columns_kernel(const void* __restrict__ A, int64_t rows, int64_t cols, float t,
                                       int8_t* __restrict__ q, int32_t* __restrict__ flags,
                                       int64_t* __restrict__ arrivals) {
  __shared__ int32_t hit[32];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  if (arrivals != nullptr && blockIdx.x == 0 && threadIdx.x == 0 && threadIdx.y == 0) *arrivals = 0;
  if (threadIdx.y == 0) hit[threadIdx.x] = 0;
  __syncthreads();
  bool any = false;
  if (c < cols) {
    for (int64_t r = threadIdx.y; r < rows && !any; r += blockDim.y) any = fabsf(load_f32<D>(A, r * cols + c)) >= t;
  }
  if (any) hit[threadIdx.x] = 1;
  __syncthreads();
  if (c >= cols) return;
  if (q != nullptr && hit[threadIdx.x]) {
    for (int64_t r = threadIdx.y; r < rows; r += blockDim.y) q[r * cols + c] = 0;
  }
  if (flags != nullptr && threadIdx.y == 0) flags[c] = hit[threadIdx.x];
}

// bnb_int8_linear_outliers with more than one row, after row_quant_kernel wrote the flag bits:
// every element of q [rows, cols] in a flagged column set to 0, a block per kZeroRows rows (each
// reads all the flag words, a thread per word).
constexpr int kZeroRows = 64;
constexpr int kZeroThreads = 256;

__global__ void __launch_bounds__(kZeroThreads)
    zero_outlier_columns_kernel(const uint32_t* __restrict__ flag_bits, int64_t rows, int64_t cols,
                                int8_t* __restrict__ q) {
  grid_dependents_may_launch();  // a dependent product waits for this grid's end anyway
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kZeroRows;
  const int64_t r1 = r0 + kZeroRows < rows ? r0 + kZeroRows : rows;
  for (int64_t w = threadIdx.x; w * 32 < cols; w += kZeroThreads) {
    for (uint32_t b = flag_bits[w]; b != 0; b &= b - 1) {
      const int64_t c = w * 32 + (__ffs(static_cast<int>(b)) - 1);
      for (int64_t r = r0; r < r1; ++r) q[r * cols + c] = 0;
    }
  }
}

// bnb_int8_linear_outliers' whole quantization for at most kOutlierQuantRows rows, in one block
// (BNB_INT8_OUTLIER_TILED; cols % 16 == 0, A and q 16-byte aligned, cols <= kOutlierQuantMaxCols):
// the row statistics and the outlier columns of every row first (bits in shared memory), then the
// codes of row_quant_kernel with every element of an outlier column 0, as row_quant_kernel and
// zero_outlier_columns_kernel give them. Writes every flag word (nothing to clear before) and
// *arrivals = 0. The rows run side by side: the block's threads split into `lanes` groups of
// kOutlierQuantThreads / lanes (lanes: the rows rounded up to a power of two, at most
// kOutlierQuantRows), a group per row, each thread taking runs of 16 columns.
constexpr int kOutlierQuantRows = 16;
constexpr int kOutlierQuantThreads = 1024;
constexpr int64_t kOutlierQuantMaxCols = 65536;
static_assert(kOutlierQuantThreads / kOutlierQuantRows >= kWarpSize, "a row's group is whole warps");

template <int D>
__global__ void __launch_bounds__(kOutlierQuantThreads)
    row_quant_outliers_kernel(const void* __restrict__ A, int64_t rows, int64_t cols, float t,
                              int8_t* __restrict__ q, float* __restrict__ row_stats,
                              uint32_t* __restrict__ flag_bits, int64_t* __restrict__ arrivals) {
  constexpr int kThreads = kOutlierQuantThreads;
  __shared__ uint32_t bits_s[kOutlierQuantMaxCols / 32];
  __shared__ float stat_s[kOutlierQuantRows];
  __shared__ float red[kThreads / kWarpSize];
  grid_dependents_may_launch();  // a dependent product waits for this grid's end anyway
  int lanes = 1;
  while (lanes < rows && lanes < kOutlierQuantRows) lanes *= 2;
  const int group_threads = kThreads / lanes, group_warps = group_threads / kWarpSize;
  const int group = static_cast<int>(threadIdx.x) / group_threads;
  const int64_t first = int64_t{static_cast<int>(threadIdx.x) % group_threads} * 16,
                step = int64_t{group_threads} * 16, words = (cols + 31) / 32;
  for (int64_t w = threadIdx.x; w < words; w += kThreads) bits_s[w] = 0;
  if (threadIdx.x == 0) *arrivals = 0;
  __syncthreads();
  for (int64_t r0 = 0; r0 < rows; r0 += lanes) {  // every thread takes every step: barriers inside
    const int64_t r = r0 + group;
    float m = kAbsmaxEmpty;
    for (int64_t c = first; r < rows && c < cols; c += step) {
      float v[16];
      load_run16<D>(A, r * cols + c, true, v);
      uint32_t bits = 0;
#pragma unroll
      for (int e = 0; e < 16; ++e) {
        m = row_stat_take(m, v[e], true, t);
        bits |= (fabsf(v[e]) >= t ? 1u : 0u) << e;
      }
      if (bits != 0) atomicOr(bits_s + c / 32, bits << (c % 32));
    }
#pragma unroll
    for (int off = kWarpSize / 2; off > 0; off /= 2) m = gpu_max_ftz(m, gpu_shfl_xor(m, off, kWarpSize));
    if (threadIdx.x % kWarpSize == 0) red[threadIdx.x / kWarpSize] = m;
    __syncthreads();
    if (static_cast<int>(threadIdx.x) % group_threads == 0 && r < rows) {
      for (int w = 1; w < group_warps; ++w) m = gpu_max_ftz(m, red[group * group_warps + w]);
      m = row_stat_from_max(m);
      row_stats[r] = m;
      stat_s[r] = m;
    }
    __syncthreads();  // red is free again
  }
  for (int64_t w = threadIdx.x; w < words; w += kThreads) flag_bits[w] = bits_s[w];
  for (int64_t r = group; r < rows; r += lanes) {
    const float s = gpu_mul_ftz(127.0f, gpu_block_reciprocal(stat_s[r]));
    for (int64_t c = first; c < cols; c += step) {
      float v[16];
      load_run16<D>(A, r * cols + c, true, v);  // (the first pass brought the rows into L1)
      uint32_t w[4];
      quant_run16(v, s, true, t, w);
      const uint32_t out16 = (bits_s[c / 32] >> (c % 32)) & 0xffffu;
#pragma unroll
      for (int e = 0; e < 16; ++e) {
        if (out16 >> e & 1u) w[e / 4] &= ~(0xffu << (8 * (e % 4)));
      }
      *reinterpret_cast<int4*>(q + r * cols + c) = make_int4(int(w[0]), int(w[1]), int(w[2]), int(w[3]));
    }
  }
}

// Exclusive prefix sum of v over the block's threads in thread order (before), and the block's
// sum (total). Every thread calls it (it holds barriers); scratch has kThreads + kThreads / 32
// entries and is free again when it returns. Groups of 32 threads count first (a warp scan on
// CUDA; on HIP, where a wavefront may be 64 wide, through shared memory), then the group totals.
struct ExclusiveSum {
  int before, total;
};

template <int kThreads>
__device__ __forceinline__ ExclusiveSum block_exclusive_sum(int v, int32_t* scratch) {
  int32_t* groups = scratch + kThreads;
  const int lane = threadIdx.x % 32, group = threadIdx.x / 32;
#if defined(BNB_GPU_HIP)
  scratch[threadIdx.x] = v;
  __syncthreads();
  int inclusive = 0;
  for (int i = 0; i <= lane; ++i) inclusive += scratch[group * 32 + i];
#else
  int inclusive = v;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const int u = __shfl_up_sync(0xffffffffu, inclusive, off);
    if (lane >= off) inclusive += u;
  }
#endif
  if (lane == 31) groups[group] = inclusive;
  __syncthreads();
  int before = inclusive - v, all = 0;
#pragma unroll
  for (int g = 0; g < kThreads / 32; ++g) {
    const int s = groups[g];
    before += g < group ? s : 0;
    all += s;
  }
  __syncthreads();
  return {before, all};
}

// The flagged columns of [c0, c1) in ascending order: emit(j, c) for the j-th of them (j from 0).
// A step takes kThreads * 64 columns, 64 consecutive ones per thread as a bit mask, so a block
// finds the outlier columns of a layer in one or two steps. Returns how many. Every thread
// calls it. A step reads all its flags before its first barrier and emits only after it, and
// j <= c - c0, so the list may overwrite the flags it is made from (c0 = 0, columns = flags).
// Its callers keep the result in a non-const variable: nvcc 13's front end fails (an internal
// error in i_copy_expr_tree) on a const one passed on to another function.
template <int kThreads, class Flag, class Emit>
__device__ __forceinline__ int64_t walk_flags(int64_t c0, int64_t c1, const Flag& flag, const Emit& emit,
                                              int32_t* scratch) {
  constexpr int kPer = 64;
  int64_t base = 0;
  for (int64_t s = c0; s < c1; s += int64_t{kThreads} * kPer) {
    const int64_t first = s + static_cast<int64_t>(threadIdx.x) * kPer;
    uint64_t mask = 0;
    if (first + kPer <= c1) {  // 16 loads in flight at a time
#pragma unroll 16
      for (int i = 0; i < kPer; ++i) mask |= static_cast<uint64_t>(flag(first + i) ? 1 : 0) << i;
    } else {
      for (int i = 0; first + i < c1; ++i) mask |= static_cast<uint64_t>(flag(first + i) ? 1 : 0) << i;
    }
    const ExclusiveSum sum = block_exclusive_sum<kThreads>(__popcll(mask), scratch);
    int64_t j = base + sum.before;
    for (; mask != 0; mask &= mask - 1) emit(j++, first + (__ffsll(static_cast<long long>(mask)) - 1));
    base += sum.total;
  }
  return base;
}

// Ascending indices of the flagged columns (one block of 1024 threads); count = how many, of
// which the first `capacity` are written. columns may be flags itself (walk_flags).
__global__ void __launch_bounds__(1024)
    compact_columns_kernel(const int32_t* flags, int64_t cols, int32_t* columns, int64_t capacity,
                           int64_t* __restrict__ count) {
  __shared__ int32_t scratch[1024 + 1024 / 32];
  int64_t n = walk_flags<1024>(
      0, cols, [&](int64_t c) { return flags[c] != 0; },
      [&](int64_t j, int64_t c) {
        if (j < capacity) columns[j] = static_cast<int32_t>(c);
      },
      scratch);
  if (threadIdx.x == 0) *count = n;
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

// RN_D(v) as dtype D's storage (Elem<D>::T).
template <int D>
__device__ __forceinline__ typename Elem<D>::T elem_of(float v) {
  if constexpr (D == kF32) {
    return v;
  } else if constexpr (D == kF16) {
    return f32_to_f16_bits(v);
  } else {
    return f32_to_bf16_bits(v);
  }
}

// Element i of p (dtype D) = RN_D(v).
template <int D>
__device__ __forceinline__ void store_f32(void* p, int64_t i, float v) {
  static_cast<typename Elem<D>::T*>(p)[i] = elem_of<D>(v);
}

// RN_D(v), in binary32.
template <int D>
__device__ __forceinline__ float round_to(float v) {
  if constexpr (D == kF16) {
    return f16_bits_to_f32(f32_to_f16_bits(v));
  } else if constexpr (D == kBF16) {
    return __uint_as_float(static_cast<uint32_t>(f32_to_bf16_bits(v)) << 16);
  } else {
    return v;
  }
}

// The fp16 value of out[m, n] from the int32 product (docs/FORMATS.md §6.3), as bits:
// t = RN32(RN32(C * row) * col); fp16 bias fused (RN16(fma(t, K_DQ, bias))), else RN16(t * K_DQ)
// and a bias of out_dtype O added in binary32 and rounded to fp16 again. Bias element n.
template <int O, bool kBias>
__device__ __forceinline__ uint16_t dequant_f16(int32_t c, float rs, float cs, const void* __restrict__ bias,
                                                int64_t n) {
  const float kdq = __uint_as_float(kDequantScaleBits);
  const float t = gpu_mul_ftz(gpu_mul_ftz(__int2float_rn(c), rs), cs);
  if constexpr (kBias && O == kF16) {
    return f32_to_f16_bits(gpu_fma_ftz(t, kdq, load_f32<kF16>(bias, n)));
  } else {
    const uint16_t h = f32_to_f16_bits(gpu_mul_ftz(t, kdq));
    if constexpr (kBias) return f32_to_f16_bits(gpu_add_ftz(f16_bits_to_f32(h), load_f32<O>(bias, n)));
    return h;
  }
}

// The fp16 value h converted to dtype O, as O's storage; store_f16_as stores it as element e of out.
template <int O>
__device__ __forceinline__ typename Elem<O>::T elem_of_f16(uint16_t h) {
  if constexpr (O == kF16) {
    return h;
  } else {
    return elem_of<O>(f16_bits_to_f32(h));
  }
}

template <int O>
__device__ __forceinline__ void store_f16_as(void* __restrict__ out, int64_t e, uint16_t h) {
  static_cast<typename Elem<O>::T*>(out)[e] = elem_of_f16<O>(h);
}

// What load_f32<O> reads back from the element store_f16_as<O> writes for h.
template <int O>
__device__ __forceinline__ float f16_as(uint16_t h) {
  if constexpr (O == kF16) {
    return f16_bits_to_f32(h);
  } else {
    return round_to<O>(f16_bits_to_f32(h));
  }
}

// out[m, n] (element e, dtype O) from the int32 product: dequant_f16 converted to O.
template <int O, bool kBias>
__device__ __forceinline__ void dequant_store(int32_t c, float rs, float cs, const void* __restrict__ bias, int64_t n,
                                              void* __restrict__ out, int64_t e) {
  store_f16_as<O>(out, e, dequant_f16<O, kBias>(c, rs, cs, bias, n));
}

// ---------------------------------------------------------------- the outlier product
//
// bnb_int8_linear_outliers' last step (docs/OPS.md §5.10) on out [M, N] (dtype D):
// out[m, n] = RN_D(o + RN_D(s)), s = fma(A[m, c], Wc[n, c], s) over the outlier columns c
// ascending from s = +0, Wc = RN_D(RN32(RN32(W * SCB) * RN32(1/127))), every step .ftz, where o
// is (kEpi = kOutlierInPlace) out as the layer's int8 term wrote it, or (kOutlierDequant,
// kOutlierDequantBias) the int8 term itself, dequantized here from the int32 product C [M, N]
// with row_stats, SCB and bias (dequant_store's value: the separate dequantization pass and its
// rewrite of out are saved). With no outlier column, out is o as dequant_store writes it (in
// place: left untouched). The kernel also writes the ascending list of outlier columns to
// columns[0 .. n) and n to *count.
//
// Where the flags come from:
// * kRowFlags (M = 1): column c is an outlier where |A[0, c]| >= t; every block finds them in
//   A's row, and block (0, 0) writes the list and the count.
// * else: columns[c] holds the flag of column c (0 or 1, outlier_columns_kernel), and *count
//   holds 0 on entry. Each block counts itself into *count once it has read its last flag; the
//   last one to arrive, when no block reads a flag any more, writes the list over the flags and
//   the final count.
//
// A block owns 64 x 64 tiles of out (thread (tx, ty) of 16 x 16 the outputs m0 + ty + 16 i,
// n0 + tx + 16 j): the n-tiles blockIdx.x + k gridDim.x, and for each of them the m-tiles
// blockIdx.y + k gridDim.y. With up to kOutlierCached outlier columns the block keeps its Wc
// rows for all of them in shared memory, gathered once per n-tile; above that it walks the
// columns kOutlierCached flags at a time and gathers Wc again for every m-tile. A is gathered
// kOutlierChunk columns at a time per m-tile.
constexpr int kOutlierTile = 64;
constexpr int kOutlierChunk = 32;
constexpr int kOutlierCached = 128;
constexpr int kOutlierThreads = 256;
constexpr int kOutlierBlocksPerSm = 3;  // resident per multiprocessor (the launch bounds cap registers for it)
constexpr int kOutlierInPlace = 0, kOutlierDequant = 1, kOutlierDequantBias = 2;

// Wc[n, c] = RN_D(RN32(RN32(W[n, c] * SCB[n]) * RN32(1/127))), .ftz (docs/OPS.md §5.10).
template <int D>
__device__ __forceinline__ float outlier_weight_of(int8_t w, float scb) {
  const float ws = gpu_mul_ftz(static_cast<float>(w), scb);
  return round_to<D>(gpu_mul_ftz(ws, __uint_as_float(kInv127Bits)));
}

template <int D>
__device__ __forceinline__ float outlier_weight(const int8_t* __restrict__ W, const float* __restrict__ SCB,
                                                int64_t n, int64_t c, int64_t K) {
  return outlier_weight_of<D>(W[n * K + c], SCB[n]);
}

// Element e of out (dtype D) = RN_D(o + RN_D(s)): the int8 term o with the outlier sum s.
template <int D>
__device__ __forceinline__ void store_with_outlier_sum(void* __restrict__ out, int64_t e, float o, float s) {
  store_f32<D>(out, e, gpu_add_ftz(o, round_to<D>(s)));
}

// dequant_store of the int32 product c, with the outlier sum s added where there are outlier
// columns (any): out as bnb_int8_linear writes it, then as the outlier product updates it.
template <int D, bool kBias>
__device__ __forceinline__ void dequant_store_outliers(int32_t c, float rs, float cs, const void* __restrict__ bias,
                                                       int64_t n, void* __restrict__ out, int64_t e, bool any,
                                                       float s) {
  const uint16_t h = dequant_f16<D, kBias>(c, rs, cs, bias, n);
  if (any) {
    store_with_outlier_sum<D>(out, e, f16_as<D>(h), s);
  } else {
    store_f16_as<D>(out, e, h);
  }
}

// The end of a kernel that lists the outlier columns from their flags in `columns` (0 or 1 per
// column, *count = 0 on entry, total of them flagged): each block counts itself into *count once
// it has read its last flag, and the last one to arrive, when no block reads a flag any more,
// writes the ascending list over the flags (from list[0 .. total) where the block holds all of
// it, else walking the flags again) and total to *count. Every thread of every block calls it;
// last is a shared flag.
template <int kThreads>
__device__ __forceinline__ void publish_outlier_columns(int32_t* columns, int64_t* count, int64_t K, int64_t total,
                                                        const int32_t* list, int32_t* scratch, int32_t* last) {
  __syncthreads();  // every thread of the block has read its last flag
  if (threadIdx.x == 0) {
    __threadfence();
    const unsigned long long blocks = static_cast<unsigned long long>(gridDim.x) * gridDim.y;
    *last = atomicAdd(reinterpret_cast<unsigned long long*>(count), 1ull) == blocks - 1;
  }
  __syncthreads();
  if (!*last) return;
  __threadfence();
  if (list != nullptr) {
    for (int64_t j = threadIdx.x; j < total; j += kThreads) columns[j] = list[j];
  } else {
    walk_flags<kThreads>(
        0, K, [&](int64_t c) { return columns[c] != 0; },
        [&](int64_t j, int64_t c) { columns[j] = static_cast<int32_t>(c); }, scratch);
  }
  if (threadIdx.x == 0) *count = total;
}

// Above a kernel's list capacity kL: the outlier columns of [0, K) a span of kL flags at a time,
// list[0 .. n) getting the span's n columns (ascending, walked again from the flags) before
// body(n) runs, span after span. Every thread calls it; the barrier before each walk waits for
// the previous body's readers of list (body orders its own reads after the walk's writes).
template <int kThreads, int kL, class Flag, class Body>
__device__ __forceinline__ void for_each_flag_span(int64_t K, const Flag& flag, int32_t* list, int32_t* scratch,
                                                   const Body& body) {
  for (int64_t f0 = 0; f0 < K; f0 += kL) {
    __syncthreads();
    int n = static_cast<int>(walk_flags<kThreads>(
        f0, f0 + kL < K ? f0 + kL : K, flag, [&](int64_t j, int64_t c) { list[j] = static_cast<int32_t>(c); },
        scratch));
    body(n);
  }
}

// An outlier step's flag of column c: row_flags (M = 1) |A[0, c]| >= t, else the flag the
// quantization pass wrote into `columns`.
template <int D>
struct OutlierFlag {
  const void* A;
  float t;
  const int32_t* columns;
  bool row_flags;
  __device__ __forceinline__ bool operator()(int64_t c) const {
    return row_flags ? fabsf(load_f32<D>(A, c)) >= t : columns[c] != 0;
  }
};

// The start of an outlier step (outlier_product_kernel, block_outlier_sums): walks every flag,
// lists the first kL outlier columns in list (ascending; with row flags block 0 also writes every
// one to `columns`) and returns how many there are. Every thread calls it.
template <int kThreads, int kL, class Flag>
__device__ __forceinline__ int64_t list_outlier_columns(const Flag& flag, int64_t K, int32_t* columns, int32_t* list,
                                                        int32_t* scratch) {
  const bool lead = flag.row_flags && blockIdx.x == 0 && blockIdx.y == 0;
  return walk_flags<kThreads>(
      0, K, flag,
      [&](int64_t j, int64_t c) {
        if (j < kL) list[j] = static_cast<int32_t>(c);
        if (lead) columns[j] = static_cast<int32_t>(c);
      },
      scratch);
}

// Its end: with row flags block 0 writes the count (the list is written); else the flags become
// the list (publish_outlier_columns; list holds all `total` columns when total <= kL).
template <int kThreads, int kL, class Flag>
__device__ __forceinline__ void end_outlier_step(const Flag& flag, int64_t K, int64_t total, int32_t* columns,
                                                 int64_t* count, const int32_t* list, int32_t* scratch,
                                                 int32_t* last) {
  if (flag.row_flags) {
    if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *count = total;
  } else {
    publish_outlier_columns<kThreads>(columns, count, K, total, total <= kL ? list : nullptr, scratch, last);
  }
}

template <int D, bool kRowFlags, int kEpi>
__global__ void __launch_bounds__(kOutlierThreads, kOutlierBlocksPerSm)
    outlier_product_kernel(const void* __restrict__ A, const int8_t* __restrict__ W, const float* __restrict__ SCB,
                           float t, int32_t* columns, int64_t* count, int64_t M, int64_t N, int64_t K,
                           const int32_t* __restrict__ C, const float* __restrict__ row_stats,
                           const void* __restrict__ bias, void* __restrict__ out) {
  constexpr int kT = kOutlierTile, kC = kOutlierChunk, kL = kOutlierCached, kPer = kT / 16;
  constexpr int kThreads = kOutlierThreads;
  __shared__ float a_s[kT][kC + 1];
  __shared__ float w_s[kT][kL + 1];
  __shared__ int32_t col_s[kL];
  __shared__ int32_t scratch[kThreads + kThreads / 32];
  __shared__ int32_t last_s;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const OutlierFlag<D> flag{A, t, columns, kRowFlags};
  // All the flags: the count, and the first kL columns into col_s.
  const int64_t total = list_outlier_columns<kThreads, kL>(flag, K, columns, col_s, scratch);
  const bool cached = total <= kL;

  // w_s[r][j] = Wc[n0 + r, col_s[j]] for j < n (0 past N).
  const auto gather_w = [&](int64_t n0, int n) {
    for (int e = threadIdx.x; e < kT * n; e += kThreads) {
      const int r = e / n, j = e % n;
      w_s[r][j] = n0 + r < N ? outlier_weight<D>(W, SCB, n0 + r, col_s[j], K) : 0.0f;
    }
  };
  // acc = fma(A[m, col_s[j]], w_s[n][j], acc) for j = 0 .. n - 1 in turn (w_s written before the
  // call; the first barrier inside orders it).
  const auto accumulate = [&](float (&acc)[kPer][kPer], int64_t m0, int n) {
    for (int j0 = 0; j0 < n; j0 += kC) {
      const int chunk = n - j0 < kC ? n - j0 : kC;
      __syncthreads();  // the previous chunk's a_s is read
      for (int e = threadIdx.x; e < kT * kC; e += kThreads) {
        const int r = e / kC, j = e % kC;
        a_s[r][j] = j < chunk && m0 + r < M ? load_f32<D>(A, (m0 + r) * K + col_s[j0 + j]) : 0.0f;
      }
      __syncthreads();
      for (int j = 0; j < chunk; ++j) {
        float a[kPer], w[kPer];
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          a[i] = a_s[ty + 16 * i][j];
          w[i] = w_s[tx + 16 * i][j0 + j];
        }
#pragma unroll
        for (int i = 0; i < kPer; ++i)
#pragma unroll
          for (int k = 0; k < kPer; ++k) acc[i][k] = gpu_fma_ftz(a[i], w[k], acc[i][k]);
      }
    }
  };

  if (total > 0 || kEpi != kOutlierInPlace) {
    for (int64_t n0 = static_cast<int64_t>(blockIdx.x) * kT; n0 < N; n0 += static_cast<int64_t>(gridDim.x) * kT) {
      if (cached && total > 0) {
        __syncthreads();  // col_s is written, the previous n-tile's w_s read
        gather_w(n0, static_cast<int>(total));
      }
      for (int64_t m0 = static_cast<int64_t>(blockIdx.y) * kT; m0 < M; m0 += static_cast<int64_t>(gridDim.y) * kT) {
        float acc[kPer][kPer];
#pragma unroll
        for (int i = 0; i < kPer; ++i)
#pragma unroll
          for (int k = 0; k < kPer; ++k) acc[i][k] = 0.0f;
        if (cached) {
          if (total > 0) accumulate(acc, m0, static_cast<int>(total));
        } else {
          for_each_flag_span<kThreads, kL>(K, flag, col_s, scratch, [&](int n) {
            __syncthreads();  // col_s is written (and the previous span's w_s read)
            gather_w(n0, n);
            accumulate(acc, m0, n);
          });
        }
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          const int64_t m = m0 + ty + 16 * i;
          if (m >= M) continue;
#pragma unroll
          for (int k = 0; k < kPer; ++k) {
            const int64_t n = n0 + tx + 16 * k, e = m * N + n;
            if (n >= N) continue;
            if constexpr (kEpi == kOutlierInPlace) {
              store_with_outlier_sum<D>(out, e, load_f32<D>(out, e), acc[i][k]);
            } else {
              dequant_store_outliers<D, kEpi == kOutlierDequantBias>(C[e], row_stats[m], SCB[n], bias, n, out, e,
                                                                     total > 0, acc[i][k]);
            }
          }
        }
      }
    }
  }

  end_outlier_step<kThreads, kL>(flag, K, total, columns, count, col_s, scratch, &last_s);
}

// The outlier step of bnb_int8_linear_outliers as a tiled epilogue (BNB_INT8_OUTLIER_TILED=1):
// the values of outlier_product_kernel (out[m, n] = RN_D(o + RN_D(s)), o in place or dequantized
// from C here), with the accesses of a dequantization pass. The flags are bits (row_quant_kernel's
// flag_bits, in `columns`: K <= kEpiMaxK); every block reads them once (a thread per
// kEpiWordsPerThread consecutive words, in registers) and lists the columns from a block prefix
// sum; the last block to finish writes the ascending list over the bits and the count to *count
// (0 on entry: the block counter). A block owns kEpiCols columns of out (lane l of every warp the
// four at 4l: 16-byte loads of C and SCB) and walks row steps of kEpiRows rows (warp w the rows
// w + 8i). Wc for its columns and up to kEpiList<D> outlier columns sits in shared memory
// (in D: RN_D values), gathered once; each row step gathers A over the outlier columns. Above
// kEpiList<D> outlier columns the block takes them a span at a time, gathering Wc again for every
// row step.
constexpr int kEpiThreads = 256;
constexpr int kEpiCols = 128;
constexpr int kEpiRowsPerWarp = 2;
constexpr int kEpiRows = kEpiRowsPerWarp * kEpiThreads / 32;
constexpr int kEpiWordsPerThread = 8;
constexpr int64_t kEpiMaxK = int64_t{kEpiThreads} * kEpiWordsPerThread * 32;
constexpr int kEpiGather = 16;
constexpr int kEpiBlocksPerSm = 3;
template <int D>
constexpr int kEpiList = D == kF32 ? 64 : 128;

template <int D, int kEpi>
__global__ void __launch_bounds__(kEpiThreads, kEpiBlocksPerSm)
    outlier_epilogue_kernel(const void* __restrict__ A, const int8_t* __restrict__ W, const float* __restrict__ SCB,
                            int32_t* columns, int64_t* count, int64_t M, int64_t N, int64_t K,
                            const int32_t* __restrict__ C, const float* __restrict__ row_stats,
                            const void* __restrict__ bias, void* __restrict__ out, bool vec) {
  using T = typename Elem<D>::T;
  constexpr int kL = kEpiList<D>, kR = kEpiRowsPerWarp, kWarps = kEpiThreads / 32, kWpt = kEpiWordsPerThread;
  alignas(16) __shared__ T w_s[kL][kEpiCols];
  __shared__ float a_s[kEpiRows][kL + 1];
  __shared__ int32_t col_s[kL];
  __shared__ int32_t scratch[kEpiThreads + kEpiThreads / 32];
  __shared__ int32_t last_s;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kEpiCols;

  // The thread's flag words (words w0 .. w0 + kWpt - 1) and how many outlier columns come before them.
  const int64_t words = (K + 31) / 32, w0 = int64_t{threadIdx.x} * kWpt;
  uint32_t bits[kWpt];
  int mine = 0;
#pragma unroll
  for (int i = 0; i < kWpt; ++i) {
    bits[i] = w0 + i < words ? static_cast<const uint32_t*>(static_cast<const void*>(columns))[w0 + i] : 0u;
    mine += __popc(bits[i]);
  }
  const ExclusiveSum sum = block_exclusive_sum<kEpiThreads>(mine, scratch);
  const int64_t total = sum.total;
  // Columns j0 .. j0 + kL - 1 of the list into col_s (out[j - j0] = column), returns how many.
  const auto list_span = [&](int64_t j0, int32_t* dst, int64_t cap) {
    int64_t j = sum.before;
#pragma unroll
    for (int i = 0; i < kWpt; ++i) {
      for (uint32_t b = bits[i]; b != 0; b &= b - 1, ++j) {
        if (j >= j0 && j < j0 + cap) dst[j - j0] = static_cast<int32_t>((w0 + i) * 32 + __ffs(static_cast<int>(b)) - 1);
      }
    }
    return total - j0 < cap ? static_cast<int>(total - j0) : static_cast<int>(cap);
  };

  // w_s[j][x] = Wc[n0 + x, col_s[j]] for j < n (0 past N): two threads a column, kEpiGather loads in flight.
  const auto gather_w = [&](int n) {
    __syncthreads();  // col_s is written, the previous w_s read
    const int x = threadIdx.x % kEpiCols, jp = threadIdx.x / kEpiCols;
    const int64_t c = n0 + x;
    const float scb = c < N ? SCB[c] : 0.0f;
    for (int j0 = jp; j0 < n; j0 += 2 * kEpiGather) {
      int8_t w[kEpiGather];
#pragma unroll
      for (int i = 0; i < kEpiGather; ++i) {
        const int j = j0 + 2 * i;
        w[i] = j < n && c < N ? W[c * K + col_s[j]] : int8_t{0};
      }
#pragma unroll
      for (int i = 0; i < kEpiGather; ++i) {
        const int j = j0 + 2 * i;
        if (j < n) w_s[j][x] = elem_of<D>(c < N ? outlier_weight_of<D>(w[i], scb) : 0.0f);
      }
    }
  };
  // s[i][k] = fma(A[m, col_s[j]], w_s[j][4 lane + k], s[i][k]) for j = 0 .. n - 1 in turn,
  // m = m0 + warp + 8i (w_s written before the call; the first barrier orders it).
  const auto accumulate = [&](float (&s)[kR][4], int64_t m0, int n) {
    __syncthreads();  // the previous step's a_s is read
    for (int e = threadIdx.x; e < kEpiRows * n; e += kEpiThreads) {
      const int r = e / n, j = e % n;
      a_s[r][j] = m0 + r < M ? load_f32<D>(A, (m0 + r) * K + col_s[j]) : 0.0f;
    }
    __syncthreads();
    for (int j = 0; j < n; ++j) {
      float w[4];
      load4<D>(&w_s[j][4 * lane], w);
#pragma unroll
      for (int i = 0; i < kR; ++i) {
        const float a = a_s[warp + kWarps * i][j];
#pragma unroll
        for (int k = 0; k < 4; ++k) s[i][k] = gpu_fma_ftz(a, w[k], s[i][k]);
      }
    }
  };

  const bool cached = total <= kL;
  if (cached && total > 0) {
    list_span(0, col_s, kL);
    gather_w(static_cast<int>(total));
  }
  // Launched as a programmatic dependent of the product: the flag bits, A and W were written
  // before the product's inputs; the int8 term (out or C) is the product's own. Every block waits
  // (the grid ends after the product).
  grid_dependency_wait();
  if (total > 0 || kEpi != kOutlierInPlace) {
    const int64_t n = n0 + 4 * lane;
    const int live = n >= N ? 0 : (N - n < 4 ? static_cast<int>(N - n) : 4);
    const bool v4 = vec && live == 4;
    float cs[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if constexpr (kEpi != kOutlierInPlace) {
      if (v4) {
        const float4 f = *reinterpret_cast<const float4*>(SCB + n);
        cs[0] = f.x, cs[1] = f.y, cs[2] = f.z, cs[3] = f.w;
      } else {
        for (int k = 0; k < live; ++k) cs[k] = SCB[n + k];
      }
    }
    for (int64_t m0 = static_cast<int64_t>(blockIdx.y) * kEpiRows; m0 < M;
         m0 += static_cast<int64_t>(gridDim.y) * kEpiRows) {
      // The int8 term's inputs first: their loads overlap the outlier sums.
      int32_t c[kR][4];
      float o[kR][4];
#pragma unroll
      for (int i = 0; i < kR; ++i) {
        const int64_t m = m0 + warp + kWarps * i, e = m * N + n;
#pragma unroll
        for (int k = 0; k < 4; ++k) c[i][k] = 0, o[i][k] = 0.0f;
        if (m >= M || live == 0) continue;
        if constexpr (kEpi == kOutlierInPlace) {
          if (v4) {
            load4<D>(static_cast<const T*>(out) + e, o[i]);
          } else {
            for (int k = 0; k < live; ++k) o[i][k] = load_f32<D>(out, e + k);
          }
        } else {
          if (v4) {
            const int4 ci = *reinterpret_cast<const int4*>(C + e);
            c[i][0] = ci.x, c[i][1] = ci.y, c[i][2] = ci.z, c[i][3] = ci.w;
          } else {
            for (int k = 0; k < live; ++k) c[i][k] = C[e + k];
          }
        }
      }
      float s[kR][4];
#pragma unroll
      for (int i = 0; i < kR; ++i)
#pragma unroll
        for (int k = 0; k < 4; ++k) s[i][k] = 0.0f;
      if (cached) {
        if (total > 0) accumulate(s, m0, static_cast<int>(total));
      } else {
        for (int64_t j0 = 0; j0 < total; j0 += kL) {
          __syncthreads();  // the previous span's col_s is read
          const int span = list_span(j0, col_s, kL);
          gather_w(span);
          accumulate(s, m0, span);
        }
      }
#pragma unroll
      for (int i = 0; i < kR; ++i) {
        const int64_t m = m0 + warp + kWarps * i, e = m * N + n;
        if (m >= M || live == 0) continue;
        T r[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if constexpr (kEpi == kOutlierInPlace) {
            r[k] = elem_of<D>(gpu_add_ftz(o[i][k], round_to<D>(s[i][k])));
          } else {
            const uint16_t d = dequant_f16<D, kEpi == kOutlierDequantBias>(c[i][k], row_stats[m], cs[k], bias,
                                                                           k < live ? n + k : n);
            r[k] = total > 0 ? elem_of<D>(gpu_add_ftz(f16_as<D>(d), round_to<D>(s[i][k]))) : elem_of_f16<D>(d);
          }
        }
        if (v4) {
          store4<D>(static_cast<T*>(out) + e, r);
        } else {
          for (int k = 0; k < live; ++k) static_cast<T*>(out)[e + k] = r[k];
        }
      }
    }
  }

  // The last block to finish writes the list over the flag words (every block has read them).
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    const unsigned long long blocks = static_cast<unsigned long long>(gridDim.x) * gridDim.y;
    last_s = atomicAdd(reinterpret_cast<unsigned long long*>(count), 1ull) == blocks - 1;
  }
  __syncthreads();
  if (!last_s) return;
  __threadfence();
  list_span(0, columns, total);
  if (threadIdx.x == 0) *count = total;
}

// The outlier sums for a kernel whose block owns rows n0 .. n0 + R - 1 of out for all M <= kM
// rows of A (int8_mma_rows_kernel's epilogue adds them): sums[r][m] = s[m, n0 + r] of docs/OPS.md
// §5.10 (0 past N and M). The block lists the outlier columns kOutlierList at a time (above
// that, walking the flags again per kOutlierList columns), gathers Wc and A for
// kOutlierRowsChunk of them at a time into shared memory, and each thread sums R * kM / kThreads
// outputs in column order.
constexpr int kOutlierList = 512;
constexpr int kOutlierRowsChunk = 64;

template <int R, int kM, int kThreads>
struct OutlierRowsSmem {
  float sums[R][kM];
  float w[R][kOutlierRowsChunk + 1];
  float x[kM][kOutlierRowsChunk + 1];
  int32_t list[kOutlierList];
  int32_t scratch[kThreads + kThreads / 32];
  int32_t last;
};

// The flags: row_flags (M = 1) those of A's row (|x| >= t), and block 0 writes the column list
// and the count; else the flags in `columns` (publish_outlier_columns). Returns the number of
// outlier columns. Every thread calls it; sm.sums is complete after the caller's next barrier.
template <int D, int R, int kM, int kThreads>
__device__ __forceinline__ int64_t block_outlier_sums(const void* __restrict__ A, const int8_t* __restrict__ W,
                                                      const float* __restrict__ SCB, float t, int32_t* columns,
                                                      int64_t* count, int64_t M, int64_t N, int64_t K, int64_t n0,
                                                      bool row_flags, OutlierRowsSmem<R, kM, kThreads>& sm) {
  constexpr int kL = kOutlierList, kC = kOutlierRowsChunk, kPer = (R * kM + kThreads - 1) / kThreads;
  const OutlierFlag<D> flag{A, t, columns, row_flags};
  const int64_t total = list_outlier_columns<kThreads, kL>(flag, K, columns, sm.list, sm.scratch);
  float s[kPer];
#pragma unroll
  for (int p = 0; p < kPer; ++p) s[p] = 0.0f;
  // s = fma(A[m, list[j]], Wc[n0 + r, list[j]], s) for j = 0 .. n - 1 in turn.
  const auto accumulate = [&](int n) {
    for (int j0 = 0; j0 < n; j0 += kC) {
      const int chunk = n - j0 < kC ? n - j0 : kC;
      __syncthreads();  // the list is written, the previous chunk read
      for (int e = threadIdx.x; e < (R + kM) * kC; e += kThreads) {
        const int r = e / kC, j = e % kC;
        const int64_t c = j < chunk ? sm.list[j0 + j] : 0;
        if (r < R) {
          sm.w[r][j] = j < chunk && n0 + r < N ? outlier_weight<D>(W, SCB, n0 + r, c, K) : 0.0f;
        } else {
          sm.x[r - R][j] = j < chunk && r - R < M ? load_f32<D>(A, (r - R) * K + c) : 0.0f;
        }
      }
      __syncthreads();
#pragma unroll
      for (int p = 0; p < kPer; ++p) {
        const int o = static_cast<int>(threadIdx.x) + kThreads * p;
        if (o >= R * kM) break;
        const int r = o / kM, m = o % kM;
        for (int j = 0; j < chunk; ++j) s[p] = gpu_fma_ftz(sm.x[m][j], sm.w[r][j], s[p]);
      }
    }
  };
  if (total <= kL) {
    accumulate(static_cast<int>(total));
  } else {
    for_each_flag_span<kThreads, kL>(K, flag, sm.list, sm.scratch, accumulate);
  }
#pragma unroll
  for (int p = 0; p < kPer; ++p) {
    const int o = static_cast<int>(threadIdx.x) + kThreads * p;
    if (o < R * kM) sm.sums[o / kM][o % kM] = s[p];
  }
  end_outlier_step<kThreads, kL>(flag, K, total, columns, count, sm.list, sm.scratch, &sm.last);
  return total;
}

// The dequantization as its own pass. Grid: x over tiles of kDequantCols columns (each thread
// kDequantCols / 256 of them, a warp's accesses contiguous), y over rows.
constexpr int kDequantCols = 1024;

template <int O, bool kBias>
__global__ void __launch_bounds__(256)
    dequant_kernel(const int32_t* __restrict__ C, const float* __restrict__ row_stats,
                   const float* __restrict__ col_stats, const void* __restrict__ bias, int64_t M, int64_t N,
                   void* __restrict__ out) {
  const int64_t n_tile = static_cast<int64_t>(blockIdx.x) * kDequantCols + threadIdx.x;
  for (int64_t m = blockIdx.y; m < M; m += gridDim.y) {
    const float rs = row_stats[m];
#pragma unroll
    for (int j = 0; j < kDequantCols / 256; ++j) {
      const int64_t n = n_tile + j * 256;
      if (n >= N) break;
      dequant_store<O, kBias>(C[m * N + n], rs, col_stats[n], bias, n, out, m * N + n);
    }
  }
}

// ---------------------------------------------------------------- few rows of A on tensor cores
//
// C[m, n] = sum_k A[m, k] * B[n, k] for M <= 8 * MT (MT = 1, 2) with mma.sync m16n8k32 (s8, s32
// accumulation, exact): 16 rows of B are the 16-row operand, rows of A the 8-column operand(s).
// A block of kWarps warps owns 16 * RT rows of B (RT tiles of 16); its warps split K in
// chunks of 128 bytes (warp w takes chunks w, w + kWarps, ...) and their sums meet in shared
// memory. In a chunk, lane (g = lane / 4, t = lane % 4) loads bytes [32 t, 32 t + 32) of rows g
// and g + 8 of each tile of B (two 16-byte loads each) and of row g of each A tile; the four
// mma steps of the chunk take these bytes in order 8 at a time (step s: bytes 32 t + 8 s + 0..3
// as the fragment's k = 4 t + 0..3, + 4..7 as k = 16 + 4 t + 0..3). A and B use the same
// permutation of k, so the dot products are those of the plain order. Needs K % 16 == 0 and
// 16-byte aligned A and B; rows past M or N and bytes past K are loaded as 0.
//
// kOut < 0: stores the int32 C; else the dequantized out (dtype kOut, dequant_store) from the
// sums, with row_stats, col_stats and bias as bnb_int8_mm_dequant.
// kQuantD < 0: A is the int8 q. wait_grid: the kernel was launched as a programmatic dependent
// of the one writing q and row_stats (griddepcontrol): B's first chunks are loaded before
// waiting for it.
// kQuantD >= 0 (MT = 1, kOut = kQuantD): A is the activations of that dtype and the kernel is
// the whole layer: every block finds the row statistics itself (row_quant_kernel's arithmetic:
// the same codes) and quantizes its fragments as it loads them; block 0 also writes q and
// row_stats. For small M * K and no outlier columns (threshold 0, or M = 1 where the outlier
// elements are the outlier columns), where reading A again per block is cheaper than a launch.
// kOutliers (kOut >= 0): bnb_int8_linear_outliers' outlier step as well (block_outlier_sums on
// the activations X, dtype kOut; M = 1: the flags from X's row, else from `columns` with *count
// = 0 on entry), the sums added in the epilogue (dequant_store_outliers); the kernel writes the
// column list and the count.
constexpr int kMmaWarps = 4;      // warps per block (kWarps), the kernel's default
constexpr int kMmaWarpsWide = 8;  // M <= 8 on small weights (int8_ops.cu: mma_rows_wide)
constexpr int kMmaLoads = 4;  // chunks of one 16-row tile in flight per warp (kMmaLoads / RT per tile)
constexpr int kFusedQuantMaxElems = 8192;  // M * K of the kQuantD path

#if !defined(BNB_GPU_HIP)
__device__ __forceinline__ void mma_s8_16832(int32_t (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  __trap();  // the host never launches this kernel below compute capability 8.0
#endif
}

__device__ __forceinline__ int4 load16_or_zero(const int8_t* p, bool ok) {
  return ok ? __ldg(reinterpret_cast<const int4*>(p)) : make_int4(0, 0, 0, 0);
}

// 32 activations of dtype D from p (16-element halves in or out as ok0 / ok1), quantized into 8
// words of 4 codes in memory order.
template <int D>
__device__ __forceinline__ void quant_fragment(const void* A, int64_t at, bool ok0, bool ok1, float s, bool outliers,
                                               float t, uint32_t (&xs)[8]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float v[16];
    load_run16<D>(A, at + 16 * h, h == 0 ? ok0 : ok1, v);
    quant_run16(v, s, outliers, t, xs + 4 * h);
  }
}

struct NoOutlierSmem {};

template <int MT, int RT, int kOut, bool kBias, int kQuantD, bool kOutliers, int kWarps = kMmaWarps>
__global__ void __launch_bounds__(kWarps * 32)
    int8_mma_rows_kernel(const void* __restrict__ A, const int8_t* __restrict__ B, int64_t M, int64_t N, int64_t K,
                         int32_t* __restrict__ C, float* __restrict__ row_stats, const float* __restrict__ col_stats,
                         const void* __restrict__ bias, void* __restrict__ out, bool wait_grid, bool outliers,
                         float threshold, int8_t* __restrict__ q, const void* __restrict__ X, int32_t* columns,
                         int64_t* count) {
  constexpr bool kFusedQuant = kQuantD >= 0;
  static_assert(!kFusedQuant || (MT == 1 && kOut == kQuantD), "the fused quantization is for M <= 8");
  static_assert(!kOutliers || kOut >= 0, "the outlier step adds to the dequantized out");
  __shared__ std::conditional_t<kOutliers, OutlierRowsSmem<16 * RT, 8 * MT, kWarps * 32>, NoOutlierSmem> osm;
  constexpr int kU = kMmaLoads / RT;  // chunks per iteration
  __shared__ int32_t partial[kWarps - 1][4 * MT * RT][32];
  __shared__ float red[kWarps];
  __shared__ float scale[8], stat[8];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * 16 * RT;
  bool row_ok[RT][2];
  const int8_t* b_row[RT][2];
#pragma unroll
  for (int r = 0; r < RT; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t n = n0 + 16 * r + g + 8 * h;
      row_ok[r][h] = n < N;
      b_row[r][h] = B + (n < N ? n * K : 0);
    }
  bool a_ok[MT];
  int64_t a_at[MT];  // element offset of row mt * 8 + g of A
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    a_ok[mt] = mt * 8 + g < M;
    a_at[mt] = a_ok[mt] ? (mt * 8 + g) * K : 0;
  }
  int32_t acc[RT][MT][4];
#pragma unroll
  for (int r = 0; r < RT; ++r)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[r][mt][i] = 0;

  const int64_t chunks = (K + 127) / 128;
  const int64_t step = int64_t{kWarps} * kU;
  int4 w[kU][RT][4];
  const auto load_w = [&](int64_t c0) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t k = (c0 + int64_t{u} * kWarps) * 128 + t * 32;
      const bool in0 = k < K, in1 = k + 16 < K;  // K % 16 == 0: a 16-byte piece is all in or all out
#pragma unroll
      for (int r = 0; r < RT; ++r) {
        w[u][r][0] = load16_or_zero(b_row[r][0] + k, row_ok[r][0] && in0);
        w[u][r][1] = load16_or_zero(b_row[r][0] + k + 16, row_ok[r][0] && in1);
        w[u][r][2] = load16_or_zero(b_row[r][1] + k, row_ok[r][1] && in0);
        w[u][r][3] = load16_or_zero(b_row[r][1] + k + 16, row_ok[r][1] && in1);
      }
    }
  };
  load_w(warp);  // in flight during the wait or the row statistics

  float s_row = 0.0f;  // kFusedQuant: this lane's row scale (row g)
  if constexpr (kFusedQuant) {
    // Runs of 16 activations a thread, all of a row's loads in flight together (K <= 8192: at most
    // four runs a thread); the max does not depend on the order, so the codes are row_quant_kernel's.
    constexpr int kRunsMax = kFusedQuantMaxElems / (16 * kWarps * 32);
    const auto run_at = [](int j) { return (int64_t{j} * kWarps * 32 + threadIdx.x) * 16; };  // its column
    for (int64_t r = 0; r < M; ++r) {
      float v[kRunsMax][16];
      float m = kAbsmaxEmpty;
#pragma unroll
      for (int j = 0; j < kRunsMax; ++j) load_run16<kQuantD>(A, r * K + run_at(j), run_at(j) < K, v[j]);
#pragma unroll
      for (int j = 0; j < kRunsMax; ++j) {
        // (a run past K holds zeros, which must not count: a row with nothing counted has the
        // statistic -0.0, e.g. all NaN or every element an outlier)
        if (run_at(j) >= K) break;
#pragma unroll
        for (int e = 0; e < 16; ++e) m = row_stat_take(m, v[j][e], outliers, threshold);
      }
      m = block_row_stat<kWarps * 32>(m, red);
      const float s = gpu_mul_ftz(127.0f, gpu_block_reciprocal(m));
      if (threadIdx.x == 0) {
        scale[r] = s;
        stat[r] = m;
        if (blockIdx.x == 0) row_stats[r] = m;
      }
      if (blockIdx.x == 0) {
#pragma unroll
        for (int j = 0; j < kRunsMax && run_at(j) < K; ++j)
          store_codes16(v[j], s, outliers, threshold, q + r * K + run_at(j));
      }
    }
    __syncthreads();
    s_row = a_ok[0] ? scale[g] : 0.0f;
  } else if (wait_grid) {
    grid_dependency_wait();  // A (q) and row_stats are written by the kernel before
  }
  // A dependent after it (outlier_epilogue_kernel) may start now: what it reads before its own
  // wait was written before this kernel's inputs.
  grid_dependents_may_launch();

  for (int64_t c0 = warp; c0 < chunks; c0 += step) {
    if (c0 != warp) load_w(c0);
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t k = (c0 + int64_t{u} * kWarps) * 128 + t * 32;
      const bool in0 = k < K, in1 = k + 16 < K;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint32_t xs[8];
        if constexpr (kFusedQuant) {
          quant_fragment<kQuantD>(A, a_at[mt] + k, a_ok[mt] && in0, a_ok[mt] && in1, s_row, outliers, threshold, xs);
        } else {
          const int8_t* a8 = static_cast<const int8_t*>(A) + a_at[mt] + k;
          const int4 x0 = load16_or_zero(a8, a_ok[mt] && in0);
          const int4 x1 = load16_or_zero(a8 + 16, a_ok[mt] && in1);
          xs[0] = uint32_t(x0.x), xs[1] = uint32_t(x0.y), xs[2] = uint32_t(x0.z), xs[3] = uint32_t(x0.w);
          xs[4] = uint32_t(x1.x), xs[5] = uint32_t(x1.y), xs[6] = uint32_t(x1.z), xs[7] = uint32_t(x1.w);
        }
#pragma unroll
        for (int r = 0; r < RT; ++r) {
          const uint32_t lo[8] = {uint32_t(w[u][r][0].x), uint32_t(w[u][r][0].y), uint32_t(w[u][r][0].z),
                                  uint32_t(w[u][r][0].w), uint32_t(w[u][r][1].x), uint32_t(w[u][r][1].y),
                                  uint32_t(w[u][r][1].z), uint32_t(w[u][r][1].w)};
          const uint32_t hi[8] = {uint32_t(w[u][r][2].x), uint32_t(w[u][r][2].y), uint32_t(w[u][r][2].z),
                                  uint32_t(w[u][r][2].w), uint32_t(w[u][r][3].x), uint32_t(w[u][r][3].y),
                                  uint32_t(w[u][r][3].z), uint32_t(w[u][r][3].w)};
#pragma unroll
          for (int st = 0; st < 4; ++st) {
            mma_s8_16832(acc[r][mt], lo[2 * st], hi[2 * st], lo[2 * st + 1], hi[2 * st + 1], xs[2 * st],
                         xs[2 * st + 1]);
          }
        }
      }
    }
  }

  int64_t outlier_count = 0;
  if constexpr (kOutliers) {
    outlier_count = block_outlier_sums<kOut, 16 * RT, 8 * MT, kWarps * 32>(X, B, col_stats, threshold, columns,
                                                                              count, M, N, K, n0, M == 1, osm);
  }

  // Split-K sums: warps 1.. hand theirs to warp 0 (the barrier also orders osm.sums).
  if (warp > 0) {
#pragma unroll
    for (int r = 0; r < RT; ++r)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) partial[warp - 1][(r * MT + mt) * 4 + i][lane] = acc[r][mt][i];
  }
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int r = 0; r < RT; ++r) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        int32_t sum = acc[r][mt][i];
#pragma unroll
        for (int v = 0; v < kWarps - 1; ++v) sum += partial[v][(r * MT + mt) * 4 + i][lane];
        // Fragment of C: i = 0, 1 row g, i = 2, 3 row g + 8 (of B's tile); column 2 t + (i & 1) (of A).
        const int64_t n = n0 + 16 * r + g + (i >= 2 ? 8 : 0);
        const int64_t m = mt * 8 + 2 * t + (i & 1);
        if (n >= N || m >= M) continue;
        if constexpr (kOut < 0) {
          C[m * N + n] = sum;
        } else if constexpr (kOutliers) {
          dequant_store_outliers<kOut, kBias>(sum, kFusedQuant ? stat[m] : row_stats[m], col_stats[n], bias, n, out,
                                              m * N + n, outlier_count > 0, osm.sums[n - n0][m]);
        } else if constexpr (kFusedQuant) {
          dequant_store<kOut, kBias>(sum, stat[m], col_stats[n], bias, n, out, m * N + n);
        } else {
          dequant_store<kOut, kBias>(sum, row_stats[m], col_stats[n], bias, n, out, m * N + n);
        }
      }
    }
  }
}
#endif  // !BNB_GPU_HIP

}  // namespace int8
}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_INT8_KERNELS_CUH_
