// The optimizer family of the GPU plugin: bnb_optimizer_update (launchers of optim_kernels.cuh)
// and paged (managed) memory. Asynchronous on the caller's stream; clipping (max_unorm > 0) adds a
// memset and a pre-pass kernel on the same stream, never a host synchronisation.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend_abi.h"
#include "gpu_backend.h"
#include "optim_kernels.cuh"
#include "optim_traits.h"
#include "tables.h"

namespace bnb {
namespace gpu {
namespace {

bool is_two_state(int32_t opt) { return optim_traits(opt).states == 2; }

// Host copy of a code table with its plan's thresholds (bnb::code8_plan, flushed as the device
// computes) and buckets (Optim8Table).
void build_optim8_table(const float* code, Optim8Table* t) {
  std::memset(t, 0, sizeof *t);
  Code8Plan plan;
  code8_plan(code, true, &plan);
  std::memcpy(t->code, code, sizeof t->code);
  std::memcpy(t->thr, plan.t, sizeof t->thr);
  // Every threshold normal, as the bucketed kernel has always required (the built-in tables'
  // are; only they take this path).
  bool normal = true;
  for (int j = 0; j < 255; ++j) normal = normal && std::fabs(plan.t[j]) >= kC8FltMin;
  int most = 0;
  for (int b = 0; b < kC8BinadeBuckets; ++b) {
    float xmin, xmax;
    c8_binade_bucket_range(b, &xmin, &xmax);
    const Code8Bucket e = code8_bucket(plan.t, xmin, xmax);
    most = std::max(most, e.inside);
    c8_binade_bucket_entry(plan.t, e, &t->bucket[b].x, &t->bucket[b].y);
  }
  t->nneg = plan.negative_count;
  t->crowded = most >= 2;
  t->usable = plan.fast && normal && most <= 2;
}

// The bucketed 8-bit tables serve the kernels only while the launch's tables are the built-in
// ones (a null qmap, or the context's own device table).
bool fast8_applies(const GpuContext& ctx, const OptimKernelArgs& a, bool two) {
#if defined(BNB_GPU_HIP)
  (void)ctx;
  (void)a;
  (void)two;
  return false;
#else
  return ctx.optim8_tables != nullptr && a.qmap1 == ctx.tables[BNB_CODE_DYNAMIC_SIGNED] &&
         (!two || a.qmap2 == ctx.tables[BNB_CODE_DYNAMIC_UNSIGNED]);
#endif
}

#if !defined(BNB_GPU_HIP)
// Raises a kernel's dynamic shared-memory limit to `bytes`, once per device (`done` holds one bit
// per device and belongs to the kernel).
template <class Kernel>
bnb_status_t raise_smem_once(Kernel kernel, size_t bytes, int device, std::atomic<uint64_t>& done) {
  const uint64_t bit = uint64_t{1} << (device & 63);
  if ((done.load(std::memory_order_relaxed) & bit) != 0) return BNB_SUCCESS;
  const bnb_status_t st = check(gpuFuncSetAttribute(kernel, gpuFuncAttributeMaxDynamicSharedMemorySize,
                                                     static_cast<int>(bytes)),
                                "raising the optimizer kernel's shared memory");
  if (st == BNB_SUCCESS) done.fetch_or(bit, std::memory_order_relaxed);
  return st;
}

// Shared memory of the bucketed 8-bit kernels: one table (DYN8S), or two with DYN8U.
template <int OPT>
constexpr size_t opt8_smem() {
  return optim_traits(OPT).states * sizeof(Optim8Table);
}

// A persistent grid of warps, one 256-element block at a time, for `blocks` blocks.
template <int D, int OPT>
int64_t opt8_grid(const GpuContext& ctx, int64_t blocks) {
  const int64_t warps_per_cta = kOpt8FastThreads / 32;
  const int64_t grid = (blocks + warps_per_cta - 1) / warps_per_cta;
  return std::min<int64_t>(grid, static_cast<int64_t>(opt8_fast_blocks_per_sm<D, OPT>()) * ctx.sm_count);
}
#endif

// The fast kernel's 16-byte (fp32) or 8-byte p/g and 4-byte code accesses are aligned for this
// tensor (AdEMAMix also needs n % 4 == 0 for its second state's codes at c1 + n).
bool opt8_vec(bool f32, int32_t opt, const OptimKernelArgs& a) {
  const size_t need = f32 ? 16 : 8;
  auto aligned = [](const void* ptr, size_t to) { return reinterpret_cast<uintptr_t>(ptr) % to == 0; };
  const bool two = optim_traits(opt).states == 2;
  bool vec = aligned(a.p, need) && aligned(a.g, need) && aligned(a.c1, 4) && (!two || aligned(a.c2, 4));
  if (optim_traits(opt).state1_copies == 2) vec = vec && a.n % 4 == 0;
  return vec;
}

template <int D, int OPT>
bnb_status_t launch8_fast(const GpuContext& ctx, const OptimKernelArgs& a, gpuStream_t s) {
#if defined(BNB_GPU_HIP)
  (void)ctx;
  (void)a;
  (void)s;
  return fail(BNB_ERR_INTERNAL, "the bucketed 8-bit optimizer kernel is CUDA only");
#else
  static std::atomic<uint64_t> configured{0};
  const bnb_status_t st = raise_smem_once(optim8_fast_kernel<D, OPT>, opt8_smem<OPT>(), ctx.device, configured);
  if (st != BNB_SUCCESS) return st;
  const bool vec = opt8_vec(D == kF32, OPT, a);
  const int64_t grid = opt8_grid<D, OPT>(ctx, (a.n + 255) / 256);
  const auto* tables = static_cast<const Optim8Table*>(ctx.optim8_tables);
  optim8_fast_kernel<D, OPT><<<static_cast<unsigned>(grid), kOpt8FastThreads, opt8_smem<OPT>(), s>>>(a, tables,
                                                                                                    vec ? 1 : 0);
  return check_launch("optim8_fast_kernel");
#endif
}

template <int D, int OPT>
bnb_status_t launch32(const GpuContext& ctx, const OptimKernelArgs& a, bool unorm, gpuStream_t s) {
  const int64_t grid = persistent_grid(ctx, 8, (a.n + kOptimThreads - 1) / kOptimThreads);
  if (unorm) {
    if constexpr (optim_traits(OPT).clipping) {
      const int64_t ugrid = persistent_grid(ctx, 4, (a.n + kUnormTile - 1) / kUnormTile);
      optim32_unorm_kernel<D, OPT><<<static_cast<unsigned>(ugrid), kUnormThreads, 0, s>>>(a);
      return check_launch("optim32_unorm_kernel");
    }
    return BNB_SUCCESS;
  }
  optim32_kernel<D, OPT><<<static_cast<unsigned>(grid), kOptimThreads, 0, s>>>(a);
  return check_launch("optim32_kernel");
}

template <int D, int OPT>
bnb_status_t launch8(const GpuContext& ctx, const OptimKernelArgs& a, bool unorm, gpuStream_t s) {
  const int64_t nblocks = (a.n + 255) / 256;
  const int64_t grid = persistent_grid(ctx, 8, (nblocks + kOptimTileBlocks - 1) / kOptimTileBlocks);
  if (unorm) {
    if constexpr (optim_traits(OPT).clipping) {
      optim8_kernel<D, OPT, true><<<static_cast<unsigned>(grid), kOptimThreads, 0, s>>>(a);
      return check_launch("optim8_kernel (update norm)");
    }
    return BNB_SUCCESS;
  }
  if (fast8_applies(ctx, a, optim_traits(OPT).states == 2)) return launch8_fast<D, OPT>(ctx, a, s);
  optim8_kernel<D, OPT, false><<<static_cast<unsigned>(grid), kOptimThreads, 0, s>>>(a);
  return check_launch("optim8_kernel");
}

// The explicit whitelist of instantiations: 3 dtypes x the kernels of optim_traits.h x {32, 8} bits.
template <int D>
bnb_status_t dispatch_opt(const GpuContext& ctx, int32_t opt, bool eight, const OptimKernelArgs& a, bool unorm,
                          gpuStream_t s) {
  return with_optim_kernel(
      opt,
      [&](auto kernel) {
        constexpr int OPT = decltype(kernel)::value;
        return eight ? launch8<D, OPT>(ctx, a, unorm, s) : launch32<D, OPT>(ctx, a, unorm, s);
      },
      [&] { return fail(BNB_ERR_INTERNAL, "optimizer %d has no kernel", opt); });
}

bnb_status_t dispatch(const GpuContext& ctx, int32_t dtype, int32_t opt, bool eight, const OptimKernelArgs& a,
                      bool unorm, gpuStream_t s) {
  return with_dtype(dtype, "optimizer_update",
                    [&](auto d) { return dispatch_opt<decltype(d)::value>(ctx, opt, eight, a, unorm, s); });
}

// The launch arguments of one tensor (n from params->n unless given).
OptimKernelArgs kernel_args(const GpuContext& ctx, const bnb_optimizer_params_t& P, const bnb_optimizer_tensors_t& T,
                            int64_t n) {
  const bool eight = P.state_bits == 8;
  const bool two = is_two_state(P.optimizer);
  OptimKernelArgs a{};
  a.p = T.p;
  a.g = T.g;
  if (eight) {
    a.c1 = static_cast<uint8_t*>(T.state1);
    a.c2 = two ? static_cast<uint8_t*>(T.state2) : nullptr;
    a.absmax1 = T.absmax1;
    a.absmax2 = two ? T.absmax2 : nullptr;
    a.qmap1 = T.qmap1 != nullptr ? T.qmap1 : ctx.tables[BNB_CODE_DYNAMIC_SIGNED];
    a.qmap2 = T.qmap2 != nullptr ? T.qmap2 : ctx.tables[BNB_CODE_DYNAMIC_UNSIGNED];
  } else {
    a.s1 = static_cast<float*>(T.state1);
    a.s2 = two ? static_cast<float*>(T.state2) : nullptr;
  }
  a.unorm_vec = T.unorm_vec;
  a.n = n;
  a.lr = P.lr;
  a.beta1 = P.beta1;
  a.beta2 = P.beta2;
  a.beta3 = P.beta3;
  a.alpha = P.alpha;
  a.eps = P.eps;
  a.weight_decay = P.weight_decay;
  a.gnorm_scale = P.gnorm_scale;
  a.max_unorm = P.max_unorm;
  a.param_norm = P.param_norm;
  a.step = static_cast<float>(P.step);
  a.first_step = P.step == 1;
  a.skip_zeros = P.skip_zeros != 0;
  a.two_state_limit = two;
  return a;
}

bnb_status_t op_optimizer_update(void* impl, const bnb_optimizer_params_t* params,
                                 const bnb_optimizer_tensors_t* tensors, void* stream) {
  const auto* ctx = static_cast<const GpuContext*>(impl);
  const bnb_optimizer_params_t& P = *params;
  const bnb_optimizer_tensors_t& T = *tensors;
  DeviceGuard guard(ctx->device);
  const gpuStream_t s = static_cast<gpuStream_t>(stream);
  const bool eight = P.state_bits == 8;
  OptimKernelArgs a = kernel_args(*ctx, P, T, P.n);
  const int32_t opt = P.optimizer;
  if (P.max_unorm > 0.0f) {
    // unorm_vec[0] = 0, then the sum of squares of the update (docs/OPS.md §6.4), then the update reads it.
    bnb_status_t st = check(gpuMemsetAsync(T.unorm_vec, 0, sizeof(float), s), "clearing unorm_vec");
    if (st != BNB_SUCCESS) return st;
    st = dispatch(*ctx, P.param_dtype, opt, eight, a, true, s);
    if (st != BNB_SUCCESS) return st;
    a.clip = 1;
  }
  return dispatch(*ctx, P.param_dtype, opt, eight, a, false, s);
}

// ---------------------------------------------------------------- many tensors per launch

template <int D, int OPT>
bnb_status_t launch_multi(const GpuContext& ctx, bool eight, const OptimMultiArgs& m, gpuStream_t s) {
  if (!eight) {
    const int64_t grid = persistent_grid(ctx, 8, m.units);
    optim32_multi_kernel<D, OPT><<<static_cast<unsigned>(grid), kOptimThreads, 0, s>>>(m);
    return check_launch("optim32_multi_kernel");
  }
#if defined(BNB_GPU_HIP)
  return fail(BNB_ERR_INTERNAL, "the multi-tensor 8-bit optimizer kernel is CUDA only");
#else
  static std::atomic<uint64_t> configured{0};
  const bnb_status_t st = raise_smem_once(optim8_fast_multi_kernel<D, OPT>, opt8_smem<OPT>(), ctx.device, configured);
  if (st != BNB_SUCCESS) return st;
  const auto* tables = static_cast<const Optim8Table*>(ctx.optim8_tables);
  optim8_fast_multi_kernel<D, OPT><<<static_cast<unsigned>(opt8_grid<D, OPT>(ctx, m.units)), kOpt8FastThreads,
                                     opt8_smem<OPT>(), s>>>(m, tables);
  return check_launch("optim8_fast_multi_kernel");
#endif
}

template <int D>
bnb_status_t dispatch_multi_opt(const GpuContext& ctx, int32_t opt, bool eight, const OptimMultiArgs& m,
                                gpuStream_t s) {
  return with_optim_kernel(
      opt, [&](auto kernel) { return launch_multi<D, decltype(kernel)::value>(ctx, eight, m, s); },
      [&] { return fail(BNB_ERR_INTERNAL, "optimizer %d has no multi-tensor kernel", opt); });
}

bnb_status_t dispatch_multi(const GpuContext& ctx, int32_t dtype, int32_t opt, bool eight, const OptimMultiArgs& m,
                            gpuStream_t s) {
  return with_dtype(dtype, "optimizer_update_multi",
                    [&](auto d) { return dispatch_multi_opt<decltype(d)::value>(ctx, opt, eight, m, s); });
}

// Groups the tensors into launches of up to kOptimMultiMax. A tensor the multi kernels cannot
// take (8-bit with its own code tables, or on HIP) gets its own bnb_optimizer_update launch.
// The core has checked every tensor and that max_unorm == 0.
bnb_status_t op_optimizer_update_multi(void* impl, const bnb_optimizer_params_t* params, int32_t count,
                                       const bnb_optimizer_tensors_t* tensors, const int64_t* n, void* stream) {
  const auto* ctx = static_cast<const GpuContext*>(impl);
  const bnb_optimizer_params_t& P = *params;
  DeviceGuard guard(ctx->device);
  const gpuStream_t s = static_cast<gpuStream_t>(stream);
  const bool eight = P.state_bits == 8;
  const bool two = is_two_state(P.optimizer);
  const int32_t opt = P.optimizer;
  OptimMultiArgs m;
  std::memset(&m, 0, sizeof m);
  m.a = kernel_args(*ctx, P, tensors[0], n[0]);
  auto flush = [&]() -> bnb_status_t {
    if (m.count == 0) return BNB_SUCCESS;
    const bnb_status_t st = dispatch_multi(*ctx, P.param_dtype, opt, eight, m, s);
    m.count = 0;
    m.units = 0;
    return st;
  };
  bnb_optimizer_params_t one = P;
  for (int32_t i = 0; i < count; ++i) {
    const bnb_optimizer_tensors_t& T = tensors[i];
    const OptimKernelArgs a = kernel_args(*ctx, P, T, n[i]);
    if (eight && !fast8_applies(*ctx, a, two)) {
      one.n = n[i];
      const bnb_status_t st = op_optimizer_update(impl, &one, &T, stream);
      if (st != BNB_SUCCESS) return st;
      continue;
    }
    OptimMultiEntry& e = m.t[m.count];
    e.p = a.p;
    e.g = a.g;
    e.state1 = T.state1;
    e.state2 = two ? T.state2 : nullptr;
    e.absmax1 = eight ? a.absmax1 : nullptr;
    e.absmax2 = eight ? a.absmax2 : nullptr;
    e.n = n[i];
    e.first = m.units;
    e.vec = eight && opt8_vec(P.param_dtype == BNB_F32, opt, a) ? 1 : 0;
    if (eight) {
      m.units += (n[i] + 255) / 256;
    } else {
      m.units += (n[i] + kOptim32Unit - 1) / kOptim32Unit;
    }
    if (++m.count == kOptimMultiMax) {
      const bnb_status_t st = flush();
      if (st != BNB_SUCCESS) return st;
    }
  }
  return flush();
}

// ---------------------------------------------------------------- paged (managed) memory

bnb_status_t op_paged_alloc(void* impl, int64_t bytes, void** ptr) {
  const auto* ctx = static_cast<const GpuContext*>(impl);
  DeviceGuard guard(ctx->device);
  *ptr = nullptr;
  gpuError_t err = gpuMallocManaged(ptr, static_cast<size_t>(bytes));
  if (err != gpuSuccess) {
    (void)gpuGetLastError();
    *ptr = nullptr;
    return fail(BNB_ERR_OUT_OF_MEMORY, "allocating %lld bytes of managed memory failed (%s)",
                static_cast<long long>(bytes), gpuGetErrorString(err));
  }
  // Zero-filled, as the reference hands out fresh optimizer state.
  err = gpuMemset(*ptr, 0, static_cast<size_t>(bytes));
  if (err == gpuSuccess) err = gpuStreamSynchronize(nullptr);
  if (err != gpuSuccess) {
    (void)gpuFree(*ptr);
    *ptr = nullptr;
    return check(err, "zero-filling managed memory");
  }
  return BNB_SUCCESS;
}

bnb_status_t op_paged_free(void* impl, void* ptr) {
  const auto* ctx = static_cast<const GpuContext*>(impl);
  DeviceGuard guard(ctx->device);
  forget_pointer_kinds();
  return check(gpuFree(ptr), "freeing managed memory");
}

// Moves the pages to the device (or the host) ahead of use; a no-op where the device cannot
// access managed memory concurrently (the driver migrates on demand there).
bnb_status_t op_paged_prefetch(void* impl, void* ptr, int64_t bytes, int32_t to_device, void* stream) {
  const auto* ctx = static_cast<const GpuContext*>(impl);
  DeviceGuard guard(ctx->device);
  const gpuStream_t s = static_cast<gpuStream_t>(stream);
  int concurrent = 0;
  if (gpuDeviceGetAttribute(&concurrent, gpuDevAttrConcurrentManagedAccess, ctx->device) != gpuSuccess ||
      !concurrent) {
    (void)gpuGetLastError();
    return BNB_SUCCESS;
  }
  return check(gpu_prefetch_managed(ptr, static_cast<size_t>(bytes), to_device ? ctx->device : -1, s),
               "prefetching managed memory");
}

}  // namespace

bnb_status_t optim_context_init(GpuContext* ctx) {
  ctx->optim8_tables = nullptr;
#if !defined(BNB_GPU_HIP)
  std::vector<Optim8Table> host(2);
  float code[256];
  copy_code_table(BNB_CODE_DYNAMIC_SIGNED, code);
  build_optim8_table(code, &host[0]);
  copy_code_table(BNB_CODE_DYNAMIC_UNSIGNED, code);
  build_optim8_table(code, &host[1]);
  if (!host[0].usable || !host[1].usable) return BNB_SUCCESS;  // the search kernel then
  void* dev = nullptr;
  const size_t bytes = host.size() * sizeof(Optim8Table);
  bnb_status_t st = check(gpuMalloc(&dev, bytes), "allocating the 8-bit optimizer tables");
  if (st == BNB_SUCCESS) st = check(gpuMemcpy(dev, host.data(), bytes, gpuMemcpyHostToDevice), "copying the 8-bit optimizer tables");
  if (st != BNB_SUCCESS) {
    if (dev != nullptr) (void)gpuFree(dev);
    return st;
  }
  ctx->optim8_tables = dev;
#endif
  return BNB_SUCCESS;
}

void optim_context_free(GpuContext* ctx) {
  if (ctx->optim8_tables != nullptr) (void)gpuFree(ctx->optim8_tables);
  ctx->optim8_tables = nullptr;
}

void register_optim_ops(bnb_backend_ops_t* ops) {
  // The kernels take t as a binary32 exponent (__powf(beta, t)): exact up to 2^24. The core checks it.
  ops->optimizer_max_step = int64_t{1} << 24;
  ops->optimizer_update = op_optimizer_update;
  ops->optimizer_update_multi = op_optimizer_update_multi;
  ops->paged_alloc = op_paged_alloc;
  ops->paged_free = op_paged_free;
  ops->paged_prefetch = op_paged_prefetch;
}

}  // namespace gpu
}  // namespace bnb
