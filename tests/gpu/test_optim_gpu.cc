// The CUDA/HIP optimizers: the golden optimizer cases bit for bit (docs/OPS.md §6.1: the kernels evaluate
// with the reference's fast-math operations), one step from random states against the CPU
// backend for every optimizer x bits x dtype, paged (managed) state, and clipping. Skips cleanly
// without a GPU; BNB_GPU_TESTS_ON_CPU=1 runs it on the CPU backend as a harness self-check (the
// bit-exact golden expectations are then reported, not asserted).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../unit/optim_test_util.h"
#include "golden.h"
#include "util.h"

using namespace bnb_test;

namespace {

bool harness_check() {
  const char* e = std::getenv("BNB_GPU_TESTS_ON_CPU");
  return e != nullptr && e[0] == '1';
}

int32_t gpu_kind() {
  if (harness_check()) return BNB_BACKEND_CPU;
  for (int32_t k : available_backends())
    if (k == BNB_BACKEND_CUDA || k == BNB_BACKEND_HIP) return k;
  return 0;
}

#define SKIP_WITHOUT_GPU()                                                       \
  const int32_t kind = gpu_kind();                                               \
  if (kind == 0) GTEST_SKIP() << "no GPU backend available";                     \
  Context gpu(kind);                                                             \
  ASSERT_TRUE(gpu.ok()) << bnb_last_error_message()

constexpr int32_t kAllOptims[] = {BNB_OPT_ADAM,    BNB_OPT_MOMENTUM, BNB_OPT_RMSPROP, BNB_OPT_LION,
                                  BNB_OPT_ADAGRAD, BNB_OPT_ADEMAMIX, BNB_OPT_LAMB,    BNB_OPT_LARS};

double json_number(const std::string& text, const std::string& key, int index = 0, double fallback = NAN) {
  const std::string needle = "\"" + key + "\":";
  size_t pos = text.find(needle);
  if (pos == std::string::npos) return fallback;
  pos += needle.size();
  while (pos < text.size() && (text[pos] == ' ' || text[pos] == '[')) ++pos;
  for (int i = 0; i < index; ++i) {
    pos = text.find(',', pos);
    if (pos == std::string::npos) return fallback;
    ++pos;
  }
  return std::strtod(text.c_str() + pos, nullptr);
}

int32_t golden_optimizer(const std::string& name) {
  if (name == "adam" || name == "adamw") return BNB_OPT_ADAM;
  if (name == "lamb") return BNB_OPT_LAMB;
  if (name == "sgd_momentum") return BNB_OPT_MOMENTUM;
  if (name == "lars") return BNB_OPT_LARS;
  if (name == "rmsprop") return BNB_OPT_RMSPROP;
  if (name == "lion") return BNB_OPT_LION;
  if (name == "adagrad") return BNB_OPT_ADAGRAD;
  if (name == "ademamix") return BNB_OPT_ADEMAMIX;
  return 0;
}

bnb_optimizer_params_t golden_params(const GoldenCase& c, int32_t opt) {
  const std::string hyper = c.params.at("hyper");
  bnb_optimizer_params_t p = default_optim_params(opt);
  p.lr = static_cast<float>(json_number(hyper, "lr"));
  if (opt == BNB_OPT_MOMENTUM || opt == BNB_OPT_LARS) {
    p.beta1 = static_cast<float>(json_number(hyper, "momentum"));
  } else if (opt == BNB_OPT_RMSPROP) {
    p.beta1 = static_cast<float>(json_number(hyper, "alpha"));
  } else if (opt != BNB_OPT_ADAGRAD) {
    p.beta1 = static_cast<float>(json_number(hyper, "betas", 0));
    p.beta2 = static_cast<float>(json_number(hyper, "betas", 1));
    if (opt == BNB_OPT_ADEMAMIX) {
      p.beta3 = static_cast<float>(json_number(hyper, "betas", 2));
      p.alpha = static_cast<float>(json_number(hyper, "alpha"));
    }
  }
  p.eps = static_cast<float>(json_number(hyper, "eps", 0, p.eps));
  p.weight_decay = static_cast<float>(json_number(hyper, "weight_decay", 0, p.weight_decay));
  return p;
}

int64_t count_bytes_differ(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, size_t elem) {
  int64_t d = 0;
  for (size_t i = 0; i + elem <= std::min(a.size(), b.size()); i += elem)
    if (std::memcmp(&a[i], &b[i], elem) != 0) ++d;
  return d;
}

}  // namespace

