// SIMD kernels of the optimizer family (docs/OPS.md §6), compiled once per Highway target
// (foreach_target) and chosen at run time (HWY_DYNAMIC_DISPATCH).
//
// Numerics follow the normative CUDA kernels (docs/OPS.md §6.1): binary32 throughout, the parameter
// rounded to its dtype wherever the rules say `p <- T(...)`, and the fused multiply-adds the
// CUDA build contracts (Highway MulAdd: fused on FMA targets, two roundings on SSE4/EMU128).
// Divisions and square roots are IEEE here (CUDA: fast-math approximations), and beta^t is
// RN32 of the exact power (CUDA: __powf): the parameter differs in the last bits, the 8-bit state
// codes do not (they never see a division or root; the block reciprocal is the exact RCP).
//
// 32-bit: one pass over [begin, end), a vector at a time (the last partial vector is staged).
// 8-bit: one 256-element block at a time (docs/OPS.md §6.5), in four phases on L1-resident scratch:
// A decode + update states in fp32, B new absmax, C parameter step, D re-encode with the new
// absmax (RCP(absmax) as the CUDA kernel, then the level search of docs/FORMATS.md §2.3 + sign fix).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "optim_kernels.h"
#include "optim_traits.h"
#include "rcp.h"
#include "tables.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/backend_cpu/optim_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#ifndef BNB_BACKEND_CPU_OPTIM_SIMD_SHARED_
#define BNB_BACKEND_CPU_OPTIM_SIMD_SHARED_
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
#endif  // BNB_BACKEND_CPU_OPTIM_SIMD_SHARED_

#include "simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnb {
namespace cpu {
namespace HWY_NAMESPACE {

constexpr int kAdam = BNB_OPT_ADAM;  // also LAMB
constexpr int kMomentum = BNB_OPT_MOMENTUM;  // also LARS
constexpr int kRmsprop = BNB_OPT_RMSPROP;
constexpr int kLion = BNB_OPT_LION;
constexpr int kAdagrad = BNB_OPT_ADAGRAD;
constexpr int kAdemamix = BNB_OPT_ADEMAMIX;

// ------------------------------------------------------------------ parameter dtype

// `p <- T(x)`: x rounded to the parameter dtype, kept in binary32 lanes.
template <int kDt>
HWY_INLINE VF RoundP(DF df, VF v) {
  if constexpr (kDt == BNB_F32) {
    (void)df;
    return v;
  } else if constexpr (kDt == BNB_BF16) {
    return RoundToBF16(df, v);
  } else {
    return RoundToF16(df, v);
  }
}

// Stores lanes that RoundP<kDt> produced (exactly representable in kDt).
template <int kDt>
HWY_INLINE void StoreP(DF df, VF v, void* base, int64_t i) {
  if constexpr (kDt == BNB_F32) {
    hn::StoreU(v, df, static_cast<float*>(base) + i);
  } else if constexpr (kDt == BNB_BF16) {
    StoreBits16(df, hn::ShiftRight<16>(hn::BitCast(DU(), v)), static_cast<uint16_t*>(base) + i);
  } else {
    StoreBits16(df, F16BitsOfRounded(df, v), static_cast<uint16_t*>(base) + i);
  }
}

template <int kDt>
constexpr size_t ElemSize() {
  return kDt == BNB_F32 ? 4 : 2;
}

HWY_INLINE VF Sign(DF df, VF x) {
  const VF zero = hn::Zero(df);
  const VF one = hn::Set(df, 1.0f);
  return hn::IfThenElse(hn::Gt(x, zero), one, hn::IfThenElseZero(hn::Lt(x, zero), hn::Neg(one)));
}

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

// ------------------------------------------------------------------ 32-bit

template <int kDt, int kOpt>
HWY_INLINE void Step32(DF df, const OptimConsts& k, void* p, const void* g, float* s1, float* s1b, float* s2,
                       int64_t i) {
  const VF gs = RoundP<kDt>(df, hn::Mul(LoadAsF32<kDt>(df, g, i), hn::Set(df, k.gnorm_scale)));
  const VF p0 = LoadAsF32<kDt>(df, p, i);
  const VF s = hn::LoadU(df, s1 + i);
  const bool decay = k.weight_decay > 0.0f;
  if constexpr (kOpt == kAdam) {
    const VF v = hn::LoadU(df, s2 + i);
    const VF m_new = hn::MulAdd(s, hn::Set(df, k.beta1), hn::Mul(hn::Set(df, k.one_minus_beta1), gs));
    const VF v_new = hn::MulAdd(v, hn::Set(df, k.beta2), hn::Mul(hn::Set(df, k.one_minus_beta2), hn::Mul(gs, gs)));
    const VF x = hn::Div(m_new, hn::Add(hn::Sqrt(v_new), hn::Set(df, k.eps_c2)));
    VF p_new = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, k.adam_scale), x, p0));
    if (decay) p_new = RoundP<kDt>(df, hn::Mul(p_new, hn::Set(df, k.decay)));
    if (k.skip_zeros) {
      const MF skip = hn::Eq(gs, hn::Zero(df));
      hn::StoreU(hn::IfThenElse(skip, s, m_new), df, s1 + i);
      hn::StoreU(hn::IfThenElse(skip, v, v_new), df, s2 + i);
      StoreP<kDt>(df, hn::IfThenElse(skip, p0, p_new), p, i);
    } else {
      hn::StoreU(m_new, df, s1 + i);
      hn::StoreU(v_new, df, s2 + i);
      StoreP<kDt>(df, p_new, p, i);
    }
  } else if constexpr (kOpt == kAdemamix) {
    const VF m2 = hn::LoadU(df, s1b + i);
    const VF nu = hn::LoadU(df, s2 + i);
    const VF m1_new = hn::MulAdd(s, hn::Set(df, k.beta1), hn::Mul(hn::Set(df, k.one_minus_beta1), gs));
    const VF m2_new = hn::MulAdd(m2, hn::Set(df, k.beta3), hn::Mul(hn::Set(df, k.one_minus_beta3), gs));
    const VF nu_new = hn::MulAdd(nu, hn::Set(df, k.beta2), hn::Mul(hn::Mul(hn::Set(df, k.one_minus_beta2), gs), gs));
    const VF den = hn::MulAdd(hn::Sqrt(nu_new), hn::Set(df, k.rcp_c2), hn::Set(df, k.eps));
    const VF num = hn::MulAdd(hn::Set(df, k.alpha), m2_new, hn::Mul(m1_new, hn::Set(df, k.rcp_c1)));
    VF p_new = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, k.neg_lr), hn::Div(num, den), p0));
    if (decay) p_new = RoundP<kDt>(df, hn::Mul(p_new, hn::Set(df, k.decay)));
    hn::StoreU(m1_new, df, s1 + i);
    hn::StoreU(m2_new, df, s1b + i);
    hn::StoreU(nu_new, df, s2 + i);
    StoreP<kDt>(df, p_new, p, i);
  } else {
    VF gd = gs;
    if constexpr (kOpt != kLion) {
      if (decay) {
        const VF wd = hn::Set(df, k.weight_decay);
        gd = RoundP<kDt>(df, k.first_step ? hn::MulAdd(p0, wd, gs) : hn::Add(gs, hn::Mul(p0, wd)));
      }
    }
    VF s_new, p_new;
    if constexpr (kOpt == kMomentum) {
      s_new = k.first_step ? gd : hn::MulAdd(s, hn::Set(df, k.beta1), gd);
      p_new = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, k.update_scale), hn::Mul(hn::Set(df, k.neg_lr), s_new), p0));
    } else if constexpr (kOpt == kRmsprop) {
      s_new = hn::MulAdd(s, hn::Set(df, k.beta1), hn::Mul(hn::Mul(hn::Set(df, k.one_minus_beta1), gd), gd));
      const VF step = hn::Mul(hn::Set(df, k.lr), hn::Div(gd, hn::Add(hn::Sqrt(s_new), hn::Set(df, k.eps))));
      p_new = RoundP<kDt>(df, hn::Sub(p0, hn::Mul(hn::Set(df, k.update_scale), step)));
    } else if constexpr (kOpt == kAdagrad) {
      s_new = hn::MulAdd(gd, gd, s);
      const VF x = hn::Div(gd, hn::Add(hn::Sqrt(s_new), hn::Set(df, k.eps)));
      p_new = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, k.neg_lr), x, p0));
    } else {  // Lion
      const VF arg = hn::MulAdd(s, hn::Set(df, k.beta1), hn::Mul(hn::Set(df, k.one_minus_beta1), gd));
      const VF upd = hn::Mul(hn::Set(df, k.update_scale), hn::Mul(hn::Set(df, k.lr), Sign(df, arg)));
      if constexpr (kDt == BNB_F32) {
        p_new = hn::MulAdd(p0, hn::Set(df, k.decay), hn::Neg(upd));
      } else {
        const VF p1 = decay ? RoundP<kDt>(df, hn::Mul(p0, hn::Set(df, k.decay))) : p0;
        p_new = RoundP<kDt>(df, hn::Sub(p1, upd));
      }
      s_new = hn::MulAdd(s, hn::Set(df, k.beta2), hn::Mul(hn::Set(df, k.one_minus_beta2), gd));
    }
    if (k.skip_zeros) {
      const MF skip = hn::Eq(gd, hn::Zero(df));
      s_new = hn::IfThenElse(skip, s, s_new);
      p_new = hn::IfThenElse(skip, p0, p_new);
    }
    hn::StoreU(s_new, df, s1 + i);
    StoreP<kDt>(df, p_new, p, i);
  }
}

