// Kernels of the optimizer family (docs/OPS.md §6): 32-bit and 8-bit blockwise updates for
// Adam/AdamW/LAMB, AdEMAMix, Momentum/LARS, RMSprop, Adagrad and Lion, and the update-norm
// pre-pass of clipping (docs/OPS.md §6.4). One pass over memory per step.
//
// Arithmetic follows the reference's fast-math build as docs/OPS.md §6.1 describes it: divisions are
// div.approx (RN32(a * RCP(b))), square roots sqrt.approx, beta^t __powf, and the fused
// multiply-adds are written out (the plugin is built with --fmad=false). With that, the golden
// optimizer cases reproduce bit for bit on the GPU the reference measured (HIP: IEEE division,
// sqrtf and powf, as its ROCm build).
//
// 8-bit layout (optim8_fast_kernel, CUDA with the built-in DYN8S/DYN8U tables): one warp owns one
// 256-element state block, lane l its elements 4l + j and 128 + 4l + j (j = 0..3), so p and g
// move as two 16-byte (fp32) or 8-byte (fp16/bf16) loads per lane and the codes as two 4-byte
// loads, each warp instruction one contiguous span; the block's absmax is a warp-shuffle max (no
// barrier), and the warps of a persistent grid walk the blocks independently. Codes are selected
// through per-table buckets of the binary32 line built once per context on the host (at most two
// thresholds per bucket for the dynamic maps, so one 8-byte shared-memory look-up and at most one
// more per value, instead of a 7-step search whose later steps conflict on the shared-memory
// banks). optim8_kernel (64 threads per block, the reference's search) remains for other code
// tables and for HIP. The 32-bit clipping pre-pass sums in the reference's order (docs/OPS.md §6.4).
#ifndef BNB_GPU_OPTIM_KERNELS_CUH_
#define BNB_GPU_OPTIM_KERNELS_CUH_

#include <cstdint>

#include "code8_select.h"
#include "gpu_dtype.h"
#include "gpu_port.h"
#include "optim_traits.h"

