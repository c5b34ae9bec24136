// 8-bit code selection for the GPU quantizers through buckets keyed by binary16 bits.
//
// The reference's 7-step search (docs/FORMATS.md §2.3) has, for strictly increasing tables, the closed form
//   q(x) = #{j < 255 : x > m_j} + [x == m_j for an odd j],   NaN -> 0,
// with m_j = RN32(RN32(c_j + c_{j+1}) * 0.5) (flushed to zero like the device arithmetic). Folding
// the tie into the threshold (x >= m_j  <=>  x > prev(m_j)) gives q(x) = #{j : x > t_j} with
// t_j = m_j (even j) or prev(m_j) (odd j), strictly increasing, t_255 = +inf.
//
// The count is found through 4096 buckets: the key of x is the top 12 bits (sign, exponent, six
// mantissa bits) of x converted to binary16 rounding toward zero. Those conversions are exact
// interval maps, so a bucket is an interval of binary32 values [xmin, xmax]; a bucket stores
// lo = #{t_j < xmin}, how many thresholds lie inside (hi - lo, hi = #{t_j < xmax}) and t_lo. With at
// most one inside (true for the built-in dynamic maps) q = lo + (x > t_lo): one conversion (two
// elements per instruction on CUDA), a shift, one 8-byte shared-memory look-up and one compare per
// element, where the previous 1/64-binade buckets of the binary32 bits needed a clamp, a sign fold
// and the separate tie and NaN rules. NaN keys hold lo = 0 and a NaN threshold, so NaN -> 0.
//
// Shared with the host: tests/gpu_emu/quant8_select_test.cc checks the selection against the
// reference search at every threshold +-64 ulps, every bucket edge and on sampled binary32 values.
#ifndef BNB_GPU_QUANT8_SELECT_H_
#define BNB_GPU_QUANT8_SELECT_H_

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define BNB_Q8_HD __host__ __device__
#else
#define BNB_Q8_HD
#endif

namespace bnb {
namespace gpu {

constexpr int kQ8Keys = 4096;

struct alignas(8) Q8Bucket {
  uint32_t info;  // lo | (thresholds inside) << 8
  uint32_t thr;   // bits of t_lo (NaN for the NaN keys)
};

BNB_Q8_HD inline float q8_bits_float(uint32_t b) {
  float f;
  memcpy(&f, &b, 4);
  return f;
}
BNB_Q8_HD inline uint32_t q8_float_bits(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  return b;
}

// The next binary32 value toward -inf (finite, nonzero inputs with |x| >= FLT_MIN).
BNB_Q8_HD inline float q8_prev(float x) {
  const uint32_t b = q8_float_bits(x);
  return q8_bits_float(x > 0.0f ? b - 1u : b + 1u);
}

BNB_Q8_HD inline float q8_ftz(float x) {
  if (x < 1.17549435e-38f && x > -1.17549435e-38f) return q8_bits_float(q8_float_bits(x) & 0x80000000u);
  return x;
}

// Value of the finite binary16 magnitude bits h (< 0x7c00) as binary32 (exact).
BNB_Q8_HD inline float q8_half_value(uint32_t h) {
  const uint32_t e = h >> 10;
  const uint32_t m = h & 0x3ffu;
  if (e == 0) return static_cast<float>(m) * 5.9604644775390625e-8f;  // m * 2^-24
  return q8_bits_float(((e + 112u) << 23) | (m << 13));
}

// Binary16 bits of x rounded toward zero (the device's cvt.rz.f16.f32), for the host model.
BNB_Q8_HD inline uint32_t q8_f16_rz_bits(float x) {
  const uint32_t b = q8_float_bits(x);
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

// Thresholds t[0..255] of `code`; false where the bucketed selection does not apply (the table is
// not strictly increasing, or an odd midpoint is zero or within one ulp of the subnormals, where
// prev() would leave the normal range that flush-to-zero compares see).
BNB_Q8_HD inline bool q8_thresholds(const float* code, float* t) {
  bool ok = true;
  for (int j = 0; j < 255; ++j) {
    if (!(code[j] < code[j + 1])) ok = false;
    const float m = q8_ftz(q8_ftz(code[j] + code[j + 1]) * 0.5f);
    if ((j & 1) != 0) {
      const float a = m < 0.0f ? -m : m;
      const bool normal = a > 1.17549435e-38f && a < 3.4e38f;
      if (!normal) ok = false;
      t[j] = normal ? q8_prev(m) : m;
    } else {
      t[j] = m;
    }
  }
  t[255] = q8_bits_float(0x7f800000u);
  for (int j = 0; j < 254; ++j)
    if (!(t[j] < t[j + 1])) ok = false;
  return ok;
}

// #{j < 256 : t[j] < v} for the sorted, +inf-terminated thresholds (v not NaN).
BNB_Q8_HD inline int q8_count_below(const float* t, float v) {
  int c = 0;
  for (int s = 128; s > 0; s >>= 1)
    if (t[c + s - 1] < v) c += s;
  return c;
}

// The binary32 values whose key is `key` (sign, five exponent bits, six mantissa bits of a
// binary16): [xmin, xmax]; false for the NaN keys.
BNB_Q8_HD inline bool q8_key_range(uint32_t key, float* xmin, float* xmax) {
  const uint32_t mag = key & 0x7ffu;
  const bool neg = (key >> 11) != 0;
  if ((mag >> 6) == 31 && (mag & 63u) != 0) return false;
  float lo_mag, hi_mag;  // the magnitudes of the bucket's binary32 values
  if ((mag >> 6) == 31) {
    lo_mag = hi_mag = q8_bits_float(0x7f800000u);
  } else {
    lo_mag = q8_half_value(mag << 4);
    const uint32_t next = (mag + 1u) << 4;
    hi_mag = next >= 0x7c00u ? 3.40282347e38f : q8_prev(q8_half_value(next));
  }
  *xmin = neg ? -hi_mag : lo_mag;
  *xmax = neg ? -lo_mag : hi_mag;
  return true;
}

// The bucket from lo = #{t_j < xmin} and hi = #{t_j < xmax} (NaN keys: nan = true).
BNB_Q8_HD inline Q8Bucket q8_bucket_from_counts(const float* t, bool nan, int lo, int hi) {
  Q8Bucket out;
  if (nan) {
    out.info = 0;
    out.thr = 0x7fc00000u;
    return out;
  }
  lo = lo > 255 ? 255 : lo;
  hi = hi > 255 ? 255 : hi;
  out.info = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi - lo) << 8);
  out.thr = q8_float_bits(t[lo]);
  return out;
}

BNB_Q8_HD inline Q8Bucket q8_make_bucket(const float* t, uint32_t key) {
  float xmin = 0.0f, xmax = 0.0f;
  if (!q8_key_range(key, &xmin, &xmax)) return q8_bucket_from_counts(t, true, 0, 0);
  return q8_bucket_from_counts(t, false, q8_count_below(t, xmin), q8_count_below(t, xmax));
}

// q(x) through the buckets (host model; the kernels inline the same steps).
BNB_Q8_HD inline uint32_t q8_select(const Q8Bucket* buckets, const float* t, float x) {
  const Q8Bucket e = buckets[q8_f16_rz_bits(x) >> 4];
  uint32_t q = (e.info & 0xffu) + (x > q8_bits_float(e.thr) ? 1u : 0u);
  const uint32_t inside = e.info >> 8;
  if (inside > 1) {
    const uint32_t end = (e.info & 0xffu) + inside;
    while (q < end && x > t[q]) ++q;
  }
  return q;
}

}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_QUANT8_SELECT_H_