// Squared update-norm quantity of docs/OPS.md §6.4 (no weight decay, states not written).
template <int kDt, int kOpt>
HWY_INLINE VF Unorm32(DF df, const OptimConsts& k, const void* g, const float* s1, const float* s2, int64_t i) {
  const VF gs = RoundP<kDt>(df, hn::Mul(LoadAsF32<kDt>(df, g, i), hn::Set(df, k.gnorm_scale)));
  const VF s = hn::LoadU(df, s1 + i);
  if constexpr (kOpt == kAdam) {
    const VF v = hn::LoadU(df, s2 + i);
    const VF m_new = hn::MulAdd(s, hn::Set(df, k.beta1), hn::Mul(hn::Set(df, k.one_minus_beta1), gs));
    const VF v_new = hn::MulAdd(v, hn::Set(df, k.beta2), hn::Mul(hn::Set(df, k.one_minus_beta2), hn::Mul(gs, gs)));
    const VF u = hn::Div(hn::Mul(m_new, hn::Set(df, k.rcp_c1)),
                         hn::Add(hn::Sqrt(hn::Mul(v_new, hn::Set(df, k.rcp_bias2))), hn::Set(df, k.eps)));
    return hn::Mul(u, u);
  } else if constexpr (kOpt == kMomentum) {
    const VF s_new = k.first_step ? gs : hn::MulAdd(s, hn::Set(df, k.beta1), gs);
    return hn::Mul(s_new, s_new);
  } else {
    const VF s_new = kOpt == kRmsprop
                         ? hn::MulAdd(s, hn::Set(df, k.beta1), hn::Mul(hn::Mul(hn::Set(df, k.one_minus_beta1), gs), gs))
                         : hn::MulAdd(gs, gs, s);
    const VF u = hn::Div(gs, hn::Add(hn::Sqrt(s_new), hn::Set(df, k.eps)));
    return hn::Mul(u, u);
  }
}

template <int kDt, int kOpt>
void Update32Impl(const Optim32Args& a, int64_t begin, int64_t end) {
  const DF df;
  const OptimConsts& k = *a.k;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  constexpr bool kTwo = optim_traits(kOpt).states == 2;
  float* s1b = optim_traits(kOpt).state1_copies == 2 ? a.s1 + k.n : nullptr;
  int64_t i = begin;
  for (; i + N <= end; i += N) Step32<kDt, kOpt>(df, k, a.p, a.g, a.s1, s1b, a.s2, i);
  const int64_t rem = end - i;
  if (rem == 0) return;
  // The last partial vector, staged (zero padding is harmless: its lanes are never copied back).
  constexpr size_t kMax = hn::MaxLanes(DF());
  constexpr size_t kEs = ElemSize<kDt>();
  alignas(64) uint8_t pb[kMax * 4] = {}, gb[kMax * 4] = {};
  alignas(64) float sa[kMax] = {}, sb[kMax] = {}, sc[kMax] = {};
  const size_t r = static_cast<size_t>(rem);
  std::memcpy(pb, static_cast<const uint8_t*>(a.p) + i * kEs, r * kEs);
  std::memcpy(gb, static_cast<const uint8_t*>(a.g) + i * kEs, r * kEs);
  std::memcpy(sa, a.s1 + i, r * 4);
  if (s1b != nullptr) std::memcpy(sb, s1b + i, r * 4);
  if (kTwo && a.s2 != nullptr) std::memcpy(sc, a.s2 + i, r * 4);
  Step32<kDt, kOpt>(df, k, pb, gb, sa, sb, sc, 0);
  std::memcpy(static_cast<uint8_t*>(a.p) + i * kEs, pb, r * kEs);
  std::memcpy(a.s1 + i, sa, r * 4);
  if (s1b != nullptr) std::memcpy(s1b + i, sb, r * 4);
  if (kTwo && a.s2 != nullptr) std::memcpy(a.s2 + i, sc, r * 4);
}

template <int kDt, int kOpt>
double Unorm32Impl(const Optim32Args& a, int64_t begin, int64_t end) {
  const DF df;
  const OptimConsts& k = *a.k;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  VF acc = hn::Zero(df);
  int64_t i = begin;
  for (; i + N <= end; i += N) acc = hn::Add(acc, Unorm32<kDt, kOpt>(df, k, a.g, a.s1, a.s2, i));
  const int64_t rem = end - i;
  if (rem > 0) {
    constexpr size_t kMax = hn::MaxLanes(DF());
    constexpr size_t kEs = ElemSize<kDt>();
    alignas(64) uint8_t gb[kMax * 4] = {};
    alignas(64) float sa[kMax] = {}, sc[kMax] = {};
    const size_t r = static_cast<size_t>(rem);
    std::memcpy(gb, static_cast<const uint8_t*>(a.g) + i * kEs, r * kEs);
    std::memcpy(sa, a.s1 + i, r * 4);
    if (optim_traits(kOpt).states == 2) std::memcpy(sc, a.s2 + i, r * 4);
    const VF u = Unorm32<kDt, kOpt>(df, k, gb, sa, sc, 0);
    acc = hn::Add(acc, hn::IfThenElseZero(hn::FirstN(df, r), u));
  }
  return static_cast<double>(hn::GetLane(hn::SumOfLanes(df, acc)));
}

// ------------------------------------------------------------------ 8-bit blocks

// One block's tensors: either views into the real arrays (full block) or staged copies.
struct Block8 {
  void* p;
  const void* g;
  uint8_t* c1;
  uint8_t* c1b;  // AdEMAMix slow EMA
  uint8_t* c2;
  int64_t index;  // block number
  int64_t valid;  // elements of the block that exist (256 except for the last block)
};

