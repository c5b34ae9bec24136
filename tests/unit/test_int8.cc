// LLM.int8() on every available backend: the golden vectors of bitsandbytes' CUDA kernels
// (bit-exact codes, row statistics, outlier columns and int32 products; dequantization within
// 1 fp16 ulp) and random shapes against the scalar reference below, written from docs/FORMATS.md
// section 6 without looking at the kernels.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "golden.h"
#include "half.h"
#include "util.h"
#if defined(BNB_HAVE_REF)
#include "rcp.h"
#endif

using namespace bnb_test;

namespace {

constexpr uint8_t kPoison = 0xcd;
constexpr size_t kGuard = 64;  // bytes after every output that must stay untouched

#define SKIP_IF_NOT_SUPPORTED(expr)                                                        \
  do {                                                                                     \
    const bnb_status_t st_ = (expr);                                                       \
    if (st_ == BNB_ERR_NOT_SUPPORTED) GTEST_SKIP() << "not offered: " << #expr;            \
    ASSERT_EQ(st_, BNB_SUCCESS) << #expr << ": " << bnb_last_error_message();              \
  } while (0)

// ------------------------------------------------------------------ scalar reference

float round_to_dtype(int32_t dtype, float v) { return from_dtype(to_dtype({v}, dtype), dtype)[0]; }

#if defined(BNB_HAVE_REF)
float rcp(float x) { return bnb::rcp_approx(x); }
#else
float rcp(float x) { return 1.0f / x; }  // without the RCP table: exact only away from ties
#endif

struct QuantRef {
  std::vector<int8_t> q;
  std::vector<float> row_stats;
  std::vector<int32_t> outlier_cols;
};

// docs/FORMATS.md §6.1. x holds values exactly representable in dtype; the threshold is compared in dtype.
QuantRef reference_quant(int32_t dtype, int64_t rows, int64_t cols, const std::vector<float>& x, float threshold) {
  QuantRef r;
  r.q.assign(static_cast<size_t>(rows * cols), 0);
  r.row_stats.assign(static_cast<size_t>(rows), 0.0f);
  const bool outliers = threshold > 0.0f;
  const float t = outliers ? round_to_dtype(dtype, threshold) : 0.0f;
  std::vector<bool> outlier_col(static_cast<size_t>(cols), false);
  if (outliers) {
    for (int64_t c = 0; c < cols; ++c) {
      for (int64_t i = 0; i < rows; ++i)
        if (std::fabs(x[static_cast<size_t>(i * cols + c)]) >= t) outlier_col[static_cast<size_t>(c)] = true;
      if (outlier_col[static_cast<size_t>(c)]) r.outlier_cols.push_back(static_cast<int32_t>(c));
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    float m = 0.0f;
    bool counted = false;
    for (int64_t c = 0; c < cols; ++c) {
      const float a = std::fabs(x[static_cast<size_t>(i * cols + c)]);
      if (std::isnan(a)) continue;
      if (outliers && !(a < t)) continue;
      m = std::max(m, a);
      counted = true;
    }
    if (!counted) m = -0.0f;  // nothing counted (all NaN, or all outliers)
    r.row_stats[static_cast<size_t>(i)] = m;
    volatile float s = 127.0f * rcp(m);
    if (std::isinf(s)) continue;  // SCB = +-0: all zeros
    for (int64_t c = 0; c < cols; ++c) {
      if (outlier_col[static_cast<size_t>(c)]) continue;
      volatile float p = x[static_cast<size_t>(i * cols + c)] * s;
      if (std::isnan(p)) continue;
      const float clamped = std::min(127.0f, std::max(-128.0f, static_cast<float>(p)));
      r.q[static_cast<size_t>(i * cols + c)] = static_cast<int8_t>(std::nearbyint(clamped));
    }
  }
  return r;
}

// docs/FORMATS.md §6.3 with the bias in out_dtype (fused for fp16, added after the fp16 rounding else).
std::vector<uint8_t> reference_dequant(int64_t M, int64_t N, const std::vector<int32_t>& C,
                                       const std::vector<float>& row, const std::vector<float>& col,
                                       const std::vector<float>* bias, int32_t out_dtype) {
  const float kdq = [] {
    const uint32_t bits = 0x38820610u;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }();
  std::vector<float> out(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      volatile float t1 = static_cast<float>(C[static_cast<size_t>(m * N + n)]) * row[static_cast<size_t>(m)];
      volatile float t = t1 * col[static_cast<size_t>(n)];
      uint16_t h;
      if (bias != nullptr && out_dtype == BNB_F16) {
        h = bnb::f32_to_f16(std::fma(static_cast<float>(t), kdq, (*bias)[static_cast<size_t>(n)]));
      } else {
        volatile float y = t * kdq;
        h = bnb::f32_to_f16(y);
        if (bias != nullptr) {
          volatile float z = bnb::f16_to_f32(h) + (*bias)[static_cast<size_t>(n)];
          h = bnb::f32_to_f16(z);
        }
      }
      out[static_cast<size_t>(m * N + n)] = bnb::f16_to_f32(h);
    }
  }
  return to_dtype(out, out_dtype);  // exact for fp32, RNE for bf16, exact for fp16
}

std::vector<int32_t> reference_matmul(int64_t M, int64_t N, int64_t K, const std::vector<int8_t>& A,
                                      const std::vector<int8_t>& B) {
  std::vector<int32_t> C(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      int64_t s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += static_cast<int64_t>(A[static_cast<size_t>(m * K + k)]) * B[static_cast<size_t>(n * K + k)];
      C[static_cast<size_t>(m * N + n)] = static_cast<int32_t>(s);
    }
  }
  return C;
}

// docs/OPS.md §5.10: the outlier product added to `out` (values of dtype, as floats), in
// binary32 with subnormal operands and results flushed to zero (the GPU's ftz instructions).
float flush(float v) { return std::fabs(v) < 1.17549435e-38f ? std::copysign(0.0f, v) : v; }

std::vector<float> reference_outlier_sum(int32_t dtype, int64_t M, int64_t N, int64_t K, const std::vector<float>& x,
                                         const std::vector<int8_t>& W, const std::vector<float>& scb,
                                         const std::vector<int32_t>& cols, std::vector<float> out) {
  if (cols.empty()) return out;
  const float inv127 = 1.0f / 127.0f;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      float s = 0.0f;
      for (const int32_t c : cols) {
        volatile float ws = flush(static_cast<float>(W[static_cast<size_t>(n * K + c)]) * flush(scb[static_cast<size_t>(n)]));
        volatile float wsc = flush(ws * inv127);
        const float wc = round_to_dtype(dtype, wsc);
        s = flush(std::fma(flush(x[static_cast<size_t>(m * K + c)]), wc, s));
      }
      float& o = out[static_cast<size_t>(m * N + n)];
      volatile float sum = flush(o) + round_to_dtype(dtype, s);
      o = round_to_dtype(dtype, flush(sum));
    }
  }
  return out;
}

