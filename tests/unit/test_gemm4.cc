// bnb_gemm_4bit on every available backend against an independent float64 reference:
// ref[m,n] = sum_k A[m,k] * Wdq[n,k] (+ bias[n]) accumulated in double, where Wdq is the weight
// dequantized to fp32 by the library's own bnb_dequantize_4bit (itself checked bit for bit
// against the golden vectors). Bounds on ||out - ref|| / ||ref||: 1e-5 (fp32), 2e-3 (fp16),
// 1e-2 (bf16). Also the golden matmul_4bit cases (bitsandbytes' CUDA kernels), within the same
// bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "golden.h"
#include "int_math.h"
#include "util.h"

using namespace bnb_test;

namespace {

double tolerance(int32_t dtype) {
  switch (dtype) {
    case BNB_F32: return 1e-5;
    case BNB_F16: return 2e-3;
    default: return 1e-2;
  }
}

const char* dtype_label(int32_t dtype) {
  switch (dtype) {
    case BNB_F32: return "f32";
    case BNB_F16: return "f16";
    default: return "bf16";
  }
}

// ||out - ref|| / ||ref||; +inf when out holds a non-finite value (e.g. an unwritten poisoned
// element) or the sizes differ.
double relative_error(const std::vector<float>& out, const std::vector<double>& ref) {
  if (out.size() != ref.size()) return INFINITY;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return std::sqrt(num) / std::sqrt(den > 0.0 ? den : 1.0);
}

std::vector<double> reference(const std::vector<float>& A, const std::vector<float>& Wdq, const std::vector<float>* bias,
                              int64_t M, int64_t N, int64_t K) {
  std::vector<double> ref(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double s = 0.0;
      const float* a = &A[static_cast<size_t>(m * K)];
      const float* w = &Wdq[static_cast<size_t>(n * K)];
      for (int64_t k = 0; k < K; ++k) s += static_cast<double>(a[k]) * static_cast<double>(w[k]);
      if (bias != nullptr) s += (*bias)[static_cast<size_t>(n)];
      ref[static_cast<size_t>(m * N + n)] = s;
    }
  }
  return ref;
}

// A 4-bit weight [N,K] in the backend's memory, with its plain or nested scales and its fp32
// dequantization on the host.
struct QuantizedWeight {
  std::unique_ptr<Buffer> packed, absmax, absmax_q, absmax2, offset;
  bnb_scales_t scales;
  std::vector<float> dequantized;
};

void quantize_weight(const Context& ctx, int64_t N, int64_t K, int64_t bs, int32_t quant_type, bool nested,
                     uint64_t seed, QuantizedWeight* w) {
  const int64_t n = N * K, nb = bnb::ceil_div(n, bs);
  std::vector<float> host = random_normal(n, seed, static_cast<float>(1.0 / std::sqrt(static_cast<double>(K))));
  Buffer src(ctx, static_cast<size_t>(n) * 4);
  src.upload(host.data(), static_cast<size_t>(n) * 4);
  w->packed = std::make_unique<Buffer>(ctx, static_cast<size_t>(bnb::ceil_div(n, 2)));
  w->absmax = std::make_unique<Buffer>(ctx, static_cast<size_t>(nb) * 4);
  ASSERT_BNB_OK(bnb_quantize_4bit(ctx.get(), quant_type, BNB_F32, src.get(), n, bs, w->packed->as<uint8_t>(),
                                  w->absmax->as<float>(), nullptr));
  ASSERT_BNB_OK(bnb_scales_init(&w->scales));
  if (nested) {
    w->absmax_q = std::make_unique<Buffer>(ctx, static_cast<size_t>(nb));
    w->absmax2 = std::make_unique<Buffer>(ctx, static_cast<size_t>(bnb::ceil_div(nb, 256)) * 4);
    w->offset = std::make_unique<Buffer>(ctx, 4);
    ASSERT_BNB_OK(bnb_compress_absmax(ctx.get(), w->absmax->as<float>(), nb, w->absmax_q->as<uint8_t>(),
                                      w->absmax2->as<float>(), w->offset->as<float>(), nullptr));
    w->scales.absmax_q = w->absmax_q->as<uint8_t>();
    w->scales.absmax2 = w->absmax2->as<float>();
    w->scales.offset = w->offset->as<float>();
    w->scales.blocksize2 = 256;
  } else {
    w->scales.absmax = w->absmax->as<float>();
  }
  Buffer dq(ctx, static_cast<size_t>(n) * 4);
  ASSERT_BNB_OK(bnb_dequantize_4bit(ctx.get(), quant_type, w->packed->as<uint8_t>(), &w->scales, n, bs, BNB_F32,
                                    dq.get(), nullptr));
  ASSERT_BNB_OK(bnb_synchronize(ctx.get(), nullptr));
  w->dequantized = dq.download_as<float>();
}

