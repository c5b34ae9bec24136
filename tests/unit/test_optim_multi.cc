// bnb_optimizer_update_multi against bnb_optimizer_update: many tensors of mixed sizes (tiny,
// partial 256-element blocks, more than one launch's worth) stepped together must end bit for
// bit where the same tensors stepped one call each end, on every backend, for each optimizer
// family, 32-bit and 8-bit, fp32 and bf16. Plus the multi entry's own bad input.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "optim_test_util.h"
#include "util.h"

using namespace bnb_test;

namespace {

class OptimMulti : public ::testing::TestWithParam<int32_t> {
 protected:
  void SetUp() override {
    ctx_ = std::make_unique<Context>(GetParam());
    ASSERT_TRUE(ctx_->ok()) << bnb_last_error_message();
  }
  std::unique_ptr<Context> ctx_;
};

// 400 tensors (more than the CUDA plugin's 384 per launch; 40 where kernel parameters are
// limited to 4 KB), sizes from 1 to a few 256-element blocks.
std::vector<int64_t> mixed_sizes() {
  std::vector<int64_t> n;
  const int64_t pattern[] = {1, 3, 255, 256, 257, 1000, 1024, 1025, 2048 + 77, 4096};
  for (int i = 0; i < 400; ++i) n.push_back(pattern[i % 10] + (i / 10) * 4);
  return n;
}

}  // namespace

TEST_P(OptimMulti, MatchesOneCallPerTensor) {
  const std::vector<int64_t> sizes = mixed_sizes();
  const int32_t opts[] = {BNB_OPT_ADAM, BNB_OPT_LION, BNB_OPT_MOMENTUM, BNB_OPT_ADEMAMIX, BNB_OPT_RMSPROP,
                          BNB_OPT_ADAGRAD};
  for (int32_t opt : opts) {
    for (int32_t bits : {32, 8}) {
      for (int32_t dtype : {BNB_F32, BNB_BF16}) {
        SCOPED_TRACE(std::string(optim_name(opt)) + " bits " + std::to_string(bits) + " dtype " +
                     std::to_string(dtype));
        std::vector<std::unique_ptr<OptimTensor>> single, multi;
        for (size_t i = 0; i < sizes.size(); ++i) {
          const std::vector<float> p = random_normal(sizes[i], 11 + i, 1.0f);
          single.push_back(std::make_unique<OptimTensor>(*ctx_, opt, bits, dtype, sizes[i]));
          multi.push_back(std::make_unique<OptimTensor>(*ctx_, opt, bits, dtype, sizes[i]));
          single.back()->set_p(p);
          multi.back()->set_p(p);
        }
        bnb_optimizer_params_t P = default_optim_params(opt);
        P.max_unorm = 0.0f;  // LAMB/LARS clipping is per tensor: not in the multi entry
        P.weight_decay = opt == BNB_OPT_LION || opt == BNB_OPT_ADAM ? 0.01f : P.weight_decay;
        P.optimizer = opt;
        P.state_bits = bits;
        P.param_dtype = dtype;
        for (int64_t step = 1; step <= 3; ++step) {
          P.step = step;
          std::vector<bnb_optimizer_tensors_t> ts;
          for (size_t i = 0; i < sizes.size(); ++i) {
            const std::vector<float> g = random_normal(sizes[i], 1000 * step + i, 0.1f);
            ASSERT_BNB_OK(single[i]->step(P, g));
            ts.push_back(multi[i]->prepare(g));
          }
          P.n = 12345;  // ignored by the multi entry
          ASSERT_BNB_OK(bnb_optimizer_update_multi(ctx_->get(), &P, static_cast<int32_t>(ts.size()), ts.data(),
                                                   sizes.data(), nullptr));
          ASSERT_BNB_OK(bnb_synchronize(ctx_->get(), nullptr));
        }
        for (size_t i = 0; i < sizes.size(); ++i) {
          SCOPED_TRACE("tensor " + std::to_string(i) + " n " + std::to_string(sizes[i]));
          EXPECT_EQ(multi[i]->p_bytes(), single[i]->p_bytes());
          if (bits == 8) {
            EXPECT_EQ(multi[i]->state1_codes(), single[i]->state1_codes());
            EXPECT_EQ(multi[i]->absmax1(), single[i]->absmax1());
            if (optim_two_states(opt)) {
              EXPECT_EQ(multi[i]->state2_codes(), single[i]->state2_codes());
              EXPECT_EQ(multi[i]->absmax2(), single[i]->absmax2());
            }
          } else {
            EXPECT_EQ(multi[i]->state1_f32(), single[i]->state1_f32());
            if (optim_two_states(opt)) {
              EXPECT_EQ(multi[i]->state2_f32(), single[i]->state2_f32());
            }
          }
        }
        // The parameters moved (the comparison above is not between two untouched copies): the
        // start values as the dtype holds them differ from the result.
        EXPECT_NE(multi[3]->p(), from_dtype(to_dtype(random_normal(sizes[3], 14, 1.0f), dtype), dtype));
      }
    }
  }
}