// ------------------------------------------------------------------ test data

// Activations as LLM.int8() sees them: normal values, a few outlier columns (|x| up to ~60),
// rows with exact fp16 ties (x = +-SCB/2), an all-zero row, a row that is all outliers.
std::vector<float> activations(int32_t dtype, int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<float> x = random_normal(rows * cols, seed, 1.5f);
  std::mt19937_64 rng(seed * 7 + 1);
  const int64_t n_outlier_cols = std::max<int64_t>(1, cols / 97);
  for (int64_t j = 0; j < n_outlier_cols; ++j) {
    const int64_t c = static_cast<int64_t>(rng() % static_cast<uint64_t>(cols));
    for (int64_t i = 0; i < rows; ++i)
      if (rng() % 4 != 0) x[static_cast<size_t>(i * cols + c)] = (rng() % 2 ? 1.0f : -1.0f) * (6.0f + (rng() % 5400) / 100.0f);
  }
  for (int64_t i = 0; i < rows; ++i) {
    if (rows > 2 && i == rows / 2) {  // zero row
      for (int64_t c = 0; c < cols; ++c) x[static_cast<size_t>(i * cols + c)] = (c == 0) ? -0.0f : 0.0f;
    } else if (rows > 3 && i == rows / 3) {  // every element an outlier at threshold 6
      for (int64_t c = 0; c < cols; ++c) x[static_cast<size_t>(i * cols + c)] = 6.0f + static_cast<float>(c % 7);
    } else if (i % 3 == 1 && cols > 4) {  // ties: the row max m and elements at exactly m/2, m/4
      const float m = 4.0f + static_cast<float>(i % 5) * 0.125f;
      x[static_cast<size_t>(i * cols)] = m;
      for (int64_t c = 1; c < cols; c += 3) x[static_cast<size_t>(i * cols + c)] = (c % 2 ? -m : m) / (c % 4 ? 2.0f : 4.0f);
    }
  }
  return from_dtype(to_dtype(x, dtype), dtype);  // exactly representable
}

std::vector<int8_t> random_int8(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int8_t> v(static_cast<size_t>(n));
  for (auto& b : v) b = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
  return v;
}

// A backend buffer with a poisoned guard zone after `bytes`.
struct Out {
  Out(const Context& ctx, size_t bytes) : bytes(bytes), buf(ctx, bytes + kGuard) { buf.fill(kPoison); }
  std::vector<uint8_t> data() const {
    std::vector<uint8_t> all = buf.download();
    return std::vector<uint8_t>(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(bytes));
  }
  bool guard_intact() const {
    std::vector<uint8_t> all = buf.download();
    for (size_t i = bytes; i < all.size(); ++i)
      if (all[i] != kPoison) return false;
    return true;
  }
  size_t bytes;
  Buffer buf;
};

// Values stored in `dtype`: the bytes, the values they hold (as floats) and a backend copy.
struct DtypeArray {
  DtypeArray(const Context& ctx, const std::vector<float>& values, int32_t dtype)
      : raw(to_dtype(values, dtype)), v(from_dtype(raw, dtype)), buf(ctx, raw.size()) {
    buf.upload(raw.data(), raw.size());
  }
  std::vector<uint8_t> raw;
  std::vector<float> v;
  Buffer buf;
};

// A random int8 weight [N, K] with its row absmax SCB (fp16 values), on the host and the backend.
struct Int8Weight {
  Int8Weight(const Context& ctx, int64_t N, int64_t K, uint64_t seed)
      : W(random_int8(N * K, seed)), scb(static_cast<size_t>(N)), wb(ctx, W.size()), scbb(ctx, scb.size() * 4) {
    std::mt19937_64 rng(seed + 1);
    for (auto& v : scb) v = round_to_dtype(BNB_F16, 0.05f + (rng() % 1000) / 400.0f);
    wb.upload(W.data(), W.size());
    scbb.upload(scb.data(), scb.size() * 4);
  }
  std::vector<int8_t> W;
  std::vector<float> scb;
  Buffer wb, scbb;
};

template <class T>
std::vector<T> as(const std::vector<uint8_t>& bytes) {
  std::vector<T> v(bytes.size() / sizeof(T));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
  return v;
}

template <class T>
int64_t first_diff(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return -2;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<int64_t>(i);
  return -1;
}

// The first element (of `es` bytes) at which two byte arrays differ; -1 if none.
int64_t first_diff_elem(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, size_t es) {
  for (size_t i = 0; i < a.size() / es; ++i)
    if (std::memcmp(&a[i * es], &b[i * es], es) != 0) return static_cast<int64_t>(i);
  return -1;
}

// Golden C / stats / bias inputs from a case, as host vectors.
template <class T>
std::vector<T> golden_as(const GoldenArray& g) {
  return as<T>(g.bytes);
}

class Int8 : public ::testing::TestWithParam<int32_t> {
 protected:
  void SetUp() override {
    ctx_ = std::make_unique<Context>(GetParam());
    ASSERT_TRUE(ctx_->ok()) << bnb_last_error_message();
  }
  const Context& ctx() const { return *ctx_; }

  // Golden int8_vectorwise_quant cases: codes, row statistics and outlier columns bit for bit.
  void check_golden_quant(const std::vector<GoldenCase>& cases) {
    for (const GoldenCase& c : cases) {
      SCOPED_TRACE(c.label());
      const GoldenArray& A = c.inputs.at("A");
      ASSERT_EQ(A.shape.size(), 2u);
      const int64_t rows = A.shape[0], cols = A.shape[1];
      const float threshold = std::stof(c.params.at("threshold"));
      Buffer a(ctx(), A.bytes.size());
      a.upload(A.bytes.data(), A.bytes.size());
      Out q(ctx(), static_cast<size_t>(rows * cols)), stats(ctx(), static_cast<size_t>(rows) * 4);
      SKIP_IF_NOT_SUPPORTED(bnb_int8_vectorwise_quant(ctx().get(), dtype_from_name(A.dtype), rows, cols, a.get(),
                                                      threshold, q.buf.as<int8_t>(), stats.buf.as<float>(), nullptr));
      EXPECT_EQ(q.data(), c.outputs.at("q").bytes);
      EXPECT_EQ(stats.data(), c.outputs.at("row_stats").bytes);
      if (threshold > 0.0f) {
        const auto ref_cols = golden_as<int32_t>(c.outputs.at("outlier_cols"));
        Out cols_out(ctx(), static_cast<size_t>(cols) * 4);
        int64_t count = -1;
        SKIP_IF_NOT_SUPPORTED(bnb_int8_outlier_columns(ctx().get(), dtype_from_name(A.dtype), rows, cols, a.get(),
                                                       threshold, cols_out.buf.as<int32_t>(), cols, &count, nullptr));
        ASSERT_EQ(count, static_cast<int64_t>(ref_cols.size()));
        auto got = as<int32_t>(cols_out.data());
        got.resize(static_cast<size_t>(count));
        EXPECT_EQ(got, ref_cols);
      }
    }
  }