struct Shape {
  int64_t M, N, K, bs;
};

class Gemm4 : public ::testing::TestWithParam<int32_t> {
 protected:
  void SetUp() override {
    ctx_ = std::make_unique<Context>(GetParam());
    ASSERT_TRUE(ctx_->ok()) << bnb_last_error_message();
  }

  // Runs one case; returns the relative error (and checks it against the dtype's bound).
  double run_case(const Context& ctx, const Shape& s, int32_t dtype, int32_t quant_type, bool nested, bool with_bias,
                  uint64_t seed) {
    SCOPED_TRACE(::testing::Message() << "M=" << s.M << " N=" << s.N << " K=" << s.K << " bs=" << s.bs << " "
                                      << dtype_label(dtype) << (quant_type == BNB_NF4 ? " nf4" : " fp4")
                                      << (nested ? " nested" : " plain") << (with_bias ? " bias" : ""));
    QuantizedWeight w;
    quantize_weight(ctx, s.N, s.K, s.bs, quant_type, nested, seed, &w);
    if (::testing::Test::HasFatalFailure()) return INFINITY;

    const size_t es = dtype_size(dtype);
    const std::vector<uint8_t> a_bytes = to_dtype(random_normal(s.M * s.K, seed + 1), dtype);
    const std::vector<float> a_exact = from_dtype(a_bytes, dtype);
    const std::vector<uint8_t> bias_bytes = to_dtype(random_normal(s.N, seed + 2, 0.5f), dtype);
    const std::vector<float> bias_exact = from_dtype(bias_bytes, dtype);

    Buffer a(ctx, a_bytes.size()), bias(ctx, bias_bytes.size()), out(ctx, static_cast<size_t>(s.M * s.N) * es);
    a.upload(a_bytes.data(), a_bytes.size());
    bias.upload(bias_bytes.data(), bias_bytes.size());
    out.fill(0xff);  // NaN in every float dtype: unwritten elements fail the check
    const bnb_status_t st = bnb_gemm_4bit(ctx.get(), dtype, s.M, s.N, s.K, a.get(), w.packed->as<uint8_t>(), &w.scales,
                                          quant_type, s.bs, with_bias ? bias.get() : nullptr, out.get(), nullptr);
    EXPECT_EQ(st, BNB_SUCCESS) << bnb_last_error_message();
    if (st != BNB_SUCCESS) return INFINITY;
    EXPECT_EQ(bnb_synchronize(ctx.get(), nullptr), BNB_SUCCESS);
    const std::vector<float> got = from_dtype(out.download(), dtype);
    const std::vector<double> ref =
        reference(a_exact, w.dequantized, with_bias ? &bias_exact : nullptr, s.M, s.N, s.K);
    const double err = relative_error(got, ref);
    EXPECT_LE(err, tolerance(dtype));
    return err;
  }

