// LLM.int8() on the GPU backend at layer sizes, against the CPU backend (which tests/unit/
// test_int8.cc holds to the golden vectors and the scalar reference): codes, row statistics,
// outlier columns and int32 products bit for bit, dequantization bit for bit (both follow
// docs/FORMATS.md §6.3; FTZ can only differ below fp16's range). Covers both int8 GEMM paths (the
// bandwidth-bound kernel for M <= 16, K % 16 != 0 or unaligned pointers; cuBLASLt above), a
// user stream and CUDA-graph capture of the layer forward (bnb_int8_linear_outliers included:
// its count stays on the device). The unit suite runs on the GPU too.
//
// BNB_GPU_TESTS_ON_CPU=1 runs the suite against the CPU backend (a harness self-check).
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda_driver.h"
#include "util.h"

using namespace bnb_test;

namespace {

bool harness_check() {
  const char* e = std::getenv("BNB_GPU_TESTS_ON_CPU");
  return e != nullptr && e[0] == '1';
}

int32_t gpu_kind() {
  if (harness_check()) return BNB_BACKEND_CPU;
  for (int32_t k : available_backends())
    if (k == BNB_BACKEND_CUDA || k == BNB_BACKEND_HIP) return k;
  return 0;
}

bool has_cpu() {
  for (int32_t k : available_backends())
    if (k == BNB_BACKEND_CPU) return true;
  return false;
}

int64_t count_diffs(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return -1;
  int64_t d = 0;
  for (size_t i = 0; i < a.size(); ++i) d += a[i] != b[i];
  return d;
}

std::vector<uint8_t> random_int8_bytes(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// fp16 activations with `outliers` random outlier columns (|x| >= 6 in most rows; fewer columns
// where two draws coincide).
std::vector<uint8_t> activations_f16(int64_t rows, int64_t cols, uint64_t seed, int outliers = 6) {
  std::vector<float> x = random_normal(rows * cols, seed, 1.0f);
  std::mt19937_64 rng(seed + 1);
  for (int j = 0; j < outliers; ++j) {
    const int64_t c = static_cast<int64_t>(rng() % static_cast<uint64_t>(cols));
    for (int64_t r = 0; r < rows; ++r)
      if (rng() % 8 != 0) x[static_cast<size_t>(r * cols + c)] = (rng() % 2 ? 1.f : -1.f) * (6.0f + (rng() % 6000) / 100.f);
  }
  return to_dtype(x, BNB_F16);
}

// One backend's results of the layer ops, downloaded to the host.
struct Results {
  std::vector<uint8_t> q, stats, cols, C, out;
  int64_t count = -1;
};

class Int8Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    kind_ = gpu_kind();
    if (kind_ == 0) GTEST_SKIP() << "no GPU backend available";
    if (!has_cpu()) GTEST_SKIP() << "the CPU backend is the reference here";
    gpu_ = std::make_unique<Context>(kind_);
    cpu_ = std::make_unique<Context>(BNB_BACKEND_CPU);
    ASSERT_TRUE(gpu_->ok() && cpu_->ok()) << bnb_last_error_message();
  }

  static Results quant(const Context& ctx, int32_t dtype, int64_t rows, int64_t cols, const std::vector<uint8_t>& a,
                       float threshold) {
    Buffer A(ctx, a.size()), Q(ctx, static_cast<size_t>(rows * cols)), S(ctx, static_cast<size_t>(rows) * 4),
        Cc(ctx, static_cast<size_t>(cols) * 4);
    A.upload(a.data(), a.size());
    Q.fill(0xcd);
    S.fill(0xcd);
    Cc.fill(0xcd);  // downloaded whole below, though only `count` entries are written
    Results r;
    EXPECT_EQ(bnb_int8_vectorwise_quant(ctx.get(), dtype, rows, cols, A.get(), threshold, Q.as<int8_t>(),
                                        S.as<float>(), nullptr),
              BNB_SUCCESS)
        << bnb_last_error_message();
    if (threshold > 0.0f) {
      EXPECT_EQ(bnb_int8_outlier_columns(ctx.get(), dtype, rows, cols, A.get(), threshold, Cc.as<int32_t>(), cols,
                                         &r.count, nullptr),
                BNB_SUCCESS)
          << bnb_last_error_message();
      r.cols = Cc.download();
      r.cols.resize(static_cast<size_t>(std::max<int64_t>(r.count, 0)) * 4);
    }
    r.q = Q.download();
    r.stats = S.download();
    return r;
  }

