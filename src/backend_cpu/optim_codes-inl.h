// The 8-bit optimizer states' codes (optim8_simd.cc): decoding through the 256-entry table,
// the level search and the reference's search for encoding (sign fix included), and on AVX3_DL
// the byte-permute path that decodes and encodes 64 codes at a time. The first part is the
// same for every target; the rest is per target (Highway's -inl.h idiom, see simd-inl.h).
#ifndef BNB_BACKEND_CPU_OPTIM_CODES_SHARED_
#define BNB_BACKEND_CPU_OPTIM_CODES_SHARED_

#include <cstdint>
#include <cstring>

#include "rcp.h"

namespace bnb {
namespace cpu {
namespace optim_detail {

// Starts loading the RCP table entry of x (a 2 MiB table: the look-up is usually a cache miss,
// so it is requested before the parameter step and used after it).
inline void prefetch_rcp(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  __builtin_prefetch(&bnb_rcp_delta_packed[(b & 0x7fffffu) >> 2]);
}

// Byte permutations of the bucketed paths. kDecodeOrder: codes are permuted so that the
// in-lane byte -> dword unpacking yields elements in order (position 16L + 4j + i holds element
// 16j + 4L + i). kPackByte[k]: byte k of each dword of two vectors (32 bytes).
struct BytePerms {
  alignas(64) uint8_t decode_order[64];
  alignas(64) uint8_t pack_byte[4][64];
};
constexpr BytePerms make_byte_perms() {
  BytePerms p{};
  for (int L = 0; L < 4; ++L)
    for (int j = 0; j < 4; ++j)
      for (int i = 0; i < 4; ++i) p.decode_order[16 * L + 4 * j + i] = static_cast<uint8_t>(16 * j + 4 * L + i);
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < 64; ++i) p.pack_byte[k][i] = static_cast<uint8_t>((4 * i + k) & 127);
  return p;
}
alignas(64) inline constexpr BytePerms kBytePerms = make_byte_perms();

}  // namespace optim_detail
}  // namespace cpu
}  // namespace bnb

#endif  // BNB_BACKEND_CPU_OPTIM_CODES_SHARED_

#if defined(BNB_BACKEND_CPU_OPTIM_CODES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BNB_BACKEND_CPU_OPTIM_CODES_INL_H_
#undef BNB_BACKEND_CPU_OPTIM_CODES_INL_H_
#else
#define BNB_BACKEND_CPU_OPTIM_CODES_INL_H_
#endif

#include <cstddef>

#include "optim-inl.h"
#include "optim_kernels.h"
#include "simd-inl.h"
#include "tables.h"

