// SIMD kernels of 8-bit blockwise quantization (docs/FORMATS.md §2), compiled once per Highway
// target (foreach_target) and chosen at run time (HWY_DYNAMIC_DISPATCH). Every result is
// bit-exact with docs/FORMATS.md and tests/ref: the same binary32 operations in the same order,
// only many lanes at a time.
//
// A task walks its blocks in chunks (quant_blocks-inl.h: every absmax, then every exact RCP,
// then the codes while the next chunk is prefetched). The table's thresholds and the rule for
// when they apply come from src/common/code8_select.h (bnb::code8_plan), planned on the host
// (quant_plan.cc):
//  * built-in tables and large inputs: a 65536-entry bucket table indexed by the top 16 bits of
//    x (count of thresholds below the bucket, and low bits that make x's low bits carry into the
//    count when x is above the bucket's single threshold), one gather and one add per lane;
//  * other fast tables: branchless 8-level search over the 255 thresholds, each level's
//    candidates held in registers;
//  * any other table: the reference's literal 7-step search, vectorised with gathers.
// Dequantizing looks codes up in the 256-entry table held in registers. Outputs of 16 MiB and
// more use non-temporal stores on AVX2/AVX-512.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "quant_plan.h"
#include "tables.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/backend_cpu/quant8_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include "simd-inl.h"
#include "quant_blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnb {
namespace cpu {
namespace HWY_NAMESPACE {

// ------------------------------------------------------------------ 8-bit code selection

// The eight levels of the midpoint search, held for a whole task.
struct Code8Levels {
  Code8Levels(DF df, const float* lv)
      : t1(T1Init(df, lv[0])), l2(df, lv + 1), l4(df, lv + 3), l8(df, lv + 7), l16(df, lv + 15),
        l32(df, lv + 31), l64(df, lv + 63), l128(df, lv + 127) {}
#if BNB_SIMD_SIZELESS
  // The first level as a float (SVE's vectors cannot be members), broadcast where it is read.
  HWY_INLINE static float T1Init(DF, float t) { return t; }
  HWY_INLINE VF T1(DF df) const { return hn::Set(df, t1); }
  float t1;
#else
  HWY_INLINE static VF T1Init(DF df, float t) { return hn::Set(df, t); }
  HWY_INLINE VF T1(DF) const { return t1; }
  VF t1;
#endif
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
  VI c = hn::IfThenElseZero(hn::RebindMask(di, hn::Gt(x, L.T1(df))), one);
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
      StoreBytes(df, SelectCode8Bucket(df, buckets, x0), out + i, stream);
      StoreBytes(df, SelectCode8Bucket(df, buckets, x1), out + i + N, stream);
      StoreBytes(df, SelectCode8Bucket(df, buckets, x2), out + i + 2 * N, stream);
      StoreBytes(df, SelectCode8Bucket(df, buckets, x3), out + i + 3 * N, stream);
    } else if constexpr (kPath == Code8Path::kLevels) {
      StoreBytes(df, SelectCode8Fast(df, levels, x0), out + i, stream);
      StoreBytes(df, SelectCode8Fast(df, levels, x1), out + i + N, stream);
      StoreBytes(df, SelectCode8Fast(df, levels, x2), out + i + 2 * N, stream);
      StoreBytes(df, SelectCode8Fast(df, levels, x3), out + i + 3 * N, stream);
    } else {
      StoreBytes(df, SelectCode8Search(df, a.code, x0), out + i, stream);
      StoreBytes(df, SelectCode8Search(df, a.code, x1), out + i + N, stream);
      StoreBytes(df, SelectCode8Search(df, a.code, x2), out + i + 2 * N, stream);
      StoreBytes(df, SelectCode8Search(df, a.code, x3), out + i + 3 * N, stream);
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
  WithFlag(a.stream, [&](auto stream) { DequantizeBlocks8Impl<decltype(stream)::value>(a, b0, b1); });
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

void quantize_blocks8(const Quant8Args& a, int64_t b0, int64_t b1) {
  HWY_DYNAMIC_DISPATCH(QuantizeBlocks8)(a, b0, b1);
}

void dequantize_blocks8(const Dequant8Args& a, int64_t b0, int64_t b1) {
  HWY_DYNAMIC_DISPATCH(DequantizeBlocks8)(a, b0, b1);
}

}  // namespace cpu
}  // namespace bnb
#endif  // HWY_ONCE