TEST_P(OptimMulti, RejectsBadInput) {
  OptimTensor a(*ctx_, BNB_OPT_ADAM, 32, BNB_F32, 300);
  OptimTensor b(*ctx_, BNB_OPT_ADAM, 32, BNB_F32, 500);
  a.set_p(random_normal(300, 1, 1.0f));
  b.set_p(random_normal(500, 2, 1.0f));
  const std::vector<float> before = b.p();
  bnb_optimizer_tensors_t ts[2] = {a.prepare(random_normal(300, 3, 0.1f)), b.prepare(random_normal(500, 4, 0.1f))};
  int64_t n[2] = {300, 500};
  bnb_optimizer_params_t P = default_optim_params(BNB_OPT_ADAM);
  auto call = [&](int32_t count, const bnb_optimizer_tensors_t* t, const int64_t* sizes) {
    return bnb_optimizer_update_multi(ctx_->get(), &P, count, t, sizes, nullptr);
  };
  EXPECT_EQ(call(0, ts, n), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(call(-1, ts, n), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(call(2, nullptr, n), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(call(2, ts, nullptr), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bnb_optimizer_update_multi(ctx_->get(), nullptr, 2, ts, n, nullptr), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bnb_optimizer_update_multi(nullptr, &P, 2, ts, n, nullptr), BNB_ERR_INVALID_ARGUMENT);
  // A bad second tensor fails the whole call before anything runs: the first stays untouched.
  const std::vector<float> a_before = a.p();
  int64_t bad_n[2] = {300, 0};
  EXPECT_EQ(call(2, ts, bad_n), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(bnb_last_error_message()).find("n[1]"), std::string::npos) << bnb_last_error_message();
  bnb_optimizer_tensors_t no_p[2] = {ts[0], ts[1]};
  no_p[1].p = nullptr;
  EXPECT_EQ(call(2, no_p, n), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(bnb_last_error_message()).find("tensors[1]->p"), std::string::npos)
      << bnb_last_error_message();
  bnb_optimizer_tensors_t small[2] = {ts[0], ts[1]};
  small[0].struct_size = 4;
  EXPECT_EQ(call(2, small, n), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(a.p(), a_before);
  // Clipping needs each tensor's own norm: refused here.
  P.max_unorm = 1.0f;
  EXPECT_EQ(call(2, ts, n), BNB_ERR_INVALID_ARGUMENT);
  P.max_unorm = 0.0f;
  P.state_bits = 4;
  EXPECT_EQ(call(2, ts, n), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(b.p(), before);
  // And a good call works.
  P.state_bits = 32;
  ASSERT_BNB_OK(call(2, ts, n));
  ASSERT_BNB_OK(bnb_synchronize(ctx_->get(), nullptr));
  EXPECT_NE(b.p(), before);
}

INSTANTIATE_TEST_SUITE_P(Backends, OptimMulti, ::testing::ValuesIn(available_backends()),
                         [](const ::testing::TestParamInfo<int32_t>& info) { return backend_label(info.param); });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(OptimMulti);