  // Runs quant + outlier columns and compares everything with the reference.
  void check_quant(const Context& ctx, int32_t dtype, int64_t rows, int64_t cols, const std::vector<float>& x,
                   float threshold) {
    SCOPED_TRACE(testing::Message() << "dtype " << dtype << " rows " << rows << " cols " << cols << " threshold "
                                    << threshold);
    const std::vector<uint8_t> raw = to_dtype(x, dtype);
    Buffer a(ctx, raw.size());
    a.upload(raw.data(), raw.size());
    Out q(ctx, static_cast<size_t>(rows * cols)), stats(ctx, static_cast<size_t>(rows) * 4);
    SKIP_IF_NOT_SUPPORTED(bnb_int8_vectorwise_quant(ctx.get(), dtype, rows, cols, a.get(), threshold,
                                                    q.buf.as<int8_t>(), stats.buf.as<float>(), nullptr));
    const QuantRef ref = reference_quant(dtype, rows, cols, x, threshold);
    const auto got_q = as<int8_t>(q.data());
    const auto got_s = as<float>(stats.data());
    const int64_t dq = first_diff(got_q, ref.q);
    EXPECT_EQ(dq, -1) << "code " << (dq >= 0 ? int(got_q[dq]) : 0) << " expected " << (dq >= 0 ? int(ref.q[dq]) : 0)
                      << " x " << (dq >= 0 ? x[dq] : 0.0f);
    const int64_t ds = first_diff(got_s, ref.row_stats);
    EXPECT_EQ(ds, -1) << "row_stats " << (ds >= 0 ? got_s[ds] : 0) << " expected " << (ds >= 0 ? ref.row_stats[ds] : 0);
    EXPECT_TRUE(q.guard_intact());
    EXPECT_TRUE(stats.guard_intact());
    // Independent float64 sanity: every code is within half a step (plus rounding slack) of x*127/SCB.
    for (int64_t i = 0; i < rows && dq == -1; ++i) {
      const double m = ref.row_stats[static_cast<size_t>(i)];
      if (m == 0.0 || std::isinf(m)) continue;
      for (int64_t c = 0; c < cols; ++c) {
        const size_t e = static_cast<size_t>(i * cols + c);
        if (!std::isfinite(x[e])) continue;
        if (got_q[e] == 0 && std::binary_search(ref.outlier_cols.begin(), ref.outlier_cols.end(), c)) continue;
        ASSERT_LE(std::fabs(got_q[e] - x[e] * 127.0 / m), 0.5 + 1e-4) << "row " << i << " col " << c;
      }
    }
    if (threshold > 0.0f) {
      const int64_t cap = static_cast<int64_t>(ref.outlier_cols.size()) + 3;
      Out cols_out(ctx, static_cast<size_t>(cap) * 4);
      int64_t count = -1;
      SKIP_IF_NOT_SUPPORTED(bnb_int8_outlier_columns(ctx.get(), dtype, rows, cols, a.get(), threshold,
                                                     cols_out.buf.as<int32_t>(), cap, &count, nullptr));
      ASSERT_EQ(count, static_cast<int64_t>(ref.outlier_cols.size()));
      auto got_cols = as<int32_t>(cols_out.data());
      got_cols.resize(static_cast<size_t>(count));
      EXPECT_EQ(got_cols, ref.outlier_cols);
      // Room for fewer: the count is still the total, only `capacity` entries are written.
      if (count >= 2) {
        Out small(ctx, 4);
        int64_t count2 = -1;
        ASSERT_BNB_OK(bnb_int8_outlier_columns(ctx.get(), dtype, rows, cols, a.get(), threshold,
                                               small.buf.as<int32_t>(), 1, &count2, nullptr));
        EXPECT_EQ(count2, count);
        EXPECT_EQ(as<int32_t>(small.data())[0], ref.outlier_cols[0]);
        EXPECT_TRUE(small.guard_intact());
      }
    }
  }

  void check_matmul(const Context& ctx, int64_t M, int64_t N, int64_t K, const std::vector<int8_t>& A,
                    const std::vector<int8_t>& B) {
    SCOPED_TRACE(testing::Message() << "M " << M << " N " << N << " K " << K);
    Buffer a(ctx, A.size()), b(ctx, B.size());
    a.upload(A.data(), A.size());
    b.upload(B.data(), B.size());
    Out c(ctx, static_cast<size_t>(M * N) * 4);
    SKIP_IF_NOT_SUPPORTED(bnb_int8_matmul(ctx.get(), M, N, K, a.as<int8_t>(), b.as<int8_t>(), c.buf.as<int32_t>(),
                                          nullptr));
    const auto got = as<int32_t>(c.data());
    const auto ref = reference_matmul(M, N, K, A, B);
    const int64_t d = first_diff(got, ref);
    EXPECT_EQ(d, -1) << "C " << (d >= 0 ? got[d] : 0) << " expected " << (d >= 0 ? ref[d] : 0);
    EXPECT_TRUE(c.guard_intact());
  }

  std::unique_ptr<Context> ctx_;
};

std::string param_name(const ::testing::TestParamInfo<int32_t>& info) { return backend_label(info.param); }

int64_t f16_ulps(uint16_t a, uint16_t b) {
  const auto ordered = [](uint16_t h) { return (h & 0x8000) ? -static_cast<int64_t>(h & 0x7fff) : static_cast<int64_t>(h); };
  return std::llabs(ordered(a) - ordered(b));
}

}  // namespace

// ------------------------------------------------------------------ golden vectors

TEST_P(Int8, GoldenVectorwiseQuant) { check_golden_quant(load_golden("int8_vectorwise_quant", "cuda")); }

// NaN and +-inf rows (tests/data/golden/nonfinite.json): a row with nothing counted gets -0.0.
TEST_P(Int8, GoldenNonfiniteVectorwiseQuant) {
  check_golden_quant(load_golden("int8_vectorwise_quant", "cuda", "nonfinite.json"));
}