namespace bnb {
namespace gpu {

// The update rules (kernels of optim_traits.h): LAMB runs Adam's, LARS Momentum's.
constexpr int kOptAdam = BNB_OPT_ADAM;
constexpr int kOptMomentum = BNB_OPT_MOMENTUM;
constexpr int kOptRmsprop = BNB_OPT_RMSPROP;
constexpr int kOptLion = BNB_OPT_LION;
constexpr int kOptAdagrad = BNB_OPT_ADAGRAD;
constexpr int kOptAdemamix = BNB_OPT_ADEMAMIX;

constexpr int kOptimThreads = 256;
constexpr int kOptimGroup = 64;                          // threads per 256-element state block
constexpr int kOptimPerThread = 4;                       // elements per thread and tile
constexpr int kOptimTileBlocks = kOptimThreads / kOptimGroup;  // state blocks per tile

// Everything one launch needs, passed by value.
struct OptimKernelArgs {
  void* p;
  const void* g;
  float* s1;        // 32-bit state 1 (AdEMAMix: m1 then m2)
  float* s2;
  uint8_t* c1;      // 8-bit codes of state 1 (AdEMAMix: m1 then m2)
  uint8_t* c2;
  float* absmax1;   // AdEMAMix: m1 scales then m2 scales
  float* absmax2;
  const float* qmap1;
  const float* qmap2;
  float* unorm_vec;  // clipping: the sum of squares (written by the pre-pass)
  int64_t n;
  float lr, beta1, beta2, beta3, alpha, eps, weight_decay, gnorm_scale, max_unorm, param_norm;
  float step;        // t as binary32 (the reference passes it to __powf)
  int32_t first_step;
  int32_t skip_zeros;
  int32_t clip;      // 1: scale the update by the pre-pass's norm
  int32_t two_state_limit;  // clipping limit without eps (Adam/LAMB) or with it (1-state)
};

// ---------------------------------------------------------------- fast-math arithmetic

__device__ __forceinline__ float opt_div(float a, float b) {
#if defined(BNB_GPU_HIP)
  return a / b;
#else
  float r;
  asm("div.approx.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#endif
}

__device__ __forceinline__ float opt_sqrt(float x) {
#if defined(BNB_GPU_HIP)
  return sqrtf(x);
#else
  float r;
  asm("sqrt.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
#endif
}

__device__ __forceinline__ float opt_pow(float b, float e) {
#if defined(BNB_GPU_HIP)
  return powf(b, e);
#else
  return __powf(b, e);
#endif
}

__device__ __forceinline__ float opt_fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }

// ---------------------------------------------------------------- parameter dtype (gpu_dtype.h)

template <int D>
__device__ __forceinline__ float load_p(const void* base, int64_t i) {
  if constexpr (D == kF32) {
    return static_cast<const float*>(base)[i];
  } else {
    const unsigned short h = static_cast<const unsigned short*>(base)[i];
    if constexpr (D == kF16) return __half2float(__ushort_as_half(h));
    return __uint_as_float(static_cast<uint32_t>(h) << 16);
  }
}

// Round-to-nearest-even bits of the parameter dtype.
template <int D>
__device__ __forceinline__ unsigned short half_bits(float f) {
  if constexpr (D == kF16) {
    return __half_as_ushort(__float2half_rn(f));
  } else {
    const uint32_t b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<unsigned short>((b >> 16) | 0x40u);  // quiet NaN
    return static_cast<unsigned short>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
  }
}

// `p <- T(x)`: round to the parameter dtype, back in binary32.
template <int D>
__device__ __forceinline__ float round_p(float x) {
  if constexpr (D == kF32) {
    return x;
  } else if constexpr (D == kF16) {
    return __half2float(__ushort_as_half(half_bits<D>(x)));
  } else {
    return __uint_as_float(static_cast<uint32_t>(half_bits<D>(x)) << 16);
  }
}

template <int D>
__device__ __forceinline__ void store_p(void* base, int64_t i, float v) {
  if constexpr (D == kF32) {
    static_cast<float*>(base)[i] = v;
  } else {
    static_cast<unsigned short*>(base)[i] = half_bits<D>(v);
  }
}

__device__ __forceinline__ float sign_of(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f); }

// Per-launch constants every thread derives the same way (the reference computes them on the
// device, so beta^t is __powf there).
struct OptimConstsDev {
  float c1, c2, step_size, update_scale;
};

__device__ __forceinline__ OptimConstsDev optim_consts(const OptimKernelArgs& a) {
  OptimConstsDev k;
  k.c1 = 1.0f - opt_pow(a.beta1, a.step);
  k.c2 = opt_sqrt(1.0f - opt_pow(a.beta2, a.step));
  k.step_size = opt_div(-a.lr * k.c2, k.c1);
  k.update_scale = 1.0f;
  if (a.clip) {
    const float norm = opt_sqrt(a.unorm_vec[0]);
    const float limit = a.two_state_limit ? a.max_unorm * a.param_norm : a.max_unorm * a.param_norm + a.eps;
    if (norm > limit) k.update_scale = opt_div(limit, norm);
  }
  return k;
}

// Code of `value` under scale reciprocal `inv` on a table in shared memory: the reference's search
// (bnb::code8_search); kSignFix: the signed-state rule of docs/OPS.md §6.5 (bnb::code8_sign_fix).
template <bool kSignFix>
__device__ __forceinline__ uint8_t optim_encode(const float* code, float value, float inv) {
  const int c = code8_search(code, value * inv);
  return static_cast<uint8_t>(kSignFix ? code8_sign_fix(code, c, value) : c);
}

// NaN-dropping max over the 64 threads of a state block; every thread gets the result.
// `red` holds one float per warp of the CUDA block.
__device__ __forceinline__ float group_max(float v, float* red) {
  constexpr int kWidth = kWarpSize < kOptimGroup ? kWarpSize : kOptimGroup;
#pragma unroll
  for (int off = kWidth / 2; off >= 1; off >>= 1) v = fmaxf(v, gpu_shfl_xor(v, off, kWidth));
  if constexpr (kWarpSize >= kOptimGroup) {
    return v;
  } else {
    constexpr int kWarpsPerGroup = kOptimGroup / kWarpSize;
    const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
    if (static_cast<int>(threadIdx.x) % kWarpSize == 0) red[warp] = v;
    __syncthreads();
    const int first = warp / kWarpsPerGroup * kWarpsPerGroup;
    float m = red[first];
#pragma unroll
    for (int w = 1; w < kWarpsPerGroup; ++w) m = fmaxf(m, red[first + w]);
    __syncthreads();
    return m;
  }
}

// Sum over the CUDA block, added to *out by one atomic.
__device__ __forceinline__ void block_sum_atomic(float v, float* out) {
  __shared__ float red[kOptimThreads / 32 + 1];
#pragma unroll
  for (int off = kWarpSize / 2; off >= 1; off >>= 1) v += gpu_shfl_xor(v, off, kWarpSize);
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  if (static_cast<int>(threadIdx.x) % kWarpSize == 0) red[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.0f;
    for (int w = 0; w < static_cast<int>(blockDim.x) / kWarpSize; ++w) s += red[w];
    atomicAdd(out, s);
  }
}

// ---------------------------------------------------------------- 32-bit

template <int D, int OPT>
__device__ __forceinline__ void step32(const OptimKernelArgs& a, const OptimConstsDev& k, int64_t i) {
  float g = round_p<D>(load_p<D>(a.g, i) * a.gnorm_scale);
  const float p = load_p<D>(a.p, i);
  const bool decay = a.weight_decay > 0.0f;
  if constexpr (OPT == kOptAdam) {
    if (a.skip_zeros && g == 0.0f) return;
    const float m = opt_fma(a.s1[i], a.beta1, (1.0f - a.beta1) * g);
    const float v = opt_fma(a.s2[i], a.beta2, (1.0f - a.beta2) * (g * g));
    a.s1[i] = m;
    a.s2[i] = v;
    float pn = round_p<D>(opt_fma(k.update_scale * k.step_size, opt_div(m, opt_sqrt(v) + a.eps * k.c2), p));
    if (decay) pn = round_p<D>(pn * (1.0f - a.lr * a.weight_decay));
    store_p<D>(a.p, i, pn);
  } else if constexpr (OPT == kOptAdemamix) {
    const float m1 = opt_fma(a.s1[i], a.beta1, (1.0f - a.beta1) * g);
    const float m2 = opt_fma(a.s1[a.n + i], a.beta3, (1.0f - a.beta3) * g);
    const float nu = opt_fma(a.s2[i], a.beta2, ((1.0f - a.beta2) * g) * g);
    a.s1[i] = m1;
    a.s1[a.n + i] = m2;
    a.s2[i] = nu;
    const float den = opt_fma(opt_sqrt(nu), gpu_block_reciprocal(k.c2), a.eps);
    const float num = opt_fma(a.alpha, m2, m1 * gpu_block_reciprocal(k.c1));
    float pn = round_p<D>(opt_fma(-a.lr, opt_div(num, den), p));
    if (decay) pn = round_p<D>(pn * (1.0f - a.lr * a.weight_decay));
    store_p<D>(a.p, i, pn);
  } else {
    if (OPT != kOptLion && decay) {
      g = round_p<D>(a.first_step ? opt_fma(p, a.weight_decay, g) : g + p * a.weight_decay);
    }
    if (a.skip_zeros && g == 0.0f) return;
    float s = a.s1[i];
    float pn;
    if constexpr (OPT == kOptMomentum) {
      s = a.first_step ? g : opt_fma(s, a.beta1, g);
      pn = round_p<D>(opt_fma(k.update_scale, -a.lr * s, p));
    } else if constexpr (OPT == kOptRmsprop) {
      s = opt_fma(s, a.beta1, ((1.0f - a.beta1) * g) * g);
      pn = round_p<D>(p - k.update_scale * (a.lr * opt_div(g, opt_sqrt(s) + a.eps)));
    } else if constexpr (OPT == kOptAdagrad) {
      s = opt_fma(g, g, s);
      pn = round_p<D>(opt_fma(-a.lr, opt_div(g, opt_sqrt(s) + a.eps), p));
    } else {  // Lion
      const float d = k.update_scale * (a.lr * sign_of(opt_fma(s, a.beta1, (1.0f - a.beta1) * g)));
      if constexpr (D == kF32) {
        pn = opt_fma(p, 1.0f - a.lr * a.weight_decay, -d);
      } else {
        const float p1 = decay ? round_p<D>(p * (1.0f - a.lr * a.weight_decay)) : p;
        pn = round_p<D>(p1 - d);
      }
      s = opt_fma(s, a.beta2, (1.0f - a.beta2) * g);
    }
    a.s1[i] = s;
    store_p<D>(a.p, i, pn);
  }
}

template <int D, int OPT>
__global__ void __launch_bounds__(kOptimThreads) optim32_kernel(OptimKernelArgs a) {
  const OptimConstsDev k = optim_consts(a);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.n; i += stride)
    step32<D, OPT>(a, k, i);
}

// ---------------------------------------------------------------- many tensors per launch

// One tensor of a multi-tensor launch (bnb_optimizer_update_multi). Its work units (32-bit:
// kOptim32Unit elements, 8-bit: one 256-element state block) are numbered from `first`.
struct OptimMultiEntry {
  void* p;
  const void* g;
  void* state1;
  void* state2;
  float* absmax1;
  float* absmax2;
  int64_t n;
  int64_t first;
  int32_t vec;  // 8-bit fast kernel: aligned for the vector accesses
  int32_t pad;
};

// The descriptors travel as kernel parameters (no copy to the device, so a launch is as
// asynchronous and graph-capturable as a single-tensor one): up to 32 KB of them where CUDA 12.1+
// allows it (Volta and newer), else under the portable 4 KB.
#if !defined(BNB_GPU_HIP) && CUDART_VERSION >= 12010
constexpr int kOptimMultiMax = 384;
constexpr size_t kOptimMultiParamLimit = 32764;
#else
constexpr int kOptimMultiMax = 40;
constexpr size_t kOptimMultiParamLimit = 4096;
#endif
constexpr int64_t kOptim32Unit = kOptimThreads * 4;

struct OptimMultiArgs {
  OptimKernelArgs a;  // shared fields; the pointers and n come from t[i]
  int64_t units;      // work units of all tensors together
  int32_t count;
  int32_t pad;
  OptimMultiEntry t[kOptimMultiMax];
};
static_assert(sizeof(OptimMultiArgs) + 16 <= kOptimMultiParamLimit, "kernel parameters over the limit");

// The tensor holding work unit u: the last entry whose first unit is <= u.
__device__ __forceinline__ int optim_multi_find(const OptimMultiArgs& m, int64_t u) {
  int lo = 0, hi = m.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (m.t[mid].first <= u) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

__device__ __forceinline__ OptimKernelArgs optim_multi_tensor(const OptimMultiArgs& m, int i, bool eight) {
  OptimKernelArgs a = m.a;
  const OptimMultiEntry& e = m.t[i];
  a.p = e.p;
  a.g = e.g;
  a.n = e.n;
  if (eight) {
    a.c1 = static_cast<uint8_t*>(e.state1);
    a.c2 = static_cast<uint8_t*>(e.state2);
    a.absmax1 = e.absmax1;
    a.absmax2 = e.absmax2;
  } else {
    a.s1 = static_cast<float*>(e.state1);
    a.s2 = static_cast<float*>(e.state2);
  }
  return a;
}

template <int D, int OPT>
__global__ void __launch_bounds__(kOptimThreads) optim32_multi_kernel(const BNB_GRID_CONSTANT OptimMultiArgs m) {
  const OptimConstsDev k = optim_consts(m.a);
  for (int64_t u = blockIdx.x; u < m.units; u += gridDim.x) {
    const int i = optim_multi_find(m, u);
    const OptimKernelArgs a = optim_multi_tensor(m, i, false);
    const int64_t start = (u - m.t[i].first) * kOptim32Unit;
    const int64_t end = start + kOptim32Unit < a.n ? start + kOptim32Unit : a.n;
    for (int64_t e = start + threadIdx.x; e < end; e += blockDim.x) step32<D, OPT>(a, k, e);
  }
}

// Squared update-norm quantity (docs/OPS.md §6.4: new states, no weight decay, nothing written).
template <int D, int OPT>
__device__ __forceinline__ float unorm32(const OptimKernelArgs& a, const OptimConstsDev& k, int64_t i) {
  const float g = round_p<D>(load_p<D>(a.g, i) * a.gnorm_scale);
  const float s = a.s1[i];
  if constexpr (OPT == kOptAdam) {
    const float m = opt_fma(s, a.beta1, (1.0f - a.beta1) * g);
    const float v = opt_fma(a.s2[i], a.beta2, (1.0f - a.beta2) * (g * g));
    const float rcp_bias2 = gpu_block_reciprocal(1.0f - opt_pow(a.beta2, a.step));
    const float u = opt_div(m * gpu_block_reciprocal(k.c1), opt_sqrt(v * rcp_bias2) + a.eps);
    return u * u;
  } else if constexpr (OPT == kOptMomentum) {
    const float sn = a.first_step ? g : opt_fma(s, a.beta1, g);
    return sn * sn;
  } else {
    const float sn = OPT == kOptRmsprop ? opt_fma(s, a.beta1, ((1.0f - a.beta1) * g) * g) : opt_fma(g, g, s);
    const float u = opt_div(g, opt_sqrt(sn) + a.eps);
    return u * u;
  }
}

__device__ __forceinline__ float opt_shfl_down32(float v, int offset) {
#if defined(BNB_GPU_HIP)
  return __shfl_down(v, offset, 32);
#else
  return __shfl_down_sync(0xffffffffu, v, offset, 32);
#endif
}

// The reference's summation order (its pre-pass: cub block load and block reduce): tiles of 4096
// elements; thread t of 512 adds its 8 consecutive elements in order, each 32-thread warp reduces
// with shuffle-down offsets 1, 2, .., 16, thread 0 adds the 16 warp totals in order and one
// atomic per tile adds the tile to unorm_vec. With at most two tiles the sum is the reference's
// bit for bit (the clipped golden LAMB/LARS cases); beyond that the atomics' order varies, as
// the reference's does.
constexpr int kUnormThreads = 512;
constexpr int kUnormPerThread = 8;
constexpr int kUnormTile = kUnormThreads * kUnormPerThread;

template <int D, int OPT>
__global__ void __launch_bounds__(kUnormThreads) optim32_unorm_kernel(OptimKernelArgs a) {
  __shared__ float red[kUnormThreads / 32];
  const OptimConstsDev k = optim_consts(a);
  const int t = static_cast<int>(threadIdx.x);
  for (int64_t tile = blockIdx.x; tile * kUnormTile < a.n; tile += gridDim.x) {
    const int64_t i0 = tile * kUnormTile + static_cast<int64_t>(t) * kUnormPerThread;
    float acc = i0 < a.n ? unorm32<D, OPT>(a, k, i0) : 0.0f;
#pragma unroll
    for (int j = 1; j < kUnormPerThread; ++j)
      if (i0 + j < a.n) acc += unorm32<D, OPT>(a, k, i0 + j);
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) acc += opt_shfl_down32(acc, off);
    if ((t & 31) == 0) red[t >> 5] = acc;
    __syncthreads();
    if (t == 0) {
      float s = red[0];
      for (int w = 1; w < kUnormThreads / 32; ++w) s += red[w];
      atomicAdd(a.unorm_vec, s);
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------- 8-bit blockwise

// The 8-bit optimizers' new states of one element (docs/OPTIMIZERS.md), shared by the search
// kernel (optim8_kernel) and the bucketed one (opt8_fast_update): from the raw gradient graw and
// the decoded old states (old(1), old(2), old(3): state1, state2, AdEMAMix's second state1; each
// called only where that state exists), two-state optimizers write s, v and e; one-state ones s
// and aux (the gradient RMSprop and Adagrad step with, or Lion's new parameter, which uses the old
// state), reading p (a callable: the search kernel loads it only here). Returns false when the
// element keeps its parameter: a non-finite gradient with two states (the states become 0), a
// skipped zero gradient with one (s keeps the old state). decay_g: weight decay is added to the
// gradient here (not in the clipping pre-pass).
template <int D, int OPT, class Old, class P>
__device__ __forceinline__ bool opt8_new_states(const OptimKernelArgs& a, float graw, const Old& old, const P& p,
                                                bool decay, bool decay_g, float& s, float& v, float& e, float& aux) {
  constexpr bool kTwo = optim_traits(OPT).states == 2;
  constexpr bool kEma = optim_traits(OPT).state1_copies == 2;
  float gs = graw * a.gnorm_scale;
  if constexpr (kTwo) {
    if (!isfinite(graw)) return false;  // state reset to zero, p kept
    const float vd = old(2);
    v = D == kBF16 ? opt_fma(vd, a.beta2, ((1.0f - a.beta2) * gs) * gs)
                   : opt_fma((1.0f - a.beta2) * gs, gs, vd * a.beta2);
    s = opt_fma(1.0f - a.beta1, gs, old(1) * a.beta1);
    if constexpr (kEma) e = opt_fma(1.0f - a.beta3, gs, old(3) * a.beta3);
  } else {
    const float sd = old(1);
    if (a.skip_zeros && graw == 0.0f) {
      s = sd + 0.0f;  // keeps the state; -0 -> +0 so the sign fix cannot make it negative
      return false;
    }
    const float pv = p();
    if (OPT != kOptLion && decay && decay_g) gs = opt_fma(pv, a.weight_decay, gs);
    if constexpr (OPT == kOptMomentum) {
      s = a.first_step ? gs : opt_fma(sd, a.beta1, gs);
    } else if constexpr (OPT == kOptRmsprop) {
      s = opt_fma(1.0f - a.beta1, gs * gs, sd * a.beta1);
      aux = gs;
    } else if constexpr (OPT == kOptAdagrad) {
      s = opt_fma(gs, gs, sd);
      aux = gs;
    } else {  // Lion: the parameter step uses the old state
      const float p1 = decay ? round_p<D>(pv * (1.0f - a.lr * a.weight_decay)) : pv;
      const float d = round_p<D>(a.lr * sign_of(opt_fma(sd, a.beta1, (1.0f - a.beta1) * gs)));
      aux = round_p<D>(p1 - d);
      s = opt_fma(1.0f - a.beta2, gs, sd * a.beta2);
    }
  }
  return true;
}

__device__ __forceinline__ void load_tables(const OptimKernelArgs& a, float* q1, float* q2, bool two) {
  for (int j = static_cast<int>(threadIdx.x); j < 256; j += blockDim.x) {
    q1[j] = a.qmap1[j];
    if (two) q2[j] = a.qmap2[j];
  }
  __syncthreads();
}

// The new scales of 256-element state block b, am1..am3 (each kernel reduces them its own way):
// lane 0 stores them (state 1, state 2 for two-state optimizers, the EMA copy's after the first
// nblocks for AdEMAMix), and every lane gets their block reciprocals, by which it encodes.
struct Opt8Inv {
  float s1, s2, s3;  // the reciprocals of am1, am2 and am3
};
template <bool kTwo, bool kEma>
__device__ __forceinline__ Opt8Inv opt8_store_scales(const OptimKernelArgs& a, int64_t b, int64_t nblocks, int lane,
                                                     float am1, float am2, float am3) {
  if (lane == 0) {
    a.absmax1[b] = am1;
    if (kTwo) a.absmax2[b] = am2;
    if (kEma) a.absmax1[nblocks + b] = am3;
  }
  return Opt8Inv{gpu_block_reciprocal(am1), gpu_block_reciprocal(am2), gpu_block_reciprocal(am3)};
}

// kUnorm: the clipping pre-pass (sum of squared update quantities, nothing written).
template <int D, int OPT, bool kUnorm>
__global__ void __launch_bounds__(kOptimThreads) optim8_kernel(OptimKernelArgs a) {
  constexpr bool kTwo = optim_traits(OPT).states == 2;
  constexpr bool kEma = optim_traits(OPT).state1_copies == 2;
  __shared__ float q1[256];
  __shared__ float q2[kTwo ? 256 : 1];
  __shared__ float red[kOptimThreads / 32 + 1];
  load_tables(a, q1, q2, kTwo);
  const OptimConstsDev k = optim_consts(a);
  const int64_t nblocks = (a.n + 255) / 256;
  const int64_t tiles = (nblocks + kOptimTileBlocks - 1) / kOptimTileBlocks;
  const int lane = static_cast<int>(threadIdx.x) % kOptimGroup;
  const bool decay = a.weight_decay > 0.0f;
  float unorm_acc = 0.0f;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t b = tile * kOptimTileBlocks + static_cast<int>(threadIdx.x) / kOptimGroup;
    const bool block_ok = b < nblocks;  // uniform within a group
    const float scale1 = block_ok ? a.absmax1[b] : 0.0f;
    const float scale2 = kTwo && block_ok ? a.absmax2[b] : 0.0f;
    const float scale3 = kEma && block_ok ? a.absmax1[nblocks + b] : 0.0f;
    float s[kOptimPerThread], v[kOptimPerThread], e[kOptimPerThread], aux[kOptimPerThread];
    bool keep[kOptimPerThread];  // p unchanged (non-finite g for 2-state, skipped for 1-state)
    float max1 = 0.0f, max2 = 0.0f, max3 = 0.0f;
#pragma unroll
    for (int j = 0; j < kOptimPerThread; ++j) {
      const int64_t i = b * 256 + lane + kOptimGroup * j;
      s[j] = v[j] = e[j] = aux[j] = 0.0f;
      keep[j] = true;
      if (!block_ok || i >= a.n) continue;
      const auto old = [&](int which) {
        return which == 1 ? q1[a.c1[i]] * scale1 : which == 2 ? q2[a.c2[i]] * scale2 : q1[a.c1[a.n + i]] * scale3;
      };
      keep[j] = !opt8_new_states<D, OPT>(a, load_p<D>(a.g, i), old, [&] { return load_p<D>(a.p, i); }, decay,
                                          !kUnorm, s[j], v[j], e[j], aux[j]);
      max1 = fmaxf(max1, fabsf(s[j]));
      max2 = fmaxf(max2, fabsf(v[j]));
      max3 = fmaxf(max3, fabsf(e[j]));
    }
    if constexpr (kUnorm) {
#pragma unroll
      for (int j = 0; j < kOptimPerThread; ++j) {
        if (keep[j]) continue;
        float u;
        if constexpr (OPT == kOptAdam) {
          const float rcp_bias2 = gpu_block_reciprocal(1.0f - opt_pow(a.beta2, a.step));
          u = opt_div(s[j] * gpu_block_reciprocal(k.c1), opt_sqrt(v[j] * rcp_bias2) + a.eps);
        } else if constexpr (OPT == kOptMomentum) {
          u = s[j];
        } else {
          u = opt_div(aux[j], opt_sqrt(s[j]) + a.eps);
        }
        unorm_acc += u * u;
      }
      continue;
    }
    // Phase B: the new scales (max1 of a skipped element counts too: its state is re-encoded).
    if constexpr (!kTwo) {
#pragma unroll
      for (int j = 0; j < kOptimPerThread; ++j) max1 = fmaxf(max1, fabsf(s[j]));
    }
    const float am1 = group_max(max1, red);
    const float am2 = kTwo ? group_max(max2, red) : 0.0f;
    const float am3 = kEma ? group_max(max3, red) : 0.0f;
    if (!block_ok) continue;
    const Opt8Inv inv = opt8_store_scales<kTwo, kEma>(a, b, nblocks, lane, am1, am2, am3);
    // Phases C and D.
#pragma unroll
    for (int j = 0; j < kOptimPerThread; ++j) {
      const int64_t i = b * 256 + lane + kOptimGroup * j;
      if (i >= a.n) continue;
      if (!keep[j]) {
        const float p = load_p<D>(a.p, i);
        float pn;
        if constexpr (OPT == kOptAdam) {
          pn = round_p<D>(opt_fma(k.update_scale * k.step_size, opt_div(s[j], opt_sqrt(v[j]) + k.c2 * a.eps), p));
        } else if constexpr (OPT == kOptAdemamix) {
          const float den = opt_fma(opt_sqrt(v[j]), gpu_block_reciprocal(k.c2), a.eps);
          const float num = opt_fma(a.alpha, e[j], s[j] * gpu_block_reciprocal(k.c1));
          pn = round_p<D>(opt_fma(-a.lr, opt_div(num, den), p));
        } else if constexpr (OPT == kOptMomentum) {
          pn = round_p<D>(opt_fma(-a.lr * k.update_scale, s[j], p));
        } else if constexpr (OPT == kOptLion) {
          pn = aux[j];
        } else {
          const float scale = OPT == kOptAdagrad ? -a.lr : -a.lr * k.update_scale;  // Adagrad: never clipped
          pn = round_p<D>(opt_fma(scale, opt_div(aux[j], opt_sqrt(s[j]) + a.eps), p));
        }
        if (kTwo && decay) pn = round_p<D>(pn * (1.0f - a.lr * a.weight_decay));
        store_p<D>(a.p, i, pn);
      }
      a.c1[i] = optim_encode<true>(q1, s[j], inv.s1);
      if constexpr (kTwo) a.c2[i] = optim_encode<false>(q2, v[j], inv.s2);
      if constexpr (kEma) a.c1[a.n + i] = optim_encode<true>(q1, e[j], inv.s3);
    }
  }
  if constexpr (kUnorm) block_sum_atomic(unorm_acc, a.unorm_vec);
}

// ---------------------------------------------------------------- 8-bit blockwise, fast path

// Q_C(x) of docs/FORMATS.md §2.3 in closed form for a fast table (bnb::code8_plan): q = #{j : x > t_j},
// NaN -> 0, through the 64th-of-a-binade buckets of bnb::c8_binade_* (two thresholds in some
// buckets of DYN8U near 1: `crowded`). Built on the host (build_optim8_table); checked there by
// tests/gpu_emu against the reference's search.
struct Optim8Table {
  float code[256];
  float thr[256];                 // the plan's thresholds t_j, then +inf
  uint2 bucket[kC8BinadeBuckets];  // c8_binade_bucket_entry: x = info, y = thr
  int32_t nneg;                   // codes with the sign bit set: a prefix of the table
  int32_t crowded;                // some bucket holds two thresholds
  int32_t usable;                 // a fast plan, normal thresholds, at most two per bucket
  int32_t pad;
};
static_assert(sizeof(Optim8Table) % 16 == 0, "copied in 16-byte words");

__device__ __forceinline__ int opt8_select_fast(const Optim8Table& t, bool crowded, float x) {
  const uint2 e = t.bucket[c8_binade_bucket_of_bits(__float_as_uint(x))];
  return c8_binade_select(e.x, e.y, t.thr, crowded, x);
}

// optim_encode on a bucketed table (the sign of code[c] is c < nneg).
template <bool kSignFix>
__device__ __forceinline__ uint32_t opt8_encode_fast(const Optim8Table& t, bool crowded, float value, float inv) {
  int c = opt8_select_fast(t, crowded, value * inv);
  if (kSignFix) c = code8_sign_fix(c, t.nneg, value);
  return static_cast<uint32_t>(c & 255);
}

#if !defined(BNB_GPU_HIP)  // the fast path is CUDA only (cp.async; HIP runs optim8_kernel)

constexpr int kOpt8FastThreads = 256;
// Resident blocks per multiprocessor (2 x 27.7 KB of tables each: 4 fit in 228 KB); AdEMAMix,
// with a third state, gets the registers of 3 (64 per thread spill it).
// fp32 parameters load the next block while updating this one (H100, 1.08 B parameters: AdamW
// 8-bit 7.30 -> 6.64 ms, Lion unchanged); the 16-bit variants would spill with the registers the
// second block takes, and keep one block at a time.
template <int D>
__host__ __device__ constexpr bool opt8_prefetch() {
  return D == kF32;
}
template <int D, int OPT>
__host__ __device__ constexpr int opt8_fast_blocks_per_sm() {
  constexpr bool kEma = optim_traits(OPT).state1_copies == 2;
  return kEma || opt8_prefetch<D>() ? 3 : 4;
}

// Eight elements of a lane: e = 4 h + j is element base + 128 h + 4 lane + j.
template <int D>
__device__ __forceinline__ void opt8_load_vals(const void* base_ptr, int64_t base, int lane, bool full, int64_t n,
                                               float (&x)[8], uint16_t (&raw)[8]) {
  if constexpr (D == kF32) {
    const float* src = static_cast<const float*>(base_ptr);
    if (full) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float4 v = *reinterpret_cast<const float4*>(src + base + 128 * h + 4 * lane);
        x[4 * h] = v.x;
        x[4 * h + 1] = v.y;
        x[4 * h + 2] = v.z;
        x[4 * h + 3] = v.w;
      }
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int64_t i = base + 128 * (e >> 2) + 4 * lane + (e & 3);
        x[e] = i < n ? src[i] : 0.0f;
      }
    }
  } else {
    const uint16_t* src = static_cast<const uint16_t*>(base_ptr);
    if (full) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint2 v = *reinterpret_cast<const uint2*>(src + base + 128 * h + 4 * lane);
        raw[4 * h] = static_cast<uint16_t>(v.x & 0xffffu);
        raw[4 * h + 1] = static_cast<uint16_t>(v.x >> 16);
        raw[4 * h + 2] = static_cast<uint16_t>(v.y & 0xffffu);
        raw[4 * h + 3] = static_cast<uint16_t>(v.y >> 16);
      }
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int64_t i = base + 128 * (e >> 2) + 4 * lane + (e & 3);
        raw[e] = i < n ? src[i] : static_cast<uint16_t>(0);
      }
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      if constexpr (D == kF16) {
        x[e] = __half2float(__ushort_as_half(raw[e]));
      } else {
        x[e] = __uint_as_float(static_cast<uint32_t>(raw[e]) << 16);
      }
    }
  }
}