  // bnb_gemm_4bit_transposed: out[M,K] = A[M,N] @ Wdq[N,K] against the float64 product.
  void run_transposed_case(const Shape& s, int32_t dtype, int32_t quant_type, bool nested, uint64_t seed) {
    SCOPED_TRACE(::testing::Message() << "transposed M=" << s.M << " N=" << s.N << " K=" << s.K << " bs=" << s.bs
                                      << " " << dtype_label(dtype) << (quant_type == BNB_NF4 ? " nf4" : " fp4")
                                      << (nested ? " nested" : " plain"));
    const Context& ctx = *ctx_;
    QuantizedWeight w;
    quantize_weight(ctx, s.N, s.K, s.bs, quant_type, nested, seed, &w);
    if (::testing::Test::HasFatalFailure()) return;
    const std::vector<uint8_t> a_bytes = to_dtype(random_normal(s.M * s.N, seed + 1), dtype);
    const std::vector<float> a_exact = from_dtype(a_bytes, dtype);
    Buffer a(ctx, a_bytes.size()), out(ctx, static_cast<size_t>(s.M * s.K) * dtype_size(dtype));
    a.upload(a_bytes.data(), a_bytes.size());
    out.fill(0xff);  // NaN: unwritten elements fail the check
    ASSERT_BNB_OK(bnb_gemm_4bit_transposed(ctx.get(), dtype, s.M, s.N, s.K, a.get(), w.packed->as<uint8_t>(),
                                           &w.scales, quant_type, s.bs, out.get(), nullptr));
    ASSERT_BNB_OK(bnb_synchronize(ctx.get(), nullptr));
    std::vector<double> ref(static_cast<size_t>(s.M * s.K), 0.0);
    for (int64_t m = 0; m < s.M; ++m) {
      for (int64_t n = 0; n < s.N; ++n) {
        const double x = a_exact[static_cast<size_t>(m * s.N + n)];
        const float* wrow = &w.dequantized[static_cast<size_t>(n * s.K)];
        double* r = &ref[static_cast<size_t>(m * s.K)];
        for (int64_t k = 0; k < s.K; ++k) r[k] += x * static_cast<double>(wrow[k]);
      }
    }
    EXPECT_LE(relative_error(from_dtype(out.download(), dtype), ref), tolerance(dtype));
  }

  std::unique_ptr<Context> ctx_;
};

std::string param_name(const ::testing::TestParamInfo<int32_t>& info) { return backend_label(info.param); }

// Shapes with odd M and N, N not a multiple of any tile, K from one block to large, every
// blocksize, M on both sides of the small-M / large-M switch points of the kernels.
const Shape kShapes[] = {
    {1, 1, 32, 32},      {1, 37, 64, 32},     {3, 65, 128, 64},    {2, 5, 4096, 4096},  {1, 301, 4096, 64},
    {5, 129, 256, 128},  {17, 33, 512, 256},  {1, 9, 16384, 512},  {7, 70, 2048, 1024}, {33, 47, 4096, 2048},
    {64, 96, 1024, 64},  {1, 6, 32768, 64},   {130, 21, 320, 32},  {4, 257, 8192, 128}, {300, 11, 96, 32},
};

}  // namespace

TEST_P(Gemm4, MatchesFloat64Reference) {
  uint64_t seed = 1000;
  int index = 0;
  for (const Shape& s : kShapes) {
    for (int32_t dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
      for (int32_t qt : {BNB_NF4, BNB_FP4}) {
        for (bool nested : {false, true}) {
          run_case(*ctx_, s, dtype, qt, nested, (index++ % 3) != 0, seed += 10);
          if (HasFailure()) return;
        }
      }
    }
  }
}

// The other orientation of the same weights (every shape above: M from 1 to 300, N and K odd
// sizes, every blocksize), each dtype and format, plain and nested.
TEST_P(Gemm4, TransposedMatchesFloat64Reference) {
  uint64_t seed = 5000;
  int index = 0;
  for (const Shape& s : kShapes) {
    for (int32_t dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
      const int32_t qt = index % 2 == 0 ? BNB_NF4 : BNB_FP4;
      run_transposed_case(s, dtype, qt, (index++ / 2) % 2 == 1, seed += 10);
      if (HasFailure()) return;
    }
  }
}

