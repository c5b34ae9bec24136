// SIMD kernels of the quantization family, compiled once per Highway target (foreach_target)
// and chosen at run time (HWY_DYNAMIC_DISPATCH). Every result is bit-exact with docs/FORMATS.md and
// tests/ref: the same binary32 operations in the same order, only many lanes at a time.
//
// Work is split into ranges of whole blocks, one per task. A task walks its blocks in chunks of
// up to 4096 elements: it converts/pads a chunk into an L1-resident scratch buffer when needed
// (fp16/bf16 input, partial last block), takes every block's NaN-dropping absmax, then every
// exact RCP (rcp.h; 16 at a time on AVX-512), then encodes the blocks while prefetching the
// next chunk (4-bit fp32 blocks of 32/64 on AVX3_DL: groups of 16 blocks, no chunks). Codes:
//  * 8-bit: the table's thresholds and the rule for when they apply come from
//    src/common/code8_select.h (bnb::code8_plan); for built-in tables and large inputs a
//    65536-entry bucket table indexed by the top 16 bits of x (count of thresholds below the
//    bucket, and low bits that make x's low bits carry into the count when x is above the
//    bucket's single threshold), one gather and one add per lane;
//  * 8-bit, other fast tables: branchless 8-level search over the 255 thresholds, each level's
//    candidates held in registers;
//  * 8-bit, any other table: the reference's literal 7-step search, vectorised with gathers;
//  * NF4 and FP4 on AVX3_DL: x (FP4: |x|) picks one of 32 cells narrower than any gap between
//    thresholds (FMA + truncation); a VPERMB gives the cell's code (its high nibble already
//    shifted in even lanes), a VPERMI2PS its one threshold, one compare decides;
//  * NF4 elsewhere: 4-level search over the 15 thresholds; FP4: 3-level search over the 7
//    magnitude thresholds, the pattern table, the sign. Even and odd elements are encoded in
//    separate vectors so a packed byte is (even << 4) | odd.
// Dequantizing uses the 256-entry table (8-bit) or a per-block pre-scaled 16-entry table
// (4-bit; RN32(LUT[k] * absmax) equals the per-element product). Outputs of 16 MiB and more
// use non-temporal stores on AVX2/AVX-512.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "code8_select.h"
#include "quant_kernels.h"
#include "rcp.h"
#include "tables.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/backend_cpu/quant_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#ifndef BNB_BACKEND_CPU_QUANT_SIMD_SHARED_
#define BNB_BACKEND_CPU_QUANT_SIMD_SHARED_
namespace bnb {
namespace cpu {

constexpr int64_t kMaxBlock = 4096;  // largest blocksize (docs/FORMATS.md §2.5, 3.7) and chunk size

// How the kernels select 8-bit codes for one table (built per call; cached with buckets for the
// built-in tables), from the table's bnb::Code8Plan (src/common/code8_select.h).
struct Quant8Plan {
  // The closed form applies: the level search below. Otherwise the 7-step search runs.
  bool fast = false;
  // Optional, for fast tables with at most one threshold per bucket of floats sharing their top
  // 16 bits: 65536 entries (count of thresholds below the bucket << 16) | low, where
  // low + (x's low 16 bits, inverted when x < 0) carries into bit 16 exactly when x is above
  // the bucket's threshold (low = 0xffff - its low bits when positive, its low bits when
  // negative; 0 without one). One gather and one add per lane then decide.
  const uint32_t* buckets = nullptr;
  // The thresholds in search-tree order (bnb::code8_levels).
  alignas(64) float levels[256 + 64] = {};
};

struct Quant8Args {
  int32_t dtype;
  const void* A;
  int64_t n;
  int64_t blocksize;
  const float* code;
  const Quant8Plan* plan;
  uint8_t* out;
  float* absmax;
  bool stream;  // non-temporal stores of the codes (large, 64-byte aligned output)
};

struct Dequant8Args {
  const uint8_t* q;
  const float* absmax;
  const float* code;
  int64_t n;
  int64_t blocksize;
  int32_t out_dtype;
  void* out;
  bool stream;  // non-temporal stores (large, 64-byte aligned output)
};

struct Quant4Args {
  int32_t quant_type;
  int32_t dtype;
  const void* A;
  int64_t n;
  int64_t blocksize;
  uint8_t* packed;
  float* absmax;
  bool stream;
};

struct Dequant4Args {
  int32_t quant_type;
  const uint8_t* packed;
  bnb_scales_resolved_t scales;
  int64_t n;
  int64_t blocksize;
  int32_t out_dtype;
  void* out;
  bool stream;
};

// Outputs at least this large bypass the caches (they cannot stay in them anyway).
constexpr int64_t kStreamBytes = int64_t{16} << 20;

inline bool use_streaming(const void* out, int64_t bytes) {
  return bytes >= kStreamBytes && reinterpret_cast<uintptr_t>(out) % 64 == 0;
}
inline bool use_streaming(const void* out, int64_t n, int32_t out_dtype) {
  return use_streaming(out, n * (out_dtype == BNB_F32 ? 4 : 2));
}

// NF4 by cell look-up (AVX3_DL): x (at most +1, at least -1 - a few ulp) falls in cell
// trunc(x * 15.5 + 16) (0..31; +32 in odd lanes, whose FMA adds 48). A cell is narrower than the smallest gap
// between NF4 thresholds, so it holds at most one: code = g[cell] + (x > t[cell]). g is
// stored shifted left by 4 for even lanes (the high nibble of a packed byte). Built by
// searching each cell's exact bounds with the same FMA and truncation; `ok` is false if the
// two lane parities would need different thresholds for a cell (then the search path runs).
struct NF4CellTables {
  alignas(64) uint8_t g[64];
  alignas(64) float t[32];
  bool ok = true;
};

inline int32_t nf4_cell_key(float x, int parity) {
  return static_cast<int32_t>(std::fma(x, 15.5f, parity ? 48.0f : 16.0f));
}

inline int nf4_code_of(float x) {
  int c = 0;
  for (uint32_t t : bnb::kNF4ThresholdBits) c += x > bnb::bits_to_float(t) ? 1 : 0;
  return c;
}

// Floats of [-1, 1] in increasing order <-> 0 .. 2 * 0x3f800000.
inline float nf4_ordered_float(uint32_t i) {
  return i < 0x3f800000u ? -bnb::bits_to_float(0x3f800000u - i) : bnb::bits_to_float(i - 0x3f800000u);
}

inline NF4CellTables build_nf4_cells() {
  NF4CellTables tab;
  constexpr uint32_t kLast = 2u * 0x3f800000u;
  bool have_t[32] = {};
  for (int parity = 0; parity < 2; ++parity) {
    for (int32_t k = 0; k < 32; ++k) {
      const int32_t key = k + 32 * parity;
      // First ordered float whose key is >= key (keys are monotone in x).
      const auto first_at_least = [&](int32_t want) {
        uint32_t lo = 0, hi = kLast + 1;
        while (lo < hi) {
          const uint32_t mid = lo + (hi - lo) / 2;
          if (nf4_cell_key(nf4_ordered_float(mid), parity) >= want) hi = mid; else lo = mid + 1;
        }
        return lo;
      };
      const uint32_t b = first_at_least(key), e = first_at_least(key + 1);  // cell = [b, e)
      int g = 0, top = 0;
      if (b < e) {
        g = nf4_code_of(nf4_ordered_float(b));
        top = nf4_code_of(nf4_ordered_float(e - 1));
      } else {
        g = top = k == 0 ? 0 : 15;  // empty cell (none expected)
      }
      if (top > g + 1) tab.ok = false;
      const float t = g < 15 ? bnb::bits_to_float(bnb::kNF4ThresholdBits[g]) : bnb::bits_to_float(0x7f800000u);
      // A cell without a threshold may use either neighbour bound; prefer the other parity's.
      if (have_t[k] && tab.t[k] != t) {
        if (top == g && g > 0 && tab.t[k] == bnb::bits_to_float(bnb::kNF4ThresholdBits[g - 1])) {
          g -= 1;  // x > t[g - 1] holds for the whole cell: same code
        } else {
          tab.ok = false;
        }
      }
      tab.t[k] = have_t[k] ? tab.t[k] : t;
      have_t[k] = true;
      tab.g[key] = static_cast<uint8_t>(parity ? g : g << 4);
    }
  }
  // A NaN x converts to 0x80000000: key byte 0, which must decode as code 0 in either lane.
  if (tab.g[0] != 0 || nf4_code_of(-1.0f) != 0) tab.ok = false;
  // x = +inf is clamped to 1 for its cell but compared itself: that cell's threshold is +inf.
  for (int parity = 0; parity < 2; ++parity) {
    if (!(tab.t[nf4_cell_key(1.0f, parity) & 31] > 3.0e38f)) tab.ok = false;
  }
  return tab;
}

inline const NF4CellTables& nf4_cells() {
  static const NF4CellTables tab = build_nf4_cells();
  return tab;
}

// FP4 likewise on a = min(|x|, 1): cell trunc(a * 15.5) (+16 in odd lanes, FMA addend 16),
// narrower than any gap between the 7 magnitude thresholds. Per cell the patterns below and
// above its threshold (even lanes << 4) and the threshold itself (per lane parity: 32
// cells); the sign is a compare and a masked OR. A NaN converts to key byte 0: pattern 0.
struct FP4CellTables {
  alignas(64) uint8_t lo[64];
  alignas(64) uint8_t hi[64];
  alignas(64) float t[32];
  bool ok = true;
};

inline int fp4_count_of(float a) {
  int k = 0;
  for (uint32_t t : bnb::kFP4ThresholdBits) k += a > bnb::bits_to_float(t) ? 1 : 0;
  return k;
}

inline FP4CellTables build_fp4_cells() {
  FP4CellTables tab;
  std::memset(tab.lo, 0, sizeof tab.lo);
  std::memset(tab.hi, 0, sizeof tab.hi);
  const auto key_of = [](uint32_t bits, int parity) {
    return static_cast<int32_t>(std::fma(bnb::bits_to_float(bits), 15.5f, parity ? 16.0f : 0.0f));
  };
  for (int parity = 0; parity < 2; ++parity) {
    for (int32_t k = 0; k < 16; ++k) {
      const int32_t key = k + 16 * parity;
      const auto first_at_least = [&](int32_t want) {  // over the bits of [0, 1]
        uint32_t lo = 0, hi = 0x3f800000u + 1;
        while (lo < hi) {
          const uint32_t mid = lo + (hi - lo) / 2;
          if (key_of(mid, parity) >= want) hi = mid; else lo = mid + 1;
        }
        return lo;
      };
      const uint32_t b = first_at_least(key), e = first_at_least(key + 1);
      if (b >= e) {
        tab.ok = false;
        continue;
      }
      const int g = fp4_count_of(bnb::bits_to_float(b));
      const int top = fp4_count_of(bnb::bits_to_float(e - 1));
      if (top > g + 1) tab.ok = false;
      const int shift = parity ? 0 : 4;
      tab.lo[key] = static_cast<uint8_t>(bnb::kFP4Pattern[g] << shift);
      tab.hi[key] = static_cast<uint8_t>(bnb::kFP4Pattern[g < 7 ? g + 1 : 7] << shift);
      tab.t[key] = g < 7 ? bnb::bits_to_float(bnb::kFP4ThresholdBits[g]) : bnb::bits_to_float(0x7f800000u);
    }
  }
  if (tab.lo[0] != 0) tab.ok = false;  // a NaN: key byte 0 in either lane, a > t false
  // |x| = inf is clamped to 1 for its cell but compared itself: that cell's threshold is +inf.
  for (int parity = 0; parity < 2; ++parity) {
    if (!(tab.t[key_of(0x3f800000u, parity)] > 3.0e38f)) tab.ok = false;
  }
  return tab;
}

inline const FP4CellTables& fp4_cells() {
  static const FP4CellTables tab = build_fp4_cells();
  return tab;
}

}  // namespace cpu
}  // namespace bnb
#endif  // BNB_BACKEND_CPU_QUANT_SIMD_SHARED_

