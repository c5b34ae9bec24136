// Many threads calling the library at once (issue 17): 32 threads run a mix of operations on one
// shared context and on private contexts, and create and destroy contexts concurrently. Each
// thread's results must equal, bit for bit, what the same calls gave on one thread before. CI
// runs this file again under ThreadSanitizer (BNB_TSAN=ON, scripts/test.sh), where a data race is
// a failure even when the results happen to agree.
#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "int_math.h"
#include "util.h"

using namespace bnb_test;

namespace {

constexpr int kThreads = 32;

// One round of mixed operations on host memory (CPU backend). Every output is collected so that
// two rounds can be compared byte for byte.
struct Round {
  std::vector<uint8_t> q8, packed, q_int8;
  std::vector<float> absmax8, absmax4, gemm, row_stats, linear, p;
  std::vector<int32_t> C;
  bool operator==(const Round& o) const {
    return q8 == o.q8 && packed == o.packed && q_int8 == o.q_int8 && absmax8 == o.absmax8 &&
           absmax4 == o.absmax4 && gemm == o.gemm && row_stats == o.row_stats && linear == o.linear && p == o.p &&
           C == o.C;
  }
};

struct Inputs {
  static constexpr int64_t kN8 = 20000, kBs8 = 256;
  static constexpr int64_t kM = 3, kN = 48, kK = 256, kBs4 = 64;
  static constexpr int64_t kOpt = 3000;
  std::vector<float> x8 = random_normal(kN8, 1);
  std::vector<float> w = random_normal(kN * kK, 2);
  std::vector<float> a = random_normal(kM * kK, 3, 2.0f);
  std::vector<int8_t> w_int8 = [] {
    std::vector<int8_t> v(static_cast<size_t>(kN * kK));
    const std::vector<float> r = random_normal(kN * kK, 4, 40.0f);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, r[i])));
    return v;
  }();
  std::vector<float> scb = random_normal(kN, 5, 0.1f);
  std::vector<float> p0 = random_normal(kOpt, 6), g = random_normal(kOpt, 7, 0.01f);
};

// Returns false (and records a message) when a call fails.
bool run_round(bnb_context_t ctx, const Inputs& in, Round* r, std::string* error) {
  auto ok = [&](bnb_status_t s, const char* what) {
    if (s == BNB_SUCCESS) return true;
    *error = std::string(what) + ": " + bnb_last_error_message();
    return false;
  };
  using I = Inputs;
  r->q8.assign(I::kN8, 0);
  r->absmax8.assign(bnb::ceil_div(I::kN8, I::kBs8), 0.0f);
  if (!ok(bnb_quantize_blockwise(ctx, BNB_F32, in.x8.data(), I::kN8, I::kBs8, nullptr, r->q8.data(),
                                 r->absmax8.data(), nullptr), "quantize_blockwise"))
    return false;
  r->packed.assign(I::kN * I::kK / 2, 0);
  r->absmax4.assign(I::kN * I::kK / I::kBs4, 0.0f);
  if (!ok(bnb_quantize_4bit(ctx, BNB_NF4, BNB_F32, in.w.data(), I::kN * I::kK, I::kBs4, r->packed.data(),
                            r->absmax4.data(), nullptr), "quantize_4bit"))
    return false;
  bnb_scales_t scales;
  bnb_scales_init(&scales);
  scales.absmax = r->absmax4.data();
  r->gemm.assign(I::kM * I::kN, 0.0f);
  if (!ok(bnb_gemm_4bit(ctx, BNB_F32, I::kM, I::kN, I::kK, in.a.data(), r->packed.data(), &scales, BNB_NF4, I::kBs4,
                        nullptr, r->gemm.data(), nullptr), "gemm_4bit"))
    return false;
  r->q_int8.assign(I::kM * I::kK, 0);
  r->row_stats.assign(I::kM, 0.0f);
  r->C.assign(I::kM * I::kN, 0);
  r->linear.assign(I::kM * I::kN, 0.0f);
  if (!ok(bnb_int8_linear(ctx, BNB_F32, I::kM, I::kN, I::kK, in.a.data(), 3.0f, in.w_int8.data(), in.scb.data(),
                          nullptr, reinterpret_cast<int8_t*>(r->q_int8.data()), r->row_stats.data(), r->C.data(),
                          r->linear.data(), nullptr), "int8_linear"))
    return false;
  // Two steps of 8-bit AdamW from the same start.
  r->p = in.p0;
  std::vector<uint8_t> s1(I::kOpt, 0), s2(I::kOpt, 0);
  std::vector<float> a1(bnb::ceil_div(I::kOpt, 256), 0.0f), a2(a1.size(), 0.0f);
  bnb_optimizer_params_t params;
  bnb_optimizer_params_init(&params);
  params.optimizer = BNB_OPT_ADAM;
  params.state_bits = 8;
  params.param_dtype = BNB_F32;
  params.n = I::kOpt;
  params.lr = 1e-3f;
  params.beta1 = 0.9f;
  params.beta2 = 0.999f;
  params.eps = 1e-8f;
  params.weight_decay = 0.01f;
  bnb_optimizer_tensors_t t;
  bnb_optimizer_tensors_init(&t);
  t.p = r->p.data();
  t.g = in.g.data();
  t.state1 = s1.data();
  t.state2 = s2.data();
  t.absmax1 = a1.data();
  t.absmax2 = a2.data();
  for (int64_t step = 1; step <= 2; ++step) {
    params.step = step;
    if (!ok(bnb_optimizer_update(ctx, &params, &t, nullptr), "optimizer_update")) return false;
  }
  return ok(bnb_synchronize(ctx, nullptr), "synchronize");
}