// Every golden case, bit for bit: p after each valid step and the final states. The known
// exception (docs/OPS.md §6.4): with clipping (LAMB, LARS) update_scale depends on the summation order of
// the update norm, and one ulp of it moves about 0.3 % of p by one ulp (allowed: 1 %).
TEST(OptimGpu, GoldenBitExact) {
  SKIP_WITHOUT_GPU();
  const auto cases = load_golden("optimizer", "cuda");
  if (cases.empty()) GTEST_SKIP() << "no golden vectors at " << golden_dir();
  std::printf("%-15s %-9s %-28s %s\n", "class", "dtype", "p bits differing per step", "states differing");
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.label());
    const int32_t opt = golden_optimizer(c.param_string("name"));
    ASSERT_NE(opt, 0);
    const int32_t bits = static_cast<int32_t>(c.param_int("bits"));
    const int32_t dtype = dtype_from_name(c.param_string("param_dtype"));
    const GoldenArray& p0 = c.inputs.at("p0");
    const int64_t n = p0.numel();
    const int64_t steps = c.valid_steps > 0 ? c.valid_steps : c.param_int("steps");
    const bool clipped = opt == BNB_OPT_LARS || opt == BNB_OPT_LAMB;
    OptimTensor t(gpu, opt, bits, dtype, n);
    t.set_p_bytes(p0.bytes);
    std::string per_step;
    for (int64_t step = 1; step <= steps; ++step) {
      bnb_optimizer_params_t params = golden_params(c, opt);
      params.step = step;
      if (params.max_unorm > 0.0f) params.param_norm = l2_norm(t.p());
      ASSERT_BNB_OK(t.step_bytes(params, c.inputs.at("g_step" + std::to_string(step)).bytes));
      const int64_t diff = count_bytes_differ(t.p_bytes(), c.outputs.at("p_step" + std::to_string(step)).bytes,
                                              dtype_size(dtype));
      per_step += std::to_string(diff) + " ";
      if (!harness_check()) {
        EXPECT_LE(diff, clipped ? n / 100 : 0) << "step " << step;
      }
    }
    int64_t state_diff = 0;
    if (steps == c.param_int("steps")) {
      const size_t es = bits == 8 ? 1 : 4;
      auto s1 = bits == 8 ? t.state1_codes() : [&] {
        const auto f = t.state1_f32();
        std::vector<uint8_t> b(f.size() * 4);
        std::memcpy(b.data(), f.data(), b.size());
        return b;
      }();
      state_diff += count_bytes_differ(s1, c.outputs.at("state1").bytes, es);
      if (optim_two_states(opt)) {
        auto s2 = bits == 8 ? t.state2_codes() : [&] {
          const auto f = t.state2_f32();
          std::vector<uint8_t> b(f.size() * 4);
          std::memcpy(b.data(), f.data(), b.size());
          return b;
        }();
        state_diff += count_bytes_differ(s2, c.outputs.at("state2").bytes, es);
      }
      if (bits == 8) {
        auto a1 = t.absmax1();
        std::vector<uint8_t> b1(a1.size() * 4);
        std::memcpy(b1.data(), a1.data(), b1.size());
        state_diff += count_bytes_differ(b1, c.outputs.at("absmax1").bytes, 4);
      }
      if (!harness_check()) {
        EXPECT_LE(state_diff, clipped ? n / 100 : 0);
      }
    }
    std::printf("%-15s %-9s %-28s %lld\n", c.param_string("class").c_str(), c.param_string("param_dtype").c_str(),
                per_step.c_str(), static_cast<long long>(state_diff));
  }
}