#include "simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnb {
namespace cpu {
namespace HWY_NAMESPACE {

// ------------------------------------------------------------------ blocks

// NaN-dropping max |v| over p[0, count), from kAbsmaxEmpty (what a block without a non-NaN
// element keeps). Reads whole vectors: p must be readable up to count rounded up to the lane
// count; lanes past count (padding) are left out. Max(a, acc) keeps acc when a is NaN on every
// target (x86 max returns its second operand; EMU128 and SCALAR skip NaN).
HWY_INLINE float AbsMax(DF df, const float* HWY_RESTRICT p, int64_t count) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const VF empty = hn::Set(df, bnb::kAbsmaxEmpty);
  VF m0 = empty, m1 = empty, m2 = empty, m3 = empty;
  int64_t i = 0;
  for (; i + 4 * N <= count; i += 4 * N) {
    m0 = hn::Max(hn::Abs(hn::LoadU(df, p + i)), m0);
    m1 = hn::Max(hn::Abs(hn::LoadU(df, p + i + N)), m1);
    m2 = hn::Max(hn::Abs(hn::LoadU(df, p + i + 2 * N)), m2);
    m3 = hn::Max(hn::Abs(hn::LoadU(df, p + i + 3 * N)), m3);
  }
  for (; i + N <= count; i += N) m0 = hn::Max(hn::Abs(hn::LoadU(df, p + i)), m0);
  if (i < count) {
    const auto real = hn::FirstN(df, static_cast<size_t>(count - i));
    m1 = hn::Max(hn::IfThenElse(real, hn::Abs(hn::LoadU(df, p + i)), empty), m1);
  }
  return hn::GetLane(hn::MaxOfLanes(df, hn::Max(hn::Max(m0, m1), hn::Max(m2, m3))));
}

#if BNB_SIMD_PERMUTE2
// NaN-dropping max |v| of 16 consecutive blocks of 32 or 64 floats, written to out[0..16).
// Each block first folds to one vector; a transposing tree then reduces the sixteen vectors
// together (about 3 shuffles and maxes per block instead of a full reduction each).
HWY_INLINE void AbsMax16(DF df, const float* HWY_RESTRICT p, int64_t blocksize, float* out) {
  __m512 v[16];
  for (int j = 0; j < 16; ++j) {
    const float* q = p + j * blocksize;
    VF m = hn::Max(hn::Abs(hn::LoadU(df, q)), hn::Set(df, bnb::kAbsmaxEmpty));
    m = hn::Max(hn::Abs(hn::LoadU(df, q + 16)), m);
    if (blocksize == 64) {
      m = hn::Max(hn::Abs(hn::LoadU(df, q + 32)), m);
      m = hn::Max(hn::Abs(hn::LoadU(df, q + 48)), m);
    }
    v[j] = m.raw;  // NaN-free from here on
  }
  __m512 a[8], b[4], c[2];
  for (int j = 0; j < 8; ++j) {  // 256-bit halves: block 2j in quads 0-1, block 2j+1 in 2-3
    a[j] = _mm512_max_ps(_mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0x44),
                         _mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0xEE));
  }
  for (int j = 0; j < 4; ++j) {  // quad k: block 4j + k
    b[j] = _mm512_max_ps(_mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], 0x88),
                         _mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], 0xDD));
  }
  for (int j = 0; j < 2; ++j) {  // quad k: two lanes of block 8j + k, two of block 8j + 4 + k
    c[j] = _mm512_max_ps(_mm512_shuffle_ps(b[2 * j], b[2 * j + 1], 0x44),
                         _mm512_shuffle_ps(b[2 * j], b[2 * j + 1], 0xEE));
  }
  // Lane 4k + m holds block 4m + k; put block j in lane j.
  const __m512 d = _mm512_max_ps(_mm512_shuffle_ps(c[0], c[1], 0x88), _mm512_shuffle_ps(c[0], c[1], 0xDD));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  _mm512_storeu_ps(out, _mm512_permutexvar_ps(order, d));
}
#endif

// bnb::rcp_approx of 16 values at once: one division, one gather of the packed deviations.
HWY_INLINE VF RcpApprox16(DF df, VF x) {
  const DU du;
  const DI di;
  const VU bits = hn::BitCast(du, x);
  const VU sign = hn::And(bits, hn::Set(du, 0x80000000u));
  const VI mag = hn::BitCast(di, hn::Xor(bits, sign));
  const VU r = hn::BitCast(du, hn::Div(hn::Set(df, 1.0f), x));
  const VI rmag = hn::BitCast(di, hn::AndNot(hn::Set(du, 0x80000000u), r));
  // Deviation of significand i: bits 2 * (i % 16) of the i / 16-th little-endian dword.
  const VU sig = hn::And(bits, hn::Set(du, 0x7fffffu));
  const VI word = hn::GatherIndex(di, reinterpret_cast<const int32_t*>(bnb_rcp_delta_packed),
                                  hn::BitCast(di, hn::ShiftRight<4>(sig)));
  const VU shift = hn::ShiftLeft<1>(hn::And(sig, hn::Set(du, 15u)));
  const VI delta = hn::Sub(hn::BitCast(di, hn::And(hn::Shr(hn::BitCast(du, word), shift), hn::Set(du, 3u))),
                           hn::Set(di, 1));
  VU out = hn::BitCast(du, hn::Add(hn::BitCast(di, r), delta));
  out = hn::IfThenElse(hn::RebindMask(du, hn::Lt(rmag, hn::Set(di, 0x00800000))), sign, out);  // flushed
  out = hn::IfThenElse(hn::RebindMask(du, hn::Eq(mag, hn::Set(di, 0x7f800000))), sign, out);   // +-inf
  out = hn::IfThenElse(hn::RebindMask(du, hn::Lt(mag, hn::Set(di, 0x00800000))),
                       hn::Or(sign, hn::Set(du, 0x7f800000u)), out);                             // 0, subnormal
  out = hn::IfThenElse(hn::RebindMask(du, hn::Gt(mag, hn::Set(di, 0x7f800000))), bits, out);   // NaN
  return hn::BitCast(df, out);
}