// Single-threaded and multi-threaded CPU contexts split the work differently; both must meet
// the bounds, and repeating a call must give the same bits.
TEST_P(Gemm4, ThreadCountsAndDeterminism) {
  if (GetParam() != BNB_BACKEND_CPU) GTEST_SKIP() << "CPU thread pools only";
  for (int32_t threads : {1, 3}) {
    Context ctx(BNB_BACKEND_CPU, threads);
    ASSERT_TRUE(ctx.ok());
    run_case(ctx, {6, 203, 2048, 64}, BNB_F32, BNB_NF4, true, true, 77);
    run_case(ctx, {1, 203, 2048, 64}, BNB_BF16, BNB_FP4, false, true, 78);
  }
  const Shape s{9, 55, 1024, 128};
  QuantizedWeight w;
  quantize_weight(*ctx_, s.N, s.K, s.bs, BNB_NF4, false, 5, &w);
  ASSERT_FALSE(HasFatalFailure());
  const std::vector<uint8_t> a_bytes = to_dtype(random_normal(s.M * s.K, 6), BNB_F16);
  Buffer a(*ctx_, a_bytes.size()), out1(*ctx_, static_cast<size_t>(s.M * s.N) * 2),
      out2(*ctx_, static_cast<size_t>(s.M * s.N) * 2);
  a.upload(a_bytes.data(), a_bytes.size());
  for (Buffer* o : {&out1, &out2}) {
    ASSERT_BNB_OK(bnb_gemm_4bit(ctx_->get(), BNB_F16, s.M, s.N, s.K, a.get(), w.packed->as<uint8_t>(), &w.scales,
                                BNB_NF4, s.bs, nullptr, o->get(), nullptr));
  }
  ASSERT_BNB_OK(bnb_synchronize(ctx_->get(), nullptr));
  EXPECT_EQ(out1.download(), out2.download());
}

// The bound is tight enough to catch a wrong decode: flipping the quant type (decoding NF4
// weights with the FP4 table) must fail it by far.
TEST_P(Gemm4, WrongTableIsDetected) {
  const Shape s{2, 16, 256, 64};
  QuantizedWeight w;
  quantize_weight(*ctx_, s.N, s.K, s.bs, BNB_NF4, false, 11, &w);
  ASSERT_FALSE(HasFatalFailure());
  const std::vector<float> a_host = random_normal(s.M * s.K, 12);
  Buffer a(*ctx_, a_host.size() * 4), out(*ctx_, static_cast<size_t>(s.M * s.N) * 4);
  a.upload(a_host.data(), a_host.size() * 4);
  ASSERT_BNB_OK(bnb_gemm_4bit(ctx_->get(), BNB_F32, s.M, s.N, s.K, a.get(), w.packed->as<uint8_t>(), &w.scales,
                              BNB_FP4, s.bs, nullptr, out.get(), nullptr));
  ASSERT_BNB_OK(bnb_synchronize(ctx_->get(), nullptr));
  const double err = relative_error(out.download_as<float>(), reference(a_host, w.dequantized, nullptr, s.M, s.N, s.K));
  EXPECT_GT(err, 0.1);
}

