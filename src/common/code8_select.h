// The 8-bit code selection Q_C(x) of docs/FORMATS.md §2.3, for every backend: which of a table's
// 256 codes a scaled value x maps to. Host C++, CUDA and HIP include it.
//
// The normative rule is the reference's 7-step search (code8_search). For a table whose plan is
// `fast` it has a closed form, which every fast kernel computes in its own vector shape:
//   q(x) = #{j < 255 : x > t_j}          (NaN compares false: code 0)
// with the thresholds t_j = m_j for even j and prev(m_j), the next binary32 value below, for odd
// j (an exact tie x == m_j goes to the even index), m_j = RN32(RN32(c_j + c_{j+1}) * 0.5), and
// t_255 = +inf as a sentinel. The GPU arithmetic flushes subnormal results to zero (`ftz`): its
// midpoints are flushed, and an odd midpoint must then be normal so that its tie still folds
// into a threshold the flushed comparisons see.
//
// Here, once: the thresholds and the rule that says when they apply (code8_plan), the exact
// count (code8_select), the bucket of an interval of x (code8_bucket: what every bucketed kernel
// stores, keyed its own way), the sign fix of the signed optimizer states (code8_sign_fix), and
// the two GPU bucket keys: binary16 toward zero (quantizer: one conversion instruction) and a 64th
// of a binade (optimizers: integer arithmetic). The CPU kernels key theirs by x's top 16 bits
// (quantizer) and by binade with byte tables (optimizers, AVX-512 VBMI), built from the same
// plan and code8_bucket/code8_count_below in quant_plan.cc and optim_plan.cc.
// Users: src/backend_cpu/quant_plan.cc + quant8_simd.cc, src/backend_cpu/optim_plan.cc +
// optim8_simd.cc, src/gpu/quant_kernels.cuh, src/gpu/optim_kernels.cuh + optim_ops.cu, tests/ref; checked against the search by
// tests/cpu_targets/code8_select_test.cc and tests/gpu_emu/code8_buckets_test.cc.
#ifndef BNB_COMMON_CODE8_SELECT_H_
#define BNB_COMMON_CODE8_SELECT_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#include "hd.h"  // BNB_HD_INLINE: device code inlines these like the kernels' own helpers

