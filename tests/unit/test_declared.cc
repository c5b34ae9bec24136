// Declared buffer lengths (issue 17; docs/API.md, "Declared buffer lengths"): after
// bnb_buffer_declare, every entry point that receives a pointer inside a declared buffer checks
// the bytes the op needs from it against the bytes the buffer has from there. For every entry
// point and every one of its arrays: declared exactly, the call runs; declared one byte short, it
// fails naming that array and both byte counts, and writes nothing. On every available backend
// (device memory is declared like host memory).
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "util.h"

using namespace bnb_test;

namespace {

class Declared : public ::testing::TestWithParam<int32_t> {
 protected:
  void SetUp() override {
    ctx_ = std::make_unique<Context>(GetParam(), 2);
    ASSERT_TRUE(ctx_->ok()) << bnb_last_error_message();
  }
  void TearDown() override {
    for (const Arg& a : args_) bnb_buffer_forget(a.buffer->get());
  }
  // An array of the op with the bytes it needs, in backend memory filled with 0x3c (a finite
  // value in every float format, 60 as int8).
  void* add(const char* name, int64_t bytes) {
    args_.push_back({name, bytes, std::make_unique<Buffer>(*ctx_, static_cast<size_t>(bytes))});
    args_.back().buffer->fill(0x3c);
    return args_.back().buffer->get();
  }
  template <typename T>
  T* add_as(const char* name, int64_t count) {
    return static_cast<T*>(add(name, count * static_cast<int64_t>(sizeof(T))));
  }
  // Declares every array with exactly its bytes: `call` runs. Then each array one byte short:
  // `call` fails naming it, and no array changes.
  void check_each(const std::function<bnb_status_t()>& call) {
    for (const Arg& a : args_) ASSERT_BNB_OK(bnb_buffer_declare(a.buffer->get(), a.bytes));
    ASSERT_BNB_OK(call());
    ASSERT_BNB_OK(bnb_synchronize(ctx_->get(), nullptr));
    std::vector<std::vector<uint8_t>> before;
    for (const Arg& a : args_) before.push_back(a.buffer->download());
    for (const Arg& a : args_) {
      SCOPED_TRACE(a.name);
      ASSERT_BNB_OK(bnb_buffer_declare(a.buffer->get(), a.bytes - 1));
      EXPECT_FAILS(call(), BNB_ERR_INVALID_ARGUMENT, a.name + " needs " + std::to_string(a.bytes) + " bytes");
      EXPECT_TRUE(contains(bnb_last_error_message(), "has " + std::to_string(a.bytes - 1) + " bytes from there"))
          << bnb_last_error_message();
      ASSERT_BNB_OK(bnb_buffer_declare(a.buffer->get(), a.bytes));
    }
    ASSERT_BNB_OK(bnb_synchronize(ctx_->get(), nullptr));
    for (size_t i = 0; i < args_.size(); ++i) EXPECT_EQ(args_[i].buffer->download(), before[i]) << args_[i].name;
  }
  static bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  }

  struct Arg {
    std::string name;
    int64_t bytes;
    std::unique_ptr<Buffer> buffer;
  };
  std::unique_ptr<Context> ctx_;
  std::vector<Arg> args_;
};

}  // namespace

TEST_P(Declared, Quantize8) {
  const int64_t n = 1000, bs = 256;
  void* A = add("A", n * 2);
  float* code = add_as<float>("code", 256);
  uint8_t* out = add_as<uint8_t>("out", n);
  float* absmax = add_as<float>("absmax", 4);
  check_each([&] { return bnb_quantize_blockwise(ctx_->get(), BNB_BF16, A, n, bs, code, out, absmax, nullptr); });
}

TEST_P(Declared, Dequantize8) {
  const int64_t n = 777, bs = 64;
  uint8_t* q = add_as<uint8_t>("q", n);
  float* absmax = add_as<float>("absmax", 13);
  float* code = add_as<float>("code", 256);
  void* out = add("out", n * 4);
  check_each([&] { return bnb_dequantize_blockwise(ctx_->get(), q, absmax, code, n, bs, BNB_F32, out, nullptr); });
}

TEST_P(Declared, Quantize4AndCompressAbsmax) {
  const int64_t n = 1001, bs = 64, nblocks = 16;
  void* A = add("A", n * 2);
  uint8_t* packed = add_as<uint8_t>("packed", 501);
  float* absmax = add_as<float>("absmax", nblocks);
  check_each([&] { return bnb_quantize_4bit(ctx_->get(), BNB_NF4, BNB_F16, A, n, bs, packed, absmax, nullptr); });
  args_.clear();
  const int64_t many = 300;  // two nested blocks of 256
  float* stats = add_as<float>("absmax", many);
  uint8_t* absmax_q = add_as<uint8_t>("absmax_q", many);
  float* absmax2 = add_as<float>("absmax2", 2);
  float* offset = add_as<float>("offset", 1);
  check_each([&] { return bnb_compress_absmax(ctx_->get(), stats, many, absmax_q, absmax2, offset, nullptr); });
}

