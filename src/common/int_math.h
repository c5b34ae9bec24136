// Integer arithmetic the core and every plugin share. Header-only: a plugin links none of the
// core's internals (src/common is on both include paths, nothing here is compiled alone).
#ifndef BNB_COMMON_INT_MATH_H_
#define BNB_COMMON_INT_MATH_H_

#include <cstdint>

namespace bnb {

// ceil(a / b) for a >= 0 and b > 0, without the overflow of (a + b - 1) / b near INT64_MAX (the
// core checks sizes up to there).
constexpr int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

// a rounded up to a multiple of b (a >= 0, b > 0).
constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// log2(x) for a power of two x (blocksizes, which the core checks): a / x == a >> log2_pow2(x)
// for a >= 0, one shift where a division by a run-time x takes tens of cycles.
constexpr int log2_pow2(int64_t x) { return __builtin_ctzll(static_cast<unsigned long long>(x)); }

}  // namespace bnb

#endif  // BNB_COMMON_INT_MATH_H_