// Points at block [begin, begin + count) as binary32 with `padded` readable elements
// (a multiple of 2 * lanes), converting or zero-padding into `scratch` when needed.
HWY_INLINE const float* BlockAsF32(DF df, int32_t dtype, const void* A, int64_t begin, int64_t count,
                                   int64_t padded, float* HWY_RESTRICT scratch) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  if (dtype == BNB_F32 && count == padded) return static_cast<const float*>(A) + begin;
  int64_t i = 0;
  for (; i + N <= count; i += N) hn::Store(LoadAsF32(df, dtype, A, begin + i), df, scratch + i);
  for (; i < count; ++i) {
    if (dtype == BNB_F32) {
      scratch[i] = static_cast<const float*>(A)[begin + i];
    } else {
      const uint16_t h = static_cast<const uint16_t*>(A)[begin + i];
      scratch[i] = dtype == BNB_BF16 ? bnb::bits_to_float(static_cast<uint32_t>(h) << 16)
                                     : hn::GetLane(F16BitsToF32(df, hn::Set(DU(), h)));
    }
  }
  for (; i < padded; ++i) scratch[i] = 0.0f;
  return scratch;
}

// ------------------------------------------------------------------ 8-bit code selection

// The eight levels of the midpoint search, held for a whole task.
struct Code8Levels {
  Code8Levels(DF df, const float* lv)
      : t1(hn::Set(df, lv[0])), l2(df, lv + 1), l4(df, lv + 3), l8(df, lv + 7), l16(df, lv + 15),
        l32(df, lv + 31), l64(df, lv + 63), l128(df, lv + 127) {}
  VF t1;
  RegTable<2> l2;
  RegTable<4> l4;
  RegTable<8> l8;
  RegTable<16> l16;
  RegTable<32> l32;
  RegTable<64> l64;
  RegTable<128> l128;
};

// Q_C(x) for a table with a fast plan: the count of thresholds below x, one bit per
// level (c doubles and takes the comparison as its new low bit).
HWY_INLINE VI SelectCode8Fast(DF df, const Code8Levels& L, VF x) {
  const DI di;
  const VI one = hn::Set(di, 1);
  const auto step = [&](VI c, VF t) {
    const VI twice = hn::Add(c, c);
    return hn::IfThenElse(hn::RebindMask(di, hn::Gt(x, t)), hn::Add(twice, one), twice);
  };
  VI c = hn::IfThenElseZero(hn::RebindMask(di, hn::Gt(x, L.t1)), one);
  c = step(c, L.l2.Get(df, c));
  c = step(c, L.l4.Get(df, c));
  c = step(c, L.l8.Get(df, c));
  c = step(c, L.l16.Get(df, c));
  c = step(c, L.l32.Get(df, c));
  c = step(c, L.l64.Get(df, c));
  return step(c, L.l128.Get(df, c));
}

// Q_C(x) << 16 (plus bits below 16) from the bucket table: the count below x's bucket, plus
// the carry of (stored low bits + x's low bits, inverted when x < 0): one when x is above the
// bucket's threshold, which shares x's top 16 bits (see Quant8Plan::buckets).
HWY_INLINE VU SelectCode8BucketHigh(DF df, const uint32_t* HWY_RESTRICT buckets, VF x) {
  (void)df;
  const DI di;
  const DU du;
  const VU bits = hn::BitCast(du, x);
  const VI key = hn::BitCast(di, hn::ShiftRight<16>(bits));
  const VU entry = hn::BitCast(du, hn::GatherIndex(di, reinterpret_cast<const int32_t*>(buckets), key));
  const VU neg = hn::BitCast(du, hn::ShiftRight<31>(hn::BitCast(di, bits)));  // all ones when x < 0
  return hn::Add(entry, hn::And(hn::Xor(bits, neg), hn::Set(du, 0xffffu)));
}

HWY_INLINE VI SelectCode8Bucket(DF df, const uint32_t* HWY_RESTRICT buckets, VF x) {
  return hn::BitCast(DI(), hn::ShiftRight<16>(SelectCode8BucketHigh(df, buckets, x)));
}

// Q_C(x) for any table: the reference's 7-step search, lane by lane.
HWY_INLINE VI SelectCode8Search(DF df, const float* HWY_RESTRICT code, VF x) {
  const DI di;
  VI p = hn::Set(di, 127), lo_i = hn::Zero(di), hi_i = hn::Set(di, 255);
  VF lo_v = hn::Set(df, -1.0f), hi_v = hn::Set(df, 1.0f), v = hn::Set(df, code[127]);
  for (int32_t s = 64; s >= 1; s /= 2) {
    const auto gt = hn::Gt(x, v);
    const auto gti = hn::RebindMask(di, gt);
    lo_i = hn::IfThenElse(gti, p, lo_i);
    lo_v = hn::IfThenElse(gt, v, lo_v);
    hi_i = hn::IfThenElse(gti, hi_i, p);
    hi_v = hn::IfThenElse(gt, hi_v, v);
    p = hn::IfThenElse(gti, hn::Add(p, hn::Set(di, s)), hn::Sub(p, hn::Set(di, s)));
    v = hn::GatherIndex(df, code, p);
  }
  hi_v = hn::IfThenElse(hn::RebindMask(df, hn::Eq(hi_i, hn::Set(di, 255))), hn::Set(df, code[255]), hi_v);
  lo_v = hn::IfThenElse(hn::RebindMask(df, hn::Eq(lo_i, hn::Zero(di))), hn::Set(df, code[0]), lo_v);
  const VF half = hn::Set(df, 0.5f);
  const VF mid_hi = hn::Mul(hn::Add(hi_v, v), half);
  const VF mid_lo = hn::Mul(hn::Add(lo_v, v), half);
  const VI up = hn::IfThenElse(hn::RebindMask(di, hn::Gt(x, mid_hi)), hi_i, p);
  const VI down = hn::IfThenElse(hn::RebindMask(di, hn::Lt(x, mid_lo)), lo_i, p);
  return hn::IfThenElse(hn::RebindMask(di, hn::Gt(x, v)), up, down);
}

// Stores N codes (< 256) as bytes; `stream` (AVX-512 only, 16-byte aligned `out`) bypasses
// the caches for outputs far larger than them.
HWY_INLINE void StoreCodes8(DF df, VI codes, uint8_t* HWY_RESTRICT out, bool stream = false) {
  (void)df;
#if BNB_SIMD_PERMUTE2
  const __m128i bytes = _mm512_cvtepi32_epi8(codes.raw);
  if (stream) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(out), bytes);
  } else {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), bytes);
  }
#else
  (void)stream;
  const hn::Rebind<uint8_t, DI> d8;
  hn::StoreU(hn::DemoteTo(d8, codes), d8, out);
#endif
}

// `padded` is a multiple of 4N: four independent search chains per iteration keep the
// out-of-order core busy (each chain is a long dependency of permutes and compares).
enum class Code8Path { kBucket, kLevels, kSearch };

template <Code8Path kPath, class AheadT>
HWY_INLINE void QuantizeBlock8(DF df, const float* HWY_RESTRICT src, int64_t padded, float inv,
                               const Quant8Args& a, const Code8Levels& levels, const AheadT& ahead,
                               uint8_t* HWY_RESTRICT out, bool stream) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const VF vinv = hn::Set(df, inv);