namespace bnb {

constexpr float kC8FltMin = 1.17549435e-38f;  // smallest normal binary32

BNB_HD_INLINE float c8_bits_float(uint32_t b) {
  float f;
  memcpy(&f, &b, 4);
  return f;
}
BNB_HD_INLINE uint32_t c8_float_bits(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  return b;
}

// The next binary32 value toward -inf of a finite x (0 gives -denorm_min).
BNB_HD_INLINE float c8_prev(float x) {
  if (x == 0.0f) return -c8_bits_float(1u);
  const uint32_t b = c8_float_bits(x);
  return c8_bits_float(x > 0.0f ? b - 1u : b + 1u);
}

// x with a subnormal value flushed to a zero of its sign (what the GPU arithmetic does).
BNB_HD_INLINE float c8_ftz(float x) {
  if (x < kC8FltMin && x > -kC8FltMin) return c8_bits_float(c8_float_bits(x) & 0x80000000u);
  return x;
}

// Q_C(x) for any table: the reference's search, verbatim. Plain binary32 arithmetic: the device
// builds flush it (-ftz=true / -fgpu-flush-denormals-to-zero) and none contracts it into an FMA.
BNB_HD_INLINE int32_t code8_search(const float* code, float x) {
  int32_t p = 127, lo_i = 0, hi_i = 255;
  float lo_v = -1.0f, hi_v = 1.0f, v = code[127];
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
#pragma unroll
#endif
  for (int32_t s = 64; s >= 1; s /= 2) {
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

// Midpoint m_j (j < 255) of `code`, rounded as the reference's search rounds it (and flushed
// under ftz).
BNB_HD_INLINE float code8_midpoint(const float* code, int j, bool ftz) {
  const float sum = code[j] + code[j + 1];
  return ftz ? c8_ftz(c8_ftz(sum) * 0.5f) : sum * 0.5f;
}

// Threshold t_j of the midpoint m = m_j; *ok becomes false where the closed form cannot use it
// (a non-finite midpoint, or under ftz an odd midpoint that is not normal).
BNB_HD_INLINE float code8_threshold(float m, int j, bool ftz, bool* ok) {
  const float mag = m < 0.0f ? -m : m;
  if (!(mag <= 3.40282347e38f) || ((j & 1) != 0 && ftz && !(mag > kC8FltMin))) {
    *ok = false;
    return m;
  }
  return (j & 1) == 0 ? m : c8_prev(m);
}

// The plan every kernel derives its own tables from.
struct Code8Plan {
  float t[256];                // thresholds t_0..t_254, then +inf
  int32_t negative_count = 0;  // leading codes with the sign bit set (fast tables: exactly those)
  bool fast = false;           // the closed form equals the search for this table
};

// Threshold t_j (j < 255) of `code`; *ok becomes false unless the closed form holds there: c_j
// and c_j+1 finite and increasing, m_j finite (ftz: normal when j is odd), and m_j and t_j above
// m_j-1 and t_j-1. One entry per call, so that a GPU block can check a table thread by thread.
BNB_HD_INLINE float code8_plan_entry(const float* code, int j, bool ftz, bool* ok) {
  const float big = 3.40282347e38f;
  if (!(code[j] < code[j + 1]) || !(code[j] >= -big) || !(code[j + 1] <= big)) *ok = false;
  const float m = code8_midpoint(code, j, ftz);
  const float t = code8_threshold(m, j, ftz, ok);
  if (j > 0) {
    const float prev_m = code8_midpoint(code, j - 1, ftz);
    bool prev_ok = true;
    if (!(prev_m < m && code8_threshold(prev_m, j - 1, ftz, &prev_ok) < t)) *ok = false;
  }
  return t;
}

// The closed form applies when it holds at every entry.
BNB_HD_INLINE void code8_plan(const float* code, bool ftz, Code8Plan* plan) {
  bool ok = true;
  plan->negative_count = 0;
  while (plan->negative_count < 256 && (c8_float_bits(code[plan->negative_count]) >> 31) != 0) ++plan->negative_count;
  for (int j = 0; j < 255; ++j) plan->t[j] = code8_plan_entry(code, j, ftz, &ok);
  plan->t[255] = c8_bits_float(0x7f800000u);
  plan->fast = ok;
}

// The thresholds in breadth-first order of the implicit search tree the CPU kernels walk, one
// level per bit of the code: levels[(128 / s) - 1 + c] = t[c * 2s + s - 1], s = 128, 64, ..., 1.
inline void code8_levels(const Code8Plan& plan, float* levels) {
  for (int s = 128; s >= 1; s /= 2)
    for (int c = 0; c < 128 / s; ++c) levels[(128 / s) - 1 + c] = plan.t[c * 2 * s + s - 1];
}

// #{j < 255 : t[j] < v} over sorted thresholds (NaN: 0).
BNB_HD_INLINE int32_t code8_count_below(const float* t, float v) {
  int32_t c = 0;
  for (int32_t s = 128; s > 0; s >>= 1) c += t[c + s - 1] < v ? s : 0;
  return c;
}

// Q_C(x) of a fast plan, element by element: the count of thresholds below x.
BNB_HD_INLINE int32_t code8_select(const Code8Plan& plan, float x) { return code8_count_below(plan.t, x); }

// The thresholds a bucket of x in [xmin, xmax] needs: lo = #{t_j < xmin}, so that
// q(x) = lo + #{the `inside` thresholds t_lo, t_lo+1, ... below x}.
struct Code8Bucket {
  int32_t lo;
  int32_t inside;
};
BNB_HD_INLINE Code8Bucket code8_bucket(const float* t, float xmin, float xmax) {
  const int32_t lo = code8_count_below(t, xmin);
  return Code8Bucket{lo, code8_count_below(t, xmax) - lo};
}

// The sign fix of the signed 8-bit optimizer states (docs/OPS.md §6.5): a code whose table sign
// differs from the value's moves one step toward it (uint8 wrap). The codes with the sign bit set
// are those below negative_count (a fast plan's, whose table is sorted).
BNB_HD_INLINE int32_t code8_sign_fix(int32_t c, int32_t negative_count, float value) {
#if defined(__CUDACC__) || defined(__HIPCC__)
  // The GPU library's signbit (an int): the kernels' compare and this test fuse into one
  // instruction, where a bool-valued sign test costs two more per value.
  const bool value_negative = static_cast<bool>(signbit(value));
#else
  const bool value_negative = std::signbit(value);
#endif
  if ((c < negative_count) != value_negative) c = value > 0.0f ? c + 1 : c - 1;
  return c & 255;
}

// The same for any table: the sign of code[c] itself.
BNB_HD_INLINE int32_t code8_sign_fix(const float* code, int32_t c, float value) {
  return code8_sign_fix(c, (c8_float_bits(code[c]) >> 31) != 0 ? c + 1 : c, value);
}

// ---- Buckets keyed by x converted to binary16 toward zero (the GPU quantizer: one cvt.rz per
// two values). The key is the top 12 bits (sign, five exponent bits, six mantissa bits); such a
// conversion maps an interval of binary32 values to each key. NaN keys hold lo = 0 and a NaN
// threshold, so NaN -> 0; with at most one threshold inside a bucket, q = lo + (x > t_lo).
constexpr int kC8F16Keys = 4096;

struct alignas(8) Code8F16Bucket {
  uint32_t info;  // lo | (thresholds inside) << 8
  uint32_t thr;   // bits of t_lo (NaN for the NaN keys)
};

// Value of the finite binary16 magnitude bits h (< 0x7c00) as binary32 (exact).
BNB_HD_INLINE float c8_half_value(uint32_t h) {
  const uint32_t e = h >> 10;
  const uint32_t m = h & 0x3ffu;
  if (e == 0) return static_cast<float>(m) * 5.9604644775390625e-8f;  // m * 2^-24
  return c8_bits_float(((e + 112u) << 23) | (m << 13));
}

// Binary16 bits of x rounded toward zero (the device's cvt.rz.f16.f32), for the host model.
BNB_HD_INLINE uint32_t c8_f16_rz_bits(float x) {
  const uint32_t b = c8_float_bits(x);
  const uint32_t sign = (b >> 16) & 0x8000u;
  const uint32_t a = b & 0x7fffffffu;
  if (a > 0x7f800000u) return 0x7fffu;  // canonical NaN
  if (a == 0x7f800000u) return sign | 0x7c00u;
  const int e = static_cast<int>(a >> 23) - 127;
  if (e >= 16) return sign | 0x7bffu;  // beyond the largest finite binary16: truncates to it
  if (e >= -14) return sign | (static_cast<uint32_t>(e + 15) << 10) | ((a & 0x7fffffu) >> 13);
  if (e < -25 || a == 0) return sign;
  // Subnormal binary16: floor(|x| / 2^-24) = m * 2^(e + 1) with the 24-bit significand m.
  const uint32_t m = (a & 0x7fffffu) | 0x800000u;
  return sign | (m >> (-e - 1));
}

// The binary32 values whose key is `key`: [xmin, xmax]; false for the NaN keys.
BNB_HD_INLINE bool c8_f16_key_range(uint32_t key, float* xmin, float* xmax) {
  const uint32_t mag = key & 0x7ffu;
  const bool neg = (key >> 11) != 0;
  if ((mag >> 6) == 31 && (mag & 63u) != 0) return false;
  float lo_mag, hi_mag;  // the magnitudes of the bucket's binary32 values
  if ((mag >> 6) == 31) {
    lo_mag = hi_mag = c8_bits_float(0x7f800000u);
  } else {
    lo_mag = c8_half_value(mag << 4);
    const uint32_t next = (mag + 1u) << 4;
    hi_mag = next >= 0x7c00u ? 3.40282347e38f : c8_prev(c8_half_value(next));
  }
  *xmin = neg ? -hi_mag : lo_mag;
  *xmax = neg ? -lo_mag : hi_mag;
  return true;
}

// The stored form of a bucket (NaN keys: nan = true).
BNB_HD_INLINE Code8F16Bucket c8_f16_bucket_entry(const float* t, bool nan, Code8Bucket b) {
  Code8F16Bucket out;
  if (nan) {
    out.info = 0;
    out.thr = 0x7fc00000u;
    return out;
  }
  out.info = static_cast<uint32_t>(b.lo) | (static_cast<uint32_t>(b.inside) << 8);
  out.thr = c8_float_bits(t[b.lo]);
  return out;
}

BNB_HD_INLINE Code8F16Bucket c8_f16_bucket(const float* t, uint32_t key) {
  float xmin = 0.0f, xmax = 0.0f;
  if (!c8_f16_key_range(key, &xmin, &xmax)) return c8_f16_bucket_entry(t, true, Code8Bucket{0, 0});
  return c8_f16_bucket_entry(t, false, code8_bucket(t, xmin, xmax));
}

// q(x) through the binary16-keyed buckets (host model; the kernels inline the same steps).
BNB_HD_INLINE uint32_t c8_f16_select(const Code8F16Bucket* buckets, const float* t, float x) {
  const Code8F16Bucket e = buckets[c8_f16_rz_bits(x) >> 4];
  uint32_t q = (e.info & 0xffu) + (x > c8_bits_float(e.thr) ? 1u : 0u);
  const uint32_t inside = e.info >> 8;
  if (inside > 1) {
    const uint32_t end = (e.info & 0xffu) + inside;
    while (q < end && x > t[q]) ++q;
  }
  return q;
}

// ---- Buckets of a 64th of a binade of |x| (the GPU optimizers: the key is integer arithmetic on
// x's bits). Binades 2^-24 .. 2^0 get 64 buckets each; smaller magnitudes, and from 2 up, share
// one bucket per sign. Negative x take buckets [0, kC8BinadeMags) in increasing order of x,
// positive x the rest. A bucket stores lo and t_lo, and flags two thresholds inside (then t_lo+1
// is compared as well); a table fits when no bucket holds more than two.
constexpr int kC8BinadeMags = 1 + 25 * 64 + 1;
constexpr int kC8BinadeBuckets = 2 * kC8BinadeMags;
constexpr int kC8FirstBinadeBits = 103;  // biased exponent of 2^-24

BNB_HD_INLINE int c8_binade_bucket_of_bits(uint32_t b) {
  int mag = static_cast<int>((b >> 17) & 0x3fffu) - (kC8FirstBinadeBits * 64 - 1);
  mag = mag < 0 ? 0 : (mag > kC8BinadeMags - 1 ? kC8BinadeMags - 1 : mag);
  return (b >> 31) != 0u ? kC8BinadeMags - 1 - mag : kC8BinadeMags + mag;
}

// The binary32 values of bucket b: [xmin, xmax].
BNB_HD_INLINE void c8_binade_bucket_range(int b, float* xmin, float* xmax) {
  const int mb = b >= kC8BinadeMags ? b - kC8BinadeMags : kC8BinadeMags - 1 - b;
  const uint32_t first = mb == 0 ? 0u : static_cast<uint32_t>(mb - 1 + kC8FirstBinadeBits * 64) << 17;
  const uint32_t last = mb == kC8BinadeMags - 1 ? 0x7f800000u : (static_cast<uint32_t>(mb + kC8FirstBinadeBits * 64) << 17) - 1u;
  *xmin = b >= kC8BinadeMags ? c8_bits_float(first) : -c8_bits_float(last);
  *xmax = b >= kC8BinadeMags ? c8_bits_float(last) : -c8_bits_float(first);
}

// The stored form of a bucket: info = lo | (two inside) << 8, thr = bits of t_lo.
BNB_HD_INLINE void c8_binade_bucket_entry(const float* t, Code8Bucket b, uint32_t* info, uint32_t* thr) {
  *info = static_cast<uint32_t>(b.lo) | (b.inside >= 2 ? 256u : 0u);
  *thr = c8_float_bits(t[b.lo]);
}

// q(x) from x's bucket entry (crowded: some bucket of the table holds two thresholds).
BNB_HD_INLINE int c8_binade_select(uint32_t info, uint32_t thr, const float* t, bool crowded, float x) {
  const int lo = static_cast<int>(info & 255u);
  int q = lo + (x > c8_bits_float(thr) ? 1 : 0);
  if (crowded && (info >> 8) != 0u) q += x > t[lo + 1] ? 1 : 0;  // crowded: uniform
  return x == x ? q : 0;
}

}  // namespace bnb

#endif  // BNB_COMMON_CODE8_SELECT_H_
