// The 8-bit code selection (src/common/code8_select.h) against the reference's 7-step search, and
// the CPU optimizers' encoders (phase D of one block) against both, on every SIMD target.
//
// * The plan's closed form (code8_select) equals code8_search at every threshold +-64 ulps, on
//   every K-th binary32 bit pattern and the specials, for the built-in tables, a linear table and
//   random increasing tables, with and without flushing (the GPU's plans).
// * The optimizer encoders: for every K-th binary32 x with |x| < 2 (what phase D sees: no NaN,
//   |value| <= absmax, RCP(absmax) normal), the bucketed encoder (AVX-512 VBMI), the level
//   search and code8_search + code8_sign_fix give the same code, with the sign fix for DYN8S
//   and without for DYN8U. K = BNB_CODE8_STRIDE (default 61: about 70 M values, a few seconds;
//   1 checks all 2^31).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

#include "code8_select.h"
#include "hwy/highway.h"
#include "hwy/targets.h"
#include "optim_kernels.h"
#include "tables.h"

namespace bnb {
namespace {

uint32_t stride() {
  const char* s = std::getenv("BNB_CODE8_STRIDE");
  const long v = s != nullptr ? std::atol(s) : 61;
  return v > 0 ? static_cast<uint32_t>(v) : 61u;
}

std::vector<float> builtin(int32_t which) {
  std::vector<float> c(256);
  copy_code_table(which, c.data());
  return c;
}

// x as the kernels see it: the GPU's flushed arithmetic never produces a subnormal.
bool seen(float x, bool ftz) { return !ftz || std::isnan(x) || x == 0.0f || std::fabs(x) >= kC8FltMin; }

void check_plan(const std::vector<float>& code, bool ftz, const char* what) {
  SCOPED_TRACE(what);
  SCOPED_TRACE(ftz ? "ftz" : "ieee");
  Code8Plan plan;
  code8_plan(code.data(), ftz, &plan);
  ASSERT_TRUE(plan.fast);
  int64_t bad = 0;
  auto check = [&](float x) {
    if (!seen(x, ftz)) return;
    const int32_t want = code8_search(code.data(), x);
    const int32_t got = code8_select(plan, x);
    if (got != want && bad++ < 5)
      ADD_FAILURE() << "x = " << x << " (bits " << std::hex << float_to_bits(x) << std::dec << "): " << got
                    << " vs search " << want;
  };
  auto around = [&](float v, int ulps) {
    const uint32_t b = float_to_bits(v);
    for (int d = -ulps; d <= ulps; ++d) check(bits_to_float(b + static_cast<uint32_t>(d)));
  };
  for (int j = 0; j < 255; ++j) {
    around(plan.t[j], 64);
    around(code8_midpoint(code.data(), j, false), 4);
  }
  for (uint64_t b = 0; b < (uint64_t{1} << 32); b += 509u * stride()) check(bits_to_float(static_cast<uint32_t>(b)));
  for (float x : {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1.0f, -1.0f, 3.4e38f, -3.4e38f, kC8FltMin})
    check(x);
  EXPECT_EQ(bad, 0);
}

TEST(Code8Select, ClosedFormEqualsSearch) {
  for (bool ftz : {false, true}) {
    check_plan(builtin(BNB_CODE_DYNAMIC_SIGNED), ftz, "dynamic signed");
    check_plan(builtin(BNB_CODE_DYNAMIC_UNSIGNED), ftz, "dynamic unsigned");
    std::vector<float> linear(256);
    for (int i = 0; i < 256; ++i) linear[i] = -1.0f + static_cast<float>(i) / 128.0f;  // 0 at i = 128
    check_plan(linear, ftz, "linear");
    std::mt19937 rng(5);
    for (float sigma : {1.0f, 1e-3f}) {
      std::normal_distribution<float> nd(0.0f, sigma);
      std::vector<float> t(256);
      for (float& x : t) x = nd(rng);
      std::sort(t.begin(), t.end());
      t.erase(std::unique(t.begin(), t.end()), t.end());
      while (t.size() < 256) t.push_back(t.back() + 1.0f);
      check_plan(t, ftz, "random increasing");
    }
  }
}

TEST(Code8Select, TablesOutsideTheClosedFormAreNotFast) {
  Code8Plan plan;
  std::vector<float> c = builtin(BNB_CODE_DYNAMIC_SIGNED);
  std::swap(c[10], c[11]);
  code8_plan(c.data(), false, &plan);
  EXPECT_FALSE(plan.fast);
  c = builtin(BNB_CODE_DYNAMIC_SIGNED);
  c[255] = INFINITY;
  code8_plan(c.data(), false, &plan);
  EXPECT_FALSE(plan.fast);
  // An odd midpoint at zero folds its tie into -denorm_min, which a flushed comparison sees as 0.
  std::vector<float> z(256);
  for (int i = 0; i < 256; ++i) z[i] = static_cast<float>(2 * i - 255) / 255.0f;  // m_127 = 0, odd
  code8_plan(z.data(), false, &plan);
  EXPECT_TRUE(plan.fast);
  code8_plan(z.data(), true, &plan);
  EXPECT_FALSE(plan.fast);
}

TEST(Code8Select, SignFix) {
  EXPECT_EQ(code8_sign_fix(127, 127, -0.25f), 126);
  EXPECT_EQ(code8_sign_fix(126, 127, 0.25f), 127);
  EXPECT_EQ(code8_sign_fix(0, 0, -0.25f), 255);  // uint8 wrap
  EXPECT_EQ(code8_sign_fix(5, 127, -0.25f), 5);
  EXPECT_EQ(code8_sign_fix(127, 127, -0.0f), 126);  // -0 is negative, and not > 0
  const float unsorted[3] = {-0.5f, 0.25f, -0.125f};  // by the code's own sign
  EXPECT_EQ(code8_sign_fix(unsorted, 2, -1.0f), 2);
  EXPECT_EQ(code8_sign_fix(unsorted, 2, 1.0f), 3);
  EXPECT_EQ(code8_sign_fix(unsorted, 1, -1.0f), 0);
}

class OptimEncoders : public testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { hwy::SetSupportedTargetsForTest(GetParam()); }
  void TearDown() override { hwy::SetSupportedTargetsForTest(0); }
};

TEST_P(OptimEncoders, EqualTheSearchWithTheSignFix) {
  const uint32_t k = stride();
  for (int32_t which : {BNB_CODE_DYNAMIC_SIGNED, BNB_CODE_DYNAMIC_UNSIGNED}) {
    SCOPED_TRACE(which == BNB_CODE_DYNAMIC_SIGNED ? "DYN8S" : "DYN8U");
    const bool sign_fix = which == BNB_CODE_DYNAMIC_SIGNED;
    const std::vector<float> table = builtin(which);
    auto plan = std::make_unique<cpu::OptimCodePlan>();
    cpu::build_optim_code_plan(table.data(), plan.get());
    ASSERT_TRUE(plan->code8.fast);
    EXPECT_NE(plan->bucket_kind, cpu::kBucketNone);
    float xs[256];
    uint8_t bucketed[256], levels[256];
    int64_t bad = 0;
    int fill = 0;
    auto flush = [&]() {
      cpu::optim8_encode_block(*plan, sign_fix, true, xs, 1.0f, bucketed);
      cpu::optim8_encode_block(*plan, sign_fix, false, xs, 1.0f, levels);
      for (int j = 0; j < fill; ++j) {
        int32_t want = code8_search(table.data(), xs[j]);
        if (sign_fix) want = code8_sign_fix(table.data(), want, xs[j]);
        if ((bucketed[j] != want || levels[j] != want) && bad++ < 5)
          ADD_FAILURE() << "x = " << xs[j] << " (bits " << std::hex << float_to_bits(xs[j]) << std::dec
                        << "): bucketed " << int{bucketed[j]} << ", levels " << int{levels[j]} << ", search "
                        << want;
      }
      fill = 0;
    };
    // |x| < 2: magnitudes below 0x40000000, both signs (bit 0 of i is the sign).
    for (uint64_t i = 0; i < (uint64_t{0x40000000} << 1); i += k) {
      const uint32_t mag = static_cast<uint32_t>(i >> 1);
      xs[fill++] = bits_to_float((i & 1) != 0 ? (mag | 0x80000000u) : mag);
      if (fill == 256) flush();
    }
    if (fill > 0) {
      const int real = fill;
      while (fill < 256) xs[fill++] = 0.0f;
      fill = real;
      flush();
    }
    EXPECT_EQ(bad, 0);
  }
}

std::string target_name(const testing::TestParamInfo<int64_t>& info) { return hwy::TargetName(info.param); }
INSTANTIATE_TEST_SUITE_P(AllTargets, OptimEncoders, testing::ValuesIn(hwy::SupportedAndGeneratedTargets()),
                         target_name);

}  // namespace
}  // namespace bnb