#if HWY_TARGET == HWY_AVX3_DL
  // Byte 2 of lane j of the first table -> byte j, of the second -> byte 16 + j; repeated in
  // the upper 32 bytes.
  const __m512i pick_byte2 = _mm512_set_epi8(
      126, 122, 118, 114, 110, 106, 102, 98, 94, 90, 86, 82, 78, 74, 70, 66, 62, 58, 54, 50, 46, 42, 38, 34, 30, 26,
      22, 18, 14, 10, 6, 2, 126, 122, 118, 114, 110, 106, 102, 98, 94, 90, 86, 82, 78, 74, 70, 66, 62, 58, 54, 50, 46,
      42, 38, 34, 30, 26, 22, 18, 14, 10, 6, 2);
#endif
  for (int64_t i = 0; i < padded; i += 4 * N) {
    ahead.Touch(i, 4 * N);
    const VF x0 = hn::Mul(hn::LoadU(df, src + i), vinv);
    const VF x1 = hn::Mul(hn::LoadU(df, src + i + N), vinv);
    const VF x2 = hn::Mul(hn::LoadU(df, src + i + 2 * N), vinv);
    const VF x3 = hn::Mul(hn::LoadU(df, src + i + 3 * N), vinv);
    if constexpr (kPath == Code8Path::kBucket) {
      const uint32_t* buckets = a.plan->buckets;
#if HWY_TARGET == HWY_AVX3_DL
      // Codes sit in byte 2 of each lane: two byte permutes and a blend make the 64 bytes.
      const __m512i s0 = SelectCode8BucketHigh(df, buckets, x0).raw;
      const __m512i s1 = SelectCode8BucketHigh(df, buckets, x1).raw;
      const __m512i s2 = SelectCode8BucketHigh(df, buckets, x2).raw;
      const __m512i s3 = SelectCode8BucketHigh(df, buckets, x3).raw;
      const __m512i lo = _mm512_permutex2var_epi8(s0, pick_byte2, s1);  // bytes 0..31
      const __m512i hi = _mm512_permutex2var_epi8(s2, pick_byte2, s3);  // bytes 32..63
      const __m512i codes = _mm512_mask_blend_epi64(0xf0, lo, hi);
      if (stream) {
        _mm512_stream_si512(reinterpret_cast<__m512i*>(out + i), codes);
      } else {
        _mm512_storeu_si512(out + i, codes);
      }
      continue;
#endif
      StoreCodes8(df, SelectCode8Bucket(df, buckets, x0), out + i, stream);
      StoreCodes8(df, SelectCode8Bucket(df, buckets, x1), out + i + N, stream);
      StoreCodes8(df, SelectCode8Bucket(df, buckets, x2), out + i + 2 * N, stream);
      StoreCodes8(df, SelectCode8Bucket(df, buckets, x3), out + i + 3 * N, stream);
    } else if constexpr (kPath == Code8Path::kLevels) {
      StoreCodes8(df, SelectCode8Fast(df, levels, x0), out + i, stream);
      StoreCodes8(df, SelectCode8Fast(df, levels, x1), out + i + N, stream);
      StoreCodes8(df, SelectCode8Fast(df, levels, x2), out + i + 2 * N, stream);
      StoreCodes8(df, SelectCode8Fast(df, levels, x3), out + i + 3 * N, stream);
    } else {
      StoreCodes8(df, SelectCode8Search(df, a.code, x0), out + i, stream);
      StoreCodes8(df, SelectCode8Search(df, a.code, x1), out + i + N, stream);
      StoreCodes8(df, SelectCode8Search(df, a.code, x2), out + i + 2 * N, stream);
      StoreCodes8(df, SelectCode8Search(df, a.code, x3), out + i + 3 * N, stream);
    }
  }
}

// Where to prefetch while encoding a block: `bytes` of input from `p`, `esize` bytes/element.
struct Ahead {
  const char* p;
  int64_t bytes;
  int64_t esize;
  // Prefetches the input that pairs with elements [i, i + count) of the current block.
  HWY_INLINE void Touch(int64_t i, int64_t count) const {
    if (p == nullptr) return;
    for (int64_t k = i * esize; k < (i + count) * esize && k < bytes; k += 64) __builtin_prefetch(p + k, 0, 2);
  }
};

// Visits blocks [b0, b1) in chunks of up to kMaxBlock elements: converts/pads a chunk once,
// takes every block's absmax, then every reciprocal (independent, so their table look-ups
// overlap instead of stalling each block), then calls
// encode(block, src, padded, valid, inv) with `padded` a multiple of `step`.
template <class Encode>
HWY_INLINE void ForEachScaledBlock(DF df, int32_t dtype, const void* A, int64_t n, int64_t blocksize,
                                   int64_t step, float* absmax, int64_t b0, int64_t b1,
                                   float* HWY_RESTRICT scratch, const Encode& encode) {
  const int64_t per_chunk = blocksize >= kMaxBlock ? 1 : kMaxBlock / blocksize;
  float inv[kMaxBlock / 32];
  for (int64_t c0 = b0; c0 < b1; c0 += per_chunk) {
    const int64_t c1 = c0 + per_chunk < b1 ? c0 + per_chunk : b1;
    const int64_t begin = c0 * blocksize;
    const int64_t end = c1 * blocksize < n ? c1 * blocksize : n;
    const int64_t count = end - begin;
    const int64_t padded = (count + step - 1) / step * step;
    const float* src = BlockAsF32(df, dtype, A, begin, count, padded, scratch);
    int64_t b = c0;
#if BNB_SIMD_PERMUTE2
    // Small blocks: sixteen at a time, reduced together (full blocks only).
    if (blocksize == 32 || blocksize == 64) {
      for (; b + 16 <= c1 && (b + 16 - c0) * blocksize <= count; b += 16) {
        AbsMax16(df, src + (b - c0) * blocksize, blocksize, absmax + b);
      }
    }
#endif
    for (; b < c1; ++b) {  // over the real elements; a partial last block's padding counts as 0
      const int64_t off = (b - c0) * blocksize;
      absmax[b] = count - off < blocksize ? std::max(AbsMax(df, src + off, count - off), 0.0f)
                                          : AbsMax(df, src + off, blocksize);
    }
    int64_t r = c0;
#if BNB_SIMD_PERMUTE2
    for (; r + 16 <= c1; r += 16) hn::StoreU(RcpApprox16(df, hn::LoadU(df, absmax + r)), df, inv + (r - c0));
#endif
    for (; r < c1; ++r) inv[r - c0] = bnb::rcp_approx(absmax[r]);
    // While this chunk is encoded (from L1), the next one is prefetched: the memory stream
    // keeps going instead of idling during every encode phase.
    const int64_t esize = dtype == BNB_F32 ? 4 : 2;
    const int64_t next_end = (c1 + per_chunk) * blocksize < n ? (c1 + per_chunk) * blocksize : n;
    for (int64_t b = c0; b < c1; ++b) {
      const int64_t off = (b - c0) * blocksize;
      const int64_t len = padded - off < blocksize ? padded - off : blocksize;
      const int64_t valid = count - off < blocksize ? count - off : blocksize;
      const int64_t ahead_elem = end + off;  // same offset in the next chunk
      const Ahead ahead{ahead_elem < next_end ? static_cast<const char*>(A) + ahead_elem * esize : nullptr,
                        (next_end - ahead_elem) * esize, esize};
      encode(b, src + off, len, valid, inv[b - c0], ahead);
    }
  }
}

template <Code8Path kPath>
void QuantizeBlocks8Impl(const Quant8Args& a, int64_t b0, int64_t b1) {
  const DF df;
  const int64_t step = 4 * static_cast<int64_t>(hn::Lanes(df));  // QuantizeBlock8's step
  alignas(64) float scratch[kMaxBlock + 64];
  alignas(64) uint8_t codes[kMaxBlock + 64];
  const Code8Levels levels(df, a.plan->levels);
  ForEachScaledBlock(df, a.dtype, a.A, a.n, a.blocksize, step, a.absmax, b0, b1, scratch,
                     [&](int64_t b, const float* src, int64_t padded, int64_t valid, float inv, const auto& ahead) {
                       uint8_t* out = a.out + b * a.blocksize;
                       if (padded == valid) {
                         QuantizeBlock8<kPath>(df, src, padded, inv, a, levels, ahead, out, a.stream);
                       } else {
                         QuantizeBlock8<kPath>(df, src, padded, inv, a, levels, ahead, codes, false);
                         std::memcpy(out, codes, static_cast<size_t>(valid));
                       }
                     });
  if (a.stream) EndStreaming();
}

void QuantizeBlocks8(const Quant8Args& a, int64_t b0, int64_t b1) {
  if (a.plan->buckets != nullptr) {
    QuantizeBlocks8Impl<Code8Path::kBucket>(a, b0, b1);
  } else if (a.plan->fast) {
    QuantizeBlocks8Impl<Code8Path::kLevels>(a, b0, b1);
  } else {
    QuantizeBlocks8Impl<Code8Path::kSearch>(a, b0, b1);
  }
}