  // C = A @ B^T with A and B placed `offset` bytes into their buffers (offset 0: aligned).
  static std::vector<uint8_t> matmul(const Context& ctx, int64_t M, int64_t N, int64_t K, const std::vector<uint8_t>& a,
                                     const std::vector<uint8_t>& b, int64_t offset) {
    Buffer A(ctx, a.size() + 16), B(ctx, b.size() + 16), C(ctx, static_cast<size_t>(M * N) * 4);
    std::vector<uint8_t> ah(a.size() + 16, 0), bh(b.size() + 16, 0);
    std::memcpy(ah.data() + offset, a.data(), a.size());
    std::memcpy(bh.data() + offset, b.data(), b.size());
    A.upload(ah.data(), ah.size());
    B.upload(bh.data(), bh.size());
    C.fill(0xcd);
    EXPECT_EQ(bnb_int8_matmul(ctx.get(), M, N, K, A.as<int8_t>() + offset, B.as<int8_t>() + offset, C.as<int32_t>(),
                              nullptr),
              BNB_SUCCESS)
        << bnb_last_error_message();
    return C.download();
  }

  int32_t kind_ = 0;
  std::unique_ptr<Context> gpu_, cpu_;
};

}  // namespace

TEST_F(Int8Gpu, VectorwiseQuantMatchesCpu) {
  const int64_t shapes[][2] = {{1, 4096}, {7, 4097}, {2048, 4096}, {333, 11008}};
  for (const auto& s : shapes) {
    const std::vector<uint8_t> a16 = activations_f16(s[0], s[1], static_cast<uint64_t>(s[0] * 31 + s[1]));
    for (const int32_t dtype : {BNB_F16, BNB_BF16, BNB_F32}) {
      const std::vector<uint8_t> a = dtype == BNB_F16 ? a16 : to_dtype(from_dtype(a16, BNB_F16), dtype);
      for (const float threshold : {0.0f, 6.0f}) {
        SCOPED_TRACE(testing::Message() << "rows " << s[0] << " cols " << s[1] << " dtype " << dtype << " threshold "
                                        << threshold);
        const Results g = quant(*gpu_, dtype, s[0], s[1], a, threshold);
        const Results c = quant(*cpu_, dtype, s[0], s[1], a, threshold);
        EXPECT_EQ(count_diffs(g.q, c.q), 0);
        EXPECT_EQ(count_diffs(g.stats, c.stats), 0);
        EXPECT_EQ(g.count, c.count);
        EXPECT_EQ(count_diffs(g.cols, c.cols), 0);
      }
    }
  }
}

TEST_F(Int8Gpu, MatmulMatchesCpu) {
  // {M, N, K, byte offset of A and B}: for M <= 16 the tensor-core kernel (K % 16 == 0, 16-byte
  // aligned) or the dp4a kernel (vector and byte paths), cuBLASLt above (and the dp4a kernel
  // when K % 4 != 0).
  const int64_t cases[][4] = {{1, 4096, 4096, 0},  {3, 4096, 4096, 0}, {16, 4096, 4096, 0}, {5, 1000, 999, 0},
                              {8, 512, 4096, 1},   {17, 4096, 4096, 0}, {256, 4096, 4096, 0}, {300, 1000, 999, 0},
                              {2048, 1024, 4096, 0}, {130, 258, 4100, 0}, {64, 64, 64, 4},
                              // tensor-core kernel (M <= 16, K % 16 == 0): K tails, N not a multiple of 16
                              {16, 4099, 4144, 0}, {9, 37, 160, 0},  {12, 300, 8192, 0}, {2, 17, 32, 0},
                              {16, 8, 16, 0},      {16, 4096, 4096, 16}};
  for (const auto& c : cases) {
    SCOPED_TRACE(testing::Message() << "M " << c[0] << " N " << c[1] << " K " << c[2] << " offset " << c[3]);
    const auto a = random_int8_bytes(c[0] * c[2], static_cast<uint64_t>(c[0] + 1));
    const auto b = random_int8_bytes(c[1] * c[2], static_cast<uint64_t>(c[1] + 2));
    EXPECT_EQ(count_diffs(matmul(*gpu_, c[0], c[1], c[2], a, b, c[3]), matmul(*cpu_, c[0], c[1], c[2], a, b, c[3])), 0);
  }
}