TEST_P(Declared, Dequantize4PlainAndNested) {
  const int64_t n = 4095, bs = 32, nblocks = 128;
  uint8_t* packed = add_as<uint8_t>("packed", 2048);
  float* absmax = add_as<float>("scales->absmax", nblocks);
  void* out = add("out", n * 2);
  bnb_scales_t plain;
  bnb_scales_init(&plain);
  plain.absmax = absmax;
  check_each([&] { return bnb_dequantize_4bit(ctx_->get(), BNB_FP4, packed, &plain, n, bs, BNB_BF16, out, nullptr); });
  args_.clear();
  packed = add_as<uint8_t>("packed", 2048);
  out = add("out", n * 2);
  bnb_scales_t nested;
  bnb_scales_init(&nested);
  nested.absmax_q = add_as<uint8_t>("scales->absmax_q", nblocks);
  nested.absmax2 = add_as<float>("scales->absmax2", 2);  // blocksize2 64: 128 / 64
  nested.code2 = add_as<float>("scales->code2", 256);
  nested.offset = add_as<float>("scales->offset", 1);
  nested.blocksize2 = 64;
  check_each([&] { return bnb_dequantize_4bit(ctx_->get(), BNB_NF4, packed, &nested, n, bs, BNB_F16, out, nullptr); });
}

TEST_P(Declared, Gemm4) {
  const int64_t M = 3, N = 24, K = 128, bs = 64;
  void* A = add("A", M * K * 4);
  uint8_t* W = add_as<uint8_t>("W", N * K / 2);
  float* absmax = add_as<float>("scales->absmax", N * K / bs);
  void* bias = add("bias", N * 4);
  void* out = add("out", M * N * 4);
  bnb_scales_t scales;
  bnb_scales_init(&scales);
  scales.absmax = absmax;
  check_each([&] {
    return bnb_gemm_4bit(ctx_->get(), BNB_F32, M, N, K, A, W, &scales, BNB_NF4, bs, bias, out, nullptr);
  });
}

TEST_P(Declared, Gemm4Transposed) {
  const int64_t M = 3, N = 24, K = 128, bs = 64;
  void* A = add("A", M * N * 4);
  uint8_t* W = add_as<uint8_t>("W", N * K / 2);
  float* absmax = add_as<float>("scales->absmax", N * K / bs);
  void* out = add("out", M * K * 4);
  bnb_scales_t scales;
  bnb_scales_init(&scales);
  scales.absmax = absmax;
  check_each([&] {
    return bnb_gemm_4bit_transposed(ctx_->get(), BNB_F32, M, N, K, A, W, &scales, BNB_NF4, bs, out, nullptr);
  });
}

TEST_P(Declared, Int8Family) {
  const int64_t M = 5, N = 12, K = 64;
  void* A = add("A", M * K * 2);
  int8_t* q = add_as<int8_t>("q", M * K);
  float* row_stats = add_as<float>("row_stats", M);
  check_each([&] { return bnb_int8_vectorwise_quant(ctx_->get(), BNB_F16, M, K, A, 0.0f, q, row_stats, nullptr); });
  args_.clear();
  A = add("A", M * K * 2);
  int32_t* columns = add_as<int32_t>("columns", 10);
  int64_t count = 0;
  check_each([&] {
    return bnb_int8_outlier_columns(ctx_->get(), BNB_F16, M, K, A, 0.5f, columns, 10, &count, nullptr);
  });
  args_.clear();
  int8_t* qa = add_as<int8_t>("A", M * K);
  int8_t* B = add_as<int8_t>("B", N * K);
  int32_t* C = add_as<int32_t>("C", M * N);
  check_each([&] { return bnb_int8_matmul(ctx_->get(), M, N, K, qa, B, C, nullptr); });
  args_.clear();
  C = add_as<int32_t>("C", M * N);
  row_stats = add_as<float>("row_stats", M);
  float* col_stats = add_as<float>("col_stats", N);
  void* bias = add("bias", N * 2);
  void* out = add("out", M * N * 2);
  check_each([&] {
    return bnb_int8_mm_dequant(ctx_->get(), M, N, C, row_stats, col_stats, bias, BNB_F16, out, nullptr);
  });
  args_.clear();
  A = add("A", M * K * 4);
  int8_t* W = add_as<int8_t>("W", N * K);
  float* SCB = add_as<float>("SCB", N);
  bias = add("bias", N * 4);
  q = add_as<int8_t>("q", M * K);
  row_stats = add_as<float>("row_stats", M);
  C = add_as<int32_t>("C", M * N);
  out = add("out", M * N * 4);
  check_each([&] {
    return bnb_int8_linear(ctx_->get(), BNB_F32, M, N, K, A, 0.0f, W, SCB, bias, q, row_stats, C, out, nullptr);
  });
  int32_t* columns_k = add_as<int32_t>("columns", K);
  int64_t* count_d = add_as<int64_t>("count", 1);
  check_each([&] {
    return bnb_int8_linear_outliers(ctx_->get(), BNB_F32, M, N, K, A, 6.0f, W, SCB, bias, q, row_stats, C, columns_k,
                                    count_d, out, nullptr);
  });
}