// Elements [begin, end) of one block; `end - begin` need not be a multiple of N.
template <bool kStream>
HWY_INLINE int64_t DequantizeRun8(DF df, const RegTable<256>& table, const Dequant8Args& a, int64_t begin,
                                  int64_t end, float scale) {
  const DI di;
  const hn::Rebind<uint8_t, DI> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const VF vscale = hn::Set(df, scale);
  int64_t i = begin;
  for (; i + N <= end; i += N) {
    const VI idx = hn::PromoteTo(di, hn::LoadU(d8, a.q + i));
    StoreFromF32<kStream>(df, hn::Mul(table.Get(df, idx), vscale), a.out_dtype, a.out, i);
  }
  return i;
}

// The partial last block, apart so that the hot loop holds no calls (a call would make the
// compiler reload the register-held table around it).
template <bool kStream>
HWY_NOINLINE void DequantizeTail8(const Dequant8Args& a, int64_t b) {
  const DF df;
  const RegTable<256> table(df, a.code);
  const int64_t begin = b * a.blocksize;
  const float scale = a.absmax[b];
  for (int64_t i = DequantizeRun8<kStream>(df, table, a, begin, a.n, scale); i < a.n; ++i) {
    StoreScalar(a.code[a.q[i]] * scale, a.out_dtype, a.out, i);
  }
}

template <bool kStream>
void DequantizeBlocks8Impl(const Dequant8Args& a, int64_t b0, int64_t b1) {
  const DF df;
  const RegTable<256> table(df, a.code);
  const int64_t full_end = (b1 * a.blocksize <= a.n) ? b1 : b1 - 1;
  for (int64_t b = b0; b < full_end; ++b) {
    DequantizeRun8<kStream>(df, table, a, b * a.blocksize, (b + 1) * a.blocksize, a.absmax[b]);
  }
  if (full_end < b1) DequantizeTail8<kStream>(a, full_end);
  if (kStream) EndStreaming();
}

void DequantizeBlocks8(const Dequant8Args& a, int64_t b0, int64_t b1) {
  if (a.stream) {
    DequantizeBlocks8Impl<true>(a, b0, b1);
  } else {
    DequantizeBlocks8Impl<false>(a, b0, b1);
  }
}

// ------------------------------------------------------------------ 4-bit

HWY_INLINE VI EncodeNF4(DF df, const float* HWY_RESTRICT levels, VF x) {
  // levels: [t8 | t4 t12 | t2 t6 t10 t14 | t1 t3 ... t15] (1-based thresholds), padded.
  // idx | s under a mask compiles to one masked OR on AVX-512.
  const DI di;
  VI idx = hn::IfThenElseZero(hn::RebindMask(di, hn::Gt(x, hn::Set(df, levels[0]))), hn::Set(di, 8));
  VF t = Lookup<2>(df, levels + 1, hn::ShiftRight<3>(idx));
  idx = hn::IfThenElse(hn::RebindMask(di, hn::Gt(x, t)), hn::Or(idx, hn::Set(di, 4)), idx);
  t = Lookup<4>(df, levels + 3, hn::ShiftRight<2>(idx));
  idx = hn::IfThenElse(hn::RebindMask(di, hn::Gt(x, t)), hn::Or(idx, hn::Set(di, 2)), idx);
  t = Lookup<8>(df, levels + 7, hn::ShiftRight<1>(idx));
  return hn::IfThenElse(hn::RebindMask(di, hn::Gt(x, t)), hn::Or(idx, hn::Set(di, 1)), idx);
}

// FP4: k = #{j : |x| > thr_j} by a 3-level search over the 7 magnitude thresholds
// (fp4_levels: [t4 | t2 t6 | t1 t3 t5 t7], 1-based), then pattern[k] and the sign (x < 0).
HWY_INLINE VI EncodeFP4(DF df, const float* HWY_RESTRICT fp4_levels, const int32_t* HWY_RESTRICT patterns,
                        VF x) {
  const DI di;
  constexpr size_t N = hn::MaxLanes(DF());
  const VF a = hn::Abs(x);
  VI k = hn::IfThenElseZero(hn::RebindMask(di, hn::Gt(a, hn::Set(df, fp4_levels[0]))), hn::Set(di, 4));
  VF t = Lookup<2>(df, fp4_levels + 1, hn::ShiftRight<2>(k));
  k = hn::IfThenElse(hn::RebindMask(di, hn::Gt(a, t)), hn::Or(k, hn::Set(di, 2)), k);
  t = Lookup<4>(df, fp4_levels + 3, hn::ShiftRight<1>(k));
  k = hn::IfThenElse(hn::RebindMask(di, hn::Gt(a, t)), hn::Or(k, hn::Set(di, 1)), k);
  VI code;
  if constexpr (N >= 8) {
    code = hn::TableLookupLanes(hn::LoadU(di, patterns), hn::IndicesFromVec(di, k));
  } else {
    code = hn::GatherIndex(di, patterns, k);
  }
  return hn::IfThenElse(hn::RebindMask(di, hn::Lt(x, hn::Zero(df))), hn::Or(code, hn::Set(di, 8)), code);
}

// Packs 2N codes (c0: elements 0..N-1, c1: N..2N-1) into N bytes, even element high.
HWY_INLINE void StorePacked(DF df, VI c0, VI c1, uint8_t* HWY_RESTRICT out) {
  (void)df;
#if HWY_TARGET == HWY_SCALAR
  out[0] = static_cast<uint8_t>((hn::GetLane(c0) << 4) | hn::GetLane(c1));
#else
  const DI di;
  const DU du;
  const hn::Repartition<uint64_t, DU> d64;
  const auto pair = [&](VI c) {
    const auto w = hn::BitCast(d64, c);
    return hn::BitCast(du, hn::Or(hn::ShiftLeft<4>(w), hn::ShiftRight<32>(w)));
  };
  const VU bytes = hn::And(hn::ConcatEven(du, pair(c1), pair(c0)), hn::Set(du, 0xffu));
  const hn::Rebind<uint8_t, DI> d8;
  hn::StoreU(hn::DemoteTo(d8, hn::BitCast(di, bytes)), d8, out);
#endif
}

#if HWY_TARGET == HWY_AVX3_DL
// NF4 through the cell tables (nf4_cells): clamp, one FMA and truncation give the cell, one
// byte permute its code (pre-shifted in even lanes), one two-table permute its threshold.
struct NF4CellEncoder {
  __m512i g;
  __m512 t0, t1, addend, scale, one;
  __m512i inc;
  explicit NF4CellEncoder(const NF4CellTables& tab)
      : g(_mm512_load_si512(tab.g)),
        t0(_mm512_load_ps(tab.t)),
        t1(_mm512_load_ps(tab.t + 16)),
        addend(_mm512_setr_ps(16.0f, 48.0f, 16.0f, 48.0f, 16.0f, 48.0f, 16.0f, 48.0f, 16.0f, 48.0f, 16.0f, 48.0f,
                              16.0f, 48.0f, 16.0f, 48.0f)),
        scale(_mm512_set1_ps(15.5f)),
        one(_mm512_set1_ps(1.0f)),
        inc(_mm512_setr_epi32(16, 1, 16, 1, 16, 1, 16, 1, 16, 1, 16, 1, 16, 1, 16, 1)) {}

  // 16 consecutive elements (the first one even) -> codes, even lanes << 4.
  HWY_INLINE __m512i Encode(__m512 x) const {
    // min(1, x): +inf -> 1; a NaN stays NaN (vminps returns its second operand) and, like
    // -inf, converts to key byte 0 (code 0) and compares false. x >= -1 - 2 ulp otherwise.
    // The compare takes x itself (same result: x > 1 only for +inf, whose cell's threshold is
    // +inf), so the FMA may overwrite the clamped value instead of a copy of it.
    const __m512i key = _mm512_cvttps_epi32(_mm512_fmadd_ps(_mm512_min_ps(one, x), scale, addend));
    const __m512i code = _mm512_maskz_permutexvar_epi8(0x1111111111111111ull, key, g);
    const __m512 t = _mm512_permutex2var_ps(t0, key, t1);
    return _mm512_mask_add_epi32(code, _mm512_cmp_ps_mask(x, t, _CMP_GT_OQ), code, inc);
  }
};