// Phase A of the 2-state optimizers: new fp32 states of the block (zero past `valid`).
template <int kDt, bool kEma>
HWY_INLINE void NewStates2(DF df, const Optim8Args& a, const Block8& b, float* HWY_RESTRICT m,
                           float* HWY_RESTRICT v, float* HWY_RESTRICT e) {
  const OptimConsts& k = *a.k;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t nblocks = (k.n + kOptimBlock - 1) / kOptimBlock;
  const VF scale1 = hn::Set(df, a.absmax1[b.index]);
  const VF scale2 = hn::Set(df, a.absmax2[b.index]);
  const VF scale3 = hn::Set(df, kEma ? a.absmax1[nblocks + b.index] : 0.0f);
  const VF b1 = hn::Set(df, k.beta1), b2 = hn::Set(df, k.beta2), b3 = hn::Set(df, k.beta3);
  const VF omb1 = hn::Set(df, k.one_minus_beta1), omb2 = hn::Set(df, k.one_minus_beta2);
  const VF omb3 = hn::Set(df, k.one_minus_beta3);
  const VF gn = hn::Set(df, k.gnorm_scale);
  for (int64_t i = 0; i < kOptimBlock; i += N) {
    const VF graw = LoadAsF32<kDt>(df, b.g, i);
    const MF finite = hn::IsFinite(graw);
    const VF gs = hn::Mul(graw, gn);
    const VF vd = Decode(df, *a.plan2, b.c2 + i, scale2);
    // CUDA contracts v differently for bf16 gradients (docs/OPS.md §6.1).
    const VF v_new = kDt == BNB_BF16 ? hn::MulAdd(vd, b2, hn::Mul(hn::Mul(omb2, gs), gs))
                                     : hn::MulAdd(hn::Mul(omb2, gs), gs, hn::Mul(vd, b2));
    const VF md = Decode(df, *a.plan1, b.c1 + i, scale1);
    const VF m_new = hn::MulAdd(omb1, gs, hn::Mul(md, b1));
    hn::Store(hn::IfThenElseZero(finite, m_new), df, m + i);
    hn::Store(hn::IfThenElseZero(finite, v_new), df, v + i);
    if constexpr (kEma) {
      const VF ed = Decode(df, *a.plan1, b.c1b + i, scale3);
      hn::Store(hn::IfThenElseZero(finite, hn::MulAdd(omb3, gs, hn::Mul(ed, b3))), df, e + i);
    }
  }
  for (int64_t i = b.valid; i < kOptimBlock; ++i) {
    m[i] = 0.0f;
    v[i] = 0.0f;
    if constexpr (kEma) e[i] = 0.0f;
  }
}

#if BNB_OPTIM_BYTES
// Phase B from the integer maximum of |bits| over the block (the float maximum unless a NaN is
// present; then BlockAbsMax, which skips NaN, as the other path).
HWY_INLINE float AbsMaxFromBits(DF df, __m512i max_bits, const float* HWY_RESTRICT s, bool* has_nan) {
  const uint32_t mb = _mm512_reduce_max_epu32(max_bits);
  *has_nan = mb > 0x7f800000u;
  return *has_nan ? BlockAbsMax(df, s) : bits_to_float(mb);
}

HWY_INLINE __m512i MaxAbsBits(__m512i acc, VF x) {
  return _mm512_max_epu32(acc, _mm512_and_si512(_mm512_castps_si512(x.raw), _mm512_set1_epi32(0x7fffffff)));
}

// Phase D of one state of a full block: the bucketed encoder where its preconditions hold (no
// NaN, RCP(absmax) normal, a bucketed plan of the right kind), else Encode.
template <bool kSignFix>
HWY_INLINE void EncodeBlock(DF df, const OptimCodePlan& plan, const float* HWY_RESTRICT s, float am, bool has_nan,
                            uint8_t* HWY_RESTRICT out) {
  const float inv = rcp_approx(am);
  if (!has_nan && std::isnormal(inv) && plan.bucket_kind == (kSignFix ? kBucketSigned : kBucketPositive)) {
    const __m512 vinv = _mm512_set1_ps(inv);
    for (int64_t i = 0; i < kOptimBlock; i += 64) {
      const __m512 v[4] = {_mm512_load_ps(s + i), _mm512_load_ps(s + i + 16), _mm512_load_ps(s + i + 32),
                           _mm512_load_ps(s + i + 48)};
      EncodeBytes64<kSignFix>(plan, v, vinv, out + i);
    }
    return;
  }
  const VF vinv = hn::Set(df, inv);
  for (int64_t i = 0; i < kOptimBlock; i += 16) Encode<kSignFix>(df, plan, hn::Load(df, s + i), vinv, out + i);
}

// Software prefetch distance of the streamed tensors (elements ahead of the 64 being updated).
#ifndef BNB_OPTIM_PREFETCH
#define BNB_OPTIM_PREFETCH 1024
#endif
constexpr int64_t kPrefetchAhead = BNB_OPTIM_PREFETCH;

// Requests the cache lines of elements [i + kPrefetchAhead, +64) of p (for writing), g and codes.
template <int kDt>
HWY_INLINE void PrefetchAhead(const Block8& b, int64_t i, bool two, bool ema) {
  constexpr int64_t kEs = static_cast<int64_t>(ElemSize<kDt>());
  const int64_t j = i + kPrefetchAhead;
  for (int64_t off = 0; off < 64 * kEs; off += 64) {
    __builtin_prefetch(static_cast<const uint8_t*>(b.g) + j * kEs + off, 0, 3);
    __builtin_prefetch(static_cast<const uint8_t*>(b.p) + j * kEs + off, 1, 3);
  }
  __builtin_prefetch(b.c1 + j, 1, 3);
  if (two) __builtin_prefetch(b.c2 + j, 1, 3);
  if (ema) __builtin_prefetch(b.c1b + j, 1, 3);
}

// A full block between its phases A+C and D: the new fp32 states, their scales, the codes.
struct Pending8 {
  alignas(64) float s1[kOptimBlock];
  alignas(64) float s2[kOptimBlock];
  alignas(64) float s3[kOptimBlock];
  float am1, am2, am3;
  bool nan1, nan2, nan3;
  uint8_t *c1, *c2, *c1b;
};