TEST_F(Int8Gpu, MmDequantMatchesCpu) {
  const int64_t shapes[][2] = {{1, 4096}, {16, 11008}, {2048, 4096}, {5, 1001}};
  for (const auto& s : shapes) {
    const int64_t M = s[0], N = s[1];
    std::mt19937_64 rng(static_cast<uint64_t>(M * N));
    std::vector<int32_t> C(static_cast<size_t>(M * N));
    for (auto& v : C) v = static_cast<int32_t>(rng() % 4000001) - 2000000;
    std::vector<float> row(static_cast<size_t>(M)), col(static_cast<size_t>(N));
    for (auto& v : row) v = from_dtype(to_dtype({0.5f + (rng() % 1000) / 100.f}, BNB_F16), BNB_F16)[0];
    for (auto& v : col) v = from_dtype(to_dtype({0.01f + (rng() % 1000) / 2000.f}, BNB_F16), BNB_F16)[0];
    for (const int32_t out_dtype : {BNB_F16, BNB_F32, BNB_BF16}) {
      for (const bool with_bias : {false, true}) {
        SCOPED_TRACE(testing::Message() << "M " << M << " N " << N << " out " << out_dtype << " bias " << with_bias);
        const std::vector<uint8_t> bias = to_dtype(random_normal(N, rng(), 1.0f), out_dtype);
        const size_t out_bytes = static_cast<size_t>(M * N) * dtype_size(out_dtype);
        std::vector<uint8_t> results[2];
        const Context* ctxs[2] = {gpu_.get(), cpu_.get()};
        for (int i = 0; i < 2; ++i) {
          const Context& ctx = *ctxs[i];
          Buffer Cb(ctx, C.size() * 4), R(ctx, row.size() * 4), Co(ctx, col.size() * 4), Bi(ctx, bias.size()),
              O(ctx, out_bytes);
          Cb.upload(C.data(), C.size() * 4);
          R.upload(row.data(), row.size() * 4);
          Co.upload(col.data(), col.size() * 4);
          Bi.upload(bias.data(), bias.size());
          O.fill(0xcd);
          ASSERT_BNB_OK(bnb_int8_mm_dequant(ctx.get(), M, N, Cb.as<int32_t>(), R.as<float>(), Co.as<float>(),
                                            with_bias ? Bi.get() : nullptr, out_dtype, O.get(), nullptr));
          results[i] = O.download();
        }
        EXPECT_EQ(count_diffs(results[0], results[1]), 0);
      }
    }
  }
}

