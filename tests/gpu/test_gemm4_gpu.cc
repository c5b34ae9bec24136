// bnb_gemm_4bit on the GPU backend: every kernel path (batch-1 GEMV, small-batch tiles, the
// dequantize + library GEMM path for M > 16) on model-sized shapes against a float64 reference
// (A @ dequant(W)^T with W dequantized by the library's bnb_dequantize_4bit; rows of A sampled
// to keep the host reference fast), misaligned weight pointers, agreement with the CPU backend,
// and CUDA-graph capture. Bounds on ||out - ref|| / ||ref||: 1e-5 fp32, 2e-3 fp16, 1e-2 bf16.
// Skips cleanly without a GPU backend; BNB_GPU_TESTS_ON_CPU=1 runs it on the CPU backend (a
// self-check of the harness).
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
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
  for (int32_t k : available_backends()) {
    if (k == BNB_BACKEND_CUDA || k == BNB_BACKEND_HIP) return k;
  }
  return 0;
}

double tolerance(int32_t dtype) { return dtype == BNB_F32 ? 1e-5 : dtype == BNB_F16 ? 2e-3 : 1e-2; }
const char* dtype_name(int32_t d) { return d == BNB_F32 ? "f32" : d == BNB_F16 ? "f16" : "bf16"; }

// A quantized weight [N,K] on a backend plus its fp32 dequantization on the host.
struct Weight {
  int64_t N = 0, K = 0, bs = 0;
  int32_t qt = BNB_NF4;
  std::unique_ptr<Buffer> packed, absmax, absmax_q, absmax2, offset;
  bnb_scales_t scales{};
  std::vector<float> dq;
};

void make_weight(const Context& ctx, int64_t N, int64_t K, int64_t bs, int32_t qt, bool nested, uint64_t seed,
                 Weight* w, int64_t packed_offset = 0) {
  w->N = N;
  w->K = K;
  w->bs = bs;
  w->qt = qt;
  const int64_t n = N * K, nb = n / bs;
  const std::vector<float> host = random_normal(n, seed, static_cast<float>(1.0 / std::sqrt(static_cast<double>(K))));
  Buffer src(ctx, static_cast<size_t>(n) * 4);
  src.upload(host.data(), static_cast<size_t>(n) * 4);
  // packed_offset > 0 leaves the weight at a misaligned address inside its buffer.
  w->packed = std::make_unique<Buffer>(ctx, static_cast<size_t>(n / 2 + packed_offset));
  uint8_t* packed = w->packed->as<uint8_t>() + packed_offset;
  w->absmax = std::make_unique<Buffer>(ctx, static_cast<size_t>(nb) * 4);
  ASSERT_BNB_OK(bnb_quantize_4bit(ctx.get(), qt, BNB_F32, src.get(), n, bs, packed, w->absmax->as<float>(), nullptr));
  ASSERT_BNB_OK(bnb_scales_init(&w->scales));
  if (nested) {
    w->absmax_q = std::make_unique<Buffer>(ctx, static_cast<size_t>(nb));
    w->absmax2 = std::make_unique<Buffer>(ctx, static_cast<size_t>((nb + 255) / 256) * 4);
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
  ASSERT_BNB_OK(bnb_dequantize_4bit(ctx.get(), qt, packed, &w->scales, n, bs, BNB_F32, dq.get(), nullptr));
  ASSERT_BNB_OK(bnb_synchronize(ctx.get(), nullptr));
  w->dq = dq.download_as<float>();
}

// ||out - ref|| / ||ref|| over the rows `rows` of out [M, N]; +inf on a non-finite output.
double sampled_error(const std::vector<float>& out, const std::vector<float>& A, const Weight& w,
                     const std::vector<float>* bias, const std::vector<int64_t>& rows) {
  double num = 0.0, den = 0.0;
  for (int64_t m : rows) {
    const float* a = &A[static_cast<size_t>(m * w.K)];
    for (int64_t n = 0; n < w.N; ++n) {
      const float* wr = &w.dq[static_cast<size_t>(n * w.K)];
      double s = 0.0;
      for (int64_t k = 0; k < w.K; ++k) s += static_cast<double>(a[k]) * wr[k];
      if (bias != nullptr) s += (*bias)[static_cast<size_t>(n)];
      const float o = out[static_cast<size_t>(m * w.N + n)];
      if (!std::isfinite(o)) return INFINITY;
      num += (o - s) * (o - s);
      den += s * s;
    }
  }
  return std::sqrt(num / (den > 0.0 ? den : 1.0));
}

std::vector<int64_t> sample_rows(int64_t M) {
  if (M <= 4) {
    std::vector<int64_t> r;
    for (int64_t m = 0; m < M; ++m) r.push_back(m);
    return r;
  }
  return {0, 1, M / 2, M - 2, M - 1};
}

class Gemm4Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    kind_ = gpu_kind();
    if (kind_ == 0) GTEST_SKIP() << "no GPU backend available";
    gpu_ = std::make_unique<Context>(kind_);
    ASSERT_TRUE(gpu_->ok()) << bnb_last_error_message();
  }

  // Runs out = A @ W^T (+ bias) on the GPU; returns the sampled relative error.
  double run(const Weight& w, int64_t M, int32_t dtype, bool with_bias, uint64_t seed, int64_t packed_offset = 0,
             std::vector<uint8_t>* out_bytes = nullptr) {
    const std::vector<uint8_t> a = to_dtype(random_normal(M * w.K, seed), dtype);
    const std::vector<uint8_t> b = to_dtype(random_normal(w.N, seed + 1, 0.5f), dtype);
    const std::vector<float> a_exact = from_dtype(a, dtype), b_exact = from_dtype(b, dtype);
    Buffer A(*gpu_, a.size()), B(*gpu_, b.size()), O(*gpu_, static_cast<size_t>(M * w.N) * dtype_size(dtype));
    A.upload(a.data(), a.size());
    B.upload(b.data(), b.size());
    O.fill(0xff);
    const bnb_status_t st =
        bnb_gemm_4bit(gpu_->get(), dtype, M, w.N, w.K, A.get(), w.packed->as<uint8_t>() + packed_offset, &w.scales,
                      w.qt, w.bs, with_bias ? B.get() : nullptr, O.get(), nullptr);
    EXPECT_EQ(st, BNB_SUCCESS) << bnb_last_error_message();
    if (st != BNB_SUCCESS) return INFINITY;
    EXPECT_EQ(bnb_synchronize(gpu_->get(), nullptr), BNB_SUCCESS);
    const std::vector<uint8_t> raw = O.download();
    if (out_bytes != nullptr) *out_bytes = raw;
    return sampled_error(from_dtype(raw, dtype), a_exact, w, with_bias ? &b_exact : nullptr, sample_rows(M));
  }

  int32_t kind_ = 0;
  std::unique_ptr<Context> gpu_;
};

}  // namespace