// Block2State's phases A, B and C of a full block, 64 elements at a time: A and C in one pass
// (C needs only the new fp32 states), the absmax accumulated on the way. The scales are written
// and their RCP table entries requested; phase D (Block2StateD) runs after the next block's A+C.
template <int kDt, bool kEma>
HWY_INLINE void Block2StateAC(DF df, const Optim8Args& a, const Block8& b, Pending8* HWY_RESTRICT out) {
  const OptimConsts& k = *a.k;
  const int64_t nblocks = (k.n + kOptimBlock - 1) / kOptimBlock;
  float* HWY_RESTRICT m = out->s1;
  float* HWY_RESTRICT v = out->s2;
  float* HWY_RESTRICT e = out->s3;
  const __m512 scale1 = _mm512_set1_ps(a.absmax1[b.index]);
  const __m512 scale2 = _mm512_set1_ps(a.absmax2[b.index]);
  const __m512 scale3 = _mm512_set1_ps(kEma ? a.absmax1[nblocks + b.index] : 0.0f);
  const VF b1 = hn::Set(df, k.beta1), b2 = hn::Set(df, k.beta2), b3 = hn::Set(df, k.beta3);
  const VF omb1 = hn::Set(df, k.one_minus_beta1), omb2 = hn::Set(df, k.one_minus_beta2);
  const VF omb3 = hn::Set(df, k.one_minus_beta3);
  const VF gn = hn::Set(df, k.gnorm_scale);
  const bool decay = k.weight_decay > 0.0f;
  __m512i max1 = _mm512_setzero_si512(), max2 = max1, max3 = max1;
  for (int64_t i0 = 0; i0 < kOptimBlock; i0 += 64) {
    PrefetchAhead<kDt>(b, i0, true, kEma);
    __m512 vd[4], md[4], ed[4];
    DecodeBytes64(*a.plan2, b.c2 + i0, scale2, vd);
    DecodeBytes64(*a.plan1, b.c1 + i0, scale1, md);
    if constexpr (kEma) DecodeBytes64(*a.plan1, b.c1b + i0, scale3, ed);
    for (int j = 0; j < 4; ++j) {
      const int64_t i = i0 + 16 * j;
      const VF graw = LoadAsF32<kDt>(df, b.g, i);
      const MF finite = hn::IsFinite(graw);
      const VF gs = hn::Mul(graw, gn);
      const VF vdj{vd[j]}, mdj{md[j]};
      const VF v_new = kDt == BNB_BF16 ? hn::MulAdd(vdj, b2, hn::Mul(hn::Mul(omb2, gs), gs))
                                       : hn::MulAdd(hn::Mul(omb2, gs), gs, hn::Mul(vdj, b2));
      const VF mv = hn::IfThenElseZero(finite, hn::MulAdd(omb1, gs, hn::Mul(mdj, b1)));
      const VF vv = hn::IfThenElseZero(finite, v_new);
      hn::Store(mv, df, m + i);
      hn::Store(vv, df, v + i);
      max1 = MaxAbsBits(max1, mv);
      max2 = MaxAbsBits(max2, vv);
      const VF p0 = LoadAsF32<kDt>(df, b.p, i);
      VF p_new;
      if constexpr (kEma) {
        const VF ev = hn::IfThenElseZero(finite, hn::MulAdd(omb3, gs, hn::Mul(VF{ed[j]}, b3)));
        hn::Store(ev, df, e + i);
        max3 = MaxAbsBits(max3, ev);
        const VF den = hn::MulAdd(hn::Sqrt(vv), hn::Set(df, k.rcp_c2), hn::Set(df, k.eps));
        const VF num = hn::MulAdd(hn::Set(df, k.alpha), ev, hn::Mul(mv, hn::Set(df, k.rcp_c1)));
        p_new = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, k.neg_lr), hn::Div(num, den), p0));
      } else {
        const VF x = hn::Div(mv, hn::Add(hn::Sqrt(vv), hn::Set(df, k.eps_c2)));
        p_new = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, k.adam_scale), x, p0));
      }
      if (decay) p_new = RoundP<kDt>(df, hn::Mul(p_new, hn::Set(df, k.decay)));
      StoreP<kDt>(df, hn::IfThenElse(finite, p_new, p0), b.p, i);
    }
  }
  out->nan3 = false;
  out->am1 = AbsMaxFromBits(df, max1, m, &out->nan1);
  out->am2 = AbsMaxFromBits(df, max2, v, &out->nan2);
  a.absmax1[b.index] = out->am1;
  a.absmax2[b.index] = out->am2;
  optim_detail::prefetch_rcp(out->am1);
  optim_detail::prefetch_rcp(out->am2);
  if constexpr (kEma) {
    out->am3 = AbsMaxFromBits(df, max3, e, &out->nan3);
    a.absmax1[nblocks + b.index] = out->am3;
    optim_detail::prefetch_rcp(out->am3);
  }
  out->c1 = b.c1;
  out->c2 = b.c2;
  out->c1b = b.c1b;
}

template <bool kEma>
HWY_INLINE void Block2StateD(DF df, const Optim8Args& a, const Pending8& q) {
  EncodeBlock<true>(df, *a.plan1, q.s1, q.am1, q.nan1, q.c1);
  EncodeBlock<false>(df, *a.plan2, q.s2, q.am2, q.nan2, q.c2);
  if constexpr (kEma) EncodeBlock<true>(df, *a.plan1, q.s3, q.am3, q.nan3, q.c1b);
}

// Block1State's phases A, B and C of a full block (A and C in one pass); D: Block1StateD.
template <int kDt, int kOpt>
HWY_INLINE void Block1StateAC(DF df, const Optim8Args& a, const Block8& b, Pending8* HWY_RESTRICT out) {
  const OptimConsts& k = *a.k;
  float* HWY_RESTRICT s = out->s1;
  const __m512 scale = _mm512_set1_ps(a.absmax1[b.index]);
  const VF gn = hn::Set(df, k.gnorm_scale);
  const VF b1 = hn::Set(df, k.beta1), omb1 = hn::Set(df, k.one_minus_beta1);
  const bool decay = k.weight_decay > 0.0f;
  __m512i mx = _mm512_setzero_si512();
  for (int64_t i0 = 0; i0 < kOptimBlock; i0 += 64) {
    PrefetchAhead<kDt>(b, i0, false, false);
    __m512 sdv[4];
    DecodeBytes64(*a.plan1, b.c1 + i0, scale, sdv);
    for (int j = 0; j < 4; ++j) {
      const int64_t i = i0 + 16 * j;
      const VF graw = LoadAsF32<kDt>(df, b.g, i);
      VF gs = hn::Mul(graw, gn);
      const VF p0 = LoadAsF32<kDt>(df, b.p, i);
      if (kOpt != kLion && decay) gs = hn::MulAdd(p0, hn::Set(df, k.weight_decay), gs);
      const VF sd{sdv[j]};
      VF s_new, p_new;
      if constexpr (kOpt == kMomentum) {
        s_new = k.first_step ? gs : hn::MulAdd(sd, b1, gs);
      } else if constexpr (kOpt == kRmsprop) {
        s_new = hn::MulAdd(omb1, hn::Mul(gs, gs), hn::Mul(sd, b1));
      } else if constexpr (kOpt == kAdagrad) {
        s_new = hn::MulAdd(gs, gs, sd);
      } else {  // Lion: the parameter step from the old state.
        const VF p1 = decay ? RoundP<kDt>(df, hn::Mul(p0, hn::Set(df, k.decay))) : p0;
        const VF arg = hn::MulAdd(sd, b1, hn::Mul(omb1, gs));
        const VF d = RoundP<kDt>(df, hn::Mul(hn::Set(df, k.lr * k.update_scale), Sign(df, arg)));
        p_new = RoundP<kDt>(df, hn::Sub(p1, d));
        s_new = hn::MulAdd(hn::Set(df, k.one_minus_beta2), gs, hn::Mul(sd, hn::Set(df, k.beta2)));
      }
      if (k.skip_zeros) s_new = hn::IfThenElse(hn::Eq(graw, hn::Zero(df)), hn::Add(sd, hn::Zero(df)), s_new);
      hn::Store(s_new, df, s + i);
      mx = MaxAbsBits(mx, s_new);
      if constexpr (kOpt == kMomentum) {
        p_new = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, k.neg_lr_scaled), s_new, p0));
      } else if constexpr (kOpt != kLion) {
        const VF x = hn::Div(gs, hn::Add(hn::Sqrt(s_new), hn::Set(df, k.eps)));
        const float a_scale = kOpt == kAdagrad ? k.neg_lr : k.neg_lr_scaled;  // Adagrad is never clipped
        p_new = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, a_scale), x, p0));
      }
      if (k.skip_zeros) p_new = hn::IfThenElse(hn::Eq(graw, hn::Zero(df)), p0, p_new);
      StoreP<kDt>(df, p_new, b.p, i);
    }
  }
  out->am1 = AbsMaxFromBits(df, mx, s, &out->nan1);
  a.absmax1[b.index] = out->am1;
  optim_detail::prefetch_rcp(out->am1);
  out->c1 = b.c1;
}

HWY_INLINE void Block1StateD(DF df, const Optim8Args& a, const Pending8& q) {
  EncodeBlock<true>(df, *a.plan1, q.s1, q.am1, q.nan1, q.c1);
}
#endif  // BNB_OPTIM_BYTES

