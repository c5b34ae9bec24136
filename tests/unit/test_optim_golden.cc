// Golden optimizer cases from bitsandbytes' CUDA kernels (tests/data/golden, op `optimizer`): three
// steps from p0 with gradients g_step1..3. Bounds (written down in docs/OPTIMIZERS.md):
//  * p after every valid step: |p - p_ref| <= 5e-6 |p_ref| (fp32; the CUDA kernels use fast-math
//    division, square root and powf, docs/OPS.md §6.1) or 1e-3 |p_ref| (bf16), both + 1e-7 absolute;
//  * 32-bit states: 5e-6 relative (+ 1e-12 absolute);
//  * 8-bit states: codes identical except where a value sits on a code boundary: such codes
//    must be adjacent (differ by one) and are counted and reported; absmax 5e-6 relative.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "golden.h"
#include "optim_test_util.h"
#include "util.h"

using namespace bnb_test;

namespace {

// A number (or the i-th number of a list) after "key": in a params JSON object text.
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

struct CaseSetup {
  int32_t opt = 0;
  bnb_optimizer_params_t params{};
};

// The kernel arguments the reference's Python classes pass (docs/OPS.md §6.2) for a golden case.
bool setup_for(const GoldenCase& c, CaseSetup* s) {
  const std::string name = c.param_string("name");
  const std::string hyper = c.params.at("hyper");
  const float lr = static_cast<float>(json_number(hyper, "lr"));
  if (name == "adam" || name == "adamw") {
    s->opt = BNB_OPT_ADAM;
  } else if (name == "lamb") {
    s->opt = BNB_OPT_LAMB;
  } else if (name == "sgd_momentum") {
    s->opt = BNB_OPT_MOMENTUM;
  } else if (name == "lars") {
    s->opt = BNB_OPT_LARS;
  } else if (name == "rmsprop") {
    s->opt = BNB_OPT_RMSPROP;
  } else if (name == "lion") {
    s->opt = BNB_OPT_LION;
  } else if (name == "adagrad") {
    s->opt = BNB_OPT_ADAGRAD;
  } else if (name == "ademamix") {
    s->opt = BNB_OPT_ADEMAMIX;
  } else {
    return false;
  }
  s->params = default_optim_params(s->opt);
  bnb_optimizer_params_t& p = s->params;
  p.lr = lr;
  if (s->opt == BNB_OPT_MOMENTUM || s->opt == BNB_OPT_LARS) {
    p.beta1 = static_cast<float>(json_number(hyper, "momentum"));
  } else if (s->opt == BNB_OPT_RMSPROP) {
    p.beta1 = static_cast<float>(json_number(hyper, "alpha"));
  } else if (s->opt != BNB_OPT_ADAGRAD) {
    p.beta1 = static_cast<float>(json_number(hyper, "betas", 0));
    p.beta2 = static_cast<float>(json_number(hyper, "betas", 1));
    if (s->opt == BNB_OPT_ADEMAMIX) {
      p.beta3 = static_cast<float>(json_number(hyper, "betas", 2));
      p.alpha = static_cast<float>(json_number(hyper, "alpha"));
    }
  }
  p.eps = static_cast<float>(json_number(hyper, "eps", 0, p.eps));
  p.weight_decay = static_cast<float>(json_number(hyper, "weight_decay", 0, p.weight_decay));
  return true;
}

float rel_err(float got, float want, float abs_floor) {
  return std::fabs(got - want) / (std::fabs(want) + abs_floor);
}

}  // namespace

class OptimGolden : public ::testing::TestWithParam<int32_t> {};

