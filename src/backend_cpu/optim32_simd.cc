// SIMD kernels of the optimizers with 32-bit states (docs/OPS.md §6), compiled once per Highway
// target (foreach_target) and chosen at run time (HWY_DYNAMIC_DISPATCH).
//
// Numerics follow the normative CUDA kernels (docs/OPS.md §6.1): binary32 throughout, the parameter
// rounded to its dtype wherever the rules say `p <- T(...)`, and the fused multiply-adds the
// CUDA build contracts (Highway MulAdd: fused on FMA targets, two roundings on SSE4/EMU128).
// Divisions and square roots are IEEE here (CUDA: fast-math approximations), and beta^t is
// RN32 of the exact power (CUDA: __powf): the parameter differs in the last bits, the 8-bit state
// codes do not (they never see a division or root; the block reciprocal is the exact RCP).
//
// One pass over [begin, end), a vector at a time (the last partial vector is staged).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "optim_kernels.h"
#include "optim_traits.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/backend_cpu/optim32_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include "simd-inl.h"
#include "optim-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnb {
namespace cpu {
namespace HWY_NAMESPACE {

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
    const VF p_new = AdamParam<kDt, false>(df, k, decay, m_new, v_new, v_new, p0);
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
    const VF p_new = AdamParam<kDt, true>(df, k, decay, m1_new, nu_new, m2_new, p0);
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
  return WithDtype(a.k->dtype, [&](auto dt) { return Update32Typed<decltype(dt)::value>(a, begin, end); });
}

double Optim32Unorm(const Optim32Args& a, int64_t begin, int64_t end) {
  return WithDtype(a.k->dtype, [&](auto dt) { return Unorm32Typed<decltype(dt)::value>(a, begin, end); });
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace bnb
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnb {
namespace cpu {

HWY_EXPORT(Optim32Update);
HWY_EXPORT(Optim32Unorm);

void optim32_update(const Optim32Args& a, int64_t begin, int64_t end) {
  HWY_DYNAMIC_DISPATCH(Optim32Update)(a, begin, end);
}
double optim32_unorm(const Optim32Args& a, int64_t begin, int64_t end) {
  return HWY_DYNAMIC_DISPATCH(Optim32Unorm)(a, begin, end);
}

}  // namespace cpu
}  // namespace bnb
#endif  // HWY_ONCE