// Model-sized layers through every path: M = 1 (GEMV), 2, 3, 8, 16 (small-batch tiles), 17, 64
// and 256 (library GEMM), each dtype, NF4 nested (the usual QLoRA layout) and FP4 plain.
TEST_F(Gemm4Gpu, ModelShapesEveryPath) {
  struct Layer {
    int64_t N, K, bs;
    int32_t qt;
    bool nested;
  };
  const Layer layers[] = {{11008, 4096, 64, BNB_NF4, true}, {4096, 11008, 128, BNB_FP4, false},
                          {1000, 2080, 32, BNB_NF4, false}};
  uint64_t seed = 500;
  for (const Layer& l : layers) {
    Weight w;
    make_weight(*gpu_, l.N, l.K, l.bs, l.qt, l.nested, seed++, &w);
    ASSERT_FALSE(HasFatalFailure());
    for (int64_t M : {1, 2, 3, 8, 16, 17, 64, 256}) {
      for (int32_t dtype : {BNB_BF16, BNB_F16, BNB_F32}) {
        const double err = run(w, M, dtype, M % 2 == 1, seed++);
        EXPECT_LE(err, tolerance(dtype)) << "N=" << l.N << " K=" << l.K << " bs=" << l.bs << " M=" << M << " "
                                         << dtype_name(dtype);
        std::printf("  gemm4 N=%-6lld K=%-6lld bs=%-4lld M=%-4lld %-4s rel err %.3g\n", static_cast<long long>(l.N),
                    static_cast<long long>(l.K), static_cast<long long>(l.bs), static_cast<long long>(M),
                    dtype_name(dtype), err);
      }
    }
  }
}

// A weight that does not start on a 16-byte boundary takes the byte-load variant of each kernel.
TEST_F(Gemm4Gpu, MisalignedWeights) {
  Weight w;
  make_weight(*gpu_, 300, 1024, 64, BNB_NF4, true, 42, &w, /*packed_offset=*/3);
  ASSERT_FALSE(HasFatalFailure());
  for (int64_t M : {1, 5, 40}) {
    for (int32_t dtype : {BNB_F32, BNB_BF16}) {
      EXPECT_LE(run(w, M, dtype, true, 43 + M, 3), tolerance(dtype)) << "M=" << M << " " << dtype_name(dtype);
    }
  }
}