template <int kDt, bool kEma>
void Block2State(DF df, const Optim8Args& a, const Block8& b) {
  const OptimConsts& k = *a.k;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t nblocks = (k.n + kOptimBlock - 1) / kOptimBlock;
  alignas(64) float m[kOptimBlock], v[kOptimBlock], e[kEma ? kOptimBlock : 1];
  NewStates2<kDt, kEma>(df, a, b, m, v, e);
  // Phase B: the new scales replace the old ones.
  const float am1 = BlockAbsMax(df, m), am2 = BlockAbsMax(df, v);
  a.absmax1[b.index] = am1;
  a.absmax2[b.index] = am2;
  float am3 = 0.0f;
  if constexpr (kEma) {
    am3 = BlockAbsMax(df, e);
    a.absmax1[nblocks + b.index] = am3;
  }
  optim_detail::prefetch_rcp(am1);
  optim_detail::prefetch_rcp(am2);
  if constexpr (kEma) optim_detail::prefetch_rcp(am3);
  const bool decay = k.weight_decay > 0.0f;
  // Phase C (while the reciprocals' table entries arrive).
  for (int64_t i = 0; i < kOptimBlock; i += N) {
    const VF mv = hn::Load(df, m + i), vv = hn::Load(df, v + i);
    const MF finite = hn::IsFinite(LoadAsF32<kDt>(df, b.g, i));
    const VF p0 = LoadAsF32<kDt>(df, b.p, i);
    VF p_new;
    if constexpr (kEma) {
      const VF ev = hn::Load(df, e + i);
      const VF den = hn::MulAdd(hn::Sqrt(vv), hn::Set(df, k.rcp_c2), hn::Set(df, k.eps));
      const VF num = hn::MulAdd(hn::Set(df, k.alpha), ev, hn::Mul(mv, hn::Set(df, k.rcp_c1)));
      p_new = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, k.neg_lr), hn::Div(num, den), p0));
    } else {
      const VF x = hn::Div(mv, hn::Add(hn::Sqrt(vv), hn::Set(df, k.eps_c2)));
      p_new = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, k.adam_scale), x, p0));
    }
    if (decay) p_new = RoundP<kDt>(df, hn::Mul(p_new, hn::Set(df, k.decay)));
    StoreP<kDt>(df, hn::IfThenElse(finite, p_new, p0), b.p, i);
  }
  // Phase D.
  const VF inv1 = hn::Set(df, rcp_approx(am1)), inv2 = hn::Set(df, rcp_approx(am2));
  const VF inv3 = hn::Set(df, kEma ? rcp_approx(am3) : 0.0f);
  for (int64_t i = 0; i < kOptimBlock; i += N) {
    Encode<true>(df, *a.plan1, hn::Load(df, m + i), inv1, b.c1 + i);
    Encode<false>(df, *a.plan2, hn::Load(df, v + i), inv2, b.c2 + i);
    if constexpr (kEma) Encode<true>(df, *a.plan1, hn::Load(df, e + i), inv3, b.c1b + i);
  }
}

template <int kDt, int kOpt>
void Block1State(DF df, const Optim8Args& a, const Block8& b) {
  const OptimConsts& k = *a.k;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  alignas(64) float s[kOptimBlock], aux[kOptimBlock];
  const VF scale = hn::Set(df, a.absmax1[b.index]);
  const VF gn = hn::Set(df, k.gnorm_scale);
  const VF b1 = hn::Set(df, k.beta1), omb1 = hn::Set(df, k.one_minus_beta1);
  const bool decay = k.weight_decay > 0.0f;
  // Phase A. A skipped element keeps its decoded state (re-encoded below with the new scale).
  for (int64_t i = 0; i < kOptimBlock; i += N) {
    const VF graw = LoadAsF32<kDt>(df, b.g, i);
    VF gs = hn::Mul(graw, gn);
    const VF p0 = LoadAsF32<kDt>(df, b.p, i);
    if (kOpt != kLion && decay) gs = hn::MulAdd(p0, hn::Set(df, k.weight_decay), gs);
    const VF sd = Decode(df, *a.plan1, b.c1 + i, scale);
    VF s_new;
    if constexpr (kOpt == kMomentum) {
      s_new = k.first_step ? gs : hn::MulAdd(sd, b1, gs);
    } else if constexpr (kOpt == kRmsprop) {
      s_new = hn::MulAdd(omb1, hn::Mul(gs, gs), hn::Mul(sd, b1));
      hn::Store(gs, df, aux + i);
    } else if constexpr (kOpt == kAdagrad) {
      s_new = hn::MulAdd(gs, gs, sd);
      hn::Store(gs, df, aux + i);
    } else {  // Lion: the whole parameter step happens here, from the old state.
      const VF p1 = decay ? RoundP<kDt>(df, hn::Mul(p0, hn::Set(df, k.decay))) : p0;
      const VF arg = hn::MulAdd(sd, b1, hn::Mul(omb1, gs));
      const VF d = RoundP<kDt>(df, hn::Mul(hn::Set(df, k.lr * k.update_scale), Sign(df, arg)));
      hn::Store(RoundP<kDt>(df, hn::Sub(p1, d)), df, aux + i);
      s_new = hn::MulAdd(hn::Set(df, k.one_minus_beta2), gs, hn::Mul(sd, hn::Set(df, k.beta2)));
    }
    // A skipped element keeps its state; -0 (an all-zero block decodes to it) becomes +0 so the
    // sign fix cannot turn it into a negative code (a negative RMSprop/Adagrad state).
    if (k.skip_zeros) s_new = hn::IfThenElse(hn::Eq(graw, hn::Zero(df)), hn::Add(sd, hn::Zero(df)), s_new);
    hn::Store(s_new, df, s + i);
  }
  for (int64_t i = b.valid; i < kOptimBlock; ++i) s[i] = 0.0f;
  const float am = BlockAbsMax(df, s);
  a.absmax1[b.index] = am;
  optim_detail::prefetch_rcp(am);
  for (int64_t i = 0; i < kOptimBlock; i += N) {
    const VF sv = hn::Load(df, s + i);
    const VF p0 = LoadAsF32<kDt>(df, b.p, i);
    VF p_new;
    if constexpr (kOpt == kMomentum) {
      p_new = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, k.neg_lr_scaled), sv, p0));
    } else if constexpr (kOpt == kLion) {
      p_new = hn::Load(df, aux + i);
    } else {
      const VF x = hn::Div(hn::Load(df, aux + i), hn::Add(hn::Sqrt(sv), hn::Set(df, k.eps)));
      const float a_scale = kOpt == kAdagrad ? k.neg_lr : k.neg_lr_scaled;  // Adagrad is never clipped
      p_new = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, a_scale), x, p0));
    }
    if (k.skip_zeros) p_new = hn::IfThenElse(hn::Eq(LoadAsF32<kDt>(df, b.g, i), hn::Zero(df)), p0, p_new);
    StoreP<kDt>(df, p_new, b.p, i);
  }
  const VF inv = hn::Set(df, rcp_approx(am));
  for (int64_t i = 0; i < kOptimBlock; i += N) Encode<true>(df, *a.plan1, hn::Load(df, s + i), inv, b.c1 + i);
}

// Squared update norm of one block (docs/OPS.md §6.4 with the decoded states; no weight decay).
template <int kDt, int kOpt>
double BlockUnorm(DF df, const Optim8Args& a, const Block8& b) {
  const OptimConsts& k = *a.k;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  VF acc = hn::Zero(df);
  if constexpr (kOpt == kAdam) {
    alignas(64) float m[kOptimBlock], v[kOptimBlock], e[1];
    NewStates2<kDt, false>(df, a, b, m, v, e);
    for (int64_t i = 0; i < kOptimBlock; i += N) {
      const VF u = hn::Div(hn::Mul(hn::Load(df, m + i), hn::Set(df, k.rcp_c1)),
                           hn::Add(hn::Sqrt(hn::Mul(hn::Load(df, v + i), hn::Set(df, k.rcp_bias2))), hn::Set(df, k.eps)));
      acc = hn::MulAdd(u, u, acc);
    }
  } else {
    const VF scale = hn::Set(df, a.absmax1[b.index]);
    for (int64_t i = 0; i < b.valid; i += N) {
      const VF gs = hn::Mul(LoadAsF32<kDt>(df, b.g, i), hn::Set(df, k.gnorm_scale));
      const VF sd = Decode(df, *a.plan1, b.c1 + i, scale);
      VF u;
      if constexpr (kOpt == kMomentum) {
        u = k.first_step ? gs : hn::MulAdd(sd, hn::Set(df, k.beta1), gs);
      } else {
        const VF s_new = kOpt == kRmsprop
                             ? hn::MulAdd(hn::Set(df, k.one_minus_beta1), hn::Mul(gs, gs), hn::Mul(sd, hn::Set(df, k.beta1)))
                             : hn::MulAdd(gs, gs, sd);
        u = hn::Div(gs, hn::Add(hn::Sqrt(s_new), hn::Set(df, k.eps)));
      }
      const int64_t left = b.valid - i;
      if (left < N) u = hn::IfThenElseZero(hn::FirstN(df, static_cast<size_t>(left)), u);
      if (k.skip_zeros) u = hn::IfThenZeroElse(hn::Eq(gs, hn::Zero(df)), u);  // no update, no norm
      acc = hn::MulAdd(u, u, acc);
    }
  }
  return static_cast<double>(hn::GetLane(hn::SumOfLanes(df, acc)));
}

