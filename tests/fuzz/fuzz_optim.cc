// libFuzzer target: the optimizers (one tensor and many), backend and paged memory, contexts and
// backend queries. See fuzz_common.h for the oracle.
#include "fuzz_common.h"

using namespace bnb_fuzz;

namespace {

constexpr int64_t kOptBlock = 256;  // 8-bit optimizer state blocksize (docs/API.md)

float float_arg(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 7)) {
    case 0: return std::numeric_limits<float>::quiet_NaN();
    case 1: return std::numeric_limits<float>::infinity();
    case 2: return -1.0f;
    case 3: return 0.0f;
    default: return in.ConsumeFloatingPointInRange<float>(0.0f, 1.0f);
  }
}

void fill_params(FuzzedDataProvider& in, bnb_optimizer_params_t& p, int64_t n) {
  bnb_optimizer_params_init(&p);
  p.optimizer = in.PickValueInArray({1, 2, 3, 4, 5, 6, 7, 8, 1, 4, 0, 9, -3});
  p.state_bits = in.PickValueInArray({32, 8, 8, 16, 0});
  p.param_dtype = dtype_arg(in);
  p.n = n;
  p.lr = float_arg(in);
  p.beta1 = float_arg(in);
  p.beta2 = float_arg(in);
  p.beta3 = float_arg(in);
  p.alpha = float_arg(in);
  p.eps = in.ConsumeBool() ? 1e-8f : float_arg(in);
  p.weight_decay = float_arg(in);
  p.gnorm_scale = in.ConsumeBool() ? 1.0f : float_arg(in);
  p.max_unorm = in.ConsumeBool() ? 0.0f : float_arg(in);
  p.param_norm = float_arg(in);
  p.step = in.PickValueInArray<int64_t>({1, 2, 100, 0, -1, std::numeric_limits<int64_t>::max()});
  p.skip_zeros = in.PickValueInArray({0, 1, 2});
  if (in.ConsumeIntegralInRange<int>(0, 31) == 0) p.struct_size = in.ConsumeIntegral<uint32_t>();
}

