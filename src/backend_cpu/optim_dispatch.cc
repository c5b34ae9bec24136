// optimizer_run (optim_kernels.h): the plans of a call's tables, the clipping pre-pass, and the
// update split over the thread pool; every task runs a per-target kernel of optim32_simd.cc or
// optim8_simd.cc.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "int_math.h"
#include "optim_kernels.h"
#include "optim_traits.h"
#include "tables.h"

namespace bnb {
namespace cpu {
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
  const int64_t tasks = ceil_div(total, chunk);
  pool.run(tasks, [&](int64_t t) {
    const int64_t begin = t * chunk;
    fn(t, begin, begin + chunk < total ? begin + chunk : total);
  });
}

}  // namespace
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
      std::vector<double> parts(static_cast<size_t>(ceil_div(n, kChunk32)), 0.0);
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
  const int64_t nblocks = ceil_div(n, kOptimBlock);
  if (clip) {
    std::vector<double> parts(static_cast<size_t>(ceil_div(nblocks, kChunkBlocks)), 0.0);
    for_chunks(pool, nblocks, kChunkBlocks, [&](int64_t t, int64_t b, int64_t e) { parts[t] = optim8_unorm(a, b, e); });
    apply_clip(parts);
  }
  for_chunks(pool, nblocks, kChunkBlocks, [&](int64_t, int64_t b, int64_t e) { optim8_update(a, b, e); });
}

}  // namespace cpu
}  // namespace bnb