__device__ __forceinline__ void opt8_load_codes(const uint8_t* src, int64_t base, int lane, bool full, int64_t n,
                                                uint32_t (&c)[8]) {
  if (full) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t w = *reinterpret_cast<const uint32_t*>(src + base + 128 * h + 4 * lane);
#pragma unroll
      for (int j = 0; j < 4; ++j) c[4 * h + j] = (w >> (8 * j)) & 255u;
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int64_t i = base + 128 * (e >> 2) + 4 * lane + (e & 3);
      c[e] = i < n ? src[i] : 0u;
    }
  }
}

// The same eight codes as opt8_load_codes, kept packed four per word until used.
__device__ __forceinline__ void opt8_load_code_words(const uint8_t* src, int64_t base, int lane, bool full,
                                                     int64_t n, uint32_t (&w)[2]) {
  if (full) {
#pragma unroll
    for (int h = 0; h < 2; ++h) w[h] = *reinterpret_cast<const uint32_t*>(src + base + 128 * h + 4 * lane);
  } else {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      w[h] = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t i = base + 128 * h + 4 * lane + j;
        w[h] |= (i < n ? static_cast<uint32_t>(src[i]) : 0u) << (8 * j);
      }
    }
  }
}

__device__ __forceinline__ void opt8_unpack_codes(const uint32_t (&w)[2], uint32_t (&c)[8]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int j = 0; j < 4; ++j) c[4 * h + j] = (w[h] >> (8 * j)) & 255u;
  }
}