HWY_BEFORE_NAMESPACE();
namespace bnb {
namespace cpu {
namespace HWY_NAMESPACE {

// ------------------------------------------------------------------ 8-bit tables

HWY_INLINE VF Decode(DF df, const OptimCodePlan& plan, const uint8_t* HWY_RESTRICT codes, VF scale) {
  const DI di;
  const hn::Rebind<uint8_t, DI> d8;
  return hn::Mul(Lookup<256>(df, plan.values, hn::PromoteTo(di, hn::LoadU(d8, codes))), scale);
}

// Q_C(x) of a fast plan: the number of thresholds below x, found level by level.
HWY_INLINE VI SelectCode(DF df, const OptimCodePlan& plan, VF x) {
  const DI di;
  const float* lv = plan.levels;
  VI idx = hn::IfThenElseZero(hn::RebindMask(di, hn::Gt(x, hn::Set(df, lv[0]))), hn::Set(di, 128));
#define BNB_OPTIM_LEVEL(S, SHIFT)                                                               \
  {                                                                                             \
    const VF t = Lookup<128 / (S)>(df, lv + (128 / (S)) - 1, hn::ShiftRight<SHIFT>(idx));       \
    idx = hn::Or(idx, hn::IfThenElseZero(hn::RebindMask(di, hn::Gt(x, t)), hn::Set(di, S)));   \
  }
#if BNB_SIMD_PERMUTE2
  // The first three levels at once: how many of the midpoints 32k + 31 (k = 0..6) lie below x.
  {
    __m512i top = _mm512_setzero_si512();
    for (int k = 0; k < 7; ++k) {
      const __mmask16 above = _mm512_cmp_ps_mask(x.raw, _mm512_set1_ps(plan.top[k]), _CMP_GT_OQ);
      top = _mm512_mask_add_epi32(top, above, top, _mm512_set1_epi32(32));
    }
    idx = VI{top};
  }
#else
  BNB_OPTIM_LEVEL(64, 7)
  BNB_OPTIM_LEVEL(32, 6)
#endif
  BNB_OPTIM_LEVEL(16, 5)
  BNB_OPTIM_LEVEL(8, 4)
#if BNB_SIMD_PERMUTE2
  // The 7 candidates of the last three levels, compared independently (no dependent look-ups).
  const __m512i c = hn::ShiftRight<3>(idx).raw;
  __m512i count = idx.raw;
  for (int r = 0; r < 7; ++r) {
    const __m512 t = _mm512_permutex2var_ps(_mm512_load_ps(plan.tail[r]), c, _mm512_load_ps(plan.tail[r] + 16));
    const __mmask16 above = _mm512_cmp_ps_mask(x.raw, t, _CMP_GT_OQ);
    count = _mm512_mask_add_epi32(count, above, count, _mm512_set1_epi32(1));
  }
#undef BNB_OPTIM_LEVEL
  return VI{count};
#else
  BNB_OPTIM_LEVEL(4, 3)
  BNB_OPTIM_LEVEL(2, 2)
  BNB_OPTIM_LEVEL(1, 1)
#undef BNB_OPTIM_LEVEL
  return idx;
#endif
}

// Encode for a table without a fast plan: the reference's search and sign fix, lane by lane.
// Cold and out of line, so that the update loops around Encode are laid out for fast plans.
template <bool kSignFix>
HWY_NOINLINE __attribute__((cold)) void EncodeSearch(DF df, const OptimCodePlan& plan, VF value, VF inv, uint8_t* HWY_RESTRICT out) {
  constexpr size_t N = hn::MaxLanes(DF());
  alignas(64) float xs[N], vs[N];
  hn::Store(hn::Mul(value, inv), df, xs);
  hn::Store(value, df, vs);
  for (size_t j = 0; j < hn::Lanes(df); ++j) {
    int32_t c = code8_search(plan.values, xs[j]);
    if (kSignFix) c = code8_sign_fix(plan.values, c, vs[j]);
    out[j] = static_cast<uint8_t>(c);
  }
}

// Code of `value` normalised by `inv` (= RCP(absmax)). kSignFix: the signed-state rule of docs/OPS.md §6.5
// (bnb::code8_sign_fix; vectorised here for fast plans, whose code c is negative when c < negative_count).
template <bool kSignFix>
HWY_INLINE void Encode(DF df, const OptimCodePlan& plan, VF value, VF inv, uint8_t* HWY_RESTRICT out) {
  const DI di;
  const hn::Rebind<uint8_t, DI> d8;
  if (HWY_UNLIKELY(!plan.code8.fast)) return EncodeSearch<kSignFix>(df, plan, value, inv, out);
  VI c = SelectCode(df, plan, hn::Mul(value, inv));
  if constexpr (kSignFix) {
    const auto code_negative = hn::Lt(c, hn::Set(di, plan.code8.negative_count));
    const auto value_negative = hn::Lt(hn::BitCast(di, value), hn::Zero(di));
    const auto mismatch = hn::Xor(code_negative, value_negative);
    const VI step = hn::IfThenElse(hn::RebindMask(di, hn::Gt(value, hn::Zero(df))), hn::Set(di, 1), hn::Set(di, -1));
    c = hn::And(hn::Add(c, hn::IfThenElseZero(mismatch, step)), hn::Set(di, 255));
  }
  hn::StoreU(hn::DemoteTo(d8, c), d8, out);
}

#undef BNB_OPTIM_BYTES
#if HWY_TARGET == HWY_AVX3_DL
#define BNB_OPTIM_BYTES 1
// ---- AVX-512 VBMI: 64 elements at a time through byte permutes (VPERMI2B).

// A 256-entry byte table looked up by `key` (low 7 bits) in the half chosen by `upper`.
HWY_INLINE __m512i ByteLookup256(const uint8_t* HWY_RESTRICT t, __m512i key, __mmask64 upper) {
  const __m512i lo = _mm512_permutex2var_epi8(_mm512_load_si512(t), key, _mm512_load_si512(t + 64));
  const __m512i hi = _mm512_permutex2var_epi8(_mm512_load_si512(t + 128), key, _mm512_load_si512(t + 192));
  return _mm512_mask_blend_epi8(upper, lo, hi);
}

// values[c] * scale for 64 codes, in four vectors of 16 (element order), bit for bit what
// Decode gives.
HWY_INLINE void DecodeBytes64(const OptimCodePlan& plan, const uint8_t* HWY_RESTRICT codes, __m512 scale,
                              __m512* HWY_RESTRICT out) {
  const __m512i c = _mm512_permutexvar_epi8(_mm512_load_si512(optim_detail::kBytePerms.decode_order),
                                            _mm512_loadu_si512(codes));
  const __mmask64 upper = _mm512_movepi8_mask(c);
  const __m512i b0 = ByteLookup256(plan.value_bytes[0], c, upper);
  const __m512i b1 = ByteLookup256(plan.value_bytes[1], c, upper);
  const __m512i b2 = ByteLookup256(plan.value_bytes[2], c, upper);
  const __m512i b3 = ByteLookup256(plan.value_bytes[3], c, upper);
  const __m512i w01lo = _mm512_unpacklo_epi8(b0, b1), w01hi = _mm512_unpackhi_epi8(b0, b1);
  const __m512i w23lo = _mm512_unpacklo_epi8(b2, b3), w23hi = _mm512_unpackhi_epi8(b2, b3);
  out[0] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(w01lo, w23lo)), scale);
  out[1] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(w01lo, w23lo)), scale);
  out[2] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(w01hi, w23hi)), scale);
  out[3] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(w01hi, w23hi)), scale);
}