// Runs `fn(block)` for blocks [b0, b1), staging the last partial block in zero-padded scratch.
template <int kDt, class Fn>
HWY_INLINE void ForBlocks(const Optim8Args& a, int64_t b0, int64_t b1, bool write_back, const Fn& fn) {
  const int64_t n = a.k->n;
  const bool ema = a.k->state1_copies == 2;
  const bool two = a.c2 != nullptr;
  constexpr size_t kEs = ElemSize<kDt>();
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t begin = blk * kOptimBlock;
    const int64_t valid = begin + kOptimBlock <= n ? kOptimBlock : n - begin;
    if (valid == kOptimBlock) {
      Block8 b{static_cast<uint8_t*>(a.p) + begin * kEs, static_cast<const uint8_t*>(a.g) + begin * kEs,
               a.c1 + begin, ema ? a.c1 + n + begin : nullptr, two ? a.c2 + begin : nullptr, blk, valid};
      fn(b);
      continue;
    }
    alignas(64) uint8_t pb[kOptimBlock * 4] = {}, gb[kOptimBlock * 4] = {};
    alignas(64) uint8_t c1[kOptimBlock] = {}, c1b[kOptimBlock] = {}, c2[kOptimBlock] = {};
    const size_t r = static_cast<size_t>(valid);
    std::memcpy(pb, static_cast<const uint8_t*>(a.p) + begin * kEs, r * kEs);
    std::memcpy(gb, static_cast<const uint8_t*>(a.g) + begin * kEs, r * kEs);
    std::memcpy(c1, a.c1 + begin, r);
    if (ema) std::memcpy(c1b, a.c1 + n + begin, r);
    if (two) std::memcpy(c2, a.c2 + begin, r);
    Block8 b{pb, gb, c1, c1b, c2, blk, valid};
    fn(b);
    if (!write_back) continue;
    std::memcpy(static_cast<uint8_t*>(a.p) + begin * kEs, pb, r * kEs);
    std::memcpy(a.c1 + begin, c1, r);
    if (ema) std::memcpy(a.c1 + n + begin, c1b, r);
    if (two) std::memcpy(a.c2 + begin, c2, r);
  }
}

#if BNB_OPTIM_BYTES
// Blocks [b0, b1) with full blocks software-pipelined: phase D of a block runs after the next
// block's A+C, so the RCP table entries of its scales (a 2 MiB table, usually a cache miss)
// arrive in the meantime. A partial last block goes through `fallback` (Block2State/Block1State).
template <int kDt, class AC, class D, class Fallback>
HWY_INLINE void PipelineBlocks(const Optim8Args& a, int64_t b0, int64_t b1, const AC& ac, const D& d,
                               const Fallback& fallback) {
  const int64_t n = a.k->n;
  const bool ema = a.k->state1_copies == 2;
  const bool two = a.c2 != nullptr;
  constexpr size_t kEs = ElemSize<kDt>();
  auto pending = std::make_unique<Pending8[]>(2);
  Pending8* last = nullptr;
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t begin = blk * kOptimBlock;
    if (begin + kOptimBlock > n) {
      if (last != nullptr) d(*last);
      last = nullptr;
      ForBlocks<kDt>(a, blk, blk + 1, true, fallback);
      continue;
    }
    const Block8 b{static_cast<uint8_t*>(a.p) + begin * kEs, static_cast<const uint8_t*>(a.g) + begin * kEs,
                   a.c1 + begin, ema ? a.c1 + n + begin : nullptr, two ? a.c2 + begin : nullptr, blk, kOptimBlock};
    Pending8* cur = &pending[blk & 1];
    ac(b, cur);
    if (last != nullptr) d(*last);
    last = cur;
  }
  if (last != nullptr) d(*last);
}

// The pipelined block loop for the two-state (kEma: AdEMAMix) and one-state (kOpt) rules.
template <int kDt, bool kEma>
void Pipeline2State(const Optim8Args& a, int64_t b0, int64_t b1) {
  const DF df;
  PipelineBlocks<kDt>(
      a, b0, b1, [&](const Block8& b, Pending8* q) { Block2StateAC<kDt, kEma>(df, a, b, q); },
      [&](const Pending8& q) { Block2StateD<kEma>(df, a, q); },
      [&](const Block8& b) { Block2State<kDt, kEma>(df, a, b); });
}
template <int kDt, int kOpt>
void Pipeline1State(const Optim8Args& a, int64_t b0, int64_t b1) {
  const DF df;
  PipelineBlocks<kDt>(
      a, b0, b1, [&](const Block8& b, Pending8* q) { Block1StateAC<kDt, kOpt>(df, a, b, q); },
      [&](const Pending8& q) { Block1StateD(df, a, q); },
      [&](const Block8& b) { Block1State<kDt, kOpt>(df, a, b); });
}

// The 8-bit update of one rule: the pipelined block loop where the target has the byte paths.
template <int kDt, int kOpt>
void Update8Rule(const Optim8Args& a, int64_t b0, int64_t b1) {
  constexpr bool kEma = optim_traits(kOpt).state1_copies == 2;
  if constexpr (optim_traits(kOpt).states == 2) {
    Pipeline2State<kDt, kEma>(a, b0, b1);
  } else {
    Pipeline1State<kDt, kOpt>(a, b0, b1);
  }
}
#else
// The 8-bit update of one rule, a block at a time.
template <int kDt, int kOpt>
void Update8Rule(const Optim8Args& a, int64_t b0, int64_t b1) {
  const DF df;
  constexpr bool kEma = optim_traits(kOpt).state1_copies == 2;
  if constexpr (optim_traits(kOpt).states == 2) {
    ForBlocks<kDt>(a, b0, b1, true, [&](const Block8& b) { Block2State<kDt, kEma>(df, a, b); });
  } else {
    ForBlocks<kDt>(a, b0, b1, true, [&](const Block8& b) { Block1State<kDt, kOpt>(df, a, b); });
  }
}
#endif  // BNB_OPTIM_BYTES

template <int kDt>
void Update8Typed(const Optim8Args& a, int64_t b0, int64_t b1) {
  with_optim_kernel(
      a.k->optimizer, [&](auto kernel) { Update8Rule<kDt, decltype(kernel)::value>(a, b0, b1); }, [] {});
}

// The clipping pre-pass; 0 for the rules without clipping (the core never asks for it there).
template <int kDt>
double Unorm8Typed(const Optim8Args& a, int64_t b0, int64_t b1) {
  const DF df;
  double sum = 0.0;
  with_optim_kernel(
      a.k->optimizer,
      [&](auto kernel) {
        constexpr int kOpt = decltype(kernel)::value;
        if constexpr (optim_traits(kOpt).clipping) {
          ForBlocks<kDt>(a, b0, b1, false, [&](const Block8& b) { sum += BlockUnorm<kDt, kOpt>(df, a, b); });
        }
      },
      [] {});
  return sum;
}

template <int kDt>
void Update32Typed(const Optim32Args& a, int64_t begin, int64_t end) {
  with_optim_kernel(
      a.k->optimizer, [&](auto kernel) { Update32Impl<kDt, decltype(kernel)::value>(a, begin, end); }, [] {});
}