struct FP4CellEncoder {
  __m512i lo, hi, sign;
  __m512 t0, t1, addend, scale, one;
  explicit FP4CellEncoder(const FP4CellTables& tab)
      : lo(_mm512_load_si512(tab.lo)),
        hi(_mm512_load_si512(tab.hi)),
        sign(_mm512_setr_epi32(128, 8, 128, 8, 128, 8, 128, 8, 128, 8, 128, 8, 128, 8, 128, 8)),
        t0(_mm512_load_ps(tab.t)),
        t1(_mm512_load_ps(tab.t + 16)),
        addend(_mm512_setr_ps(0.0f, 16.0f, 0.0f, 16.0f, 0.0f, 16.0f, 0.0f, 16.0f, 0.0f, 16.0f, 0.0f, 16.0f, 0.0f,
                              16.0f, 0.0f, 16.0f)),
        scale(_mm512_set1_ps(15.5f)),
        one(_mm512_set1_ps(1.0f)) {}

  HWY_INLINE __m512i Encode(__m512 x) const {
    // min(1, |x|): +inf -> 1, a NaN stays NaN (key byte 0, compares false). The compare takes
    // |x| (the same: |x| > 1 only for inf, whose cell's threshold is +inf).
    const __m512 a = _mm512_abs_ps(x);
    const __m512i key = _mm512_cvttps_epi32(_mm512_fmadd_ps(_mm512_min_ps(one, a), scale, addend));
    const __m512i below = _mm512_maskz_permutexvar_epi8(0x1111111111111111ull, key, lo);
    const __m512i above = _mm512_maskz_permutexvar_epi8(0x1111111111111111ull, key, hi);
    const __m512 t = _mm512_permutex2var_ps(t0, key, t1);
    const __m512i code = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(a, t, _CMP_GT_OQ), below, above);
    return _mm512_mask_or_epi32(code, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), code, sign);
  }
};

// Packs codes of 64 consecutive elements (c0..c3, from NF4CellEncoder) into 32 bytes.
HWY_INLINE void StorePackedCells4(__m512i c0, __m512i c1, __m512i c2, __m512i c3, uint8_t* HWY_RESTRICT out,
                                  bool stream) {
  // Dword lane i: byte v = lane i of c_v; then qword j: byte v = packed byte j of vector v.
  __m512i u = _mm512_ternarylogic_epi32(c0, _mm512_slli_epi32(c1, 8), _mm512_slli_epi32(c2, 16), 0xfe);
  u = _mm512_or_si512(u, _mm512_slli_epi32(c3, 24));
  u = _mm512_or_si512(u, _mm512_srli_epi64(u, 32));
  const __m512i order = _mm512_set_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                        0, 0, 0, 0, 0, 0,  // bytes 63..32 unused
                                        59, 51, 43, 35, 27, 19, 11, 3, 58, 50, 42, 34, 26, 18, 10, 2, 57, 49, 41,
                                        33, 25, 17, 9, 1, 56, 48, 40, 32, 24, 16, 8, 0);
  const __m256i bytes = _mm512_castsi512_si256(_mm512_permutexvar_epi8(order, u));
  if (stream) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(out), bytes);
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), bytes);
  }
}

// 32 elements -> 16 bytes.
HWY_INLINE void StorePackedCells2(__m512i c0, __m512i c1, uint8_t* HWY_RESTRICT out, bool stream) {
  __m512i u = _mm512_or_si512(c0, _mm512_slli_epi32(c1, 8));
  u = _mm512_or_si512(u, _mm512_srli_epi64(u, 32));
  const __m512i order = _mm512_set_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 57, 49,
                                        41, 33, 25, 17, 9, 1, 56, 48, 40, 32, 24, 16, 8, 0);
  const __m128i bytes = _mm512_castsi512_si128(_mm512_permutexvar_epi8(order, u));
  if (stream) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(out), bytes);
  } else {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), bytes);
  }
}

// Groups of 16 full fp32 blocks of 32 or 64 elements, without the chunk machinery: one
// AbsMax16, one RcpApprox16, then the blocks straight from the input (L1-hot after the
// absmax). Returns the first block not done.
template <int64_t kBlock, class Encoder>
HWY_INLINE int64_t QuantizeSmallBlocksCells(const Encoder enc, const Quant4Args& a, int64_t b0, int64_t b1) {
  // Locals (the encoder's tables included): the byte stores may alias anything in memory,
  // which would make the compiler reload them in every iteration.
  const DF df;
  const float* A = static_cast<const float*>(a.A);
  const int64_t n = a.n;
  float* absmax = a.absmax;
  uint8_t* packed = a.packed;
  // 32-byte non-temporal stores need 32-byte aligned codes: with blocks of 32 (16 bytes of
  // codes) that depends on the parity of the first block (groups move by 16 blocks).
  const bool stream = a.stream && (b0 * kBlock / 2) % 32 == 0;
  const char* input_end = reinterpret_cast<const char*>(A + n);
  alignas(64) float inv[16];
  int64_t b = b0;
  for (; b + 16 <= b1 && (b + 16) * kBlock <= n; b += 16) {
    const float* src = A + b * kBlock;
    AbsMax16(df, src, kBlock, absmax + b);
    hn::Store(RcpApprox16(df, hn::LoadU(df, absmax + b)), df, inv);
    const char* ahead = reinterpret_cast<const char*>(src + 32 * kBlock);  // two groups on
    uint8_t* dst = packed + b * kBlock / 2;
    for (int64_t i = 0; i < 16 * kBlock; i += 64) {  // one block (64) or two (32)
      const char* pf = ahead + i * 4;
      if (pf + 256 <= input_end) {
        __builtin_prefetch(pf, 0, 2);
        __builtin_prefetch(pf + 64, 0, 2);
        __builtin_prefetch(pf + 128, 0, 2);
        __builtin_prefetch(pf + 192, 0, 2);
      }
      const __m512 v0 = _mm512_set1_ps(inv[i / kBlock]);
      const __m512 v1 = _mm512_set1_ps(inv[(i + 32) / kBlock]);
      const __m512i c0 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i), v0));
      const __m512i c1 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 16), v0));
      const __m512i c2 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 32), v1));
      const __m512i c3 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 48), v1));
      StorePackedCells4(c0, c1, c2, c3, dst + i / 2, stream);
    }
  }
  return b;
}

template <class Encoder>
void QuantizeBlocks4Cells(const Encoder enc, const Quant4Args& a, int64_t b0, int64_t b1) {
  const DF df;
  if (a.dtype == BNB_F32 && a.blocksize == 64) b0 = QuantizeSmallBlocksCells<64>(enc, a, b0, b1);
  if (a.dtype == BNB_F32 && a.blocksize == 32) b0 = QuantizeSmallBlocksCells<32>(enc, a, b0, b1);
  if (b0 >= b1) {
    if (a.stream) EndStreaming();
    return;
  }
  alignas(64) float scratch[kMaxBlock + 64];
  alignas(64) uint8_t bytes[kMaxBlock / 2 + 64];
  ForEachScaledBlock(df, a.dtype, a.A, a.n, a.blocksize, 32, a.absmax, b0, b1, scratch,
                     [&](int64_t b, const float* src, int64_t padded, int64_t valid, float inv, const auto& ahead) {
    const __m512 vinv = _mm512_set1_ps(inv);
    uint8_t* dst = padded == valid ? a.packed + b * a.blocksize / 2 : bytes;
    const bool stream = a.stream && dst != bytes;
    int64_t i = 0;
    for (; i + 64 <= padded; i += 64) {
      ahead.Touch(i, 64);
      const __m512i c0 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i), vinv));
      const __m512i c1 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 16), vinv));
      const __m512i c2 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 32), vinv));
      const __m512i c3 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 48), vinv));
      StorePackedCells4(c0, c1, c2, c3, dst + i / 2, stream);
    }
    if (i < padded) {  // 32 left (blocksize 32, or a padded last block)
      ahead.Touch(i, 32);
      const __m512i c0 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i), vinv));
      const __m512i c1 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 16), vinv));
      StorePackedCells2(c0, c1, dst + i / 2, stream);
    }
    if (dst == bytes) std::memcpy(a.packed + b * a.blocksize / 2, bytes, static_cast<size_t>((valid + 1) / 2));
  });
  if (a.stream) EndStreaming();
}
#endif