// The GPU and CPU backends agree within the bounds on the same data.
TEST_F(Gemm4Gpu, AgreesWithCpuBackend) {
  Context cpu(BNB_BACKEND_CPU);
  if (!cpu.ok()) GTEST_SKIP() << "no CPU backend";
  const int64_t N = 513, K = 2048, M = 7;
  Weight w;
  make_weight(*gpu_, N, K, 64, BNB_FP4, true, 7, &w);
  ASSERT_FALSE(HasFatalFailure());
  std::vector<uint8_t> gpu_out;
  run(w, M, BNB_F32, true, 8, 0, &gpu_out);
  // The same weight bytes and scales on the CPU.
  const int64_t nb = N * K / 64;
  std::vector<uint8_t> packed = w.packed->download(), aq = w.absmax_q->download();
  std::vector<float> a2 = w.absmax2->download_as<float>(), off = w.offset->download_as<float>();
  bnb_scales_t sc;
  ASSERT_BNB_OK(bnb_scales_init(&sc));
  sc.absmax_q = aq.data();
  sc.absmax2 = a2.data();
  sc.offset = off.data();
  ASSERT_EQ(static_cast<int64_t>(aq.size()), nb);
  const std::vector<uint8_t> a = to_dtype(random_normal(M * K, 8), BNB_F32);
  const std::vector<uint8_t> b = to_dtype(random_normal(N, 9, 0.5f), BNB_F32);
  std::vector<float> cpu_out(static_cast<size_t>(M * N));
  ASSERT_BNB_OK(bnb_gemm_4bit(cpu.get(), BNB_F32, M, N, K, a.data(), packed.data(), &sc, BNB_FP4, 64, b.data(),
                              cpu_out.data(), nullptr));
  const std::vector<float> g = from_dtype(gpu_out, BNB_F32);
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < g.size(); ++i) {
    num += (static_cast<double>(g[i]) - cpu_out[i]) * (static_cast<double>(g[i]) - cpu_out[i]);
    den += static_cast<double>(cpu_out[i]) * cpu_out[i];
  }
  EXPECT_LE(std::sqrt(num / den), 1e-5);
}

// ---------------------------------------------------------------- CUDA graphs

// Every path can be captured (no host synchronisation; the large-M workspace comes from the
// stream-ordered allocator), and a replay on new activations gives their result.
TEST_F(Gemm4Gpu, CapturedInAGraph) {
  if (kind_ != BNB_BACKEND_CUDA) GTEST_SKIP() << "CUDA-only test";
  CudaDriver drv;
  if (!drv.load()) GTEST_SKIP() << "libcuda.so.1 not loadable";
  Weight w;
  make_weight(*gpu_, 2048, 1024, 64, BNB_NF4, true, 90, &w);
  ASSERT_FALSE(HasFatalFailure());
  for (int64_t M : {1, 6, 48}) {
    SCOPED_TRACE(::testing::Message() << "M=" << M);
    void* stream = nullptr;
    ASSERT_EQ(drv.cuStreamCreate(&stream, 1), 0);
    Buffer A(*gpu_, static_cast<size_t>(M * w.K) * 2), O(*gpu_, static_cast<size_t>(M * w.N) * 2);
    const auto enqueue = [&] {
      return bnb_gemm_4bit(gpu_->get(), BNB_BF16, M, w.N, w.K, A.get(), w.packed->as<uint8_t>(), &w.scales, w.qt, w.bs,
                           nullptr, O.get(), stream);
    };
    A.upload(to_dtype(random_normal(M * w.K, 91), BNB_BF16).data(), A.bytes());
    ASSERT_BNB_OK(enqueue());  // warm-up outside the capture (module and library loading)
    ASSERT_BNB_OK(bnb_synchronize(gpu_->get(), stream));
    ASSERT_EQ(drv.cuStreamBeginCapture(stream, 1 /* thread-local */), 0);
    const bnb_status_t st = enqueue();
    void* graph = nullptr;
    ASSERT_EQ(drv.cuStreamEndCapture(stream, &graph), 0) << "gemm_4bit broke the capture";
    ASSERT_BNB_OK(st);
    void* exec = nullptr;
    ASSERT_EQ(drv.cuGraphInstantiateWithFlags(&exec, graph, 0), 0);
    const std::vector<uint8_t> fresh = to_dtype(random_normal(M * w.K, 92), BNB_BF16);
    A.upload(fresh.data(), fresh.size());
    O.fill(0xff);
    ASSERT_EQ(drv.cuGraphLaunch(exec, stream), 0);
    ASSERT_EQ(drv.cuStreamSynchronize(stream), 0);
    const std::vector<uint8_t> replayed = O.download();
    drv.cuGraphExecDestroy(exec);
    drv.cuGraphDestroy(graph);
    ASSERT_BNB_OK(enqueue());  // the same call without the graph
    ASSERT_BNB_OK(bnb_synchronize(gpu_->get(), stream));
    drv.cuStreamDestroy(stream);
    EXPECT_EQ(replayed, O.download());
    EXPECT_LE(sampled_error(from_dtype(replayed, BNB_BF16), from_dtype(fresh, BNB_BF16), w, nullptr, sample_rows(M)),
              tolerance(BNB_BF16));
  }
}