// The reference: one round on a context with a single worker.
void one_thread_round(const Inputs& in, Round* want) {
  Context one(BNB_BACKEND_CPU, 1);
  ASSERT_TRUE(one.ok());
  std::string error;
  ASSERT_TRUE(run_round(one.get(), in, want, &error)) << error;
}

// Runs `rounds` rounds on each of kThreads threads; ctx_for(i) gives thread i's context.
template <typename ContextFor>
void run_threads(const Inputs& in, const Round& want, int rounds, ContextFor ctx_for) {
  std::atomic<int> failures{0}, mismatches{0};
  std::string first_error;
  std::mutex error_mutex;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      bnb_context_t ctx = ctx_for(i);
      for (int it = 0; it < rounds; ++it) {
        Round got;
        std::string error;
        if (!run_round(ctx, in, &got, &error)) {
          ++failures;
          std::lock_guard<std::mutex> lock(error_mutex);
          if (first_error.empty()) first_error = error;
        } else if (!(got == want)) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0) << first_error;
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace

TEST(Threads, MixedOpsOnOneSharedContext) {
  if (!cpu_available()) GTEST_SKIP() << "cpu backend not available";
  const Inputs in;
  Context shared(BNB_BACKEND_CPU, 2);
  ASSERT_TRUE(shared.ok());
  Round want;
  std::string error;
  ASSERT_TRUE(run_round(shared.get(), in, &want, &error)) << error;
  run_threads(in, want, 3, [&](int) { return shared.get(); });
}

TEST(Threads, MixedOpsOnPrivateContexts) {
  if (!cpu_available()) GTEST_SKIP() << "cpu backend not available";
  const Inputs in;
  Round want;
  ASSERT_NO_FATAL_FAILURE(one_thread_round(in, &want));
  std::vector<std::unique_ptr<Context>> contexts;
  for (int i = 0; i < kThreads; ++i) {
    contexts.push_back(std::make_unique<Context>(BNB_BACKEND_CPU, 1));
    ASSERT_TRUE(contexts.back()->ok());
  }
  run_threads(in, want, 2, [&](int i) { return contexts[static_cast<size_t>(i)]->get(); });
}

TEST(Threads, ConcurrentContextCreateAndDestroy) {
  if (!cpu_available()) GTEST_SKIP() << "cpu backend not available";
  const Inputs in;
  Round want;
  ASSERT_NO_FATAL_FAILURE(one_thread_round(in, &want));
  std::atomic<int> failures{0}, mismatches{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int it = 0; it < 4; ++it) {
        bnb_context_options_t o;
        bnb_context_options_init(&o);
        o.backend = BNB_BACKEND_CPU;
        o.num_threads = 1 + (i + it) % 2;  // pools of one and two workers, started and stopped at once
        bnb_context_t ctx = nullptr;
        if (bnb_context_create(&o, &ctx) != BNB_SUCCESS) {
          ++failures;
          continue;
        }
        if (o.num_threads == 1) {  // a one-worker pool gives exactly the reference's rounding
          Round got;
          std::string error;
          if (!run_round(ctx, in, &got, &error)) ++failures;
          else if (!(got == want)) ++mismatches;
        }
        if (bnb_context_destroy(ctx) != BNB_SUCCESS) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}