template <bool kNF4>
void QuantizeBlocks4Impl(const Quant4Args& a, int64_t b0, int64_t b1) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  alignas(64) float scratch[kMaxBlock + 64];
  alignas(64) uint8_t bytes[kMaxBlock / 2 + 64];
  alignas(64) float levels[16 + 64] = {};
  static constexpr int kOrder[15] = {7, 3, 11, 1, 5, 9, 13, 0, 2, 4, 6, 8, 10, 12, 14};
  for (int j = 0; j < 15; ++j) levels[j] = bnb::bits_to_float(bnb::kNF4ThresholdBits[kOrder[j]]);
  alignas(64) float fp4_levels[8 + 64] = {};
  static constexpr int kFP4Order[7] = {3, 1, 5, 0, 2, 4, 6};
  for (int j = 0; j < 7; ++j) fp4_levels[j] = bnb::bits_to_float(bnb::kFP4ThresholdBits[kFP4Order[j]]);
  alignas(64) int32_t patterns[8 + 64] = {};
  for (int j = 0; j < 8; ++j) patterns[j] = bnb::kFP4Pattern[j];
  ForEachScaledBlock(df, a.dtype, a.A, a.n, a.blocksize, 2 * N, a.absmax, b0, b1, scratch,
                     [&](int64_t b, const float* src, int64_t padded, int64_t valid, float inv, const auto& ahead) {
    const VF vinv = hn::Set(df, inv);
    // Zero padding encodes 0.0 under this block's scale: the odd-n filler nibble.
    uint8_t* dst = padded == valid ? a.packed + b * a.blocksize / 2 : bytes;
    const bool stream = a.stream && dst != bytes;
    const auto encode = [&](VF x) { return kNF4 ? EncodeNF4(df, levels, x) : EncodeFP4(df, fp4_levels, patterns, x); };
    int64_t i = 0;
#if HWY_TARGET == HWY_SCALAR
    (void)ahead;
    (void)stream;
    for (; i < padded; i += 2) {
      StorePacked(df, encode(hn::Mul(hn::LoadU(df, src + i), vinv)), encode(hn::Mul(hn::LoadU(df, src + i + 1), vinv)),
                  dst + i / 2);
    }
#else
    // Even and odd elements go to separate vectors first, so a byte is just (even << 4) | odd.
    const auto pair = [&](int64_t at) {
      const VF lo = hn::LoadU(df, src + at);
      const VF hi = hn::LoadU(df, src + at + N);
      const VI even = encode(hn::Mul(hn::ConcatEven(df, hi, lo), vinv));
      const VI odd = encode(hn::Mul(hn::ConcatOdd(df, hi, lo), vinv));
      return hn::Or(hn::ShiftLeft<4>(even), odd);
    };
    for (; i + 4 * N <= padded; i += 4 * N) {  // two independent pairs per iteration
      ahead.Touch(i, 4 * N);
      const VI p0 = pair(i);
      const VI p1 = pair(i + 2 * N);
      StoreCodes8(df, p0, dst + i / 2, stream);
      StoreCodes8(df, p1, dst + i / 2 + N, stream);
    }
    for (; i < padded; i += 2 * N) StoreCodes8(df, pair(i), dst + i / 2, stream);
#endif
    if (dst == bytes) std::memcpy(a.packed + b * a.blocksize / 2, bytes, static_cast<size_t>((valid + 1) / 2));
  });
  if (a.stream) EndStreaming();
}

void QuantizeBlocks4(const Quant4Args& a, int64_t b0, int64_t b1) {
#if HWY_TARGET == HWY_AVX3_DL
  if (a.quant_type == BNB_NF4 && nf4_cells().ok) {
    QuantizeBlocks4Cells(NF4CellEncoder(nf4_cells()), a, b0, b1);
    return;
  }
  if (a.quant_type == BNB_FP4 && fp4_cells().ok) {
    QuantizeBlocks4Cells(FP4CellEncoder(fp4_cells()), a, b0, b1);
    return;
  }
#endif
  if (a.quant_type == BNB_FP4) {
    QuantizeBlocks4Impl<false>(a, b0, b1);
  } else {
    QuantizeBlocks4Impl<true>(a, b0, b1);
  }
}

// The block's scale: plain, or rebuilt from the nested statistics (docs/FORMATS.md §4.1).
inline float BlockScale(const bnb_scales_resolved_t& s, int64_t b) {
  if (s.absmax != nullptr) return s.absmax[b];
  const float c = s.code2 != nullptr ? s.code2[s.absmax_q[b]]
                                     : bnb::bits_to_float(bnb::BNB_DYNAMIC_SIGNED_BITS[s.absmax_q[b]]);
  const float scaled = c * s.absmax2[b / s.blocksize2];
  return scaled + s.offset[0];
}

// Elements [begin, end) of one block through its pre-scaled table; returns where the vector
// part stopped (a multiple of 2N from begin).
template <bool kStream>
HWY_INLINE int64_t DequantizeRun4(const Dequant4Args& a, const float* HWY_RESTRICT lut, int64_t begin,
                                  int64_t end) {
#if HWY_TARGET == HWY_SCALAR
  (void)a;
  (void)lut;
  (void)end;
  return begin;
#else
  const DF df;
  const DU du;
  const DI di;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const hn::Rebind<uint8_t, DF> d8;                    // N bytes
  const hn::Rebind<uint16_t, DF> d16;                  // N u16 lanes
  const hn::Repartition<uint8_t, decltype(d16)> d8x2;  // the same bits as 2N bytes
  const hn::Half<decltype(d8x2)> d8h;
  int64_t i = begin;
  for (; i + 2 * N <= end; i += 2 * N) {
    const auto w = hn::PromoteTo(d16, hn::LoadU(d8, a.packed + i / 2));
    // u16 lane j = [high nibble of byte j | low nibble << 8]: as bytes, the nibbles in order.
    const auto nib = hn::BitCast(d8x2, hn::Or(hn::ShiftRight<4>(w), hn::ShiftLeft<8>(hn::And(w, hn::Set(d16, 15)))));
    const VI i0 = hn::BitCast(di, hn::PromoteTo(du, hn::LowerHalf(d8h, nib)));
    const VI i1 = hn::BitCast(di, hn::PromoteTo(du, hn::UpperHalf(d8h, nib)));
    StoreFromF32<kStream>(df, Lookup<16>(df, lut, i0), a.out_dtype, a.out, i);
    StoreFromF32<kStream>(df, Lookup<16>(df, lut, i1), a.out_dtype, a.out, i + N);
  }
  return i;
#endif
}

template <bool kStream>
void DequantizeBlocks4Impl(const Dequant4Args& a, int64_t b0, int64_t b1) {
  const uint32_t* lut_bits = a.quant_type == BNB_FP4 ? bnb::kFP4DecodeBits : bnb::kNF4Bits;
  alignas(64) float lut[16 + 64] = {};
  float code[16];
  for (int k = 0; k < 16; ++k) code[k] = bnb::bits_to_float(lut_bits[k]);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t begin = b * a.blocksize;
    const int64_t end = begin + a.blocksize <= a.n ? begin + a.blocksize : a.n;
    const float scale = BlockScale(a.scales, b);
    for (int k = 0; k < 16; ++k) lut[k] = code[k] * scale;
    const int64_t i = DequantizeRun4<kStream>(a, lut, begin, end);
    if (i < end) {  // only the last block (or every block on HWY_SCALAR)
      for (int64_t j = i; j < end; ++j) {
        const uint8_t byte = a.packed[j / 2];
        StoreScalar(lut[(j & 1) ? (byte & 15) : (byte >> 4)], a.out_dtype, a.out, j);
      }
    }
  }
  if (kStream) EndStreaming();
}