// The same rows one at a time through bnb_int8_linear (CUDA: the fused quantization of M <= 8):
// row statistics bit for bit, and the codes at threshold 0 (with a threshold the golden codes
// zero the outlier columns of the whole matrix, a single row only its own).
TEST_P(Int8, GoldenNonfiniteLinearRows) {
  const int64_t N = 16;
  for (const GoldenCase& c : load_golden("int8_vectorwise_quant", "cuda", "nonfinite.json")) {
    SCOPED_TRACE(c.label());
    const GoldenArray& A = c.inputs.at("A");
    const int32_t dtype = dtype_from_name(A.dtype);
    const int64_t rows = A.shape[0], K = A.shape[1];
    const float threshold = std::stof(c.params.at("threshold"));
    const size_t row_bytes = static_cast<size_t>(K) * dtype_size(dtype);
    const auto W = random_int8(N * K, 5);
    const std::vector<float> scb(static_cast<size_t>(N), 1.5f);
    Buffer wb(ctx(), W.size()), scbb(ctx(), scb.size() * 4), ab(ctx(), row_bytes), cb(ctx(), N * 4),
        out(ctx(), static_cast<size_t>(N) * dtype_size(dtype));
    wb.upload(W.data(), W.size());
    scbb.upload(scb.data(), scb.size() * 4);
    const auto want_q = golden_as<int8_t>(c.outputs.at("q"));
    const auto want_stats = golden_as<float>(c.outputs.at("row_stats"));
    for (int64_t r = 0; r < rows; ++r) {
      SCOPED_TRACE(testing::Message() << "row " << r);
      ab.upload(A.bytes.data() + static_cast<size_t>(r) * row_bytes, row_bytes);
      Out q(ctx(), static_cast<size_t>(K)), stats(ctx(), 4);
      SKIP_IF_NOT_SUPPORTED(bnb_int8_linear(ctx().get(), dtype, 1, N, K, ab.get(), threshold, wb.as<int8_t>(),
                                            scbb.as<float>(), nullptr, q.buf.as<int8_t>(), stats.buf.as<float>(),
                                            cb.as<int32_t>(), out.get(), nullptr));
      EXPECT_EQ(first_diff(as<float>(stats.data()), {want_stats[static_cast<size_t>(r)]}), -1)
          << "row_stats " << as<float>(stats.data())[0] << " expected " << want_stats[static_cast<size_t>(r)];
      if (threshold == 0.0f) {
        const std::vector<int8_t> want(want_q.begin() + r * K, want_q.begin() + (r + 1) * K);
        EXPECT_EQ(first_diff(as<int8_t>(q.data()), want), -1);
      }
    }
  }
}

TEST_P(Int8, GoldenLinearMatmul) {
  const auto cases = load_golden("int8_linear_matmul", "cuda");
  if (cases.empty()) GTEST_SKIP() << "no golden vectors at " << golden_dir();
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.label());
    const GoldenArray& A = c.inputs.at("A");
    const GoldenArray& B = c.inputs.at("B");
    const int64_t M = A.shape[0], K = A.shape[1], N = B.shape[0];
    Buffer a(ctx(), A.bytes.size()), b(ctx(), B.bytes.size());
    a.upload(A.bytes.data(), A.bytes.size());
    b.upload(B.bytes.data(), B.bytes.size());
    Out out(ctx(), static_cast<size_t>(M * N) * 4);
    SKIP_IF_NOT_SUPPORTED(
        bnb_int8_matmul(ctx().get(), M, N, K, a.as<int8_t>(), b.as<int8_t>(), out.buf.as<int32_t>(), nullptr));
    EXPECT_EQ(out.data(), c.outputs.at("C").bytes);
    EXPECT_TRUE(out.guard_intact());
  }
}

TEST_P(Int8, GoldenMmDequant) {
  const auto cases = load_golden("int8_mm_dequant", "cuda");
  if (cases.empty()) GTEST_SKIP() << "no golden vectors at " << golden_dir();
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.label());
    const GoldenArray& C = c.inputs.at("C");
    const int64_t M = C.shape[0], N = C.shape[1];
    Buffer cb(ctx(), C.bytes.size()), rb(ctx(), static_cast<size_t>(M) * 4), colb(ctx(), static_cast<size_t>(N) * 4),
        biasb(ctx(), static_cast<size_t>(N) * 2);
    cb.upload(C.bytes.data(), C.bytes.size());
    rb.upload(c.inputs.at("row_stats").bytes.data(), static_cast<size_t>(M) * 4);
    colb.upload(c.inputs.at("col_stats").bytes.data(), static_cast<size_t>(N) * 4);
    const bool with_bias = c.inputs.count("bias") != 0;
    if (with_bias) biasb.upload(c.inputs.at("bias").bytes.data(), static_cast<size_t>(N) * 2);
    Out out(ctx(), static_cast<size_t>(M * N) * 2);
    SKIP_IF_NOT_SUPPORTED(bnb_int8_mm_dequant(ctx().get(), M, N, cb.as<int32_t>(), rb.as<float>(), colb.as<float>(),
                                              with_bias ? biasb.get() : nullptr, BNB_F16, out.buf.get(), nullptr));
    const auto got = as<uint16_t>(out.data());
    const auto ref = golden_as<uint16_t>(c.outputs.at("out"));
    ASSERT_EQ(got.size(), ref.size());
    int64_t exact = 0, worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const int64_t u = f16_ulps(got[i], ref[i]);
      exact += u == 0;
      worst = std::max(worst, u);
    }
    EXPECT_LE(worst, 1) << exact << " of " << got.size() << " exact";
    EXPECT_TRUE(out.guard_intact());
  }
}

// ------------------------------------------------------------------ random shapes vs reference

TEST_P(Int8, VectorwiseQuantRandom) {
  const int64_t shapes[][2] = {{1, 1}, {1, 7}, {1, 4096}, {3, 33}, {17, 129}, {64, 512}, {5, 1000}, {131, 257}};
  uint64_t seed = 11;
  for (const int32_t dtype : {BNB_F16, BNB_F32, BNB_BF16}) {
    for (const auto& s : shapes) {
      const std::vector<float> x = activations(dtype, s[0], s[1], ++seed);
      for (const float threshold : {0.0f, 6.0f}) check_quant(ctx(), dtype, s[0], s[1], x, threshold);
      if (HasFatalFailure() || IsSkipped()) return;
    }
  }
}

TEST_P(Int8, VectorwiseQuantThresholdRoundedToDtype) {
  // 6.001 is 6.0 in fp16 (and bf16): an element equal to 6.0 is then an outlier in those
  // dtypes, and not in fp32.
  const std::vector<float> x = {1.0f, 6.0f, -2.0f, 3.0f, 0.5f, -6.0f, 2.5f, 1.25f};
  for (const int32_t dtype : {BNB_F16, BNB_BF16, BNB_F32}) check_quant(ctx(), dtype, 2, 4, x, 6.001f);
}

TEST_P(Int8, VectorwiseQuantSpecialValues) {
  // NaN is ignored by the absmax and encodes as 0; +-inf with threshold 0 makes SCB = inf (a
  // zero row); with threshold 6 inf is an outlier. fp32 only holds values beyond fp16's range.
  const float inf = INFINITY, nan = NAN;
  const std::vector<float> x = {nan, 1.0f, -2.0f, 0.5f, 3.0f, inf, -1.0f, 0.25f, 1e30f, -1e-30f, 4.0f, 2.0f};
  for (const float threshold : {0.0f, 6.0f}) check_quant(ctx(), BNB_F32, 3, 4, x, threshold);
}