// bnb_int8_linear at layer sizes against the CPU backend's (the three steps there): q,
// row_stats and out bit for bit, with and without the bias. Where the M <= 16 kernels don't take
// it (16 x 11008 does not fit them), in a build with BNB_INT8_CUTLASS on an H100/H200 the CUTLASS
// kernel (the default there), which declines N % 8 != 0 (200 x 1004) and K % 16 != 0 (96 x 1000);
// its shape rule (int8_cutlass_sm90.cu) gives 64 x 64 tiles to 16 x 11008, 24 x 1024 (partial)
// and 64 x 4096, 64 x 128 to 256 x 4096 and 130 x 4096 (partial), 128 x 128 to 1024 x 2048 and
// 128 x 256 to 512 x 8192. Else, and with BNB_INT8_CUTLASS=0 (CTest
// gpu_int8_with_BNB_INT8_CUTLASS_0), cuBLASLt's product and the dequantization pass.
TEST_F(Int8Gpu, LinearMatchesCpu) {
  const int64_t cases[][3] = {{1, 4096, 4096},   {1, 8192, 8192},  {3, 4096, 2048},   {5, 11008, 4096},
                              {16, 4096, 11008}, {24, 1024, 4096}, {64, 4096, 4096},  {256, 4096, 4096},
                              {200, 1004, 4096}, {96, 2048, 1000}, {130, 4096, 1040}, {1024, 2048, 4096},
                              {512, 8192, 1024}};
  for (const auto& c : cases) {
    const int64_t M = c[0], N = c[1], K = c[2];
    const auto w = random_int8_bytes(N * K, static_cast<uint64_t>(N + K));
    std::mt19937_64 rng(static_cast<uint64_t>(M * 7 + N));
    std::vector<float> scb(static_cast<size_t>(N));
    for (auto& v : scb) v = from_dtype(to_dtype({0.05f + (rng() % 1000) / 400.0f}, BNB_F16), BNB_F16)[0];
    const std::vector<uint8_t> x = activations_f16(M, K, static_cast<uint64_t>(M + 3));
    const std::vector<uint8_t> bias = to_dtype(random_normal(N, rng(), 1.0f), BNB_F16);
    for (const float threshold : {0.0f, 6.0f})
    for (const bool with_bias : {true, false}) {
      SCOPED_TRACE(testing::Message() << "M " << M << " N " << N << " K " << K << " threshold " << threshold
                                      << (with_bias ? " bias" : " no bias"));
      Results r[2];
      const Context* ctxs[2] = {gpu_.get(), cpu_.get()};
      for (int i = 0; i < 2; ++i) {
        const Context& ctx = *ctxs[i];
        Buffer X(ctx, x.size()), W(ctx, w.size()), S(ctx, scb.size() * 4), Bi(ctx, bias.size()),
            Q(ctx, static_cast<size_t>(M * K)), RS(ctx, static_cast<size_t>(M) * 4),
            Cc(ctx, static_cast<size_t>(M * N) * 4), O(ctx, static_cast<size_t>(M * N) * 2);
        X.upload(x.data(), x.size());
        W.upload(w.data(), w.size());
        S.upload(scb.data(), scb.size() * 4);
        Bi.upload(bias.data(), bias.size());
        O.fill(0xcd);
        ASSERT_BNB_OK(bnb_int8_linear(ctx.get(), BNB_F16, M, N, K, X.get(), threshold, W.as<int8_t>(), S.as<float>(),
                                      with_bias ? Bi.get() : nullptr, Q.as<int8_t>(), RS.as<float>(),
                                      Cc.as<int32_t>(), O.get(), nullptr));
        r[i].q = Q.download();
        r[i].stats = RS.download();
        r[i].out = O.download();
      }
      EXPECT_EQ(count_diffs(r[0].q, r[1].q), 0);
      EXPECT_EQ(count_diffs(r[0].stats, r[1].stats), 0);
      EXPECT_EQ(count_diffs(r[0].out, r[1].out), 0);
    }
  }
}