TEST_P(OptimGolden, CudaCases) {
  const auto cases = load_golden("optimizer", "cuda");
  Context ctx(GetParam());
  ASSERT_TRUE(ctx.ok()) << bnb_last_error_message();
  int ran = 0;
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.label());
    CaseSetup s;
    ASSERT_TRUE(setup_for(c, &s)) << "unknown optimizer in " << c.label();
    const int32_t bits = static_cast<int32_t>(c.param_int("bits"));
    const int32_t dtype = dtype_from_name(c.param_string("param_dtype"));
    const GoldenArray& p0 = c.inputs.at("p0");
    const int64_t n = p0.numel();
    const int64_t steps = c.valid_steps > 0 ? c.valid_steps : c.param_int("steps");
    OptimTensor t(ctx, s.opt, bits, dtype, n);
    t.set_p_bytes(p0.bytes);
    const float p_tol = dtype == BNB_F32 ? 5e-6f : 1e-3f;
    std::vector<float> prev_want = p0.as_f32();
    for (int64_t step = 1; step <= steps; ++step) {
      bnb_optimizer_params_t params = s.params;
      params.step = step;
      if (params.max_unorm > 0.0f) params.param_norm = l2_norm(t.p());
      const GoldenArray& g = c.inputs.at("g_step" + std::to_string(step));
      ASSERT_BNB_OK(t.step_bytes(params, g.bytes));
      const std::vector<float> got = t.p();
      const std::vector<float> want = c.outputs.at("p_step" + std::to_string(step)).as_f32();
      float worst = 0.0f;
      int64_t worst_i = 0, bad = 0, flips = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float e = rel_err(got[i], want[i], 1e-7f / p_tol);
        if (!(e <= worst)) {
          worst = e;
          worst_i = i;
        }
        if (e <= p_tol) continue;
        // bf16: a last-bit difference before rounding (fast-math powf/sqrt/division on the GPU)
        // can round the other way; such an element is off by one bf16 ulp of the larger of its
        // last two values per step since.
        const float mag = std::max(std::fabs(want[i]), std::fabs(prev_want[i]));
        const float ulps = std::fabs(got[i] - want[i]) / (std::ldexp(1.0f, std::ilogb(mag) - 7));
        if (dtype == BNB_BF16 && ulps <= static_cast<float>(step)) {
          ++flips;
        } else {
          ++bad;
        }
      }
      EXPECT_EQ(bad, 0) << "step " << step << ": worst relative error " << worst << " at " << worst_i << " (got "
                        << got[worst_i] << ", want " << want[worst_i] << ")";
      EXPECT_LE(flips, n / 1000) << "step " << step << ": too many bf16 roundings differ";
      std::printf("[ golden  ] %-14s %-8s step %lld: max rel err of p %.3g, bf16 last-bit flips %lld\n",
                  c.param_string("class").c_str(), c.param_string("param_dtype").c_str(),
                  static_cast<long long>(step), worst, static_cast<long long>(flips));
      prev_want = want;
    }
    if (steps < c.param_int("steps")) {
      ++ran;
      continue;  // final states are not valid targets
    }
    if (bits == 32) {
      const std::vector<float> s1 = t.state1_f32();
      const std::vector<float> w1 = c.outputs.at("state1").as_f32();
      for (int64_t i = 0; i < static_cast<int64_t>(w1.size()); ++i)
        ASSERT_LE(rel_err(s1[i], w1[i], 1e-12f), 5e-6f) << "state1[" << i << "] " << s1[i] << " vs " << w1[i];
      if (optim_two_states(s.opt)) {
        const std::vector<float> s2 = t.state2_f32();
        const std::vector<float> w2 = c.outputs.at("state2").as_f32();
        for (int64_t i = 0; i < n; ++i)
          ASSERT_LE(rel_err(s2[i], w2[i], 1e-12f), 5e-6f) << "state2[" << i << "] " << s2[i] << " vs " << w2[i];
      }
    } else {
      auto compare_codes = [&](const std::vector<uint8_t>& got, const GoldenArray& want, const char* what) {
        int64_t diffs = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          if (got[i] == want.bytes[i]) continue;
          ++diffs;
          EXPECT_EQ(std::abs(static_cast<int>(got[i]) - static_cast<int>(want.bytes[i])), 1)
              << what << "[" << i << "] " << int(got[i]) << " vs " << int(want.bytes[i]);
        }
        EXPECT_LE(diffs, static_cast<int64_t>(got.size()) / 200) << what;
        std::printf("[ golden  ] %-14s %-8s %s: %lld of %zu codes differ (code boundaries)\n",
                    c.param_string("class").c_str(), c.param_string("param_dtype").c_str(), what,
                    static_cast<long long>(diffs), got.size());
      };
      auto compare_absmax = [&](const std::vector<float>& got, const GoldenArray& want, const char* what) {
        const std::vector<float> w = want.as_f32();
        ASSERT_EQ(got.size(), w.size()) << what;
        for (size_t i = 0; i < w.size(); ++i)
          EXPECT_LE(rel_err(got[i], w[i], 1e-30f), 5e-6f) << what << "[" << i << "] " << got[i] << " vs " << w[i];
      };
      compare_codes(t.state1_codes(), c.outputs.at("state1"), "state1");
      compare_absmax(t.absmax1(), c.outputs.at("absmax1"), "absmax1");
      if (optim_two_states(s.opt)) {
        compare_codes(t.state2_codes(), c.outputs.at("state2"), "state2");
        compare_absmax(t.absmax2(), c.outputs.at("absmax2"), "absmax2");
      }
    }
    ++ran;
  }
  EXPECT_EQ(ran, 18);
}

INSTANTIATE_TEST_SUITE_P(Backends, OptimGolden, ::testing::ValuesIn(available_backends()),
                         [](const ::testing::TestParamInfo<int32_t>& info) { return backend_label(info.param); });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(OptimGolden);