TEST_P(Int8, VectorwiseQuantRowsWithNothingCounted) {
  // 37 columns: whole vectors and a scalar tail on every CPU target. A row with no counted
  // element (all NaN; at threshold 6 also all outliers, or NaN beside outliers) gets -0.0; a
  // zero among NaN still counts (+0.0).
  const int64_t cols = 37;
  const float nan = NAN;
  std::vector<float> x;
  const auto row = [&](const auto& value) {
    for (int64_t c = 0; c < cols; ++c) x.push_back(value(c));
  };
  row([&](int64_t) { return nan; });
  row([&](int64_t c) { return 7.0f + static_cast<float>(c % 3); });
  row([&](int64_t c) { return c % 2 ? nan : -8.0f; });
  row([&](int64_t c) { return c == 30 ? nan : 0.0f; });
  row([&](int64_t c) { return c == 3 ? nan : -0.0f; });
  row([&](int64_t c) { return c == 36 ? 1.5f : nan; });  // the one value in the scalar tail
  for (const int32_t dtype : {BNB_F16, BNB_BF16, BNB_F32}) {
    for (const float threshold : {0.0f, 6.0f}) check_quant(ctx(), dtype, 6, cols, x, threshold);
  }
}

TEST_P(Int8, MatmulRandom) {
  const int64_t shapes[][3] = {{1, 1, 1},    {1, 7, 5},     {1, 33, 4096}, {2, 5, 129},   {3, 17, 1000},
                               {4, 64, 64},  {7, 9, 31},    {9, 13, 77},   {16, 48, 256}, {17, 129, 255},
                               {33, 65, 513}, {130, 67, 96}, {257, 31, 1025},
                               // K % 16 == 0 and M <= 16: CUDA's tensor-core kernel (K tails of 16..112)
                               {5, 1, 16},   {9, 300, 160}, {12, 40, 4112}, {16, 17, 48}, {16, 1000, 4096}};
  uint64_t seed = 100;
  for (const auto& s : shapes) {
    const auto A = random_int8(s[0] * s[2], ++seed);
    const auto B = random_int8(s[1] * s[2], ++seed);
    check_matmul(ctx(), s[0], s[1], s[2], A, B);
    if (HasFatalFailure() || IsSkipped()) return;
  }
}

TEST_P(Int8, MatmulLargestK) {
  // K = 131071 with every product +-16384 (-128 * -128 or -128 * 127): the sums reach
  // 2147467264 and -2^31 + ..., the edge of exact int32 accumulation.
  // K = 131056 (a multiple of 16): the same on CUDA's tensor-core kernel for M <= 16.
  for (const int64_t K : {int64_t{131071}, int64_t{131056}})
  for (const int64_t M : {1, 2, 12}) {
    const int64_t N = 3;
    std::vector<int8_t> A(static_cast<size_t>(M * K), -128), B(static_cast<size_t>(N * K), -128);
    for (int64_t k = 0; k < K; ++k) B[static_cast<size_t>(K + k)] = 127;  // row 1: -128*127
    for (int64_t k = 0; k < K; ++k) B[static_cast<size_t>(2 * K + k)] = static_cast<int8_t>(k % 2 ? 127 : -128);
    check_matmul(ctx(), M, N, K, A, B);
    if (HasFatalFailure() || IsSkipped()) return;
  }
}

TEST_P(Int8, MmDequantRandom) {
  const int64_t shapes[][2] = {{1, 1}, {1, 7}, {1, 4097}, {3, 33}, {17, 129}, {64, 256}, {65, 31}};
  uint64_t seed = 900;
  for (const auto& s : shapes) {
    const int64_t M = s[0], N = s[1];
    std::mt19937_64 rng(++seed);
    std::vector<int32_t> C(static_cast<size_t>(M * N));
    for (auto& v : C) v = static_cast<int32_t>(rng() % 2000001) - 1000000;
    C[0] = INT32_MAX;  // large products overflow fp16: inf
    if (C.size() > 1) C[1] = 0;
    if (C.size() > 2) C[2] = -1;
    std::vector<float> row(static_cast<size_t>(M)), col(static_cast<size_t>(N));
    // Statistics are fp16 absmaxes stored as fp32.
    for (auto& v : row) v = round_to_dtype(BNB_F16, std::fabs(random_normal(1, rng())[0]) * 3.0f + 1e-3f);
    for (auto& v : col) v = round_to_dtype(BNB_F16, std::fabs(random_normal(1, rng())[0]) * 0.2f + 1e-4f);
    for (const int32_t out_dtype : {BNB_F16, BNB_F32, BNB_BF16}) {
      for (const bool with_bias : {false, true}) {
        SCOPED_TRACE(testing::Message() << "M " << M << " N " << N << " out " << out_dtype << " bias " << with_bias);
        const std::vector<float> bias =
            from_dtype(to_dtype(random_normal(N, rng(), out_dtype == BNB_F32 ? 0.3f : 2.0f), out_dtype), out_dtype);
        const std::vector<uint8_t> bias_raw = to_dtype(bias, out_dtype);
        Buffer cb(ctx(), C.size() * 4), rb(ctx(), row.size() * 4), colb(ctx(), col.size() * 4),
            biasb(ctx(), bias_raw.size());
        cb.upload(C.data(), C.size() * 4);
        rb.upload(row.data(), row.size() * 4);
        colb.upload(col.data(), col.size() * 4);
        biasb.upload(bias_raw.data(), bias_raw.size());
        const size_t out_bytes = static_cast<size_t>(M * N) * dtype_size(out_dtype);
        Out out(ctx(), out_bytes);
        SKIP_IF_NOT_SUPPORTED(bnb_int8_mm_dequant(ctx().get(), M, N, cb.as<int32_t>(), rb.as<float>(),
                                                  colb.as<float>(), with_bias ? biasb.get() : nullptr, out_dtype,
                                                  out.buf.get(), nullptr));
        const std::vector<uint8_t> ref = reference_dequant(M, N, C, row, col, with_bias ? &bias : nullptr, out_dtype);
        const std::vector<uint8_t> got = out.data();
        const size_t es = dtype_size(out_dtype);
        const int64_t first = first_diff_elem(got, ref, es);
        EXPECT_EQ(first, -1) << "got " << (first >= 0 ? from_dtype(std::vector<uint8_t>(got.begin() + first * es, got.begin() + (first + 1) * es), out_dtype)[0] : 0)
                             << " expected " << (first >= 0 ? from_dtype(std::vector<uint8_t>(ref.begin() + first * es, ref.begin() + (first + 1) * es), out_dtype)[0] : 0);
        EXPECT_TRUE(out.guard_intact());
        // Independent float64 check: C*row*col/16129 (+bias) to within fp16 rounding (2^-10
        // relative, twice, plus the bf16 step), away from fp16 overflow and underflow.
        const std::vector<float> gotf = from_dtype(got, out_dtype);
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t n = 0; n < N; ++n) {
            const size_t e = static_cast<size_t>(m * N + n);
            double want = static_cast<double>(C[e]) * row[static_cast<size_t>(m)] * col[static_cast<size_t>(n)] / 16129.0;
            if (with_bias) want += bias[static_cast<size_t>(n)];
            if (std::fabs(want) > 60000.0 || std::fabs(want) < 1e-3) continue;
            const double tol = std::fabs(want) * (out_dtype == BNB_BF16 ? 1.2e-2 : 2.5e-3) + 1e-3;
            ASSERT_NEAR(gotf[e], want, tol) << "m " << m << " n " << n;
          }
        }
      }
    }
  }
}