__device__ __forceinline__ void opt8_store_codes(uint8_t* dst, int64_t base, int lane, bool full, int64_t n,
                                                 const uint32_t (&c)[8]) {
  if (full) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t w = c[4 * h] | (c[4 * h + 1] << 8) | (c[4 * h + 2] << 16) | (c[4 * h + 3] << 24);
      *reinterpret_cast<uint32_t*>(dst + base + 128 * h + 4 * lane) = w;
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int64_t i = base + 128 * (e >> 2) + 4 * lane + (e & 3);
      if (i < n) dst[i] = static_cast<uint8_t>(c[e]);
    }
  }
}

// Stores the new p; kept elements get their loaded bits back.
template <int D>
__device__ __forceinline__ void opt8_store_p(void* dst_ptr, int64_t base, int lane, bool full, int64_t n,
                                             const float (&pn)[8], const float (&p)[8], const uint16_t (&raw)[8],
                                             const bool (&keep)[8]) {
  if constexpr (D == kF32) {
    float* dst = static_cast<float*>(dst_ptr);
    float o[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = keep[e] ? p[e] : pn[e];
    if (full) {
#pragma unroll
      for (int h = 0; h < 2; ++h)
        *reinterpret_cast<float4*>(dst + base + 128 * h + 4 * lane) =
            make_float4(o[4 * h], o[4 * h + 1], o[4 * h + 2], o[4 * h + 3]);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int64_t i = base + 128 * (e >> 2) + 4 * lane + (e & 3);
        if (i < n && !keep[e]) dst[i] = o[e];
      }
    }
  } else {
    uint16_t* dst = static_cast<uint16_t*>(dst_ptr);
    uint32_t o[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = keep[e] ? raw[e] : half_bits<D>(pn[e]);
    if (full) {
#pragma unroll
      for (int h = 0; h < 2; ++h)
        *reinterpret_cast<uint2*>(dst + base + 128 * h + 4 * lane) =
            make_uint2(o[4 * h] | (o[4 * h + 1] << 16), o[4 * h + 2] | (o[4 * h + 3] << 16));
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int64_t i = base + 128 * (e >> 2) + 4 * lane + (e & 3);
        if (i < n && !keep[e]) dst[i] = static_cast<uint16_t>(o[e]);
      }
    }
  }
}