// One step from the same random state on the GPU and the CPU backend. Bounds: fp32 p within
// 5e-6 relative + 1e-6 lr, plus 1e-4 of the update |p_new - p_old| (kUpdateRel below: the GPU's
// fast-math POW/RCP/SQRT, docs/OPS.md §6.1); fp16/bf16 p within one ulp; 8-bit codes equal or adjacent
// (<= 0.5 %); absmax within 1e-5; 32-bit states within 1e-5.
TEST(OptimGpu, OneStepMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Context cpu(BNB_BACKEND_CPU);
  ASSERT_TRUE(cpu.ok()) << bnb_last_error_message();
  const int64_t n = 5000;  // partial last block
  const int64_t nb = (n + 255) / 256;
  std::mt19937 rng(11);
  for (int32_t opt : kAllOptims) {
    for (int32_t bits : {32, 8}) {
      for (int32_t dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
        for (int64_t step : {1, 7}) {
          SCOPED_TRACE(std::string(optim_name(opt)) + " bits " + std::to_string(bits) + " dtype " +
                       std::to_string(dtype) + " step " + std::to_string(step));
          bnb_optimizer_params_t P = default_optim_params(opt);
          P.step = step;
          P.weight_decay = 0.02f;
          P.gnorm_scale = 0.75f;
          const std::vector<float> p = from_dtype(to_dtype(random_normal(n, 30 + step, 1.0f), dtype), dtype);
          std::vector<float> g = random_normal(n, 40 + step, 0.1f);
          for (int64_t i = 0; i < n; i += 31) g[i] = 0.0f;
          P.param_norm = l2_norm(p);
          const int64_t copies = opt == BNB_OPT_ADEMAMIX ? 2 : 1;
          OptimTensor tg(gpu, opt, bits, dtype, n), tc(cpu, opt, bits, dtype, n);
          tg.set_p(p);
          tc.set_p(p);
          if (bits == 8) {
            std::vector<uint8_t> c1(n * copies), c2(n);
            std::vector<float> a1(nb * copies), a2(nb);
            for (auto& c : c1) c = static_cast<uint8_t>(rng() & 255);
            for (auto& c : c2) c = static_cast<uint8_t>(128 + (rng() & 127));
            for (auto& a : a1) a = 0.01f + 0.001f * static_cast<float>(rng() % 100);
            for (auto& a : a2) a = 1e-4f + 1e-5f * static_cast<float>(rng() % 100);
            if (opt == BNB_OPT_RMSPROP || opt == BNB_OPT_ADAGRAD)  // non-negative states
              for (auto& c : c1) c = static_cast<uint8_t>(128 + (c & 127));
            for (OptimTensor* t : {&tg, &tc}) {
              t->set_state1_codes(c1);
              t->set_absmax1(a1);
              if (optim_two_states(opt)) {
                t->set_state2_codes(c2);
                t->set_absmax2(a2);
              }
            }
          } else {
            std::vector<float> s1 = random_normal(n * copies, 50, 0.01f), s2 = random_normal(n, 51, 1e-4f);
            for (auto& v : s2) v = std::fabs(v);
            if (opt == BNB_OPT_RMSPROP || opt == BNB_OPT_ADAGRAD)
              for (auto& v : s1) v = std::fabs(v);
            for (OptimTensor* t : {&tg, &tc}) {
              t->set_state1_f32(s1);
              if (optim_two_states(opt)) t->set_state2_f32(s2);
            }
          }
          ASSERT_BNB_OK(tg.step(P, g));
          ASSERT_BNB_OK(tc.step(P, g));
          const std::vector<float> pg = tg.p(), pc = tc.p();
          // The GPU evaluates beta^t with the reference's POW (docs/OPS.md §6.1: up to 3 ulps above
          // RN32(beta^t) for t <= 3), the CPU exactly. 1 - beta2^t cancels: one ulp of
          // POW(0.999, 1) (6e-8) moves 1 - beta2^t by 6e-5 and c2 = sqrt(.) by 3e-5 relative, so
          // the Adam/LAMB/AdEMAMix update (proportional to c2, or to 1/c2's reciprocal) differs by
          // a few 1e-5 of itself (measured on the H100: up to 2.6e-5); RCP/SQRT/div.approx add a few
          // ulps. Bound: 1e-4 of the update, i.e. about three ulps of POW at t = 1.
          constexpr double kUpdateRel = 1e-4;
          int64_t bad = 0;
          for (int64_t i = 0; i < n; ++i) {
            const double mag = std::max(std::fabs(pc[i]), 1e-3f);
            const double upd = std::fabs(static_cast<double>(pc[i]) - static_cast<double>(p[i]));
            const double tol = dtype == BNB_F32 ? 5e-6 * mag + 1e-6 * P.lr + kUpdateRel * upd
                                                : std::ldexp(1.0, std::ilogb(mag) - (dtype == BNB_F16 ? 10 : 7));
            if (!(std::fabs(pg[i] - pc[i]) <= tol) && bad++ < 3) {
              ADD_FAILURE() << "p[" << i << "] gpu " << pg[i] << " cpu " << pc[i];
            }
          }
          if (bits == 8) {
            auto check_codes = [&](const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, const char* what) {
              int64_t d = 0;
              for (size_t i = 0; i < a.size(); ++i) {
                if (a[i] == b[i]) continue;
                ++d;
                EXPECT_EQ(std::abs(int(a[i]) - int(b[i])), 1) << what << "[" << i << "]";
              }
              EXPECT_LE(d, static_cast<int64_t>(a.size()) / 200) << what;
            };
            check_codes(tg.state1_codes(), tc.state1_codes(), "state1");
            const auto ag = tg.absmax1(), ac = tc.absmax1();
            for (size_t b = 0; b < ag.size(); ++b) EXPECT_NEAR(ag[b], ac[b], 1e-5 * ac[b]) << "absmax1[" << b << "]";
            if (optim_two_states(opt)) {
              check_codes(tg.state2_codes(), tc.state2_codes(), "state2");
              const auto bg = tg.absmax2(), bc = tc.absmax2();
              for (size_t b = 0; b < bg.size(); ++b) EXPECT_NEAR(bg[b], bc[b], 1e-5 * bc[b]) << "absmax2[" << b << "]";
            }
          } else {
            const auto sg = tg.state1_f32(), sc = tc.state1_f32();
            for (size_t i = 0; i < sg.size(); ++i)
              ASSERT_NEAR(sg[i], sc[i], 1e-5 * std::fabs(sc[i]) + 1e-9) << "state1[" << i << "]";
          }
        }
      }
    }
  }
}