// The layer forward (quantize with threshold, matmul on both paths, dequantize with bias; as
// three calls and as bnb_int8_linear) on a user stream captured into a CUDA graph; replayed on
// new activations it gives their result.
TEST_F(Int8Gpu, LayerForwardCapturesInAGraph) {
  if (kind_ != BNB_BACKEND_CUDA) GTEST_SKIP() << "CUDA-only test";
  CudaDriver drv;
  if (!drv.load()) GTEST_SKIP() << "libcuda.so.1 not loadable";
  void* stream = nullptr;
  ASSERT_EQ(drv.cuStreamCreate(&stream, 1 /* non-blocking */), 0);
  for (const bool one_call : {false, true})  // three calls, or bnb_int8_linear (a dependent launch on CUDA)
  for (const int64_t M : {int64_t{4}, int64_t{16}, int64_t{64}}) {
    SCOPED_TRACE(testing::Message() << "M " << M << (one_call ? " bnb_int8_linear" : " three calls"));
    const int64_t N = 1024, K = 2048;
    const auto w = random_int8_bytes(N * K, 5);
    std::vector<float> scb(static_cast<size_t>(N), 0.75f);
    const std::vector<uint8_t> bias = to_dtype(random_normal(N, 6, 1.0f), BNB_F16);
    Buffer X(*gpu_, static_cast<size_t>(M * K) * 2), CA(*gpu_, static_cast<size_t>(M * K)), SCA(*gpu_, M * 4),
        W(*gpu_, w.size()), SCB(*gpu_, scb.size() * 4), Bi(*gpu_, bias.size()), Cc(*gpu_, static_cast<size_t>(M * N) * 4),
        O(*gpu_, static_cast<size_t>(M * N) * 2);
    W.upload(w.data(), w.size());
    SCB.upload(scb.data(), scb.size() * 4);
    Bi.upload(bias.data(), bias.size());
    const auto enqueue = [&](void* s) {
      if (one_call) {
        ASSERT_BNB_OK(bnb_int8_linear(gpu_->get(), BNB_F16, M, N, K, X.get(), 6.0f, W.as<int8_t>(), SCB.as<float>(),
                                      Bi.get(), CA.as<int8_t>(), SCA.as<float>(), Cc.as<int32_t>(), O.get(), s));
        return;
      }
      ASSERT_BNB_OK(bnb_int8_vectorwise_quant(gpu_->get(), BNB_F16, M, K, X.get(), 6.0f, CA.as<int8_t>(),
                                              SCA.as<float>(), s));
      ASSERT_BNB_OK(bnb_int8_matmul(gpu_->get(), M, N, K, CA.as<int8_t>(), W.as<int8_t>(), Cc.as<int32_t>(), s));
      ASSERT_BNB_OK(bnb_int8_mm_dequant(gpu_->get(), M, N, Cc.as<int32_t>(), SCA.as<float>(), SCB.as<float>(),
                                        Bi.get(), BNB_F16, O.get(), s));
    };
    const std::vector<uint8_t> x0 = activations_f16(M, K, 1);
    X.upload(x0.data(), x0.size());
    enqueue(stream);  // warm-up outside the capture (module loading, cuBLASLt plans)
    ASSERT_BNB_OK(bnb_synchronize(gpu_->get(), stream));
    ASSERT_EQ(drv.cuStreamBeginCapture(stream, 1 /* thread-local */), 0);
    enqueue(stream);
    void* graph = nullptr;
    ASSERT_EQ(drv.cuStreamEndCapture(stream, &graph), 0) << "an op broke the capture";
    void* exec = nullptr;
    ASSERT_EQ(drv.cuGraphInstantiateWithFlags(&exec, graph, 0), 0);
    const std::vector<uint8_t> x1 = activations_f16(M, K, 2);
    X.upload(x1.data(), x1.size());
    O.fill(0);
    ASSERT_EQ(drv.cuGraphLaunch(exec, stream), 0);
    ASSERT_EQ(drv.cuStreamSynchronize(stream), 0);
    const std::vector<uint8_t> got = O.download();
    drv.cuGraphExecDestroy(exec);
    drv.cuGraphDestroy(graph);
    // The same forward on the CPU backend.
    const Context& c = *cpu_;
    Buffer cX(c, x1.size()), cCA(c, static_cast<size_t>(M * K)), cSCA(c, M * 4), cW(c, w.size()), cSCB(c, scb.size() * 4),
        cBi(c, bias.size()), cC(c, static_cast<size_t>(M * N) * 4), cO(c, static_cast<size_t>(M * N) * 2);
    cX.upload(x1.data(), x1.size());
    cW.upload(w.data(), w.size());
    cSCB.upload(scb.data(), scb.size() * 4);
    cBi.upload(bias.data(), bias.size());
    ASSERT_BNB_OK(bnb_int8_vectorwise_quant(c.get(), BNB_F16, M, K, cX.get(), 6.0f, cCA.as<int8_t>(), cSCA.as<float>(),
                                            nullptr));
    ASSERT_BNB_OK(bnb_int8_matmul(c.get(), M, N, K, cCA.as<int8_t>(), cW.as<int8_t>(), cC.as<int32_t>(), nullptr));
    ASSERT_BNB_OK(bnb_int8_mm_dequant(c.get(), M, N, cC.as<int32_t>(), cSCA.as<float>(), cSCB.as<float>(), cBi.get(),
                                      BNB_F16, cO.get(), nullptr));
    EXPECT_EQ(count_diffs(got, cO.download()), 0);
  }
  drv.cuStreamDestroy(stream);
}