// Byte k of each dword of v[0..3], in element order.
HWY_INLINE __m512i PackByte(const __m512i* v, int k) {
  const __m512i idx = _mm512_load_si512(optim_detail::kBytePerms.pack_byte[k]);
  const __m512i ab = _mm512_permutex2var_epi8(v[0], idx, v[1]);
  const __m512i cd = _mm512_permutex2var_epi8(v[2], idx, v[3]);
  return _mm512_inserti64x4(ab, _mm512_castsi512_si256(cd), 1);
}

// Encode<kSignFix> of 64 values (four vectors, element order) normalised by inv, through the
// plan's buckets (plan.bucket_kind == kBucketSigned for kSignFix, kBucketPositive otherwise).
// Preconditions (EncodeBlockBytes checks them per block): inv is a normal float, no value is NaN,
// so |x| < 2 (|value| <= absmax). x's bucket gives the count of midpoints below it; the (at most
// two) midpoints inside it are compared on the 16 bits of |x| below the bucket's bits; an equal
// 16 bits (rare) is settled by the exact count.
template <bool kSignFix>
HWY_INLINE void EncodeBytes64(const OptimCodePlan& plan, const __m512* HWY_RESTRICT value, __m512 inv,
                              uint8_t* HWY_RESTRICT out) {
  __m512 x[4];
  __m512i y[4], bits[4];
  const __m512i sh0 = _mm512_load_si512(plan.bucket_shift), sh1 = _mm512_load_si512(plan.bucket_shift + 16);
  const __m512i of0 = _mm512_load_si512(plan.bucket_offset), of1 = _mm512_load_si512(plan.bucket_offset + 16);
  for (int j = 0; j < 4; ++j) {
    x[j] = _mm512_mul_ps(value[j], inv);
    const __m512i b = _mm512_castps_si512(x[j]);
    bits[j] = b;
    // |x| (positive layout: negative x, which is below every midpoint, as +0).
    const __m512i a = kSignFix ? _mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff)) : _mm512_max_epi32(b, _mm512_setzero_si512());
    const __m512i idx = _mm512_max_epu32(_mm512_srli_epi32(a, 23), _mm512_set1_epi32(96));
    const __m512i sh = _mm512_permutex2var_epi32(sh0, idx, sh1);
    const __m512i of = _mm512_permutex2var_epi32(of0, idx, of1);
    y[j] = _mm512_add_epi32(_mm512_srlv_epi32(_mm512_and_si512(a, _mm512_set1_epi32(0x7fffff)), sh), of);
  }
  const __m512i key = PackByte(y, 2);
  __m512i nbh = PackByte(y, 1), nbl = PackByte(y, 0);
  const __m512i ones = _mm512_set1_epi8(-1);
  __mmask64 upper, negative = 0;
  if constexpr (kSignFix) {
    negative = _mm512_movepi8_mask(PackByte(bits, 3));
    upper = negative;
    nbh = _mm512_mask_sub_epi8(nbh, negative, ones, nbh);
    nbl = _mm512_mask_sub_epi8(nbl, negative, ones, nbl);
  } else {
    upper = _mm512_movepi8_mask(key);
  }
  __m512i c = ByteLookup256(plan.bucket_table[0], key, upper);
  __mmask64 tie = 0;
  for (int slot = 0; slot < 2; ++slot) {
    const __m512i th = ByteLookup256(plan.bucket_table[1 + 2 * slot], key, upper);
    const __m512i tl = ByteLookup256(plan.bucket_table[2 + 2 * slot], key, upper);
    const __mmask64 eqh = _mm512_cmpeq_epu8_mask(nbh, th);
    const __mmask64 above = _kor_mask64(_mm512_cmpgt_epu8_mask(nbh, th), _mm512_mask_cmpgt_epu8_mask(eqh, nbl, tl));
    tie = _kor_mask64(tie, _mm512_mask_cmpeq_epu8_mask(eqh, nbl, tl));
    c = _mm512_mask_sub_epi8(c, above, c, ones);
  }
  if (HWY_UNLIKELY(tie != 0)) {
    alignas(64) float xs[64];
    alignas(64) uint8_t cs[64];
    for (int j = 0; j < 4; ++j) _mm512_store_ps(xs + 16 * j, x[j]);
    _mm512_store_si512(cs, c);
    for (uint64_t m = tie; m != 0; m &= m - 1) {
      const int lane = __builtin_ctzll(m);
      cs[lane] = static_cast<uint8_t>(code8_count_below(plan.code8.t, xs[lane]));
    }
    c = _mm512_load_si512(cs);
  }
  if constexpr (kSignFix) {
    // Every non-negative x has a code >= negative_count (builder), so only a negative x on the
    // first non-negative code moves (one down, uint8 wrap), as Encode's sign fix.
    const __mmask64 fix = _mm512_mask_cmpeq_epu8_mask(negative, c, _mm512_set1_epi8(static_cast<char>(plan.code8.negative_count)));
    c = _mm512_mask_add_epi8(c, fix, c, ones);
  }
  _mm512_storeu_si512(out, c);
}
#else
#define BNB_OPTIM_BYTES 0
#endif

HWY_INLINE float BlockAbsMax(DF df, const float* HWY_RESTRICT s) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  VF m0 = hn::Zero(df), m1 = hn::Zero(df);
  for (int64_t i = 0; i < kOptimBlock; i += 2 * N) {
    m0 = hn::Max(hn::Abs(hn::Load(df, s + i)), m0);
    m1 = hn::Max(hn::Abs(hn::Load(df, s + i + N)), m1);
  }
  return hn::GetLane(hn::MaxOfLanes(df, hn::Max(m0, m1)));
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace bnb
HWY_AFTER_NAMESPACE();

#endif  // BNB_BACKEND_CPU_OPTIM_CODES_INL_H_
