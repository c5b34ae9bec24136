// SIMD kernels of the optimizers with 8-bit blockwise states (docs/OPS.md §6.5), compiled once per
// Highway target (foreach_target) and chosen at run time (HWY_DYNAMIC_DISPATCH).
//
// Numerics follow the normative CUDA kernels (docs/OPS.md §6.1): binary32 throughout, the parameter
// rounded to its dtype wherever the rules say `p <- T(...)`, and the fused multiply-adds the
// CUDA build contracts (Highway MulAdd: fused on FMA targets, two roundings on SSE4/EMU128).
// Divisions and square roots are IEEE here (CUDA: fast-math approximations), and beta^t is
// RN32 of the exact power (CUDA: __powf): the parameter differs in the last bits, the 8-bit state
// codes do not (they never see a division or root; the block reciprocal is the exact RCP).
//
// One 256-element block at a time, in four phases on L1-resident scratch: A decode + update states
// in fp32, B new absmax, C parameter step, D re-encode with the new absmax (RCP(absmax) as the
// CUDA kernel, then the level search of docs/FORMATS.md §2.3 + sign fix; optim_codes-inl.h).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "int_math.h"
#include "optim_kernels.h"
#include "optim_traits.h"
#include "rcp.h"
#include "tables.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/backend_cpu/optim8_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include "simd-inl.h"
#include "optim-inl.h"
#include "optim_codes-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnb {
namespace cpu {
namespace HWY_NAMESPACE {

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
  const int64_t nblocks = ceil_div(k.n, kOptimBlock);
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
  const int64_t nblocks = ceil_div(k.n, kOptimBlock);
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
      VF ev = vv;  // AdamW: unused
      if constexpr (kEma) {
        ev = hn::IfThenElseZero(finite, hn::MulAdd(omb3, gs, hn::Mul(VF{ed[j]}, b3)));
        hn::Store(ev, df, e + i);
        max3 = MaxAbsBits(max3, ev);
      }
      const VF p_new = AdamParam<kDt, kEma>(df, k, decay, mv, vv, ev, p0);
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
  const int64_t nblocks = ceil_div(k.n, kOptimBlock);
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
    VF ev = vv;  // AdamW: unused
    if constexpr (kEma) ev = hn::Load(df, e + i);
    const VF p_new = AdamParam<kDt, kEma>(df, k, decay, mv, vv, ev, p0);
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
  return WithDtype(a.k->dtype, [&](auto dt) { return Update8Typed<decltype(dt)::value>(a, b0, b1); });
}

double Optim8Unorm(const Optim8Args& a, int64_t b0, int64_t b1) {
  return WithDtype(a.k->dtype, [&](auto dt) { return Unorm8Typed<decltype(dt)::value>(a, b0, b1); });
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace bnb
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnb {
namespace cpu {

HWY_EXPORT(Optim8Update);
HWY_EXPORT(Optim8Unorm);
HWY_EXPORT(Optim8EncodeBlock);

bool optim8_encode_block(const OptimCodePlan& plan, bool sign_fix, bool bucketed, const float* values, float inv,
                         uint8_t* codes) {
  return HWY_DYNAMIC_DISPATCH(Optim8EncodeBlock)(plan, sign_fix, bucketed, values, inv, codes);
}
void optim8_update(const Optim8Args& a, int64_t block_begin, int64_t block_end) {
  HWY_DYNAMIC_DISPATCH(Optim8Update)(a, block_begin, block_end);
}
double optim8_unorm(const Optim8Args& a, int64_t block_begin, int64_t block_end) {
  return HWY_DYNAMIC_DISPATCH(Optim8Unorm)(a, block_begin, block_end);
}

}  // namespace cpu
}  // namespace bnb
#endif  // HWY_ONCE