namespace {

// The inputs of one int8 layer call, in one context's memory (an empty bias: none).
struct LayerInputs {
  LayerInputs(const Context& ctx, const std::vector<uint8_t>& x, const std::vector<uint8_t>& w,
              const std::vector<float>& scb, const std::vector<uint8_t>& bias)
      : X(ctx, x.size()), W(ctx, w.size()), S(ctx, scb.size() * 4), Bi(ctx, bias.size()) {
    X.upload(x.data(), x.size());
    W.upload(w.data(), w.size());
    S.upload(scb.data(), scb.size() * 4);
    Bi.upload(bias.data(), bias.size());
  }
  const void* bias() const { return Bi.bytes() > 0 ? Bi.get() : nullptr; }
  Buffer X, W, S, Bi;
};

// The outputs of bnb_int8_linear_outliers, poisoned before the call.
struct LayerOutputs {
  LayerOutputs(const Context& ctx, int64_t M, int64_t N, int64_t K, int32_t dtype)
      : Q(ctx, static_cast<size_t>(M * K)), RS(ctx, static_cast<size_t>(M) * 4), Cc(ctx, static_cast<size_t>(M * N) * 4),
        Cols(ctx, static_cast<size_t>(K) * 4), Count(ctx, 8), O(ctx, static_cast<size_t>(M * N) * dtype_size(dtype)) {
    for (Buffer* b : {&Q, &RS, &Cols, &Count, &O}) b->fill(0xcd);
  }
  bnb_status_t run(const Context& ctx, const LayerInputs& in, int32_t dtype, int64_t M, int64_t N, int64_t K,
                   float threshold, void* stream) {
    return bnb_int8_linear_outliers(ctx.get(), dtype, M, N, K, in.X.get(), threshold, in.W.as<int8_t>(),
                                    in.S.as<float>(), in.bias(), Q.as<int8_t>(), RS.as<float>(), Cc.as<int32_t>(),
                                    Cols.as<int32_t>(), Count.as<int64_t>(), O.get(), stream);
  }
  // q, row_stats, count, columns[0 .. count) and out.
  Results download() const {
    Results r;
    r.q = Q.download();
    r.stats = RS.download();
    r.count = Count.download_as<int64_t>()[0];
    r.cols = Cols.download();
    r.cols.resize(static_cast<size_t>(std::max<int64_t>(r.count, 0)) * 4);
    r.out = O.download();
    return r;
  }
  Buffer Q, RS, Cc, Cols, Count, O;
};

void expect_same(const Results& g, const Results& c) {
  EXPECT_EQ(g.count, c.count);
  EXPECT_EQ(count_diffs(g.cols, c.cols), 0);
  EXPECT_EQ(count_diffs(g.q, c.q), 0);
  EXPECT_EQ(count_diffs(g.stats, c.stats), 0);
  EXPECT_EQ(count_diffs(g.out, c.out), 0);
}

}  // namespace

// bnb_int8_linear_outliers at layer sizes against the CPU backend (held to the scalar reference of
// docs/OPS.md §5.10 by tests/unit/test_int8.cc): count, columns, q, row_stats and out bit for bit.
TEST_F(Int8Gpu, LinearOutliersMatchesCpu) {
  // {M, N, K, outlier columns}: one row through the fused kernel and (K > 8192) through the
  // quantization kernel, few rows on tensor cores (8 and 16 rows per tile), M = 16 with a
  // weight too large for them (the rows kernel), larger M through cuBLASLt, M = 2048 where the
  // product kernel's blocks walk several m-tiles each; more outlier columns than a product block
  // keeps in shared memory (kOutlierCached = 128) and than a tensor-core block lists at once
  // (kOutlierList = 512), for one row and for many. Every other case has no bias.
  const int64_t cases[][4] = {{1, 4096, 4096, 6},    {5, 11008, 4096, 6},    {16, 4096, 11008, 6},
                              {24, 1024, 4096, 6},   {256, 4096, 4096, 6},   {130, 258, 4100, 6},
                              {1, 1024, 11008, 6},   {2048, 4096, 1024, 6},  {1, 4096, 4096, 600},
                              {300, 1024, 2048, 300}, {12, 1024, 4096, 40},  {8, 2048, 4096, 600}};
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ++ci) {
    const auto& c = cases[ci];
    const int64_t M = c[0], N = c[1], K = c[2];
    const auto w = random_int8_bytes(N * K, static_cast<uint64_t>(N + K));
    std::mt19937_64 rng(static_cast<uint64_t>(M * 7 + N));
    std::vector<float> scb(static_cast<size_t>(N));
    for (auto& v : scb) v = from_dtype(to_dtype({0.05f + (rng() % 1000) / 400.0f}, BNB_F16), BNB_F16)[0];
    const std::vector<uint8_t> x16 = activations_f16(M, K, static_cast<uint64_t>(M + 3), static_cast<int>(c[3]));
    for (const int32_t dtype : {BNB_F16, BNB_BF16, BNB_F32}) {
      const std::vector<uint8_t> x = dtype == BNB_F16 ? x16 : to_dtype(from_dtype(x16, BNB_F16), dtype);
      const std::vector<uint8_t> bias =
          ci % 2 == 0 ? to_dtype(random_normal(N, rng(), 1.0f), dtype) : std::vector<uint8_t>{};
      for (const float threshold : {0.0f, 6.0f}) {
        SCOPED_TRACE(testing::Message() << "M " << M << " N " << N << " K " << K << " outliers " << c[3]
                                        << " dtype " << dtype << " threshold " << threshold);
        Results r[2];
        const Context* ctxs[2] = {gpu_.get(), cpu_.get()};
        for (int i = 0; i < 2; ++i) {
          const LayerInputs in(*ctxs[i], x, w, scb, bias);
          LayerOutputs o(*ctxs[i], M, N, K, dtype);
          ASSERT_BNB_OK(o.run(*ctxs[i], in, dtype, M, N, K, threshold, nullptr));
          r[i] = o.download();
        }
        if (threshold > 0.0f) {
          EXPECT_GT(r[1].count, 0);
        }
        expect_same(r[0], r[1]);
      }
    }
  }
}