// The arrays of one tensor's update, sized for its params (32-bit or 8-bit state).
struct Tensor {
  Tensor(FuzzedDataProvider& in, const bnb_optimizer_params_t& p, int64_t n)
      : P(in, n, dtype_bytes(p.param_dtype)),
        G(in, n, dtype_bytes(p.param_dtype)),
        // AdEMAMix keeps two EMAs in state1 (m1 then m2) with their own absmax1 halves
        // (docs/OPTIMIZERS.md): 2n values and 2 x blocks.
        S1(in, mul(n, p.optimizer == BNB_OPT_ADEMAMIX ? 2 : 1), p.state_bits == 8 ? 1 : 4),
        S2(in, n, p.state_bits == 8 ? 1 : 4),
        A1(in, mul(ceil_div(n, kOptBlock), p.optimizer == BNB_OPT_ADEMAMIX ? 2 : 1), 4),
        A2(in, ceil_div(n, kOptBlock), 4),
        Q1(in, 256, 4),
        Q2(in, 256, 4),
        U(in, 1, 4) {
    bnb_optimizer_tensors_init(&t);
    t.p = P.get();
    t.g = G.get();
    t.state1 = S1.get();
    t.state2 = in.ConsumeBool() ? S2.get() : nullptr;
    if (p.state_bits == 8) {
      t.absmax1 = A1.get<float>();
      t.absmax2 = A2.get<float>();
      t.qmap1 = in.ConsumeBool() ? nullptr : Q1.get<float>();
      t.qmap2 = in.ConsumeBool() ? nullptr : Q2.get<float>();
    }
    if (p.max_unorm > 0.0f) t.unorm_vec = U.get<float>();
  }
  Buffer P, G, S1, S2, A1, A2, Q1, Q2, U;
  bnb_optimizer_tensors_t t;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  bnb_context_t ctx = in.ConsumeIntegralInRange<int>(0, 63) == 0 ? nullptr : context();
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
    case 0: {  // bnb_optimizer_update
      const int64_t n = size_arg(in);
      bnb_optimizer_params_t p;
      fill_params(in, p, n);
      Tensor t(in, p, n);
      check(bnb_optimizer_update(ctx, in.ConsumeIntegralInRange<int>(0, 31) ? &p : nullptr,
                                 in.ConsumeIntegralInRange<int>(0, 31) ? &t.t : nullptr, nullptr));
      break;
    }
    case 1: {  // bnb_optimizer_update_multi
      const int32_t count = in.PickValueInArray({1, 2, 3, 0, -1});
      bnb_optimizer_params_t p;
      fill_params(in, p, 0);
      std::vector<int64_t> n;
      std::vector<Tensor*> owned;
      std::vector<bnb_optimizer_tensors_t> ts;
      for (int32_t i = 0; i < count; ++i) {
        n.push_back(size_arg(in, 600));
        owned.push_back(new Tensor(in, p, n.back()));
        ts.push_back(owned.back()->t);
      }
      check(bnb_optimizer_update_multi(ctx, &p, count, ts.empty() ? nullptr : ts.data(),
                                       n.empty() ? nullptr : n.data(), nullptr));
      for (Tensor* t : owned) delete t;
      break;
    }
    case 2: {  // paged memory
      const int64_t bytes = size_arg(in, 1 << 16);
      void* ptr = nullptr;
      const bnb_status_t s = bnb_paged_alloc(ctx, bytes, in.ConsumeIntegralInRange<int>(0, 31) ? &ptr : nullptr);
      check(s);
      if (s == BNB_SUCCESS && ptr != nullptr) {
        const int64_t range = in.ConsumeBool() ? bytes : in.ConsumeBool() ? in.ConsumeIntegralInRange<int64_t>(0, bytes) : -1;
        check(bnb_paged_prefetch(ctx, ptr, range, in.PickValueInArray({0, 1, 2, -1}), nullptr));
        check(bnb_paged_free(ctx, ptr));
      }
      break;
    }
    case 3: {  // backend memory
      const int64_t bytes = size_arg(in, 1 << 16);
      void* ptr = nullptr;
      const bnb_status_t s = bnb_malloc(ctx, bytes, in.ConsumeIntegralInRange<int>(0, 31) ? &ptr : nullptr);
      check(s);
      if (s == BNB_SUCCESS && ptr != nullptr && bytes > 0) {
        std::vector<uint8_t> host(static_cast<size_t>(bytes));
        const int32_t kind = in.PickValueInArray({0, 1, 2, 3, 4, -1});
        // The library cannot know an allocation's size: lengths past it are the caller's error, so
        // only whole, partial and negative lengths are tried.
        const int64_t len = in.ConsumeBool() ? bytes : in.ConsumeBool() ? in.ConsumeIntegralInRange<int64_t>(0, bytes) : -1;
        check(bnb_memcpy(ctx, ptr, host.data(), len, kind, nullptr));
        check(bnb_synchronize(ctx, nullptr));
      }
      if (s == BNB_SUCCESS) check(bnb_free(ctx, ptr));
      break;
    }
    case 4: {  // contexts
      bnb_context_options_t o;
      bnb_context_options_init(&o);
      o.backend = in.PickValueInArray({0, 1, 1, 2, 3, 4, -1});
      o.device = in.PickValueInArray({0, 0, 1, -1, 1 << 20});
      o.num_threads = in.PickValueInArray({0, 1, 2, -1, 4097, 1 << 30});  // 4096 (the cap) costs 4096 threads a run
      if (in.ConsumeIntegralInRange<int>(0, 15) == 0) o.struct_size = in.ConsumeIntegral<uint32_t>();
      bnb_context_t c = nullptr;
      const bnb_status_t s = bnb_context_create(in.ConsumeIntegralInRange<int>(0, 15) ? &o : nullptr,
                                                in.ConsumeIntegralInRange<int>(0, 31) ? &c : nullptr);
      check(s);
      if (s == BNB_SUCCESS && c != nullptr) {
        int32_t kind = 0, device = 0;
        check(bnb_context_get_backend(c, &kind, &device));
        check(bnb_context_destroy(c));
      }
      break;
    }
    default: {  // backend queries
      int32_t count = 0;
      check(bnb_backend_count(&count));
      bnb_backend_info_t info;
      std::memset(&info, 0, sizeof info);
      info.struct_size = in.ConsumeBool() ? sizeof info : in.ConsumeIntegral<uint32_t>();
      const int32_t index = in.PickValueInArray({0, 1, 2, -1, count, 1 << 20});
      const bnb_status_t s = bnb_backend_get_info(index, &info);
      check(s);
      if (s == BNB_SUCCESS && std::memchr(info.detail, '\0', sizeof info.detail) == nullptr) __builtin_trap();
      break;
    }
  }
  return 0;
}