// bnb_int8_linear against the reference of its three steps (quantization with the outlier
// columns zeroed, int32 product, dequantization with bias in dtype), bit for bit, for q,
// row_stats and out; shapes on both CUDA paths (fused kernel for M <= 16 and K % 16 == 0).
TEST_P(Int8, LinearMatchesReference) {
  // CUDA: one kernel for M <= 8 with M * K <= 8192 (threshold 0, or M = 1), a dependent launch
  // after the quantization for the rest of M <= 16 with K % 16 == 0, three kernels otherwise.
  const int64_t shapes[][3] = {{1, 33, 4096}, {1, 40, 8192}, {4, 50, 1024}, {8, 20, 1008}, {2, 64, 4096},
                               {3, 17, 1000}, {8, 40, 256},  {9, 65, 4112}, {16, 48, 128}, {16, 31, 96},
                               {17, 129, 255}, {40, 64, 512}};
  uint64_t seed = 3000;
  for (const auto& s : shapes) {
    const int64_t M = s[0], N = s[1], K = s[2];
    const Int8Weight weight(ctx(), N, K, ++seed);
    const std::vector<int8_t>& W = weight.W;
    const std::vector<float>& scb = weight.scb;
    const Buffer &wb = weight.wb, &scbb = weight.scbb;
    ++seed;
    for (const int32_t dtype : {BNB_F16, BNB_BF16, BNB_F32}) {
      const DtypeArray xa(ctx(), activations(dtype, M, K, ++seed), dtype);
      const DtypeArray ba(ctx(), random_normal(N, ++seed, 2.0f), dtype);
      const std::vector<float>& x = xa.v;
      const std::vector<float>& bias = ba.v;
      const Buffer &ab = xa.buf, &biasb = ba.buf;
      for (const float threshold : {0.0f, 6.0f}) {
        const QuantRef ref = reference_quant(dtype, M, K, x, threshold);
        const std::vector<int32_t> C = reference_matmul(M, N, K, ref.q, W);
        for (const bool with_bias : {false, true}) {
          SCOPED_TRACE(testing::Message() << "M " << M << " N " << N << " K " << K << " dtype " << dtype
                                          << " threshold " << threshold << " bias " << with_bias);
          Out q(ctx(), static_cast<size_t>(M * K)), stats(ctx(), static_cast<size_t>(M) * 4),
              out(ctx(), static_cast<size_t>(M * N) * dtype_size(dtype));
          Buffer cb(ctx(), static_cast<size_t>(M * N) * 4);
          SKIP_IF_NOT_SUPPORTED(bnb_int8_linear(ctx().get(), dtype, M, N, K, ab.get(), threshold, wb.as<int8_t>(),
                                                scbb.as<float>(), with_bias ? biasb.get() : nullptr,
                                                q.buf.as<int8_t>(), stats.buf.as<float>(), cb.as<int32_t>(),
                                                out.buf.get(), nullptr));
          EXPECT_EQ(first_diff(as<int8_t>(q.data()), ref.q), -1);
          EXPECT_EQ(first_diff(as<float>(stats.data()), ref.row_stats), -1);
          const std::vector<uint8_t> want =
              reference_dequant(M, N, C, ref.row_stats, scb, with_bias ? &bias : nullptr, dtype);
          const std::vector<uint8_t> got = out.data();
          const size_t es = dtype_size(dtype);
          const int64_t first = first_diff_elem(got, want, es);
          EXPECT_EQ(first, -1) << "first differing output element (m = " << (first >= 0 ? first / N : -1)
                               << ", n = " << (first >= 0 ? first % N : -1) << ")";
          EXPECT_TRUE(q.guard_intact());
          EXPECT_TRUE(stats.guard_intact());
          EXPECT_TRUE(out.guard_intact());
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// Activations with outliers in about `fraction` of the columns (at least one), in a few rows each;
// the rest standard normal (|x| < 6 in practice).
std::vector<float> sparse_outlier_activations(int32_t dtype, int64_t rows, int64_t cols, double fraction,
                                              uint64_t seed) {
  std::vector<float> x = random_normal(rows * cols, seed, 0.8f);
  std::mt19937_64 rng(seed * 13 + 5);
  const int64_t n_cols = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(cols) * fraction));
  for (int64_t j = 0; j < n_cols; ++j) {
    const int64_t c = static_cast<int64_t>(rng() % static_cast<uint64_t>(cols));
    for (int64_t i = 0; i < rows; ++i)
      if (i == 0 || rng() % 3 == 0)
        x[static_cast<size_t>(i * cols + c)] = (rng() % 2 ? 1.0f : -1.0f) * (6.0f + (rng() % 5400) / 100.0f);
  }
  return from_dtype(to_dtype(x, dtype), dtype);
}

// bnb_int8_linear_outliers: q, row_stats and the int8 part as bnb_int8_linear's reference, the
// outlier columns and count of the reference quantization, and the outlier product of
// docs/OPS.md §5.10 bit for bit; threshold 0 gives count 0 and bnb_int8_linear's out.
TEST_P(Int8, LinearOutliersMatchesReference) {
  const int64_t shapes[][3] = {{1, 33, 4096}, {4, 50, 1024}, {16, 48, 128}, {9, 65, 4112}, {17, 129, 1000},
                               {40, 64, 512}, {3, 7, 2000}};
  uint64_t seed = 7000;
  for (const auto& s : shapes) {
    const int64_t M = s[0], N = s[1], K = s[2];
    const Int8Weight weight(ctx(), N, K, ++seed);
    const std::vector<int8_t>& W = weight.W;
    const std::vector<float>& scb = weight.scb;
    const Buffer &wb = weight.wb, &scbb = weight.scbb;
    ++seed;
    for (const int32_t dtype : {BNB_F16, BNB_BF16, BNB_F32}) {
      for (const double fraction : {0.001, 0.01}) {
        const DtypeArray xa(ctx(), sparse_outlier_activations(dtype, M, K, fraction, ++seed), dtype);
        const DtypeArray ba(ctx(), random_normal(N, ++seed, 2.0f), dtype);
        const std::vector<float>& x = xa.v;
        const std::vector<float>& bias = ba.v;
        const Buffer &ab = xa.buf, &biasb = ba.buf;
        for (const float threshold : {0.0f, 6.0f}) {
          const QuantRef ref = reference_quant(dtype, M, K, x, threshold);
          const std::vector<int32_t> C = reference_matmul(M, N, K, ref.q, W);
          for (const bool with_bias : {false, true}) {
            SCOPED_TRACE(testing::Message() << "M " << M << " N " << N << " K " << K << " dtype " << dtype
                                            << " fraction " << fraction << " threshold " << threshold << " bias "
                                            << with_bias);
            Out q(ctx(), static_cast<size_t>(M * K)), stats(ctx(), static_cast<size_t>(M) * 4),
                out(ctx(), static_cast<size_t>(M * N) * dtype_size(dtype)), cols(ctx(), static_cast<size_t>(K) * 4),
                count(ctx(), 8);
            Buffer cb(ctx(), static_cast<size_t>(M * N) * 4);
            SKIP_IF_NOT_SUPPORTED(bnb_int8_linear_outliers(
                ctx().get(), dtype, M, N, K, ab.get(), threshold, wb.as<int8_t>(), scbb.as<float>(),
                with_bias ? biasb.get() : nullptr, q.buf.as<int8_t>(), stats.buf.as<float>(), cb.as<int32_t>(),
                cols.buf.as<int32_t>(), count.buf.as<int64_t>(), out.buf.get(), nullptr));
            EXPECT_EQ(first_diff(as<int8_t>(q.data()), ref.q), -1);
            EXPECT_EQ(first_diff(as<float>(stats.data()), ref.row_stats), -1);
            const int64_t got_count = as<int64_t>(count.data())[0];
            ASSERT_EQ(got_count, static_cast<int64_t>(ref.outlier_cols.size()));
            if (threshold > 0.0f) {
              EXPECT_GE(got_count, 1);
              EXPECT_LE(got_count, std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(K) * fraction)));
            }
            auto got_cols = as<int32_t>(cols.data());
            got_cols.resize(static_cast<size_t>(got_count));
            EXPECT_EQ(got_cols, ref.outlier_cols);
            const std::vector<float> int8_part =
                from_dtype(reference_dequant(M, N, C, ref.row_stats, scb, with_bias ? &bias : nullptr, dtype), dtype);
            const std::vector<uint8_t> want =
                to_dtype(reference_outlier_sum(dtype, M, N, K, x, W, scb, ref.outlier_cols, int8_part), dtype);
            const std::vector<uint8_t> got = out.data();
            const size_t es = dtype_size(dtype);
            const int64_t first = first_diff_elem(got, want, es);
            EXPECT_EQ(first, -1) << "first differing output element (m = " << (first >= 0 ? first / N : -1)
                                 << ", n = " << (first >= 0 ? first % N : -1) << ")";
            // Independent float64 check of the outlier term: out - int8 part within two roundings.
            if (first == -1 && threshold > 0.0f) {
              const std::vector<float> gotf = from_dtype(got, dtype);
              const double ulp = dtype == BNB_F32 ? 1.2e-7 : (dtype == BNB_F16 ? 9.8e-4 : 7.9e-3);
              for (int64_t m = 0; m < M; ++m) {
                for (int64_t n = 0; n < N; ++n) {
                  double want64 = int8_part[static_cast<size_t>(m * N + n)], mag = std::fabs(want64);
                  for (const int32_t c : ref.outlier_cols) {
                    const double t = static_cast<double>(x[static_cast<size_t>(m * K + c)]) *
                                     W[static_cast<size_t>(n * K + c)] * scb[static_cast<size_t>(n)] / 127.0;
                    want64 += t;
                    mag += std::fabs(t);
                  }
                  ASSERT_NEAR(gotf[static_cast<size_t>(m * N + n)], want64, 3 * ulp * mag + 1e-6)
                      << "m " << m << " n " << n;
                }
              }
            }
            EXPECT_TRUE(q.guard_intact());
            EXPECT_TRUE(stats.guard_intact());
            EXPECT_TRUE(out.guard_intact());
            EXPECT_TRUE(cols.guard_intact());
            EXPECT_TRUE(count.guard_intact());
            if (HasFatalFailure()) return;
          }
        }
      }
    }
  }
}

// The same call on the activations of LinearMatchesReference (a row that is all outliers: every
// column is an outlier column) agrees with bnb_int8_linear + bnb_int8_outlier_columns.
TEST_P(Int8, LinearOutliersEveryColumn) {
  const int64_t M = 7, N = 19, K = 96;
  const auto W = random_int8(N * K, 41);
  std::vector<float> scb(static_cast<size_t>(N));
  for (size_t n = 0; n < scb.size(); ++n) scb[n] = round_to_dtype(BNB_F16, 0.3f + 0.01f * static_cast<float>(n));
  Buffer wb(ctx(), W.size()), scbb(ctx(), scb.size() * 4);
  wb.upload(W.data(), W.size());
  scbb.upload(scb.data(), scb.size() * 4);
  const int32_t dtype = BNB_F16;
  const std::vector<float> x = activations(dtype, M, K, 42);
  const std::vector<uint8_t> raw = to_dtype(x, dtype);
  Buffer ab(ctx(), raw.size());
  ab.upload(raw.data(), raw.size());
  Out q(ctx(), static_cast<size_t>(M * K)), stats(ctx(), static_cast<size_t>(M) * 4),
      out(ctx(), static_cast<size_t>(M * N) * 2), cols(ctx(), static_cast<size_t>(K) * 4), count(ctx(), 8);
  Buffer cb(ctx(), static_cast<size_t>(M * N) * 4);
  SKIP_IF_NOT_SUPPORTED(bnb_int8_linear_outliers(ctx().get(), dtype, M, N, K, ab.get(), 6.0f, wb.as<int8_t>(),
                                                 scbb.as<float>(), nullptr, q.buf.as<int8_t>(), stats.buf.as<float>(),
                                                 cb.as<int32_t>(), cols.buf.as<int32_t>(), count.buf.as<int64_t>(),
                                                 out.buf.get(), nullptr));
  const QuantRef ref = reference_quant(dtype, M, K, x, 6.0f);
  ASSERT_EQ(ref.outlier_cols.size(), static_cast<size_t>(K));
  ASSERT_EQ(as<int64_t>(count.data())[0], K);
  EXPECT_EQ(as<int32_t>(cols.data()), ref.outlier_cols);
  const std::vector<float> int8_part =
      from_dtype(reference_dequant(M, N, reference_matmul(M, N, K, ref.q, W), ref.row_stats, scb, nullptr, dtype), dtype);
  EXPECT_EQ(out.data(), to_dtype(reference_outlier_sum(dtype, M, N, K, x, W, scb, ref.outlier_cols, int8_part), dtype));
  EXPECT_TRUE(cols.guard_intact());
}

TEST_P(Int8, ThreadCountsAgree) {
  if (GetParam() != BNB_BACKEND_CPU) GTEST_SKIP() << "threads are a CPU setting";
  const int64_t rows = 37, cols = 301, N = 45;
  const std::vector<float> x = activations(BNB_F16, rows, cols, 77);
  const auto B = random_int8(N * cols, 78);
  for (const int32_t threads : {1, 3}) {
    Context c(BNB_BACKEND_CPU, threads);
    ASSERT_TRUE(c.ok());
    SCOPED_TRACE(testing::Message() << threads << " threads");
    check_quant(c, BNB_F16, rows, cols, x, 6.0f);
    const auto A = random_int8(rows * cols, 79);
    check_matmul(c, rows, N, cols, A, B);
  }
}

TEST_P(Int8, BadArguments) {
  std::vector<float> a(16, 1.0f), stats(4);
  std::vector<int8_t> q(16);
  int64_t count = 0;
  int32_t cols[4];
  Buffer ab(ctx(), 64), qb(ctx(), 16), sb(ctx(), 16), colsb(ctx(), 16);
  EXPECT_EQ(bnb_int8_vectorwise_quant(ctx().get(), BNB_F32, 4, 4, ab.get(), -1.0f, qb.as<int8_t>(), sb.as<float>(),
                                      nullptr),
            BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bnb_int8_vectorwise_quant(ctx().get(), BNB_I8, 4, 4, ab.get(), 0.0f, qb.as<int8_t>(), sb.as<float>(),
                                      nullptr),
            BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bnb_int8_vectorwise_quant(ctx().get(), BNB_F32, 4, 4, ab.get(), 0.0f, nullptr, sb.as<float>(), nullptr),
            BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bnb_int8_outlier_columns(ctx().get(), BNB_F32, 4, 4, ab.get(), 0.0f, colsb.as<int32_t>(), 4, &count,
                                     nullptr),
            BNB_ERR_INVALID_ARGUMENT);  // threshold must be > 0
  EXPECT_EQ(bnb_int8_outlier_columns(ctx().get(), BNB_F32, 4, 4, ab.get(), 6.0f, colsb.as<int32_t>(), 4, nullptr,
                                     nullptr),
            BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bnb_int8_matmul(ctx().get(), 0, 4, 4, qb.as<int8_t>(), qb.as<int8_t>(), colsb.as<int32_t>(), nullptr),
            BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bnb_int8_mm_dequant(ctx().get(), 2, 2, colsb.as<int32_t>(), sb.as<float>(), sb.as<float>(), nullptr,
                                BNB_I32, qb.get(), nullptr),
            BNB_ERR_INVALID_ARGUMENT);
  // bnb_int8_linear: M = 2, N = 2, K = 4 into the same small buffers.
  Buffer cb(ctx(), 64), ob(ctx(), 64);
  const auto linear = [&](int32_t dtype, int64_t K, float threshold, int8_t* qq, const void* bias) {
    return bnb_int8_linear(ctx().get(), dtype, 2, 2, K, ab.get(), threshold, qb.as<int8_t>(), sb.as<float>(), bias,
                           qq, sb.as<float>(), cb.as<int32_t>(), ob.get(), nullptr);
  };
  EXPECT_EQ(linear(BNB_F32, 4, -1.0f, qb.as<int8_t>(), nullptr), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(bnb_last_error_message()).find("threshold"), std::string::npos);
  EXPECT_EQ(linear(BNB_I8, 4, 0.0f, qb.as<int8_t>(), nullptr), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(linear(BNB_F32, 4, 0.0f, nullptr, nullptr), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(bnb_last_error_message()).find("q"), std::string::npos);
  EXPECT_EQ(linear(BNB_F32, 0, 0.0f, qb.as<int8_t>(), nullptr), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(linear(BNB_F32, 131072, 0.0f, qb.as<int8_t>(), nullptr), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bnb_int8_linear(nullptr, BNB_F32, 2, 2, 4, ab.get(), 0.0f, qb.as<int8_t>(), sb.as<float>(), nullptr,
                            qb.as<int8_t>(), sb.as<float>(), cb.as<int32_t>(), ob.get(), nullptr),
            BNB_ERR_INVALID_ARGUMENT);
  // bnb_int8_linear_outliers: the same checks, and columns [K] and count [1] in the context's memory.
  Buffer countb(ctx(), 8);
  const auto outliers = [&](int32_t dtype, int64_t M, int64_t K, int32_t* columns, int64_t* cnt) {
    return bnb_int8_linear_outliers(ctx().get(), dtype, M, 2, K, ab.get(), 6.0f, qb.as<int8_t>(), sb.as<float>(),
                                    nullptr, qb.as<int8_t>(), sb.as<float>(), cb.as<int32_t>(), columns, cnt,
                                    ob.get(), nullptr);
  };
  const auto fails_with = [](bnb_status_t st, const char* word) {
    EXPECT_EQ(st, BNB_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(bnb_last_error_message()).find(word), std::string::npos) << bnb_last_error_message();
  };
  fails_with(outliers(BNB_F32, 2, 4, nullptr, countb.as<int64_t>()), "columns");
  fails_with(outliers(BNB_F32, 2, 4, colsb.as<int32_t>(), nullptr), "count");
  fails_with(outliers(BNB_I8, 2, 4, colsb.as<int32_t>(), countb.as<int64_t>()), "dtype");
  fails_with(outliers(BNB_F32, 0, 4, colsb.as<int32_t>(), countb.as<int64_t>()), "M");
  fails_with(outliers(BNB_F32, 2, 0, colsb.as<int32_t>(), countb.as<int64_t>()), "K");
  fails_with(outliers(BNB_F32, 2, 131072, colsb.as<int32_t>(), countb.as<int64_t>()), "K");
  fails_with(outliers(BNB_F32, INT64_C(1) << 40, INT64_C(1) << 30, colsb.as<int32_t>(), countb.as<int64_t>()), "M*K");
  fails_with(bnb_int8_linear_outliers(ctx().get(), BNB_F32, 2, 2, 4, ab.get(), -1.0f, qb.as<int8_t>(),
                                      sb.as<float>(), nullptr, qb.as<int8_t>(), sb.as<float>(), cb.as<int32_t>(),
                                      colsb.as<int32_t>(), countb.as<int64_t>(), ob.get(), nullptr),
             "threshold");
  fails_with(bnb_int8_linear_outliers(nullptr, BNB_F32, 2, 2, 4, ab.get(), 6.0f, qb.as<int8_t>(), sb.as<float>(),
                                      nullptr, qb.as<int8_t>(), sb.as<float>(), cb.as<int32_t>(), colsb.as<int32_t>(),
                                      countb.as<int64_t>(), ob.get(), nullptr),
             "ctx");
  (void)a;
  (void)stats;
  (void)q;
  (void)cols;
}

INSTANTIATE_TEST_SUITE_P(Backends, Int8, ::testing::ValuesIn(available_backends()), param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Int8);