// A plan (bnb_gemm_4bit_plan_*) runs the same op with the same arguments: bit-identical results
// to bnb_gemm_4bit, for several M with one plan; and its own bad input.
TEST_P(Gemm4, PlanMatchesDirectCall) {
  for (int32_t dtype : {BNB_F32, BNB_BF16}) {
    for (bool nested : {false, true}) {
      SCOPED_TRACE(::testing::Message() << dtype_label(dtype) << (nested ? " nested" : " plain"));
      const int64_t N = 77, K = 512, bs = 64;
      QuantizedWeight w;
      quantize_weight(*ctx_, N, K, bs, BNB_NF4, nested, 31, &w);
      ASSERT_FALSE(HasFatalFailure());
      const std::vector<uint8_t> bias_bytes = to_dtype(random_normal(N, 32), dtype);
      Buffer bias(*ctx_, bias_bytes.size());
      bias.upload(bias_bytes.data(), bias_bytes.size());
      bnb_gemm4_plan_t plan = nullptr;
      ASSERT_BNB_OK(bnb_gemm_4bit_plan_create(ctx_->get(), dtype, N, K, w.packed->as<uint8_t>(), &w.scales, BNB_NF4,
                                              bs, bias.get(), &plan));
      ASSERT_NE(plan, nullptr);
      for (int64_t M : {1, 3, 16, 40}) {
        const std::vector<uint8_t> a_bytes = to_dtype(random_normal(M * K, 33 + M), dtype);
        const size_t out_bytes = static_cast<size_t>(M * N) * dtype_size(dtype);
        Buffer a(*ctx_, a_bytes.size()), direct(*ctx_, out_bytes), planned(*ctx_, out_bytes);
        a.upload(a_bytes.data(), a_bytes.size());
        direct.fill(0xff);
        planned.fill(0x7f);
        ASSERT_BNB_OK(bnb_gemm_4bit(ctx_->get(), dtype, M, N, K, a.get(), w.packed->as<uint8_t>(), &w.scales, BNB_NF4,
                                    bs, bias.get(), direct.get(), nullptr));
        ASSERT_BNB_OK(bnb_gemm_4bit_plan_run(plan, M, a.get(), planned.get(), nullptr));
        ASSERT_BNB_OK(bnb_synchronize(ctx_->get(), nullptr));
        EXPECT_EQ(planned.download(), direct.download()) << "M=" << M;
        const std::vector<float> bias_exact = from_dtype(bias_bytes, dtype);
        const std::vector<double> ref = reference(from_dtype(a_bytes, dtype), w.dequantized, &bias_exact, M, N, K);
        EXPECT_LE(relative_error(from_dtype(planned.download(), dtype), ref), tolerance(dtype)) << "M=" << M;
      }
      // Bad input: the run checks M and its pointers; a NULL plan is refused everywhere.
      Buffer a(*ctx_, static_cast<size_t>(K) * 4), out(*ctx_, static_cast<size_t>(N) * 4);
      EXPECT_EQ(bnb_gemm_4bit_plan_run(plan, 0, a.get(), out.get(), nullptr), BNB_ERR_INVALID_ARGUMENT);
      EXPECT_EQ(bnb_gemm_4bit_plan_run(plan, 1, nullptr, out.get(), nullptr), BNB_ERR_INVALID_ARGUMENT);
      EXPECT_EQ(bnb_gemm_4bit_plan_run(plan, 1, a.get(), nullptr, nullptr), BNB_ERR_INVALID_ARGUMENT);
      EXPECT_EQ(bnb_gemm_4bit_plan_run(plan, INT64_C(1) << 59, a.get(), out.get(), nullptr), BNB_ERR_INVALID_ARGUMENT);
      EXPECT_EQ(bnb_gemm_4bit_plan_run(nullptr, 1, a.get(), out.get(), nullptr), BNB_ERR_INVALID_ARGUMENT);
      EXPECT_EQ(bnb_gemm_4bit_plan_destroy(plan), BNB_SUCCESS);
      EXPECT_EQ(bnb_gemm_4bit_plan_destroy(nullptr), BNB_SUCCESS);
    }
  }
  // Creation checks what bnb_gemm_4bit checks.
  QuantizedWeight w;
  quantize_weight(*ctx_, 8, 256, 64, BNB_NF4, false, 41, &w);
  ASSERT_FALSE(HasFatalFailure());
  bnb_gemm4_plan_t plan = reinterpret_cast<bnb_gemm4_plan_t>(1);
  EXPECT_EQ(bnb_gemm_4bit_plan_create(ctx_->get(), BNB_F32, 8, 250, w.packed->as<uint8_t>(), &w.scales, BNB_NF4, 64,
                                      nullptr, &plan),
            BNB_ERR_INVALID_ARGUMENT);  // K not a multiple of the blocksize
  EXPECT_EQ(plan, nullptr);
  EXPECT_EQ(bnb_gemm_4bit_plan_create(ctx_->get(), BNB_F32, 8, 256, nullptr, &w.scales, BNB_NF4, 64, nullptr, &plan),
            BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bnb_gemm_4bit_plan_create(ctx_->get(), BNB_F32, 8, 256, w.packed->as<uint8_t>(), nullptr, BNB_NF4, 64,
                                      nullptr, &plan),
            BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bnb_gemm_4bit_plan_create(ctx_->get(), 99, 8, 256, w.packed->as<uint8_t>(), &w.scales, BNB_NF4, 64, nullptr,
                                      &plan),
            BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bnb_gemm_4bit_plan_create(ctx_->get(), BNB_F32, 8, 256, w.packed->as<uint8_t>(), &w.scales, BNB_NF4, 64,
                                      nullptr, nullptr),
            BNB_ERR_INVALID_ARGUMENT);
}