// The whole layer with its outlier product, captured into a CUDA graph on a user stream: the
// op reads no count on the host, so the capture holds, and replaying it on activations with
// other outlier columns (another count) gives their result.
TEST_F(Int8Gpu, LinearOutliersCapturesInAGraph) {
  if (kind_ != BNB_BACKEND_CUDA) GTEST_SKIP() << "CUDA-only test";
  CudaDriver drv;
  if (!drv.load()) GTEST_SKIP() << "libcuda.so.1 not loadable";
  void* stream = nullptr;
  ASSERT_EQ(drv.cuStreamCreate(&stream, 1 /* non-blocking */), 0);
  for (const int64_t M : {int64_t{1}, int64_t{16}, int64_t{64}}) {
    SCOPED_TRACE(testing::Message() << "M " << M);
    const int64_t N = 1024, K = 2048;
    const auto w = random_int8_bytes(N * K, 5);
    const std::vector<float> scb(static_cast<size_t>(N), 0.75f);
    const std::vector<uint8_t> bias = to_dtype(random_normal(N, 6, 1.0f), BNB_F16);
    const std::vector<uint8_t> x0 = activations_f16(M, K, 1), x1 = activations_f16(M, K, 2);
    LayerInputs in(*gpu_, x0, w, scb, bias);
    LayerOutputs o(*gpu_, M, N, K, BNB_F16);
    ASSERT_BNB_OK(o.run(*gpu_, in, BNB_F16, M, N, K, 6.0f, stream));  // warm-up outside the capture
    ASSERT_BNB_OK(bnb_synchronize(gpu_->get(), stream));
    ASSERT_EQ(drv.cuStreamBeginCapture(stream, 1 /* thread-local */), 0);
    ASSERT_BNB_OK(o.run(*gpu_, in, BNB_F16, M, N, K, 6.0f, stream));
    void* graph = nullptr;
    ASSERT_EQ(drv.cuStreamEndCapture(stream, &graph), 0) << "bnb_int8_linear_outliers broke the capture";
    void* exec = nullptr;
    ASSERT_EQ(drv.cuGraphInstantiateWithFlags(&exec, graph, 0), 0);
    for (const auto* x : {&x1, &x0}) {
      in.X.upload(x->data(), x->size());
      o.O.fill(0);
      o.Count.fill(0xcd);
      ASSERT_EQ(drv.cuGraphLaunch(exec, stream), 0);
      ASSERT_EQ(drv.cuStreamSynchronize(stream), 0);
      const Results got = o.download();
      const LayerInputs cin(*cpu_, *x, w, scb, bias);
      LayerOutputs co(*cpu_, M, N, K, BNB_F16);
      ASSERT_BNB_OK(co.run(*cpu_, cin, BNB_F16, M, N, K, 6.0f, nullptr));
      const Results want = co.download();
      EXPECT_GT(want.count, 0);
      expect_same(got, want);
    }
    drv.cuGraphExecDestroy(exec);
    drv.cuGraphDestroy(graph);
  }
  drv.cuStreamDestroy(stream);
}
