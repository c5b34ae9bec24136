// RCP(x): the result of CUDA's fast-math reciprocal rcp.approx.ftz.f32, reproduced bit for bit
// on the host (docs/FORMATS.md §0). It is RN32(1/x) moved by -1, 0 or +1 ulp, the amount
// depending only on the significand of x; the 2^23 measured deviations are embedded in the
// binary by the `bnb_rcp_table` object library (tools/gen_rcp), 2 bits each.
// Link bnb_rcp_table to use this header.
#ifndef BNB_COMMON_RCP_H_
#define BNB_COMMON_RCP_H_

#include <cstdint>
#include <cstring>

// 2^21 bytes; entry i (significand field i) = deviation + 1, in bits 2*(i%4) of byte i/4.
extern "C" __attribute__((visibility("hidden"))) const uint8_t bnb_rcp_delta_packed[];

namespace bnb {

// Deviation in ulps (-1, 0, +1) of RCP from RN32(1/x) for a normal x with this significand field.
inline int32_t rcp_delta(uint32_t significand) {
  const uint32_t byte = bnb_rcp_delta_packed[significand >> 2];
  return static_cast<int32_t>((byte >> ((significand & 3u) * 2u)) & 3u) - 1;
}

// Exact RCP: zero and subnormal x give +-inf (x is flushed first), +-inf gives +-0, NaN stays
// NaN, and a reciprocal in the subnormal range is flushed to +-0.
inline float rcp_approx(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  const uint32_t sign = bits & 0x80000000u;
  const uint32_t mag = bits & 0x7fffffffu;
  uint32_t out;
  if (mag > 0x7f800000u) return x;                     // NaN
  if (mag < 0x00800000u) {                             // +-0 or subnormal: 1/(+-0)
    out = sign | 0x7f800000u;
  } else if (mag == 0x7f800000u) {                     // +-inf
    out = sign;
  } else {
    const float r = 1.0f / x;
    uint32_t rb;
    std::memcpy(&rb, &r, 4);
    if ((rb & 0x7fffffffu) < 0x00800000u) {
      out = sign;                                      // flushed to zero
    } else {
      out = static_cast<uint32_t>(static_cast<int32_t>(rb) + rcp_delta(mag & 0x7fffffu));
    }
  }
  float f;
  std::memcpy(&f, &out, 4);
  return f;
}

}  // namespace bnb

#endif  // BNB_COMMON_RCP_H_