TEST_P(Gemm4, GoldenMatmul4bit) {
  const auto cases = load_golden("matmul_4bit", "cuda");
  if (cases.empty()) GTEST_SKIP() << "no golden vectors at " << golden_dir();
  const Context& ctx = *ctx_;
  int checked = 0;
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.label());
    const int64_t M = c.param_int("M"), N = c.param_int("N"), K = c.param_int("K"), bs = c.param_int("blocksize");
    const int32_t qt = c.param_string("quant_type") == "fp4" ? BNB_FP4 : BNB_NF4;
    const GoldenArray& A = c.inputs.at("A");
    const GoldenArray& B = c.inputs.at("B_packed");
    const GoldenArray& ref_out = c.outputs.at("out");
    const int32_t dtype = dtype_from_name(A.dtype);
    ASSERT_EQ(dtype_from_name(ref_out.dtype), dtype);
    ASSERT_EQ(A.numel(), M * K);

    Buffer a(ctx, A.bytes.size()), w(ctx, B.bytes.size()), out(ctx, static_cast<size_t>(M * N) * dtype_size(dtype));
    a.upload(A.bytes.data(), A.bytes.size());
    w.upload(B.bytes.data(), B.bytes.size());
    out.fill(0xff);
    bnb_scales_t scales;
    ASSERT_BNB_OK(bnb_scales_init(&scales));
    std::unique_ptr<Buffer> absmax, absmax_q, absmax2, offset;
    const auto upload = [&ctx](const GoldenArray& g, std::unique_ptr<Buffer>* b) {
      *b = std::make_unique<Buffer>(ctx, g.bytes.size());
      (*b)->upload(g.bytes.data(), g.bytes.size());
    };
    if (c.inputs.count("absmax_q") != 0) {
      upload(c.inputs.at("absmax_q"), &absmax_q);
      upload(c.inputs.at("absmax_absmax"), &absmax2);
      upload(c.inputs.at("absmax_offset"), &offset);
      scales.absmax_q = absmax_q->as<uint8_t>();
      scales.absmax2 = absmax2->as<float>();
      scales.offset = offset->as<float>();
      scales.blocksize2 = 256;
    } else {
      upload(c.inputs.at("absmax"), &absmax);
      scales.absmax = absmax->as<float>();
    }
    ASSERT_BNB_OK(bnb_gemm_4bit(ctx.get(), dtype, M, N, K, a.get(), w.as<uint8_t>(), &scales, qt, bs, nullptr,
                                out.get(), nullptr));
    ASSERT_BNB_OK(bnb_synchronize(ctx.get(), nullptr));
    const std::vector<float> got = from_dtype(out.download(), dtype);
    const std::vector<float> want = ref_out.as_f32();
    const std::vector<double> want_d(want.begin(), want.end());
    EXPECT_LE(relative_error(got, want_d), tolerance(dtype));
    ++checked;
  }
  EXPECT_EQ(checked, 36);
}

INSTANTIATE_TEST_SUITE_P(Backends, Gemm4, ::testing::ValuesIn(available_backends()), param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Gemm4);