__device__ __forceinline__ float warp_max32(float v) {
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) v = fmaxf(v, gpu_shfl_xor(v, off, 32));
  return v;
}

// The arithmetic of optim8_kernel (docs/OPS.md §6.5) element for element; only the layout, the loads and
// the code selection differ. `tables`: the context's bucketed DYN8S then DYN8U. `vec`: p, g and
// the state arrays are aligned for the vector accesses (the last partial block is scalar).
// Copies the launch's bucketed tables (DYN8S, then DYN8U when kTwo) into shared memory.
template <bool kTwo>
__device__ __forceinline__ void opt8_stage_tables(const Optim8Table* __restrict__ tables, uint4* smem) {
  // Asynchronous 16-byte copies: a thread's 7 or 14 words are all in flight at once.
  constexpr int kWords = (kTwo ? 2 : 1) * static_cast<int>(sizeof(Optim8Table) / 16);
  const uint4* src = reinterpret_cast<const uint4*>(tables);
  for (int j = static_cast<int>(threadIdx.x); j < kWords; j += blockDim.x) gpu_cp_async16(&smem[j], src + j);
  gpu_cp_async_commit();
  gpu_cp_async_wait<0>();
  __syncthreads();
}

// What one lane reads of a 256-element state block before updating it.
template <int D>
struct Opt8In {
  float g[8], p[8];
  uint16_t graw16[8], praw[8];
  uint32_t w1[2], w2[2], w3[2];  // codes, four per word
  float scale1, scale2, scale3;
};

