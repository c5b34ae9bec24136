// The GPU plugin's find_nonfinite (src/gpu/finite_ops.cu) through the finite check of a context
// (options.check_finite = 1): arrays far larger than one pass of the grid, with hits in many
// threads, must report the smallest index (the one the host finds, and the CPU backend's); data
// uploaded asynchronously on a user stream is scanned after the upload; finite data gives the
// unchecked result bit for bit. Skips without a GPU backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda_driver.h"
#include "util.h"

using namespace bnb_test;

namespace {

// BNB_GPU_TESTS_ON_CPU=1 runs the suite on the CPU backend: a check of the harness itself.
int32_t gpu_backend() {
  const char* on_cpu = std::getenv("BNB_GPU_TESTS_ON_CPU");
  if (on_cpu != nullptr && on_cpu[0] == '1') return BNB_BACKEND_CPU;
  for (int32_t k : available_backends())
    if (k == BNB_BACKEND_CUDA || k == BNB_BACKEND_HIP) return k;
  return 0;
}

// The dtype's bytes of random values with non-finite ones at `hits` random positions;
// *first = the smallest of them (from the values as stored: the conversion keeps them).
std::vector<uint8_t> data_with_hits(int64_t n, int32_t dtype, int hits, uint64_t seed, int64_t* first) {
  std::vector<float> v = random_normal(n, seed, 3.0f);
  std::mt19937_64 rng(seed);
  const float bad[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity()};
  for (int i = 0; i < hits; ++i) v[static_cast<size_t>(rng() % static_cast<uint64_t>(n))] = bad[i % 3];
  std::vector<uint8_t> bytes = to_dtype(v, dtype);
  const std::vector<float> back = from_dtype(bytes, dtype);
  *first = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(back[static_cast<size_t>(i)])) {
      *first = i;
      break;
    }
  }
  return bytes;
}

// The index a context's check reports for bnb_quantize_blockwise of `bytes`, or -1 if it passes.
int64_t reported_index(const Context& ctx, int32_t dtype, const std::vector<uint8_t>& bytes, int64_t n,
                       void* stream = nullptr) {
  Buffer a(ctx, bytes.size()), q(ctx, static_cast<size_t>(n)), s(ctx, static_cast<size_t>((n + 4095) / 4096) * 4);
  if (bnb_memcpy(ctx.get(), a.get(), bytes.data(), static_cast<int64_t>(bytes.size()), BNB_MEMCPY_HOST_TO_BACKEND,
                 stream) != BNB_SUCCESS) {
    ADD_FAILURE() << bnb_last_error_message();
    return -2;
  }
  const bnb_status_t st = bnb_quantize_blockwise(ctx.get(), dtype, a.get(), n, 4096, nullptr, q.as<uint8_t>(),
                                                 s.as<float>(), stream);
  EXPECT_EQ(bnb_synchronize(ctx.get(), stream), BNB_SUCCESS) << bnb_last_error_message();
  if (st == BNB_SUCCESS) return -1;
  EXPECT_EQ(st, BNB_ERR_INVALID_ARGUMENT) << bnb_last_error_message();
  const std::string m = bnb_last_error_message();
  const size_t at = m.find("A[");
  if (at == std::string::npos || m.find("is not finite") == std::string::npos) {
    ADD_FAILURE() << m;
    return -2;
  }
  return std::stoll(m.substr(at + 2));
}

}  // namespace

TEST(FiniteGpu, SmallestIndexOfManyHitsAcrossTheGrid) {
  const int32_t kind = gpu_backend();
  if (kind == 0) GTEST_SKIP() << "no GPU backend";
  Context gpu(kind, 0, 1);
  ASSERT_TRUE(gpu.ok()) << bnb_last_error_message();
  const bool cpu = cpu_available();
  std::unique_ptr<Context> host;
  if (cpu) host = std::make_unique<Context>(BNB_BACKEND_CPU, 0, 1);
  uint64_t seed = 1;
  for (int32_t dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
    for (int64_t n : {int64_t{1}, int64_t{4097}, int64_t{3000017}, int64_t{20000003}}) {
      for (int hits : {0, 1, 7, 5000}) {
        if (n == 1 && hits > 1) continue;
        int64_t first = 0;
        const std::vector<uint8_t> bytes = data_with_hits(n, dtype, hits, seed++, &first);
        SCOPED_TRACE("dtype " + std::to_string(dtype) + " n " + std::to_string(n) + " hits " + std::to_string(hits));
        EXPECT_EQ(reported_index(gpu, dtype, bytes, n), first);
        if (cpu && n <= 3000017) {
          EXPECT_EQ(reported_index(*host, dtype, bytes, n), first);
        }
      }
    }
  }
}

// The check scans what the stream's earlier work left: an asynchronous upload on the same
// non-blocking stream is complete when it reads.
TEST(FiniteGpu, ScansAfterTheStreamsEarlierWork) {
  const int32_t kind = gpu_backend();
  if (kind != BNB_BACKEND_CUDA) GTEST_SKIP() << "no CUDA backend";
  CudaDriver drv;
  if (!drv.load()) GTEST_SKIP() << "libcuda not loadable";
  Context gpu(kind, 0, 1);
  ASSERT_TRUE(gpu.ok()) << bnb_last_error_message();
  void* stream = nullptr;
  ASSERT_EQ(drv.cuStreamCreate(&stream, 1 /* non-blocking */), 0);
  const int64_t n = 20000000;
  for (int trial = 0; trial < 3; ++trial) {
    int64_t first = 0;
    const std::vector<uint8_t> bytes = data_with_hits(n, BNB_F16, 3, 100 + trial, &first);
    EXPECT_EQ(reported_index(gpu, BNB_F16, bytes, n, stream), first);
  }
  drv.cuStreamDestroy(stream);
}

// With every element finite the checked context gives the unchecked one's codes bit for bit.
TEST(FiniteGpu, FiniteDataGivesTheUncheckedResult) {
  const int32_t kind = gpu_backend();
  if (kind == 0) GTEST_SKIP() << "no GPU backend";
  Context checked(kind, 0, 1), unchecked(kind, 0, -1);
  ASSERT_TRUE(checked.ok() && unchecked.ok()) << bnb_last_error_message();
  const int64_t n = 1000003, bs = 64;
  const std::vector<uint8_t> a = to_dtype(random_normal(n, 7), BNB_BF16);
  std::vector<std::vector<uint8_t>> codes;
  for (const Context* ctx : {&checked, &unchecked}) {
    Buffer A(*ctx, a.size()), P(*ctx, static_cast<size_t>((n + 1) / 2)),
        S(*ctx, static_cast<size_t>((n + bs - 1) / bs) * 4);
    A.upload(a.data(), a.size());
    P.fill(0xA5);
    ASSERT_BNB_OK(bnb_quantize_4bit(ctx->get(), BNB_NF4, BNB_BF16, A.get(), n, bs, P.as<uint8_t>(), S.as<float>(),
                                    nullptr));
    ASSERT_BNB_OK(bnb_synchronize(ctx->get(), nullptr));
    codes.push_back(P.download());
  }
  EXPECT_EQ(codes[0], codes[1]);
}
