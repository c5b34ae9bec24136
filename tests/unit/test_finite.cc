// The finite check (issue 17; docs/API.md, "The finite check"): a context created with
// options.check_finite = 1 scans the float inputs of the quantizers, the activations of the
// products and the optimizers' gradients before the op; the first NaN or infinity fails the call
// with BNB_ERR_INVALID_ARGUMENT naming the argument and its index, and nothing is written. Runs on
// every available backend (the scan runs where the data lives: the backend's find_nonfinite).
// The environment variable and the options' older struct size are in test_robust.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "int_math.h"
#include "optim_test_util.h"
#include "util.h"

using namespace bnb_test;

namespace {

constexpr float kNonFinite[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                -std::numeric_limits<float>::infinity()};
constexpr int32_t kFloatDtypes[] = {BNB_F32, BNB_F16, BNB_BF16};

const char* value_name(float v) { return std::isnan(v) ? "nan" : v > 0 ? "+inf" : "-inf"; }

// Random finite values with `bad` written at 1 to 4 random positions; *first = the smallest.
std::vector<float> with_nonfinite(int64_t n, uint64_t seed, float bad, int64_t* first) {
  std::vector<float> v = random_normal(n, seed, 2.0f);
  std::mt19937_64 rng(seed * 7 + 1);
  const int count = 1 + static_cast<int>(rng() % 4);
  *first = n;
  for (int i = 0; i < count; ++i) {
    const int64_t at = static_cast<int64_t>(rng() % static_cast<uint64_t>(n));
    v[static_cast<size_t>(at)] = bad;
    *first = std::min(*first, at);
  }
  return v;
}

// The dtype's bytes of `values`, checked to hold exactly the non-finite elements `values` has
// (the conversion must neither lose one nor make one).
std::vector<uint8_t> in_dtype(const std::vector<float>& values, int32_t dtype) {
  std::vector<uint8_t> bytes = to_dtype(values, dtype);
  const std::vector<float> back = from_dtype(bytes, dtype);
  for (size_t i = 0; i < values.size(); ++i)
    EXPECT_EQ(std::isfinite(values[i]), std::isfinite(back[i])) << i;
  return bytes;
}

float largest_bf16() {
  const uint32_t bits = 0x7f7f0000u;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::string element(const char* name, int64_t index) { return std::string(name) + "[" + std::to_string(index) + "]"; }

class Finite : public ::testing::TestWithParam<int32_t> {
 protected:
  void SetUp() override {
    checked_ = std::make_unique<Context>(GetParam(), 0, 1);
    unchecked_ = std::make_unique<Context>(GetParam(), 0, -1);
    ASSERT_TRUE(checked_->ok() && unchecked_->ok()) << bnb_last_error_message();
  }
  // A poisoned buffer of `bytes`, and a check that it still holds only the poison.
  std::unique_ptr<Buffer> poisoned(const Context& ctx, size_t bytes) {
    auto b = std::make_unique<Buffer>(ctx, bytes);
    b->fill(0xA5);
    return b;
  }
  static void expect_untouched(const Buffer& b, const char* name) {
    const std::vector<uint8_t> bytes = b.download();
    const auto bad = std::find_if(bytes.begin(), bytes.end(), [](uint8_t x) { return x != 0xA5; });
    EXPECT_TRUE(bad == bytes.end()) << name << " was written at byte " << (bad - bytes.begin());
  }
  std::unique_ptr<Context> checked_, unchecked_;
};

}  // namespace

// The three quantizers, every float dtype, NaN / +inf / -inf at random positions (several
// chunks' worth of elements, so a later chunk may see its hit before an earlier one).
TEST_P(Finite, QuantizersNameTheFirstNonFiniteElementAndWriteNothing) {
  std::mt19937_64 rng(20240617);
  uint64_t seed = 1;
  for (int32_t dtype : kFloatDtypes) {
    for (float bad : kNonFinite) {
      for (int trial = 0; trial < 3; ++trial, ++seed) {
        const int64_t cols = 250, rows = 40 + static_cast<int64_t>(rng() % 900);  // 10000 .. 235000
        const int64_t n = rows * cols, blocksize = 256, nblocks = bnb::ceil_div(n, blocksize);
        int64_t first = 0;
        const std::vector<uint8_t> A = in_dtype(with_nonfinite(n, seed, bad, &first), dtype);
        SCOPED_TRACE(std::string("dtype ") + std::to_string(dtype) + " " + value_name(bad) + " n " +
                     std::to_string(n) + " first " + std::to_string(first));
        const std::string expected = element("A", first);
        Buffer a(*checked_, A.size());
        a.upload(A.data(), A.size());
        auto out = poisoned(*checked_, static_cast<size_t>(n));
        auto absmax = poisoned(*checked_, static_cast<size_t>(nblocks) * 4);
        EXPECT_FAILS(bnb_quantize_blockwise(checked_->get(), dtype, a.get(), n, blocksize, nullptr,
                                            out->as<uint8_t>(), absmax->as<float>(), nullptr),
                     BNB_ERR_INVALID_ARGUMENT, expected + " is not finite");
        EXPECT_FAILS(bnb_quantize_4bit(checked_->get(), BNB_NF4, dtype, a.get(), n, blocksize, out->as<uint8_t>(),
                                       absmax->as<float>(), nullptr),
                     BNB_ERR_INVALID_ARGUMENT, expected);
        auto q = poisoned(*checked_, static_cast<size_t>(n));
        auto row_stats = poisoned(*checked_, static_cast<size_t>(rows) * 4);
        EXPECT_FAILS(bnb_int8_vectorwise_quant(checked_->get(), dtype, rows, cols, a.get(), 0.0f, q->as<int8_t>(),
                                               row_stats->as<float>(), nullptr),
                     BNB_ERR_INVALID_ARGUMENT, expected);
        ASSERT_BNB_OK(bnb_synchronize(checked_->get(), nullptr));
        expect_untouched(*out, "out");
        expect_untouched(*absmax, "absmax");
        expect_untouched(*q, "q");
        expect_untouched(*row_stats, "row_stats");
      }
    }
  }
}

// The first and last elements, and the values next to the non-finite ones (the largest finite
// value and subnormals of each format) are judged correctly.
TEST_P(Finite, EdgesAndLargestFiniteValues) {
  const int64_t n = 3 * 65536 + 5, blocksize = 64;
  for (int32_t dtype : kFloatDtypes) {
    const float largest = dtype == BNB_F32 ? FLT_MAX : dtype == BNB_F16 ? 65504.0f : largest_bf16();
    std::vector<float> v = random_normal(n, 99, 1.0f);
    for (int64_t i = 0; i < n; i += 97) v[static_cast<size_t>(i)] = (i & 1) ? -largest : largest;
    for (int64_t i = 5; i < n; i += 101) v[static_cast<size_t>(i)] = 1e-40f;  // subnormal or flushed
    Buffer a(*checked_, static_cast<size_t>(n) * dtype_size(dtype));
    Buffer q(*checked_, static_cast<size_t>(n)), s(*checked_, static_cast<size_t>(bnb::ceil_div(n, blocksize)) * 4);
    const auto quantize = [&](const Context& ctx) {
      return bnb_quantize_blockwise(ctx.get(), dtype, a.get(), n, blocksize, nullptr, q.as<uint8_t>(),
                                    s.as<float>(), nullptr);
    };
    const std::vector<uint8_t> finite = in_dtype(v, dtype);
    a.upload(finite.data(), finite.size());
    ASSERT_BNB_OK(quantize(*unchecked_));
    ASSERT_BNB_OK(bnb_synchronize(unchecked_->get(), nullptr));
    const std::vector<uint8_t> out_unchecked = q.download();
    q.fill(0xA5);
    ASSERT_BNB_OK(quantize(*checked_));  // all finite: passes, and gives the unchecked result
    ASSERT_BNB_OK(bnb_synchronize(checked_->get(), nullptr));
    EXPECT_EQ(q.download(), out_unchecked);
    for (int64_t at : {int64_t{0}, n - 1, int64_t{65535}, int64_t{65536}, 2 * int64_t{65536} + 1}) {
      std::vector<float> w = v;
      w[static_cast<size_t>(at)] = kNonFinite[at % 3];
      if (at == 65536) w[static_cast<size_t>(n - 2)] = kNonFinite[0];  // a later hit too
      const std::vector<uint8_t> bytes = in_dtype(w, dtype);
      a.upload(bytes.data(), bytes.size());
      EXPECT_FAILS(quantize(*checked_), BNB_ERR_INVALID_ARGUMENT, element("A", at) + " is not finite");
    }
  }
}

// With the check off (the default: options.check_finite 0 and BNB_CHECK_FINITE unset, or -1)
// non-finite input goes through as before.
TEST_P(Finite, OffByDefault) {
  if (std::getenv("BNB_CHECK_FINITE") != nullptr) GTEST_SKIP() << "BNB_CHECK_FINITE is set";
  Context plain(GetParam());
  ASSERT_TRUE(plain.ok());
  const int64_t n = 1000;
  int64_t first = 0;
  const std::vector<uint8_t> A = in_dtype(with_nonfinite(n, 5, kNonFinite[0], &first), BNB_F32);
  for (const Context* ctx : {&plain, unchecked_.get()}) {
    Buffer a(*ctx, A.size()), q(*ctx, n), s(*ctx, 4 * 4);
    a.upload(A.data(), A.size());
    ASSERT_BNB_OK(bnb_quantize_blockwise(ctx->get(), BNB_F32, a.get(), n, 256, nullptr, q.as<uint8_t>(),
                                         s.as<float>(), nullptr));
    ASSERT_BNB_OK(bnb_synchronize(ctx->get(), nullptr));
  }
}

// Every other entry point that scans: the products' activations, double quantization's absmax,
// the optimizers' gradients (one call and many).
TEST_P(Finite, ProductsStatisticsAndGradients) {
  const Context& ctx = *checked_;
  const int64_t M = 3, N = 64, K = 256, blocksize = 64;
  int64_t first = 0;
  const std::vector<uint8_t> A = in_dtype(with_nonfinite(M * K, 17, kNonFinite[1], &first), BNB_F16);
  const std::string expected = element("A", first);
  Buffer a(ctx, A.size());
  a.upload(A.data(), A.size());

  // gemm_4bit, direct and planned, with a weight quantized from finite values.
  const std::vector<float> w = random_normal(N * K, 18);
  Buffer wf(ctx, w.size() * 4), packed(ctx, static_cast<size_t>(N * K / 2)), wabs(ctx, N * K / blocksize * 4);
  wf.upload(w.data(), w.size() * 4);
  ASSERT_BNB_OK(bnb_quantize_4bit(ctx.get(), BNB_NF4, BNB_F32, wf.get(), N * K, blocksize, packed.as<uint8_t>(),
                                  wabs.as<float>(), nullptr));
  bnb_scales_t scales;
  bnb_scales_init(&scales);
  scales.absmax = wabs.as<float>();
  auto out = poisoned(ctx, static_cast<size_t>(M * N) * 2);
  EXPECT_FAILS(bnb_gemm_4bit(ctx.get(), BNB_F16, M, N, K, a.get(), packed.as<uint8_t>(), &scales, BNB_NF4, blocksize,
                             nullptr, out->get(), nullptr),
               BNB_ERR_INVALID_ARGUMENT, expected);
  bnb_gemm4_plan_t plan = nullptr;
  ASSERT_BNB_OK(bnb_gemm_4bit_plan_create(ctx.get(), BNB_F16, N, K, packed.as<uint8_t>(), &scales, BNB_NF4,
                                          blocksize, nullptr, &plan));
  EXPECT_FAILS(bnb_gemm_4bit_plan_run(plan, M, a.get(), out->get(), nullptr), BNB_ERR_INVALID_ARGUMENT, expected);
  bnb_gemm_4bit_plan_destroy(plan);

  // LLM.int8(): the layer in one call and the outlier columns.
  Buffer W(ctx, static_cast<size_t>(N * K)), SCB(ctx, N * 4), C(ctx, static_cast<size_t>(M * N) * 4);
  W.fill(1);
  const std::vector<float> scb(N, 127.0f);
  SCB.upload(scb.data(), scb.size() * 4);
  auto q = poisoned(ctx, static_cast<size_t>(M * K));
  auto row_stats = poisoned(ctx, M * 4);
  EXPECT_FAILS(bnb_int8_linear(ctx.get(), BNB_F16, M, N, K, a.get(), 0.0f, W.as<int8_t>(), SCB.as<float>(), nullptr,
                               q->as<int8_t>(), row_stats->as<float>(), C.as<int32_t>(), out->get(), nullptr),
               BNB_ERR_INVALID_ARGUMENT, expected);
  auto columns = poisoned(ctx, K * 4);
  int64_t count = -7;
  EXPECT_FAILS(bnb_int8_outlier_columns(ctx.get(), BNB_F16, M, K, a.get(), 6.0f, columns->as<int32_t>(), K, &count,
                                        nullptr),
               BNB_ERR_INVALID_ARGUMENT, expected);
  EXPECT_EQ(count, -7);

  // compress_absmax: its input is float32 statistics.
  const int64_t nblocks = 1000;
  int64_t afirst = 0;
  std::vector<float> stats = with_nonfinite(nblocks, 19, kNonFinite[2], &afirst);
  for (float& x : stats) x = std::isfinite(x) ? std::fabs(x) : x;
  Buffer absmax(ctx, stats.size() * 4);
  absmax.upload(stats.data(), stats.size() * 4);
  auto absmax_q = poisoned(ctx, static_cast<size_t>(nblocks));
  auto absmax2 = poisoned(ctx, 4 * 4);
  auto offset = poisoned(ctx, 4);
  EXPECT_FAILS(bnb_compress_absmax(ctx.get(), absmax.as<float>(), nblocks, absmax_q->as<uint8_t>(),
                                   absmax2->as<float>(), offset->as<float>(), nullptr),
               BNB_ERR_INVALID_ARGUMENT, element("absmax", afirst));
  ASSERT_BNB_OK(bnb_synchronize(ctx.get(), nullptr));
  for (const auto* b : {out.get(), q.get(), row_stats.get(), columns.get(), absmax_q.get(), absmax2.get(),
                        offset.get()})
    expect_untouched(*b, "an output");

  // Optimizers: the gradient of one tensor, then of the second of two (the first is not stepped).
  for (int32_t bits : {32, 8}) {
    SCOPED_TRACE("state_bits " + std::to_string(bits));
    const int64_t n = 5000;
    OptimTensor t0(ctx, BNB_OPT_ADAM, bits, BNB_BF16, n), t1(ctx, BNB_OPT_ADAM, bits, BNB_BF16, n);
    t0.set_p(random_normal(n, 20));
    t1.set_p(random_normal(n, 21));
    const std::vector<uint8_t> p0 = t0.p_bytes(), p1 = t1.p_bytes();
    int64_t gfirst = 0;
    const std::vector<float> bad_g = with_nonfinite(n, 22, kNonFinite[0], &gfirst);
    bnb_optimizer_params_t params = default_optim_params(BNB_OPT_ADAM);
    EXPECT_FAILS(t0.step(params, bad_g), BNB_ERR_INVALID_ARGUMENT, element("tensors->g", gfirst));
    EXPECT_EQ(t0.p_bytes(), p0);
    params.optimizer = BNB_OPT_ADAM;
    params.state_bits = bits;
    params.param_dtype = BNB_BF16;
    const bnb_optimizer_tensors_t ts[2] = {t0.prepare(random_normal(n, 23)), t1.prepare(bad_g)};
    const int64_t sizes[2] = {n, n};
    EXPECT_FAILS(bnb_optimizer_update_multi(ctx.get(), &params, 2, ts, sizes, nullptr), BNB_ERR_INVALID_ARGUMENT,
                 element("tensors[1]->g", gfirst));
    ASSERT_BNB_OK(bnb_synchronize(ctx.get(), nullptr));
    EXPECT_EQ(t0.p_bytes(), p0);
    EXPECT_EQ(t1.p_bytes(), p1);
    if (bits == 32) {
      const std::vector<float> s = t0.state1_f32();
      EXPECT_TRUE(std::all_of(s.begin(), s.end(), [](float x) { return x == 0.0f; }));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Finite, ::testing::ValuesIn(available_backends()),
                         [](const ::testing::TestParamInfo<int32_t>& info) { return backend_label(info.param); });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Finite);
