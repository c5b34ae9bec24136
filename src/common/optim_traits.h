// The optimizers' traits, in one table: what the core checks, how the plugins lay out the states
// and which update rule (kernel) each optimizer runs. Used by the core (api_ops.cc), the CPU
// plugin (optim32_simd.cc, optim8_simd.cc), the GPU plugin (optim_ops.cu, optim_kernels.cuh)
// and, through tests/python/test_optim_traits.py, checked against bnb.optim's copy.
#ifndef BNB_COMMON_OPTIM_TRAITS_H_
#define BNB_COMMON_OPTIM_TRAITS_H_

#include <stdint.h>

#include <type_traits>

#include "bnb.h"
#include "hd.h"

// X(id, name, kernel, states, state1_copies, bias_correction, clipping, beta3_alpha), one row per
// bnb_optimizer_t, in enum order:
//   kernel           the optimizer whose update rule runs (LAMB runs Adam's, LARS Momentum's; the
//                    trust ratio is the caller's param_norm with max_unorm)
//   states           2: state2 (and absmax2 when 8-bit) holds a second moment; 1: state2 unused
//   state1_copies    tensors stacked in state1 (AdEMAMix: the fast then the slow EMA, and absmax1
//                    their two sets of scales)
//   bias_correction  1: the rule divides by 1 - beta^t, so beta1 and beta2 must be < 1
//   clipping         1: update-norm clipping (max_unorm > 0) is defined (docs/OPS.md §6.4)
//   beta3_alpha      1: beta3 and alpha enter the rule
#define BNB_OPTIMIZERS(X)                                         \
  X(BNB_OPT_ADAM, "adam", BNB_OPT_ADAM, 2, 1, 1, 1, 0)             \
  X(BNB_OPT_MOMENTUM, "momentum", BNB_OPT_MOMENTUM, 1, 1, 0, 1, 0) \
  X(BNB_OPT_RMSPROP, "rmsprop", BNB_OPT_RMSPROP, 1, 1, 0, 1, 0)    \
  X(BNB_OPT_LION, "lion", BNB_OPT_LION, 1, 1, 0, 0, 0)             \
  X(BNB_OPT_ADAGRAD, "adagrad", BNB_OPT_ADAGRAD, 1, 1, 0, 1, 0)    \
  X(BNB_OPT_ADEMAMIX, "ademamix", BNB_OPT_ADEMAMIX, 2, 2, 1, 0, 1) \
  X(BNB_OPT_LAMB, "lamb", BNB_OPT_ADAM, 2, 1, 1, 1, 0)             \
  X(BNB_OPT_LARS, "lars", BNB_OPT_MOMENTUM, 1, 1, 0, 1, 0)

namespace bnb {

struct OptimTraits {
  int32_t id;  // bnb_optimizer_t
  const char* name;
  int32_t kernel;
  int32_t states;
  int32_t state1_copies;
  bool bias_correction;
  bool clipping;
  bool beta3_alpha;
};

// The row of `opt`; an id that is not a bnb_optimizer_t gets id 0 and zeros. Values, not a table
// in memory, so that device code may call it (as a constant expression).
BNB_HD constexpr OptimTraits optim_traits(int32_t opt) {
  switch (opt) {
#define BNB_OPTIM_TRAITS_ROW(id, name, kernel, states, copies, bias, clip, b3a) \
  case id: return OptimTraits{id, name, kernel, states, copies, bias != 0, clip != 0, b3a != 0};
    BNB_OPTIMIZERS(BNB_OPTIM_TRAITS_ROW)
#undef BNB_OPTIM_TRAITS_ROW
    default: return OptimTraits{0, "", 0, 0, 0, false, false, false};
  }
}

#define BNB_OPTIM_COUNT_ROW(...) +1
inline constexpr int32_t kOptimCount = 0 BNB_OPTIMIZERS(BNB_OPTIM_COUNT_ROW);
#undef BNB_OPTIM_COUNT_ROW

BNB_HD constexpr bool optim_known(int32_t opt) { return optim_traits(opt).id != 0; }

// Rows are in enum order from 1, so the ids are exactly 1..kOptimCount.
constexpr bool optim_rows_in_order() {
  for (int32_t i = 1; i <= kOptimCount; ++i)
    if (optim_traits(i).id != i) return false;
  return true;
}
static_assert(optim_rows_in_order(), "BNB_OPTIMIZERS lists bnb_optimizer_t from 1 in order");

// Runs fn(std::integral_constant<int32_t, K>{}) with K the kernel of optimizer `opt` (one
// instantiation per update rule: the optimizers' dispatch, written once), or otherwise() when
// `opt` is not a bnb_optimizer_t.
template <class Fn, class Otherwise>
decltype(auto) with_optim_kernel(int32_t opt, Fn&& fn, Otherwise&& otherwise) {
  switch (opt) {
#define BNB_OPTIM_KERNEL_CASE(id, name, kernel, ...) \
  case id: return fn(std::integral_constant<int32_t, kernel>{});
    BNB_OPTIMIZERS(BNB_OPTIM_KERNEL_CASE)
#undef BNB_OPTIM_KERNEL_CASE
    default: return otherwise();
  }
}

}  // namespace bnb

#endif  // BNB_COMMON_OPTIM_TRAITS_H_