template <int kDt>
double Unorm32Typed(const Optim32Args& a, int64_t begin, int64_t end) {
  return with_optim_kernel(
      a.k->optimizer,
      [&](auto kernel) {
        constexpr int kOpt = decltype(kernel)::value;
        if constexpr (optim_traits(kOpt).clipping) return Unorm32Impl<kDt, kOpt>(a, begin, end);
        return 0.0;
      },
      [] { return 0.0; });
}

void Optim32Update(const Optim32Args& a, int64_t begin, int64_t end) {
  switch (a.k->dtype) {
    case BNB_F32:
      return Update32Typed<BNB_F32>(a, begin, end);
    case BNB_F16:
      return Update32Typed<BNB_F16>(a, begin, end);
    default:
      return Update32Typed<BNB_BF16>(a, begin, end);
  }
}

double Optim32Unorm(const Optim32Args& a, int64_t begin, int64_t end) {
  switch (a.k->dtype) {
    case BNB_F32:
      return Unorm32Typed<BNB_F32>(a, begin, end);
    case BNB_F16:
      return Unorm32Typed<BNB_F16>(a, begin, end);
    default:
      return Unorm32Typed<BNB_BF16>(a, begin, end);
  }
}

bool Optim8EncodeBlock(const OptimCodePlan& plan, bool sign_fix, bool bucketed, const float* values, float inv,
                       uint8_t* codes) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
#if BNB_OPTIM_BYTES
  if (bucketed && std::isnormal(inv) && plan.bucket_kind == (sign_fix ? kBucketSigned : kBucketPositive)) {
    const __m512 vinv = _mm512_set1_ps(inv);
    for (int64_t i = 0; i < kOptimBlock; i += 64) {
      const __m512 v[4] = {_mm512_loadu_ps(values + i), _mm512_loadu_ps(values + i + 16),
                           _mm512_loadu_ps(values + i + 32), _mm512_loadu_ps(values + i + 48)};
      if (sign_fix) {
        EncodeBytes64<true>(plan, v, vinv, codes + i);
      } else {
        EncodeBytes64<false>(plan, v, vinv, codes + i);
      }
    }
    return true;
  }
#else
  (void)bucketed;
#endif
  const VF vinv = hn::Set(df, inv);
  for (int64_t i = 0; i < kOptimBlock; i += N) {
    if (sign_fix) {
      Encode<true>(df, plan, hn::LoadU(df, values + i), vinv, codes + i);
    } else {
      Encode<false>(df, plan, hn::LoadU(df, values + i), vinv, codes + i);
    }
  }
  return false;
}

void Optim8Update(const Optim8Args& a, int64_t b0, int64_t b1) {
  switch (a.k->dtype) {
    case BNB_F32:
      return Update8Typed<BNB_F32>(a, b0, b1);
    case BNB_F16:
      return Update8Typed<BNB_F16>(a, b0, b1);
    default:
      return Update8Typed<BNB_BF16>(a, b0, b1);
  }
}