// Paged (managed) state gives the same bits as device state.
TEST(OptimGpu, PagedStateMatchesDeviceState) {
  SKIP_WITHOUT_GPU();
  const int64_t n = 100000;
  const int64_t nb = (n + 255) / 256;
  const std::vector<float> p0 = random_normal(n, 61, 1.0f);
  std::vector<std::vector<float>> grads;
  for (int s = 0; s < 3; ++s) grads.push_back(random_normal(n, 70 + s, 0.1f));
  // Reference: device state.
  OptimTensor t(gpu, BNB_OPT_ADAM, 8, BNB_F32, n);
  t.set_p(p0);
  bnb_optimizer_params_t P = default_optim_params(BNB_OPT_ADAM);
  for (int s = 0; s < 3; ++s) {
    P.step = s + 1;
    ASSERT_BNB_OK(t.step(P, grads[s]));
  }
  // Paged: p, g device; states and scales managed.
  Buffer p(gpu, n * 4), g(gpu, n * 4);
  p.upload(p0.data(), n * 4);
  void *s1 = nullptr, *s2 = nullptr, *a1 = nullptr, *a2 = nullptr;
  ASSERT_BNB_OK(bnb_paged_alloc(gpu.get(), n, &s1));
  ASSERT_BNB_OK(bnb_paged_alloc(gpu.get(), n, &s2));
  ASSERT_BNB_OK(bnb_paged_alloc(gpu.get(), nb * 4, &a1));
  ASSERT_BNB_OK(bnb_paged_alloc(gpu.get(), nb * 4, &a2));
  for (int s = 0; s < 3; ++s) {
    ASSERT_BNB_OK(bnb_paged_prefetch(gpu.get(), s1, n, 1, nullptr));
    ASSERT_BNB_OK(bnb_paged_prefetch(gpu.get(), s2, n, 1, nullptr));
    g.upload(grads[s].data(), n * 4);
    bnb_optimizer_params_t Q = P;
    Q.step = s + 1;
    Q.n = n;
    Q.state_bits = 8;
    bnb_optimizer_tensors_t x;
    bnb_optimizer_tensors_init(&x);
    x.p = p.get();
    x.g = g.get();
    x.state1 = s1;
    x.state2 = s2;
    x.absmax1 = static_cast<float*>(a1);
    x.absmax2 = static_cast<float*>(a2);
    ASSERT_BNB_OK(bnb_optimizer_update(gpu.get(), &Q, &x, nullptr));
    ASSERT_BNB_OK(bnb_paged_prefetch(gpu.get(), s1, n, 0, nullptr));
    ASSERT_BNB_OK(bnb_synchronize(gpu.get(), nullptr));
  }
  EXPECT_EQ(p.download(), t.p_bytes());
  // Managed memory is readable from the host after a synchronize.
  const auto codes = t.state1_codes();
  EXPECT_EQ(std::memcmp(s1, codes.data(), static_cast<size_t>(n)), 0);
  for (void* ptr : {s1, s2, a1, a2}) ASSERT_BNB_OK(bnb_paged_free(gpu.get(), ptr));
}