// Optimizers: AdEMAMix's state1 holds two EMAs and absmax1 two sets of scales.
TEST_P(Declared, Optimizers) {
  const int64_t n = 600, nblocks = 3;
  for (int32_t opt : {BNB_OPT_ADAM, BNB_OPT_ADEMAMIX}) {
    for (int32_t bits : {32, 8}) {
      SCOPED_TRACE("optimizer " + std::to_string(opt) + " bits " + std::to_string(bits));
      const int64_t copies = opt == BNB_OPT_ADEMAMIX ? 2 : 1, state = bits == 8 ? 1 : 4;
      args_.clear();
      bnb_optimizer_tensors_t t;
      bnb_optimizer_tensors_init(&t);
      t.p = add("tensors->p", n * 2);
      t.g = add("tensors->g", n * 2);
      t.state1 = add("tensors->state1", copies * n * state);
      t.state2 = add("tensors->state2", n * state);
      if (bits == 8) {
        t.absmax1 = add_as<float>("tensors->absmax1", copies * nblocks);
        t.absmax2 = add_as<float>("tensors->absmax2", nblocks);
        t.qmap1 = add_as<float>("tensors->qmap1", 256);
        t.qmap2 = add_as<float>("tensors->qmap2", 256);
      }
      bnb_optimizer_params_t params;
      bnb_optimizer_params_init(&params);
      params.optimizer = opt;
      params.state_bits = bits;
      params.param_dtype = BNB_BF16;
      params.n = n;
      check_each([&] { return bnb_optimizer_update(ctx_->get(), &params, &t, nullptr); });
      // The multi-tensor entry: the same arrays, named by index, and its host arrays.
      for (Arg& a : args_) a.name = "tensors[0]" + a.name.substr(std::string("tensors").size());
      bnb_optimizer_tensors_t* ts = add_as<bnb_optimizer_tensors_t>("tensors", 1);
      int64_t* sizes = add_as<int64_t>("n", 1);
      if (GetParam() == BNB_BACKEND_CPU) {  // the struct and count arrays are host memory
        *ts = t;
        *sizes = n;
        check_each([&] { return bnb_optimizer_update_multi(ctx_->get(), &params, 1, ts, sizes, nullptr); });
      }
    }
  }
}

TEST_P(Declared, MemcpyAndPrefetch) {
  const int64_t bytes = 1000;
  void* dst = add("dst", bytes);
  std::vector<uint8_t> host(static_cast<size_t>(bytes), 7);
  ASSERT_BNB_OK(bnb_buffer_declare(host.data(), bytes));
  check_each([&] {
    return bnb_memcpy(ctx_->get(), dst, host.data(), bytes, BNB_MEMCPY_HOST_TO_BACKEND, nullptr);
  });
  ASSERT_BNB_OK(bnb_buffer_declare(host.data(), bytes - 1));
  EXPECT_FAILS(bnb_memcpy(ctx_->get(), dst, host.data(), bytes, BNB_MEMCPY_HOST_TO_BACKEND, nullptr),
               BNB_ERR_INVALID_ARGUMENT, "src needs 1000 bytes");
  ASSERT_BNB_OK(bnb_buffer_forget(host.data()));
  args_.clear();
  void* paged = nullptr;
  ASSERT_BNB_OK(bnb_paged_alloc(ctx_->get(), 4096, &paged));
  ASSERT_BNB_OK(bnb_buffer_declare(paged, 4096));
  ASSERT_BNB_OK(bnb_paged_prefetch(ctx_->get(), paged, 4096, 1, nullptr));
  EXPECT_FAILS(bnb_paged_prefetch(ctx_->get(), paged, 4097, 1, nullptr), BNB_ERR_INVALID_ARGUMENT,
               "ptr needs 4097 bytes");
  ASSERT_BNB_OK(bnb_paged_free(ctx_->get(), paged));  // forgets the declaration
  EXPECT_FAILS(bnb_buffer_forget(paged), BNB_ERR_INVALID_ARGUMENT, "not the start of a buffer");
}

