// The GPU kernels' bucketed 8-bit code selection (src/common/code8_select.h, plans made with the
// device's flushed arithmetic) against the reference's 7-step search (tests/ref, docs/FORMATS.md
// §2.3), on the host: the quantizers' buckets keyed by the binary16-toward-zero bits of x and the
// optimizers' 64th-of-a-binade buckets, at every threshold and bucket edge +-64 ulps, every 509th
// binary32 bit pattern, and the specials, for the built-in tables, a linear table and random
// increasing tables. x is what the kernels feed it: flushed to zero (normal, zero, inf or NaN).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "code8_select.h"
#include "ref.h"
#include "tables.h"

namespace {

using namespace bnb;

float bits_f(uint32_t b) { return c8_bits_float(b); }

// The selections the kernels compute: the quantizers' (binary16 keys) and, where the table fits
// them, the optimizers' (binades; build_optim8_table, quant8_setup).
struct Selector {
  Code8Plan plan;
  std::vector<Code8F16Bucket> buckets = std::vector<Code8F16Bucket>(kC8F16Keys);
  std::vector<uint32_t> info = std::vector<uint32_t>(kC8BinadeBuckets), thr = std::vector<uint32_t>(kC8BinadeBuckets);
  bool fast = false, binades = false, crowded = false;
  explicit Selector(const std::vector<float>& code) {
    code8_plan(code.data(), true, &plan);
    fast = plan.fast;
    if (!fast) return;
    for (uint32_t k = 0; k < kC8F16Keys; ++k) buckets[k] = c8_f16_bucket(plan.t, k);
    int most = 0;
    for (int b = 0; b < kC8BinadeBuckets; ++b) {
      float xmin, xmax;
      c8_binade_bucket_range(b, &xmin, &xmax);
      const Code8Bucket e = code8_bucket(plan.t, xmin, xmax);
      most = e.inside > most ? e.inside : most;
      c8_binade_bucket_entry(plan.t, e, &info[b], &thr[b]);
    }
    binades = most <= 2;
    crowded = most == 2;
  }
  uint32_t f16(float x) const { return c8_f16_select(buckets.data(), plan.t, x); }
  int binade(float x) const {
    const int b = c8_binade_bucket_of_bits(c8_float_bits(x));
    return c8_binade_select(info[b], thr[b], plan.t, crowded, x);
  }
};

bool kernel_input(float x) {
  return std::isnan(x) || std::isinf(x) || x == 0.0f || std::fabs(x) >= 1.17549435e-38f;
}

int64_t check_table(const std::vector<float>& code, const char* what) {
  SCOPED_TRACE(what);
  Selector sel(code);
  EXPECT_TRUE(sel.fast) << "the bucketed selection should apply";
  if (!sel.fast) return 0;
  int64_t checked = 0, bad = 0;
  auto check = [&](float x) {
    if (!kernel_input(x)) return;
    ++checked;
    const int want = bnb::ref::select_code8(code.data(), x);
    const int got = static_cast<int>(sel.f16(x));
    const int got_binade = sel.binades ? sel.binade(x) : want;
    if ((got != want || got_binade != want) && bad++ < 5)
      ADD_FAILURE() << "x = " << x << " (bits " << std::hex << c8_float_bits(x) << std::dec << "): " << got
                    << " (binary16 keys), " << got_binade << " (binades) vs reference " << want;
  };
  auto around = [&](float v, int ulps) {
    const uint32_t b = c8_float_bits(v);
    for (int d = -ulps; d <= ulps; ++d) check(bits_f(b + static_cast<uint32_t>(d)));
  };
  for (int j = 0; j < 255; ++j) {
    around(sel.plan.t[j], 64);
    around(-sel.plan.t[j], 8);
    around((code[j] + code[j + 1]) * 0.5f, 4);
  }
  for (uint32_t h = 0; h < 0x7c00u; h += 16) {  // binary16 bucket edges, both signs
    around(c8_half_value(h), 2);
    around(-c8_half_value(h), 2);
  }
  for (int b = 0; b < kC8BinadeBuckets; ++b) {  // binade bucket edges
    float xmin, xmax;
    c8_binade_bucket_range(b, &xmin, &xmax);
    around(xmin, 2);
    around(xmax, 2);
  }
  for (uint64_t b = 0; b < (uint64_t{1} << 32); b += 509) check(bits_f(static_cast<uint32_t>(b)));
  for (float x : {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1.0f, -1.0f, 3.4e38f, -3.4e38f, 1.17549435e-38f})
    check(x);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.1f, 1.1f);
  for (int i = 0; i < 2000000; ++i) check(u(rng));
  EXPECT_EQ(bad, 0) << "of " << checked;
  return checked;
}

std::vector<float> builtin(int32_t which) {
  std::vector<float> c(256);
  bnb::copy_code_table(which, c.data());
  return c;
}

}  // namespace

TEST(Code8Buckets, F16TowardZeroKeyIsAnIntervalFloor) {
  // val(h) <= |x| < val(h + 1) for every sampled finite x (h the binary16 magnitude bits).
  for (uint64_t b = 0; b < (uint64_t{1} << 31); b += 97) {
    const float x = bits_f(static_cast<uint32_t>(b));
    if (!std::isfinite(x)) {
      continue;
    }
    const uint32_t h = c8_f16_rz_bits(x) & 0x7fffu;
    ASSERT_LT(h, 0x7c00u) << x;
    ASSERT_LE(c8_half_value(h), x) << x;
    if (h + 1 < 0x7c00u) {
      ASSERT_LT(x, c8_half_value(h + 1)) << x;
    }
    ASSERT_EQ(c8_f16_rz_bits(-x), h | 0x8000u) << x;
  }
  EXPECT_EQ(c8_f16_rz_bits(INFINITY), 0x7c00u);
  EXPECT_EQ(c8_f16_rz_bits(-INFINITY), 0xfc00u);
  EXPECT_EQ(c8_f16_rz_bits(NAN) & 0x7c00u, 0x7c00u);
  EXPECT_NE(c8_f16_rz_bits(NAN) & 0x3f0u, 0u);  // a NaN key, not the inf key
}

TEST(Code8Buckets, DynamicSignedMatchesSearch) {
  const std::vector<float> code = builtin(BNB_CODE_DYNAMIC_SIGNED);
  EXPECT_TRUE(Selector(code).binades);
  EXPECT_GT(check_table(code, "dynamic signed"), 8000000);
}

TEST(Code8Buckets, DynamicUnsignedMatchesSearch) {
  const std::vector<float> code = builtin(BNB_CODE_DYNAMIC_UNSIGNED);
  EXPECT_TRUE(Selector(code).binades);
  EXPECT_GT(check_table(code, "dynamic unsigned"), 8000000);
}

TEST(Code8Buckets, LinearAndRandomTablesMatchSearch) {
  std::vector<float> linear(256);
  for (int i = 0; i < 256; ++i) linear[i] = -1.0f + static_cast<float>(i) / 128.0f;  // 0 at i = 128
  check_table(linear, "linear");
  std::mt19937 rng(5);
  for (int rep = 0; rep < 3; ++rep) {
    std::normal_distribution<float> nd(0.0f, rep == 0 ? 1.0f : 1e-3f);
    std::vector<float> t(256);
    for (float& x : t) x = nd(rng);
    std::sort(t.begin(), t.end());
    t.erase(std::unique(t.begin(), t.end()), t.end());
    while (t.size() < 256) t.push_back(t.back() + 1.0f);
    check_table(t, rep == 0 ? "random N(0,1)" : "random N(0,1e-3): crowded buckets");
  }
}
