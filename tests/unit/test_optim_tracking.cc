// 8-bit blockwise optimizers track their 32-bit twins: 1000 steps of a small least-squares
// regression (W: 32 x 64 = 2048 parameters, 8 state blocks; 512 noisy samples), from the same
// start with the same hyper-parameters. Bound: final loss of the 8-bit run within 1 % of the
// 32-bit run's, for every optimizer incl. LAMB and LARS (8-bit with clipping, docs/OPTIMIZERS.md).
// Learning rates are chosen so every 32-bit run reaches the noise floor (an unconverged run
// measures the trajectory, not the optimizer); the loss must also drop at least 10x.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "optim_test_util.h"
#include "util.h"

using namespace bnb_test;

namespace {

constexpr int kOut = 32, kIn = 64, kSamples = 512;

// Loss 0.5/m ||X W^T - Y||^2 through its sufficient statistics A = X^T X / m, B = Y^T X / m.
struct Regression {
  std::vector<double> A, B;  // kIn x kIn, kOut x kIn
  double c = 0.0;            // 0.5 ||Y||^2 / m
  Regression() : A(kIn * kIn, 0.0), B(kOut * kIn, 0.0) {
    std::mt19937_64 rng(1234);
    std::normal_distribution<double> nd(0.0, 1.0);
    std::vector<double> X(kSamples * kIn), W(kOut * kIn), Y(kSamples * kOut);
    for (double& x : X) x = nd(rng);
    for (double& w : W) w = 0.2 * nd(rng);
    for (int s = 0; s < kSamples; ++s)
      for (int o = 0; o < kOut; ++o) {
        double y = 0.05 * nd(rng);
        for (int i = 0; i < kIn; ++i) y += X[s * kIn + i] * W[o * kIn + i];
        Y[s * kOut + o] = y;
      }
    for (int s = 0; s < kSamples; ++s) {
      for (int i = 0; i < kIn; ++i) {
        for (int j = 0; j < kIn; ++j) A[i * kIn + j] += X[s * kIn + i] * X[s * kIn + j] / kSamples;
        for (int o = 0; o < kOut; ++o) B[o * kIn + i] += Y[s * kOut + o] * X[s * kIn + i] / kSamples;
      }
      for (int o = 0; o < kOut; ++o) c += 0.5 * Y[s * kOut + o] * Y[s * kOut + o] / kSamples;
    }
  }
  // Gradient W A - B, and the loss.
  double grad(const std::vector<float>& W, std::vector<float>* G) const {
    double loss = c;
    for (int o = 0; o < kOut; ++o) {
      for (int j = 0; j < kIn; ++j) {
        double wa = 0.0;
        for (int i = 0; i < kIn; ++i) wa += W[o * kIn + i] * A[i * kIn + j];
        (*G)[o * kIn + j] = static_cast<float>(wa - B[o * kIn + j]);
        loss += W[o * kIn + j] * (0.5 * wa - B[o * kIn + j]);
      }
    }
    return loss;
  }
};

struct Setting {
  int32_t opt;
  float lr;
};

double train(const Context& ctx, const Regression& r, const Setting& s, int32_t bits, double* initial) {
  OptimTensor t(ctx, s.opt, bits, BNB_F32, kOut * kIn);
  std::vector<float> W(kOut * kIn, 0.0f), G(kOut * kIn);
  t.set_p(W);
  bnb_optimizer_params_t P = default_optim_params(s.opt);
  P.lr = s.lr;
  if (s.opt == BNB_OPT_LAMB || s.opt == BNB_OPT_LARS) W.assign(W.size(), 0.01f), t.set_p(W);
  double loss = r.grad(W, &G);
  *initial = loss;
  for (int64_t step = 1; step <= 1000; ++step) {
    P.step = step;
    P.param_norm = l2_norm(W);
    EXPECT_EQ(t.step(P, G), BNB_SUCCESS) << bnb_last_error_message();
    W = t.p();
    loss = r.grad(W, &G);
  }
  return loss;
}

class OptimTracking : public ::testing::TestWithParam<int32_t> {};

}  // namespace

TEST_P(OptimTracking, EightBitTracksThirtyTwoBit) {
  Context ctx(GetParam());
  ASSERT_TRUE(ctx.ok()) << bnb_last_error_message();
  const Regression r;
  const Setting settings[] = {{BNB_OPT_ADAM, 3e-3f},     {BNB_OPT_MOMENTUM, 0.05f}, {BNB_OPT_RMSPROP, 1e-3f},
                              {BNB_OPT_LION, 1e-3f},     {BNB_OPT_ADAGRAD, 0.05f},  {BNB_OPT_ADEMAMIX, 1e-2f},
                              {BNB_OPT_LAMB, 3e-2f},     {BNB_OPT_LARS, 1.0f}};
  for (const Setting& s : settings) {
    SCOPED_TRACE(optim_name(s.opt));
    double init32 = 0.0, init8 = 0.0;
    const double l32 = train(ctx, r, s, 32, &init32);
    const double l8 = train(ctx, r, s, 8, &init8);
    std::printf("[ tracking] %-9s lr %-7g loss %.4g -> 32-bit %.6g, 8-bit %.6g (%+.3f %%)\n", optim_name(s.opt),
                static_cast<double>(s.lr), init32, l32, l8, 100.0 * (l8 - l32) / l32);
    EXPECT_LT(l32, init32 / 10) << "the 32-bit run did not learn";
    EXPECT_LE(std::fabs(l8 - l32), 0.01 * l32);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, OptimTracking, ::testing::ValuesIn(available_backends()),
                         [](const ::testing::TestParamInfo<int32_t>& info) { return backend_label(info.param); });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(OptimTracking);