// The GPU kernels take the step as a binary32 exponent: the plugin reports 2^24 as its largest
// step, the capabilities say so, and the core refuses the next step by name before any launch.
TEST(OptimGpu, StepLimitIsReportedAndChecked) {
  SKIP_WITHOUT_GPU();
  if (kind == BNB_BACKEND_CPU) GTEST_SKIP() << "the CPU backend has no step limit";
  bnb_backend_capabilities_t caps;
  caps.struct_size = sizeof caps;
  ASSERT_BNB_OK(bnb_backend_get_capabilities(kind - 1, &caps));
  EXPECT_EQ(caps.optimizer_max_step, int64_t{1} << 24);
  EXPECT_EQ(caps.ops, (uint64_t{1} << (BNB_OP_INT8_LINEAR_OUTLIERS + 1)) - 1);  // every op (the last in bnb_op_t)
  const int64_t n = 1000;
  OptimTensor t(gpu, BNB_OPT_ADAM, 32, BNB_F32, n);
  t.set_p(random_normal(n, 5, 1.0f));
  bnb_optimizer_params_t P = default_optim_params(BNB_OPT_ADAM);
  P.step = caps.optimizer_max_step;
  ASSERT_BNB_OK(t.step(P, random_normal(n, 6, 0.1f)));
  P.step = caps.optimizer_max_step + 1;
  EXPECT_EQ(t.step(P, random_normal(n, 7, 0.1f)), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(bnb_last_error_message()).find("largest step 16777216"), std::string::npos)
      << bnb_last_error_message();
}

// Clipping runs its norm pre-pass on the device: unorm_vec holds the sum of squares, and the
// update equals the CPU's within the bounds above.
TEST(OptimGpu, ClippingMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Context cpu(BNB_BACKEND_CPU);
  ASSERT_TRUE(cpu.ok());
  const int64_t n = 70000;
  for (int32_t opt : {BNB_OPT_LAMB, BNB_OPT_LARS, BNB_OPT_RMSPROP}) {
    for (int32_t bits : {32, 8}) {
      SCOPED_TRACE(std::string(optim_name(opt)) + " bits " + std::to_string(bits));
      bnb_optimizer_params_t P = default_optim_params(opt);
      if (P.max_unorm == 0.0f) P.max_unorm = 0.001f;
      const std::vector<float> p = random_normal(n, 80, 1.0f);
      OptimTensor tg(gpu, opt, bits, BNB_F32, n), tc(cpu, opt, bits, BNB_F32, n);
      tg.set_p(p);
      tc.set_p(p);
      for (int64_t step = 1; step <= 3; ++step) {
        P.step = step;
        P.param_norm = l2_norm(tc.p());
        const std::vector<float> g = random_normal(n, 90 + step, 0.1f);
        ASSERT_BNB_OK(tg.step(P, g));
        ASSERT_BNB_OK(tc.step(P, g));
        EXPECT_NEAR(tg.unorm(), tc.unorm(), 1e-4 * tc.unorm()) << "step " << step;
        tg.set_p(tc.p());  // same trajectory
      }
    }
  }
}