template <int D, int OPT>
__device__ __forceinline__ void opt8_fast_load(const OptimKernelArgs& a, int64_t b, int lane, bool vec,
                                               Opt8In<D>& in) {
  constexpr bool kTwo = optim_traits(OPT).states == 2;
  constexpr bool kEma = optim_traits(OPT).state1_copies == 2;
  const int64_t nblocks = (a.n + 255) / 256;
  const int64_t base = b * 256;
  const bool full = vec && base + 256 <= a.n;
  opt8_load_vals<D>(a.g, base, lane, full, a.n, in.g, in.graw16);
  opt8_load_vals<D>(a.p, base, lane, full, a.n, in.p, in.praw);
  opt8_load_code_words(a.c1, base, lane, full, a.n, in.w1);
  if constexpr (kTwo) opt8_load_code_words(a.c2, base, lane, full, a.n, in.w2);
  if constexpr (kEma) opt8_load_code_words(a.c1 + a.n, base, lane, full, a.n, in.w3);
  in.scale1 = a.absmax1[b];
  in.scale2 = kTwo ? a.absmax2[b] : 0.0f;
  in.scale3 = kEma ? a.absmax1[nblocks + b] : 0.0f;
}

// One warp updates 256-element state block `b` of the tensor `a` describes, from what
// opt8_fast_load read.
template <int D, int OPT>
__device__ __forceinline__ void opt8_fast_update(const OptimKernelArgs& a, const Optim8Table& t1,
                                                 const Optim8Table& t2, const OptimConstsDev& k, int64_t b,
                                                 int lane, bool vec, const Opt8In<D>& in) {
  constexpr bool kTwo = optim_traits(OPT).states == 2;
  constexpr bool kEma = optim_traits(OPT).state1_copies == 2;
  const bool crowd1 = t1.crowded != 0;
  const bool crowd2 = t2.crowded != 0;
  const int64_t nblocks = (a.n + 255) / 256;
  const bool decay = a.weight_decay > 0.0f;
  {
    const int64_t base = b * 256;
    const bool full = vec && base + 256 <= a.n;
    const float(&g)[8] = in.g;
    const float(&p)[8] = in.p;
    const uint16_t(&praw)[8] = in.praw;
    uint32_t c1[8], c2[8], c3[8];
    opt8_unpack_codes(in.w1, c1);
    if constexpr (kTwo) opt8_unpack_codes(in.w2, c2);
    if constexpr (kEma) opt8_unpack_codes(in.w3, c3);
    const float scale1 = in.scale1;
    const float scale2 = in.scale2;
    const float scale3 = in.scale3;
    float s[8], v[8], e3[8], aux[8];
    bool keep[8];
    const int64_t rem = a.n - base;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      s[e] = v[e] = e3[e] = aux[e] = 0.0f;
      keep[e] = true;
      if (!full && 128 * (e >> 2) + 4 * lane + (e & 3) >= rem) continue;
      const auto old = [&](int which) {
        return which == 1 ? t1.code[c1[e]] * scale1 : which == 2 ? t2.code[c2[e]] * scale2 : t1.code[c3[e]] * scale3;
      };
      keep[e] = !opt8_new_states<D, OPT>(a, g[e], old, [&] { return p[e]; }, decay, true, s[e], v[e], e3[e], aux[e]);
    }
    // Phase B: the new scales (a skipped element's state counts too: it is re-encoded).
    float max1 = 0.0f, max2 = 0.0f, max3 = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      max1 = fmaxf(max1, fabsf(s[e]));
      if constexpr (kTwo) max2 = fmaxf(max2, fabsf(v[e]));
      if constexpr (kEma) max3 = fmaxf(max3, fabsf(e3[e]));
    }
    const float am1 = warp_max32(max1);
    const float am2 = kTwo ? warp_max32(max2) : 0.0f;
    const float am3 = kEma ? warp_max32(max3) : 0.0f;
    const Opt8Inv inv = opt8_store_scales<kTwo, kEma>(a, b, nblocks, lane, am1, am2, am3);
    // Phases C and D.
    float pn[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      if constexpr (OPT == kOptAdam) {
        pn[e] = round_p<D>(opt_fma(k.update_scale * k.step_size, opt_div(s[e], opt_sqrt(v[e]) + k.c2 * a.eps), p[e]));
      } else if constexpr (OPT == kOptAdemamix) {
        const float den = opt_fma(opt_sqrt(v[e]), gpu_block_reciprocal(k.c2), a.eps);
        const float num = opt_fma(a.alpha, e3[e], s[e] * gpu_block_reciprocal(k.c1));
        pn[e] = round_p<D>(opt_fma(-a.lr, opt_div(num, den), p[e]));
      } else if constexpr (OPT == kOptMomentum) {
        pn[e] = round_p<D>(opt_fma(-a.lr * k.update_scale, s[e], p[e]));
      } else if constexpr (OPT == kOptLion) {
        pn[e] = aux[e];
      } else {
        const float sc = OPT == kOptAdagrad ? -a.lr : -a.lr * k.update_scale;  // Adagrad: never clipped
        pn[e] = round_p<D>(opt_fma(sc, opt_div(aux[e], opt_sqrt(s[e]) + a.eps), p[e]));
      }
      if (kTwo && decay) pn[e] = round_p<D>(pn[e] * (1.0f - a.lr * a.weight_decay));
    }
    opt8_store_p<D>(a.p, base, lane, full, a.n, pn, p, praw, keep);
    uint32_t o[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = opt8_encode_fast<true>(t1, crowd1, s[e], inv.s1);
    opt8_store_codes(a.c1, base, lane, full, a.n, o);
    if constexpr (kTwo) {
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = opt8_encode_fast<false>(t2, crowd2, v[e], inv.s2);
      opt8_store_codes(a.c2, base, lane, full, a.n, o);
    }
    if constexpr (kEma) {
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = opt8_encode_fast<true>(t1, crowd1, e3[e], inv.s3);
      opt8_store_codes(a.c1 + a.n, base, lane, full, a.n, o);
    }
  }
}