void DequantizeBlocks4(const Dequant4Args& a, int64_t b0, int64_t b1) {
  if (a.stream) {
    DequantizeBlocks4Impl<true>(a, b0, b1);
  } else {
    DequantizeBlocks4Impl<false>(a, b0, b1);
  }
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace bnb
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnb {
namespace cpu {

HWY_EXPORT(QuantizeBlocks8);
HWY_EXPORT(DequantizeBlocks8);
HWY_EXPORT(QuantizeBlocks4);
HWY_EXPORT(DequantizeBlocks4);

namespace {

// Splits [0, nblocks) into contiguous ranges of whole blocks, a few per thread, none smaller
// than ~64 KiB of input unless the tensor itself is small.
template <class Fn>
void for_block_ranges(ThreadPool& pool, int64_t nblocks, int64_t blocksize, const Fn& fn) {
  constexpr int64_t kMinElementsPerTask = 1 << 14;
  const int64_t by_size = (nblocks * blocksize + kMinElementsPerTask - 1) / kMinElementsPerTask;
  int64_t tasks = static_cast<int64_t>(pool.num_threads()) * 4;
  if (tasks > by_size) tasks = by_size;
  if (tasks > nblocks) tasks = nblocks;
  if (tasks < 1) tasks = 1;
  pool.run(tasks, [&](int64_t t) { fn(t * nblocks / tasks, (t + 1) * nblocks / tasks); });
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Fills the bucket table from a fast plan's thresholds; false if a bucket holds two.
bool build_buckets(const Code8Plan& code8, uint32_t* buckets) {
  for (uint32_t key = 0; key < 65536; ++key) {
    const bool negative = key >= 0x8000u;
    float xmin, xmax;
    if (((key >> 7) & 0xffu) == 0xffu) {
      if ((key & 0x7fu) != 0) {  // NaN payloads (x is a product: quiet NaNs): code 0
        buckets[key] = 0;
        continue;
      }
      xmin = xmax = bits_to_float(key << 16);  // +-inf alone (no x is a signalling NaN)
    } else {
      const float first = bits_to_float(key << 16);
      const float last = bits_to_float((key << 16) | 0xffffu);
      xmin = negative ? last : first;
      xmax = negative ? first : last;
    }
    const Code8Bucket b = code8_bucket(code8.t, xmin, xmax);
    if (b.inside > 1) return false;
    // Without a threshold inside nothing may carry: low = 0 (x's addend is at most 0xffff).
    const uint32_t t_low = float_to_bits(code8.t[b.lo]) & 0xffffu;
    const uint32_t low = b.inside == 0 ? 0u : negative ? t_low : 0xffffu - t_low;
    buckets[key] = (static_cast<uint32_t>(b.lo) << 16) | low;
  }
  return true;
}

void build_plan(const Code8Plan& code8, Quant8Plan* plan) {
  plan->fast = code8.fast;
  if (code8.fast) code8_levels(code8, plan->levels);
}

// A plan with buckets, built once, for one of the built-in tables (they are what almost every
// call uses: optimizer states, nested statistics, the default of quantize_blockwise).
struct CachedPlan {
  explicit CachedPlan(int32_t which) : buckets(65536) {
    copy_code_table(which, code);
    Code8Plan code8;
    code8_plan(code, false, &code8);
    build_plan(code8, &plan);
    if (plan.fast && build_buckets(code8, buckets.data())) plan.buckets = buckets.data();
  }
  float code[256];
  Quant8Plan plan;
  std::vector<uint32_t> buckets;
};

const Quant8Plan* cached_plan(const float* code) {
  static const CachedPlan signed_plan(BNB_CODE_DYNAMIC_SIGNED);
  static const CachedPlan unsigned_plan(BNB_CODE_DYNAMIC_UNSIGNED);
  if (std::memcmp(code, signed_plan.code, sizeof signed_plan.code) == 0) return &signed_plan.plan;
  if (std::memcmp(code, unsigned_plan.code, sizeof unsigned_plan.code) == 0) return &unsigned_plan.plan;
  return nullptr;
}

}  // namespace

void quantize_blockwise(ThreadPool& pool, int32_t dtype, const void* A, int64_t n, int64_t blocksize,
                        const float* code, uint8_t* out, float* absmax) {
  // Building a table's buckets costs about as much as quantizing ~1M elements by level search.
  constexpr int64_t kBucketsWorthIt = int64_t{1} << 20;
  const Quant8Plan* plan = cached_plan(code);
  Quant8Plan own;
  std::vector<uint32_t> own_buckets;
  if (plan == nullptr) {
    Code8Plan code8;
    code8_plan(code, false, &code8);
    build_plan(code8, &own);
    if (own.fast && n >= kBucketsWorthIt) {
      own_buckets.resize(65536);
      if (build_buckets(code8, own_buckets.data())) own.buckets = own_buckets.data();
    }
    plan = &own;
  }
  const Quant8Args args{dtype, A, n, blocksize, code, plan, out, absmax, use_streaming(out, n)};
  for_block_ranges(pool, ceil_div(n, blocksize), blocksize, [&](int64_t b0, int64_t b1) {
    HWY_DYNAMIC_DISPATCH(QuantizeBlocks8)(args, b0, b1);
  });
}

void dequantize_blockwise(ThreadPool& pool, const uint8_t* q, const float* absmax, const float* code,
                          int64_t n, int64_t blocksize, int32_t out_dtype, void* out) {
  const Dequant8Args args{q, absmax, code, n, blocksize, out_dtype, out, use_streaming(out, n, out_dtype)};
  for_block_ranges(pool, ceil_div(n, blocksize), blocksize, [&](int64_t b0, int64_t b1) {
    HWY_DYNAMIC_DISPATCH(DequantizeBlocks8)(args, b0, b1);
  });
}

void quantize_4bit(ThreadPool& pool, int32_t quant_type, int32_t dtype, const void* A, int64_t n,
                   int64_t blocksize, uint8_t* packed, float* absmax) {
  const Quant4Args args{quant_type, dtype, A, n, blocksize, packed, absmax, use_streaming(packed, (n + 1) / 2)};
  for_block_ranges(pool, ceil_div(n, blocksize), blocksize, [&](int64_t b0, int64_t b1) {
    HWY_DYNAMIC_DISPATCH(QuantizeBlocks4)(args, b0, b1);
  });
}

void dequantize_4bit(ThreadPool& pool, int32_t quant_type, const uint8_t* packed,
                     const bnb_scales_resolved_t& scales, int64_t n, int64_t blocksize, int32_t out_dtype,
                     void* out) {
  const Dequant4Args args{quant_type, packed, scales, n, blocksize, out_dtype, out,
                          use_streaming(out, n, out_dtype)};
  for_block_ranges(pool, ceil_div(n, blocksize), blocksize, [&](int64_t b0, int64_t b1) {
    HWY_DYNAMIC_DISPATCH(DequantizeBlocks4)(args, b0, b1);
  });
}

void compress_absmax(ThreadPool& pool, const float* absmax, int64_t nblocks, uint8_t* absmax_q,
                     float* absmax2, float* offset) {
  double sum = 0.0;  // sequential binary64 sum: reproducible regardless of threads
  for (int64_t i = 0; i < nblocks; ++i) sum += absmax[i];
  const float mean = static_cast<float>(sum / static_cast<double>(nblocks));
  std::vector<float> r(static_cast<size_t>(nblocks));
  for (int64_t i = 0; i < nblocks; ++i) r[static_cast<size_t>(i)] = absmax[i] - mean;
  float code[256];
  bnb::copy_code_table(BNB_CODE_DYNAMIC_SIGNED, code);
  quantize_blockwise(pool, BNB_F32, r.data(), nblocks, 256, code, absmax_q, absmax2);
  *offset = mean;
}

const char* chosen_target_name() {
  const int64_t targets = hwy::SupportedTargets() & HWY_TARGETS;
  return hwy::TargetName(targets & -targets);  // best = lowest bit
}

std::string compiled_target_names() {
  std::string names;
  for (int64_t t = HWY_TARGETS; t != 0; t &= t - 1) names += std::string(names.empty() ? "" : " ") + hwy::TargetName(t & -t);
  return names;
}

// The names BNB_CPU_MAX_TARGET takes, best first. Only targets compiled into this build count
// (x86 names on x86, Arm names on aarch64); "emu128" and "scalar" both name the portable fallback,
// HWY_EMU128 or, from GCC < 12.3, HWY_SCALAR, where the build has one (aarch64 builds have NEON as
// their baseline and no fallback).
namespace {
struct Cap {
  const char* name;
  int64_t targets;
};
constexpr Cap kCaps[] = {
    {"avx3_dl", HWY_AVX3_DL},   {"avx3", HWY_AVX3},       {"avx2", HWY_AVX2},
    {"sse4", HWY_SSE4},         {"sve2_128", HWY_SVE2_128}, {"sve_256", HWY_SVE_256},
    {"sve2", HWY_SVE2},         {"sve", HWY_SVE},         {"neon", HWY_NEON},
    {"emu128", HWY_EMU128 | HWY_SCALAR}, {"scalar", HWY_EMU128 | HWY_SCALAR}};

bool cap_compiled(const Cap& c) { return (c.targets & HWY_TARGETS) != 0; }
}  // namespace

bool cap_target(const char* name) {
  for (const Cap& c : kCaps) {
    if (cap_compiled(c) && std::strcmp(name, c.name) == 0) {
      // Every better (lower-bit) target.
      const int64_t target = c.targets & -c.targets;
      hwy::DisableTargets(target - 1);
      hwy::GetChosenTarget().Update(hwy::SupportedTargets());
      return true;
    }
  }
  return false;
}

std::string cap_target_names() {
  std::vector<const char*> names;
  for (const Cap& c : kCaps)
    if (cap_compiled(c)) names.push_back(c.name);
  std::string list;
  for (size_t i = 0; i < names.size(); ++i)
    list += std::string(i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return list;
}

}  // namespace cpu
}  // namespace bnb
#endif  // HWY_ONCE
