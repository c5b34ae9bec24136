// The GPU quantizers' 8-bit code selection (src/gpu/quant8_select.h: buckets keyed by the
// binary16-toward-zero bits of x, ties folded into the thresholds) against the reference's 7-step
// search (tests/ref, docs/FORMATS.md §2.3), on the host: every threshold and bucket edge +-64 ulps, every
// 509th binary32 bit pattern, and the specials, for the built-in tables, a linear table and random
// increasing tables. x is what the kernels feed it: flushed to zero (normal, zero, inf or NaN).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "quant8_select.h"
#include "ref.h"
#include "tables.h"

namespace {

using namespace bnb::gpu;

float bits_f(uint32_t b) { return q8_bits_float(b); }

// The selection the kernels compute, or -1 when the table falls back to the search.
struct Selector {
  std::vector<float> t = std::vector<float>(256);
  std::vector<Q8Bucket> buckets = std::vector<Q8Bucket>(kQ8Keys);
  bool fast = false;
  explicit Selector(const std::vector<float>& code) {
    fast = q8_thresholds(code.data(), t.data());
    if (fast)
      for (uint32_t k = 0; k < kQ8Keys; ++k) buckets[k] = q8_make_bucket(t.data(), k);
  }
  uint32_t operator()(float x) const { return q8_select(buckets.data(), t.data(), x); }
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
    const uint32_t want = bnb::ref::select_code8(code.data(), x);
    const uint32_t got = sel(x);
    if (got != want && bad++ < 5) ADD_FAILURE() << "x = " << x << " (bits " << std::hex << bnb::gpu::q8_float_bits(x)
                                                << std::dec << "): " << got << " vs reference " << want;
  };
  auto around = [&](float v, int ulps) {
    const uint32_t b = q8_float_bits(v);
    for (int d = -ulps; d <= ulps; ++d) check(bits_f(b + static_cast<uint32_t>(d)));
  };
  for (int j = 0; j < 255; ++j) {
    around(sel.t[j], 64);
    around(-sel.t[j], 8);
    around((code[j] + code[j + 1]) * 0.5f, 4);
  }
  for (uint32_t h = 0; h < 0x7c00u; h += 16) {  // bucket edges, both signs
    around(q8_half_value(h), 2);
    around(-q8_half_value(h), 2);
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

TEST(Quant8Select, F16TowardZeroKeyIsAnIntervalFloor) {
  // val(h) <= |x| < val(h + 1) for every sampled finite x (h the binary16 magnitude bits).
  for (uint64_t b = 0; b < (uint64_t{1} << 31); b += 97) {
    const float x = bits_f(static_cast<uint32_t>(b));
    if (!std::isfinite(x)) {
      continue;
    }
    const uint32_t h = q8_f16_rz_bits(x) & 0x7fffu;
    ASSERT_LT(h, 0x7c00u) << x;
    ASSERT_LE(q8_half_value(h), x) << x;
    if (h + 1 < 0x7c00u) {
      ASSERT_LT(x, q8_half_value(h + 1)) << x;
    }
    ASSERT_EQ(q8_f16_rz_bits(-x), h | 0x8000u) << x;
  }
  EXPECT_EQ(q8_f16_rz_bits(INFINITY), 0x7c00u);
  EXPECT_EQ(q8_f16_rz_bits(-INFINITY), 0xfc00u);
  EXPECT_EQ(q8_f16_rz_bits(NAN) & 0x7c00u, 0x7c00u);
  EXPECT_NE(q8_f16_rz_bits(NAN) & 0x3f0u, 0u);  // a NaN key, not the inf key
}

TEST(Quant8Select, DynamicSignedMatchesSearch) {
  EXPECT_GT(check_table(builtin(BNB_CODE_DYNAMIC_SIGNED), "dynamic signed"), 8000000);
}

TEST(Quant8Select, DynamicUnsignedMatchesSearch) {
  EXPECT_GT(check_table(builtin(BNB_CODE_DYNAMIC_UNSIGNED), "dynamic unsigned"), 8000000);
}

TEST(Quant8Select, LinearAndRandomTablesMatchSearch) {
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

TEST(Quant8Select, UnsortedTableFallsBack) {
  std::vector<float> c = builtin(BNB_CODE_DYNAMIC_SIGNED);
  std::swap(c[10], c[11]);
  std::vector<float> t(256);
  EXPECT_FALSE(q8_thresholds(c.data(), t.data()));
  // An odd midpoint at zero cannot fold its tie into a normal threshold.
  std::vector<float> z(256);
  for (int i = 0; i < 256; ++i) z[i] = static_cast<float>(2 * i - 255) / 255.0f;  // m_127 = 0, odd
  EXPECT_FALSE(q8_thresholds(z.data(), t.data()));
}