// A warp's walk over the 256-element units first, first + warps, ... < units of one launch.
// find(u): the tensor holding unit u (an index); tensor(i): its arguments; local(i, u) and
// vec(i): the unit's block within that tensor and whether it takes vector loads. With the
// prefetch (opt8_prefetch<D>) the next unit's loads are issued before this unit's update, so a
// warp keeps memory busy while it computes (registers instead of occupancy:
// opt8_fast_blocks_per_sm); the current unit's tensor is found once and its arguments rebuilt
// where they are used (from the parameter space in the multi-tensor kernel) rather than kept in
// registers.
template <int D, int OPT, class Find, class Tensor, class Local, class Vec>
__device__ __forceinline__ void opt8_fast_walk(const Optim8Table& t1, const Optim8Table& t2, const OptimConstsDev& k,
                                               int64_t first, int64_t warps, int64_t units, int lane,
                                               const Find& find, const Tensor& tensor, const Local& local,
                                               const Vec& vec) {
  if constexpr (opt8_prefetch<D>()) {
    Opt8In<D> cur;
    int ci = 0;
    if (first < units) {
      ci = find(first);
      opt8_fast_load<D, OPT>(tensor(ci), local(ci, first), lane, vec(ci), cur);
    }
    for (int64_t u = first; u < units; u += warps) {
      Opt8In<D> nxt;
      int ni = ci;
      if (u + warps < units) {
        ni = find(u + warps);
        opt8_fast_load<D, OPT>(tensor(ni), local(ni, u + warps), lane, vec(ni), nxt);
      }
      opt8_fast_update<D, OPT>(tensor(ci), t1, t2, k, local(ci, u), lane, vec(ci), cur);
      cur = nxt;
      ci = ni;
    }
  } else {
    for (int64_t u = first; u < units; u += warps) {
      const int i = find(u);
      const OptimKernelArgs& a = tensor(i);  // the kernel parameter itself, or a built copy
      Opt8In<D> in;
      opt8_fast_load<D, OPT>(a, local(i, u), lane, vec(i), in);
      opt8_fast_update<D, OPT>(a, t1, t2, k, local(i, u), lane, vec(i), in);
    }
  }
}

