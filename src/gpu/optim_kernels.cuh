// Kernels of the optimizer family (OPS.md section 6): 32-bit and 8-bit blockwise updates for
// Adam/AdamW/LAMB, AdEMAMix, Momentum/LARS, RMSprop, Adagrad and Lion, and the update-norm
// pre-pass of clipping (OPS 6.4). One pass over memory per step.
//
// Arithmetic follows the reference's fast-math build as OPS 6.1 describes it: divisions are
// div.approx (RN32(a * RCP(b))), square roots sqrt.approx, beta^t __powf, and the fused
// multiply-adds are written out (the plugin is built with --fmad=false). With that, the golden
// optimizer cases reproduce bit for bit on the GPU the reference measured (HIP: IEEE division,
// sqrtf and powf, as its ROCm build).
//
// 8-bit layout: a CUDA block of 256 threads walks the tensor in tiles of 4 state blocks (1024
// elements); 64 threads own one 256-element state block, thread lane l its elements l + 64 j
// (j = 0..3), so every load is coalesced. The code tables live in shared memory.
#ifndef BNB_GPU_OPTIM_KERNELS_CUH_
#define BNB_GPU_OPTIM_KERNELS_CUH_

#include <cstdint>

#include "gpu_port.h"

namespace bnb {
namespace gpu {

constexpr int kOptAdam = 1;      // also LAMB
constexpr int kOptMomentum = 2;  // also LARS
constexpr int kOptRmsprop = 3;
constexpr int kOptLion = 4;
constexpr int kOptAdagrad = 5;
constexpr int kOptAdemamix = 6;

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

// ---------------------------------------------------------------- parameter dtype (bnb_dtype_t)

constexpr int kOptF32 = 0;
constexpr int kOptF16 = 1;
constexpr int kOptBF16 = 2;

template <int D>
__device__ __forceinline__ float load_p(const void* base, int64_t i) {
  if constexpr (D == kOptF32) {
    return static_cast<const float*>(base)[i];
  } else {
    const unsigned short h = static_cast<const unsigned short*>(base)[i];
    if constexpr (D == kOptF16) return __half2float(__ushort_as_half(h));
    return __uint_as_float(static_cast<uint32_t>(h) << 16);
  }
}

// Round-to-nearest-even bits of the parameter dtype.
template <int D>
__device__ __forceinline__ unsigned short half_bits(float f) {
  if constexpr (D == kOptF16) {
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
  if constexpr (D == kOptF32) {
    return x;
  } else if constexpr (D == kOptF16) {
    return __half2float(__ushort_as_half(half_bits<D>(x)));
  } else {
    return __uint_as_float(static_cast<uint32_t>(half_bits<D>(x)) << 16);
  }
}

template <int D>
__device__ __forceinline__ void store_p(void* base, int64_t i, float v) {
  if constexpr (D == kOptF32) {
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

// Q_C(x) of FORMATS 2.3 on a table in shared memory.
__device__ __forceinline__ int optim_select_code(const float* code, float x) {
  int p = 127, lo_i = 0, hi_i = 255;
  float lo_v = -1.0f, hi_v = 1.0f, v = code[127];
#pragma unroll
  for (int s = 64; s >= 1; s >>= 1) {
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
  if (x > v) return x > (hi_v + v) * 0.5f ? hi_i : p;
  return x < (lo_v + v) * 0.5f ? lo_i : p;
}

// Code of `value` under scale reciprocal `inv`; kSignFix: the signed-state rule of OPS 6.5.
template <bool kSignFix>
__device__ __forceinline__ uint8_t optim_encode(const float* code, float value, float inv) {
  int c = optim_select_code(code, value * inv);
  if (kSignFix && signbit(code[c]) != signbit(value)) c = value > 0.0f ? c + 1 : c - 1;
  return static_cast<uint8_t>(c & 255);
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
      if constexpr (D == kOptF32) {
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

// Squared update-norm quantity (OPS 6.4: new states, no weight decay, nothing written).
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

template <int D, int OPT>
__global__ void __launch_bounds__(kOptimThreads) optim32_unorm_kernel(OptimKernelArgs a) {
  const OptimConstsDev k = optim_consts(a);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  float acc = 0.0f;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.n; i += stride)
    acc += unorm32<D, OPT>(a, k, i);
  block_sum_atomic(acc, a.unorm_vec);
}

// ---------------------------------------------------------------- 8-bit blockwise

__device__ __forceinline__ void load_tables(const OptimKernelArgs& a, float* q1, float* q2, bool two) {
  for (int j = static_cast<int>(threadIdx.x); j < 256; j += blockDim.x) {
    q1[j] = a.qmap1[j];
    if (two) q2[j] = a.qmap2[j];
  }
  __syncthreads();
}

// kUnorm: the clipping pre-pass (sum of squared update quantities, nothing written).
template <int D, int OPT, bool kUnorm>
__global__ void __launch_bounds__(kOptimThreads) optim8_kernel(OptimKernelArgs a) {
  constexpr bool kTwo = OPT == kOptAdam || OPT == kOptAdemamix;
  constexpr bool kEma = OPT == kOptAdemamix;
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
      const float graw = load_p<D>(a.g, i);
      float gs = graw * a.gnorm_scale;
      if constexpr (kTwo) {
        if (!isfinite(graw)) continue;  // state reset to zero, p kept
        keep[j] = false;
        const float vd = q2[a.c2[i]] * scale2;
        v[j] = D == kOptBF16 ? opt_fma(vd, a.beta2, ((1.0f - a.beta2) * gs) * gs)
                          : opt_fma((1.0f - a.beta2) * gs, gs, vd * a.beta2);
        s[j] = opt_fma(1.0f - a.beta1, gs, (q1[a.c1[i]] * scale1) * a.beta1);
        if constexpr (kEma) e[j] = opt_fma(1.0f - a.beta3, gs, (q1[a.c1[a.n + i]] * scale3) * a.beta3);
      } else {
        const float p = load_p<D>(a.p, i);
        const float sd = q1[a.c1[i]] * scale1;
        if (a.skip_zeros && graw == 0.0f) {
          s[j] = sd + 0.0f;  // keeps the state; -0 -> +0 so the sign fix cannot make it negative
          continue;
        }
        keep[j] = false;
        if (OPT != kOptLion && decay && !kUnorm) gs = opt_fma(p, a.weight_decay, gs);
        if constexpr (OPT == kOptMomentum) {
          s[j] = a.first_step ? gs : opt_fma(sd, a.beta1, gs);
        } else if constexpr (OPT == kOptRmsprop) {
          s[j] = opt_fma(1.0f - a.beta1, gs * gs, sd * a.beta1);
          aux[j] = gs;
        } else if constexpr (OPT == kOptAdagrad) {
          s[j] = opt_fma(gs, gs, sd);
          aux[j] = gs;
        } else {  // Lion: the parameter step uses the old state
          const float p1 = decay ? round_p<D>(p * (1.0f - a.lr * a.weight_decay)) : p;
          const float d = round_p<D>(a.lr * sign_of(opt_fma(sd, a.beta1, (1.0f - a.beta1) * gs)));
          aux[j] = round_p<D>(p1 - d);
          s[j] = opt_fma(1.0f - a.beta2, gs, sd * a.beta2);
        }
      }
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
    if (lane == 0) {
      a.absmax1[b] = am1;
      if (kTwo) a.absmax2[b] = am2;
      if (kEma) a.absmax1[nblocks + b] = am3;
    }
    const float inv1 = gpu_block_reciprocal(am1);
    const float inv2 = gpu_block_reciprocal(am2);
    const float inv3 = gpu_block_reciprocal(am3);
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
      a.c1[i] = optim_encode<true>(q1, s[j], inv1);
      if constexpr (kTwo) a.c2[i] = optim_encode<false>(q2, v[j], inv2);
      if constexpr (kEma) a.c1[a.n + i] = optim_encode<true>(q1, e[j], inv3);
    }
  }
  if constexpr (kUnorm) block_sum_atomic(unorm_acc, a.unorm_vec);
}

}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_OPTIM_KERNELS_CUH_
