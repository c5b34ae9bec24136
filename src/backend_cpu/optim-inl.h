// Per-target pieces the optimizer kernels share (optim32_simd.cc, optim8_simd.cc): the update
// rules' ids and the parameter's rounding `p <- T(x)` and store (the switch from the run-time
// parameter dtype to a compile-time one is simd-inl.h's WithDtype). Included after simd-inl.h;
// one copy per target (Highway's -inl.h idiom, see simd-inl.h).

#if defined(BNB_BACKEND_CPU_OPTIM_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BNB_BACKEND_CPU_OPTIM_INL_H_
#undef BNB_BACKEND_CPU_OPTIM_INL_H_
#else
#define BNB_BACKEND_CPU_OPTIM_INL_H_
#endif

#include <cstddef>
#include <cstdint>

#include "optim_kernels.h"
#include "optim_traits.h"
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

// The Adam family's new parameter from the new states (docs/OPS.md §6): AdamW from m and v;
// AdEMAMix (kEma) from m, the slow EMA e and v (its nu). Then the decoupled weight decay.
template <int kDt, bool kEma>
HWY_INLINE VF AdamParam(DF df, const OptimConsts& k, bool decay, VF m, VF v, VF e, VF p0) {
  VF p;
  if constexpr (kEma) {
    const VF den = hn::MulAdd(hn::Sqrt(v), hn::Set(df, k.rcp_c2), hn::Set(df, k.eps));
    const VF num = hn::MulAdd(hn::Set(df, k.alpha), e, hn::Mul(m, hn::Set(df, k.rcp_c1)));
    p = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, k.neg_lr), hn::Div(num, den), p0));
  } else {
    (void)e;
    const VF x = hn::Div(m, hn::Add(hn::Sqrt(v), hn::Set(df, k.eps_c2)));
    p = RoundP<kDt>(df, hn::MulAdd(hn::Set(df, k.adam_scale), x, p0));
  }
  if (decay) p = RoundP<kDt>(df, hn::Mul(p, hn::Set(df, k.decay)));
  return p;
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace bnb
HWY_AFTER_NAMESPACE();

#endif  // BNB_BACKEND_CPU_OPTIM_INL_H_