template <int D, int OPT>
__global__ void __launch_bounds__(kOpt8FastThreads, (opt8_fast_blocks_per_sm<D, OPT>()))
    optim8_fast_kernel(OptimKernelArgs a, const Optim8Table* __restrict__ tables, int vec) {
  constexpr bool kTwo = optim_traits(OPT).states == 2;
  extern __shared__ uint4 opt8_smem[];
  opt8_stage_tables<kTwo>(tables, opt8_smem);
  const Optim8Table& t1 = *reinterpret_cast<const Optim8Table*>(opt8_smem);
  const Optim8Table& t2 = *(reinterpret_cast<const Optim8Table*>(opt8_smem) + (kTwo ? 1 : 0));
  const OptimConstsDev k = optim_consts(a);
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  const int64_t first = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  opt8_fast_walk<D, OPT>(
      t1, t2, k, first, warps, (a.n + 255) / 256, static_cast<int>(threadIdx.x) & 31, [](int64_t) { return 0; },
      [&](int) -> const OptimKernelArgs& { return a; }, [](int, int64_t u) { return u; },
      [&](int) { return vec != 0; });
}

// The same update for up to kOptimMultiMax tensors in one launch: each warp walks the launch's
// 256-element blocks, all tensors' blocks numbered one after another.
template <int D, int OPT>
__global__ void __launch_bounds__(kOpt8FastThreads, (opt8_fast_blocks_per_sm<D, OPT>()))
    optim8_fast_multi_kernel(const BNB_GRID_CONSTANT OptimMultiArgs m, const Optim8Table* __restrict__ tables) {
  constexpr bool kTwo = optim_traits(OPT).states == 2;
  extern __shared__ uint4 opt8_smem[];
  opt8_stage_tables<kTwo>(tables, opt8_smem);
  const Optim8Table& t1 = *reinterpret_cast<const Optim8Table*>(opt8_smem);
  const Optim8Table& t2 = *(reinterpret_cast<const Optim8Table*>(opt8_smem) + (kTwo ? 1 : 0));
  const OptimConstsDev k = optim_consts(m.a);
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  const int64_t first = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  opt8_fast_walk<D, OPT>(
      t1, t2, k, first, warps, m.units, static_cast<int>(threadIdx.x) & 31,
      [&](int64_t u) { return optim_multi_find(m, u); }, [&](int i) { return optim_multi_tensor(m, i, true); },
      [&](int i, int64_t u) { return u - m.t[i].first; }, [&](int i) { return m.t[i].vec != 0; });
}

#endif  // !BNB_GPU_HIP

}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_OPTIM_KERNELS_CUH_