INSTANTIATE_TEST_SUITE_P(Backends, Declared, ::testing::ValuesIn(available_backends()),
                         [](const ::testing::TestParamInfo<int32_t>& info) { return backend_label(info.param); });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Declared);

// ---------------------------------------------------------------- the declarations themselves (host memory)

TEST(DeclaredBuffers, ArgumentsOverlapAndForgetting) {
  std::vector<uint8_t> mem(4096);
  uint8_t* p = mem.data();
  EXPECT_FAILS(bnb_buffer_declare(nullptr, 10), BNB_ERR_INVALID_ARGUMENT, "ptr is NULL");
  EXPECT_FAILS(bnb_buffer_declare(p, 0), BNB_ERR_INVALID_ARGUMENT, "bytes");
  EXPECT_FAILS(bnb_buffer_declare(p, -5), BNB_ERR_INVALID_ARGUMENT, "bytes");
  EXPECT_FAILS(bnb_buffer_declare(reinterpret_cast<const void*>(UINTPTR_MAX - 8), 100), BNB_ERR_INVALID_ARGUMENT,
               "wraps");
  ASSERT_BNB_OK(bnb_buffer_declare(p + 100, 100));
  EXPECT_FAILS(bnb_buffer_declare(p + 150, 100), BNB_ERR_INVALID_ARGUMENT, "overlaps");   // starts inside
  EXPECT_FAILS(bnb_buffer_declare(p + 50, 51), BNB_ERR_INVALID_ARGUMENT, "overlaps");     // ends inside
  EXPECT_FAILS(bnb_buffer_declare(p, 1000), BNB_ERR_INVALID_ARGUMENT, "overlaps");        // covers it
  ASSERT_BNB_OK(bnb_buffer_declare(p + 50, 50));    // adjacent below
  ASSERT_BNB_OK(bnb_buffer_declare(p + 200, 10));   // adjacent above
  ASSERT_BNB_OK(bnb_buffer_declare(p + 100, 90));   // the same start: a new length
  ASSERT_BNB_OK(bnb_buffer_declare(p + 100, 100));
  EXPECT_FAILS(bnb_buffer_declare(p + 100, 101), BNB_ERR_INVALID_ARGUMENT, "overlaps");   // into the next
  EXPECT_FAILS(bnb_buffer_forget(p + 101), BNB_ERR_INVALID_ARGUMENT, "not the start");
  ASSERT_BNB_OK(bnb_buffer_forget(nullptr));
  for (int off : {50, 100, 200}) ASSERT_BNB_OK(bnb_buffer_forget(p + off));
  EXPECT_FAILS(bnb_buffer_forget(p + 100), BNB_ERR_INVALID_ARGUMENT, "not the start");
}

// A pointer inside a declared buffer is checked against what is left after it; one outside every
// declaration, and every pointer of another thread, are not checked.
TEST(DeclaredBuffers, InteriorPointersAndOtherThreads) {
  if (!cpu_available()) GTEST_SKIP() << "cpu backend not available";
  Context ctx(BNB_BACKEND_CPU, 1);
  ASSERT_TRUE(ctx.ok());
  std::vector<float> a(2048, 1.0f), absmax(32);
  std::vector<uint8_t> q(2048);
  ASSERT_BNB_OK(bnb_buffer_declare(a.data(), 1024 * 4));  // declares the first half only
  const auto quantize = [&](const float* from, int64_t n) {
    return bnb_quantize_blockwise(ctx.get(), BNB_F32, from, n, 64, nullptr, q.data(), absmax.data(), nullptr);
  };
  ASSERT_BNB_OK(quantize(a.data() + 24, 1000));
  EXPECT_FAILS(quantize(a.data() + 24, 1001), BNB_ERR_INVALID_ARGUMENT,
               "A needs 4004 bytes (1001 elements of 4) but its declared buffer has 4000 bytes from there");
  ASSERT_BNB_OK(quantize(a.data() + 1024, 1024));  // past the declared end: undeclared
  std::thread other([&] { EXPECT_EQ(quantize(a.data() + 24, 2024), BNB_SUCCESS) << bnb_last_error_message(); });
  other.join();
  ASSERT_BNB_OK(bnb_buffer_forget(a.data()));
  ASSERT_BNB_OK(quantize(a.data() + 24, 2024));
}