double Optim8Unorm(const Optim8Args& a, int64_t b0, int64_t b1) {
  switch (a.k->dtype) {
    case BNB_F32:
      return Unorm8Typed<BNB_F32>(a, b0, b1);
    case BNB_F16:
      return Unorm8Typed<BNB_F16>(a, b0, b1);
    default:
      return Unorm8Typed<BNB_BF16>(a, b0, b1);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace bnb
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnb {
namespace cpu {

HWY_EXPORT(Optim32Update);
HWY_EXPORT(Optim32Unorm);
HWY_EXPORT(Optim8Update);
HWY_EXPORT(Optim8Unorm);
HWY_EXPORT(Optim8EncodeBlock);

bool optim8_encode_block(const OptimCodePlan& plan, bool sign_fix, bool bucketed, const float* values, float inv,
                         uint8_t* codes) {
  return HWY_DYNAMIC_DISPATCH(Optim8EncodeBlock)(plan, sign_fix, bucketed, values, inv, codes);
}

void optim32_update(const Optim32Args& a, int64_t begin, int64_t end) {
  HWY_DYNAMIC_DISPATCH(Optim32Update)(a, begin, end);
}
double optim32_unorm(const Optim32Args& a, int64_t begin, int64_t end) {
  return HWY_DYNAMIC_DISPATCH(Optim32Unorm)(a, begin, end);
}
void optim8_update(const Optim8Args& a, int64_t block_begin, int64_t block_end) {
  HWY_DYNAMIC_DISPATCH(Optim8Update)(a, block_begin, block_end);
}
double optim8_unorm(const Optim8Args& a, int64_t block_begin, int64_t block_end) {
  return HWY_DYNAMIC_DISPATCH(Optim8Unorm)(a, block_begin, block_end);
}

namespace {

// The built-in table's plan, built once.
const OptimCodePlan& default_plan(int32_t which) {
  static OptimCodePlan plans[2];
  static std::once_flag once;
  std::call_once(once, [] {
    float t[256];
    copy_code_table(BNB_CODE_DYNAMIC_SIGNED, t);
    build_optim_code_plan(t, &plans[0]);
    copy_code_table(BNB_CODE_DYNAMIC_UNSIGNED, t);
    build_optim_code_plan(t, &plans[1]);
  });
  return plans[which == BNB_CODE_DYNAMIC_SIGNED ? 0 : 1];
}

// The plan of `qmap` (NULL = the built-in table `which`); `storage` holds a custom one.
const OptimCodePlan* plan_for(const float* qmap, int32_t which, std::unique_ptr<OptimCodePlan>* storage) {
  const OptimCodePlan& builtin = default_plan(which);
  if (qmap == nullptr || std::memcmp(qmap, builtin.values, sizeof builtin.values) == 0) return &builtin;
  storage->reset(new OptimCodePlan);
  build_optim_code_plan(qmap, storage->get());
  return storage->get();
}

// Elements (32-bit) or blocks (8-bit) per task: large enough to amortise the pool, small enough
// to balance.
constexpr int64_t kChunk32 = 16384;
constexpr int64_t kChunkBlocks = 64;

template <class Fn>
void for_chunks(ThreadPool& pool, int64_t total, int64_t chunk, const Fn& fn) {
  const int64_t tasks = (total + chunk - 1) / chunk;
  pool.run(tasks, [&](int64_t t) {
    const int64_t begin = t * chunk;
    fn(t, begin, begin + chunk < total ? begin + chunk : total);
  });
}

}  // namespace

// The bucketed encoder of a fast `plan` from its thresholds, or kBucketNone when the table does
// not fit it (then the level search encodes).
void build_buckets(OptimCodePlan* plan) {
  const float* t = plan->code8.t;
  plan->bucket_kind = kBucketNone;
  int negatives = 0;
  for (int j = 0; j < 255; ++j) {
    const uint32_t mag = float_to_bits(t[j]) & 0x7fffffffu;
    // Every |t| in binades 97..127 (|t| in [2^-30, 2)): binade 96 and below is one empty bucket.
    if (mag < (97u << 23) || mag >= (128u << 23)) return;
    if (t[j] < 0.0f) ++negatives;
  }
  const bool is_signed = negatives > 0;
  if (is_signed && negatives != plan->code8.negative_count) return;
  const int per_sign = is_signed ? 128 : 256;
  int shift[32], first[32], total = 0;
  for (int e = 96; e < 128; ++e) {
    int r = 0;
    for (; r <= 7; ++r) {
      bool ok = true;
      for (int sign = 0; sign < 2 && ok; ++sign) {
        int run = 0;
        uint32_t last_key = 0xffffffffu;
        for (int j = 0; j < 255; ++j) {  // ascending |t| of this sign: walk in the right order
          const int jj = sign ? 254 - j : j;
          if ((t[jj] < 0.0f) != (sign == 1)) continue;
          const uint32_t mag = float_to_bits(t[jj]) & 0x7fffffffu;
          if (static_cast<int>(mag >> 23) != e) continue;
          const uint32_t key = (mag & 0x7fffffu) >> (23 - r);
          run = key == last_key ? run + 1 : 1;
          last_key = key;
          if (run > 2) ok = false;
        }
      }
      if (ok) break;
    }
    if (r > 7) return;
    shift[e - 96] = 7 - r;
    first[e - 96] = total;
    total += 1 << r;
  }
  if (total > per_sign) return;
  for (int e = 96; e < 128; ++e) {
    plan->bucket_shift[e & 31] = shift[e - 96];
    plan->bucket_offset[e & 31] = first[e - 96] << 16;
  }
  std::memset(plan->bucket_table, 0xff, sizeof plan->bucket_table);
  for (int e = 96; e < 128; ++e) {
    const int r = 7 - shift[e - 96];
    for (uint32_t k = 0; k < (1u << r); ++k) {
      const uint32_t lo_bits = e == 96 ? 0u : (static_cast<uint32_t>(e) << 23) | (k << (23 - r));
      const uint32_t hi_bits = (static_cast<uint32_t>(e) << 23) + ((k + 1) << (23 - r));
      const int bucket = first[e - 96] + static_cast<int>(k);
      for (int sign = 0; sign < (is_signed ? 2 : 1); ++sign) {
        // The bucket's x are [lo, hi) for sign 0, (-hi, -lo] for sign 1: count below the least.
        const float xmin = sign ? -bits_to_float(hi_bits - 1u) : bits_to_float(lo_bits);
        plan->bucket_table[0][bucket + 128 * sign] = static_cast<uint8_t>(code8_count_below(t, xmin));
        int slot = 0;
        for (int j = 0; j < 255; ++j) {
          const uint32_t mag = float_to_bits(t[j]) & 0x7fffffffu;
          const bool inside = (t[j] < 0.0f) == (sign == 1) && mag >= lo_bits && mag < hi_bits;
          if (inside) {
            uint32_t low16 = ((mag & 0x7fffffu) >> (7 - r)) & 0xffffu;
            if (sign) low16 ^= 0xffffu;
            plan->bucket_table[1 + 2 * slot][bucket + 128 * sign] = static_cast<uint8_t>(low16 >> 8);
            plan->bucket_table[2 + 2 * slot][bucket + 128 * sign] = static_cast<uint8_t>(low16 & 0xffu);
            ++slot;
          }
        }
      }
    }
  }
  plan->bucket_kind = is_signed ? kBucketSigned : kBucketPositive;
}

void build_optim_code_plan(const float* table, OptimCodePlan* plan) {
  std::memcpy(plan->values, table, sizeof plan->values);
  std::memset(plan->levels, 0, sizeof plan->levels);
  for (int c = 0; c < 256; ++c)
    for (int k = 0; k < 4; ++k) plan->value_bytes[k][c] = static_cast<uint8_t>(float_to_bits(table[c]) >> (8 * k));
  plan->bucket_kind = kBucketNone;
  code8_plan(table, false, &plan->code8);
  if (!plan->code8.fast) return;
  const float* t = plan->code8.t;
  code8_levels(plan->code8, plan->levels);
  for (int r = 0; r < 7; ++r)
    for (int c = 0; c < 32; ++c) plan->tail[r][c] = t[8 * c + r];
  for (int k = 0; k < 7; ++k) plan->top[k] = t[32 * k + 31];
  build_buckets(plan);
}

void make_optim_consts(const bnb_optimizer_params_t& P, OptimConsts* k) {
  k->optimizer = P.optimizer;
  k->dtype = P.param_dtype;
  k->skip_zeros = P.skip_zeros != 0;
  k->first_step = P.step == 1;
  k->n = P.n;
  k->lr = P.lr;
  k->beta1 = P.beta1;
  k->beta2 = P.beta2;
  k->beta3 = P.beta3;
  k->alpha = P.alpha;
  k->eps = P.eps;
  k->weight_decay = P.weight_decay;
  k->gnorm_scale = P.gnorm_scale;
  k->one_minus_beta1 = 1.0f - P.beta1;
  k->one_minus_beta2 = 1.0f - P.beta2;
  k->one_minus_beta3 = 1.0f - P.beta3;
  const double t = static_cast<double>(P.step);
  const float beta1_t = static_cast<float>(std::pow(static_cast<double>(P.beta1), t));
  const float beta2_t = static_cast<float>(std::pow(static_cast<double>(P.beta2), t));
  const float c1 = 1.0f - beta1_t;
  const float bias2 = 1.0f - beta2_t;
  const float c2 = std::sqrt(bias2);
  k->rcp_c1 = 1.0f / c1;
  k->rcp_c2 = 1.0f / c2;
  k->rcp_bias2 = 1.0f / bias2;
  k->step_size = (-P.lr * c2) / c1;
  k->eps_c2 = P.eps * c2;
  k->decay = 1.0f - P.lr * P.weight_decay;
  k->neg_lr = -P.lr;
  k->update_scale = 1.0f;
  k->adam_scale = k->step_size;
  k->neg_lr_scaled = -P.lr;
  k->state1_copies = optim_traits(P.optimizer).state1_copies;
}

void optimizer_run(ThreadPool& pool, const bnb_optimizer_params_t& P, const bnb_optimizer_tensors_t& T) {
  OptimConsts k;
  make_optim_consts(P, &k);
  const int64_t n = P.n;
  const bool clip = P.max_unorm > 0.0f;
  // Clipping needs the norm of the whole update before any element changes (docs/OPS.md §6.4).
  auto apply_clip = [&](const std::vector<double>& parts) {
    double sum = 0.0;
    for (double s : parts) sum += s;  // fixed order: the result does not depend on threads
    const float sq = static_cast<float>(sum);
    T.unorm_vec[0] = sq;
    const float norm = std::sqrt(sq);
    float limit = P.max_unorm * P.param_norm;
    if (optim_traits(P.optimizer).states == 1) limit += P.eps;
    k.update_scale = norm > limit ? limit / norm : 1.0f;
    k.adam_scale = k.update_scale * k.step_size;
    k.neg_lr_scaled = -P.lr * k.update_scale;
  };
  if (P.state_bits == 32) {
    Optim32Args a{&k, T.p, T.g, static_cast<float*>(T.state1), static_cast<float*>(T.state2)};
    if (clip) {
      std::vector<double> parts(static_cast<size_t>((n + kChunk32 - 1) / kChunk32), 0.0);
      for_chunks(pool, n, kChunk32, [&](int64_t t, int64_t b, int64_t e) { parts[t] = optim32_unorm(a, b, e); });
      apply_clip(parts);
    }
    for_chunks(pool, n, kChunk32, [&](int64_t, int64_t b, int64_t e) { optim32_update(a, b, e); });
    return;
  }
  std::unique_ptr<OptimCodePlan> custom1, custom2;
  const OptimCodePlan* plan1 = plan_for(T.qmap1, BNB_CODE_DYNAMIC_SIGNED, &custom1);
  const OptimCodePlan* plan2 = plan_for(T.qmap2, BNB_CODE_DYNAMIC_UNSIGNED, &custom2);
  const bool two = optim_traits(P.optimizer).states == 2;
  Optim8Args a{&k, plan1, plan2, T.p, T.g, static_cast<uint8_t*>(T.state1),
               two ? static_cast<uint8_t*>(T.state2) : nullptr, T.absmax1, two ? T.absmax2 : nullptr};
  const int64_t nblocks = (n + kOptimBlock - 1) / kOptimBlock;
  if (clip) {
    std::vector<double> parts(static_cast<size_t>((nblocks + kChunkBlocks - 1) / kChunkBlocks), 0.0);
    for_chunks(pool, nblocks, kChunkBlocks, [&](int64_t t, int64_t b, int64_t e) { parts[t] = optim8_unorm(a, b, e); });
    apply_clip(parts);
  }
  for_chunks(pool, nblocks, kChunkBlocks, [&](int64_t, int64_t b, int64_t e) { optim8_update(a, b, e); });
}

}  // namespace cpu
}  // namespace bnb
#endif  // HWY_ONCE
