// Scalar binary16 / bfloat16 <-> binary32 conversions with round-to-nearest-even.
// Used by the core, the scalar reference and tests; SIMD kernels use their own vector forms.
#ifndef BNB_COMMON_HALF_H_
#define BNB_COMMON_HALF_H_

#include <cstdint>
#include <cstring>

#include "bnb.h"

namespace bnb {

// Exponent fields: all ones marks an infinity or a NaN ((bits & mask) == mask), in every format.
constexpr uint32_t kF32ExponentMask = 0x7f800000u;
constexpr uint16_t kF16ExponentMask = 0x7c00u;
constexpr uint16_t kBF16ExponentMask = 0x7f80u;

inline float bf16_to_f32(uint16_t h) {
  uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((b >> 16) | 0x40);  // quiet NaN
  b += 0x7fffu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t b;
  if (exp == 0x1f) {
    b = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    b = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    b = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do {
      ++e;
      man <<= 1;
    } while ((man & 0x400u) == 0);
    b = sign | ((112u - static_cast<uint32_t>(e)) << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

inline uint16_t f32_to_f16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000u);
  const uint32_t abs = b & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u); // rounds to inf
  if (abs >= 0x38800000u) {                                              // normal half
    uint32_t mant = abs + 0xfffu + ((abs >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((mant - 0x38000000u) >> 13));
  }
  if (abs < 0x33000000u) return sign;  // below half the smallest subnormal: +-0
  // Subnormal half: value = abs * 2^24 rounded to an integer with RNE.
  const uint32_t e = abs >> 23;
  const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - e;  // 14..24
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return static_cast<uint16_t>(sign | q);
}

// Element i of an array of `dtype` (BNB_F32, BNB_F16 or BNB_BF16) as binary32, and v stored into
// one, rounded to nearest even: for the scalar edges of the kernels.
inline float load_as_f32(int32_t dtype, const void* p, int64_t i) {
  if (dtype == BNB_F32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return dtype == BNB_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

inline void store_from_f32(int32_t dtype, void* p, int64_t i, float v) {
  if (dtype == BNB_F32) {
    static_cast<float*>(p)[i] = v;
  } else {
    static_cast<uint16_t*>(p)[i] = dtype == BNB_BF16 ? f32_to_bf16(v) : f32_to_f16(v);
  }
}

// v rounded to `dtype` (RN_D: RNE; fp32 unchanged), as binary32.
inline float round_to_dtype(int32_t dtype, float v) {
  if (dtype == BNB_F16) return f16_to_f32(f32_to_f16(v));
  if (dtype == BNB_BF16) return bf16_to_f32(f32_to_bf16(v));
  return v;
}

}  // namespace bnb

#endif  // BNB_COMMON_HALF_H_
