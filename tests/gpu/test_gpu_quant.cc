// The CUDA/HIP quantization ops against the scalar reference (tests/ref) and the CPU backend, bit
// for bit, on random data with the awkward cases mixed in (zero blocks, tiny values, outliers,
// values on code boundaries, partial blocks, odd n, misaligned pointers, n past 2^31). Plus what
// only a GPU backend has: memory-kind checks, device indices, streams and CUDA-graph capture.
// Every test skips cleanly when no GPU backend is available.
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tables.h"
#include "cuda_driver.h"
#include "util.h"
#if defined(BNB_HAVE_REF)
#include "ref.h"
#endif

using namespace bnb_test;

namespace {

// BNB_GPU_TESTS_ON_CPU=1 points the suite at the CPU backend instead: a self-check of the
// harness (reference calls, buffer sizes, poisoning) on a machine without a GPU.
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

bool has_cpu() {
  for (int32_t k : available_backends()) {
    if (k == BNB_BACKEND_CPU) return true;
  }
  return false;
}

std::string gpu_info() {
  int32_t count = 0;
  std::string out;
  if (bnb_backend_count(&count) != BNB_SUCCESS) return out;
  for (int32_t i = 0; i < count; ++i) {
    bnb_backend_info_t info;
    info.struct_size = sizeof info;
    if (bnb_backend_get_info(i, &info) == BNB_SUCCESS && info.kind != BNB_BACKEND_CPU) {
      out += std::string(info.name) + ": " + info.detail + "; ";
    }
  }
  return out;
}

const char* dtype_name(int32_t d) { return d == BNB_F32 ? "f32" : d == BNB_F16 ? "f16" : "bf16"; }

int64_t count_byte_diffs(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  int64_t d = 0;
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) d += a[i] != b[i];
  return d + static_cast<int64_t>(std::max(a.size(), b.size()) - n);
}

template <typename T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<float> code_table(int32_t which) {
  std::vector<float> t(256);
  int64_t count = 0;
  EXPECT_EQ(bnb_get_code_table(which, t.data(), &count), BNB_SUCCESS);
  t.resize(static_cast<size_t>(count));
  return t;
}

// Outputs of one 8-bit or 4-bit quantization.
struct Quantized {
  std::vector<uint8_t> codes;
  std::vector<float> absmax;
};

// Runs bnb_quantize_blockwise on ctx; outputs are poisoned with `poison` first, so an element
// the backend leaves unwritten shows up as a difference.
Quantized quantize8(const Context& ctx, int32_t dtype, const std::vector<uint8_t>& a, int64_t n, int64_t bs,
                    const std::vector<float>* code, uint8_t poison) {
  const int64_t nb = (n + bs - 1) / bs;
  Buffer A(ctx, a.size()), out(ctx, static_cast<size_t>(n)), absmax(ctx, static_cast<size_t>(nb) * 4);
  std::unique_ptr<Buffer> c;
  A.upload(a.data(), a.size());
  out.fill(poison);
  absmax.fill(poison);
  if (code != nullptr) {
    c = std::make_unique<Buffer>(ctx, code->size() * 4);
    c->upload(code->data(), code->size() * 4);
  }
  Quantized r;
  const bnb_status_t st = bnb_quantize_blockwise(ctx.get(), dtype, A.get(), n, bs, c ? c->as<float>() : nullptr,
                                                 out.as<uint8_t>(), absmax.as<float>(), nullptr);
  EXPECT_EQ(st, BNB_SUCCESS) << bnb_last_error_message();
  r.codes = out.download();
  r.absmax = absmax.download_as<float>();
  return r;
}

std::vector<uint8_t> dequantize8(const Context& ctx, const Quantized& q, int64_t n, int64_t bs,
                                 const std::vector<float>* code, int32_t out_dtype, uint8_t poison) {
  Buffer Q(ctx, q.codes.size()), absmax(ctx, q.absmax.size() * 4), out(ctx, static_cast<size_t>(n) * dtype_size(out_dtype));
  std::unique_ptr<Buffer> c;
  Q.upload(q.codes.data(), q.codes.size());
  absmax.upload(q.absmax.data(), q.absmax.size() * 4);
  out.fill(poison);
  if (code != nullptr) {
    c = std::make_unique<Buffer>(ctx, code->size() * 4);
    c->upload(code->data(), code->size() * 4);
  }
  EXPECT_EQ(bnb_dequantize_blockwise(ctx.get(), Q.as<uint8_t>(), absmax.as<float>(), c ? c->as<float>() : nullptr, n,
                                     bs, out_dtype, out.get(), nullptr),
            BNB_SUCCESS)
      << bnb_last_error_message();
  return out.download();
}

Quantized quantize4(const Context& ctx, int32_t qt, int32_t dtype, const std::vector<uint8_t>& a, int64_t n,
                    int64_t bs, uint8_t poison) {
  const int64_t nb = (n + bs - 1) / bs;
  Buffer A(ctx, a.size()), packed(ctx, static_cast<size_t>((n + 1) / 2)), absmax(ctx, static_cast<size_t>(nb) * 4);
  A.upload(a.data(), a.size());
  packed.fill(poison);
  absmax.fill(poison);
  EXPECT_EQ(bnb_quantize_4bit(ctx.get(), qt, dtype, A.get(), n, bs, packed.as<uint8_t>(), absmax.as<float>(), nullptr),
            BNB_SUCCESS)
      << bnb_last_error_message();
  Quantized r;
  r.codes = packed.download();
  r.absmax = absmax.download_as<float>();
  return r;
}

// Nested scales as the public API holds them.
struct Nested {
  std::vector<uint8_t> absmax_q;
  std::vector<float> absmax2;
  float offset = 0.0f;
};

Nested compress(const Context& ctx, const std::vector<float>& absmax, uint8_t poison) {
  const int64_t nb = static_cast<int64_t>(absmax.size());
  const int64_t n2 = (nb + 255) / 256;
  Buffer in(ctx, absmax.size() * 4), q(ctx, absmax.size()), a2(ctx, static_cast<size_t>(n2) * 4), off(ctx, 4);
  in.upload(absmax.data(), absmax.size() * 4);
  q.fill(poison);
  a2.fill(poison);
  off.fill(poison);
  EXPECT_EQ(bnb_compress_absmax(ctx.get(), in.as<float>(), nb, q.as<uint8_t>(), a2.as<float>(), off.as<float>(), nullptr),
            BNB_SUCCESS)
      << bnb_last_error_message();
  Nested r;
  r.absmax_q = q.download();
  r.absmax2 = a2.download_as<float>();
  r.offset = off.download_as<float>()[0];
  return r;
}

std::vector<uint8_t> dequantize4(const Context& ctx, int32_t qt, const Quantized& q, const Nested* nested, int64_t n,
                                 int64_t bs, int32_t out_dtype, uint8_t poison) {
  Buffer P(ctx, q.codes.size()), out(ctx, static_cast<size_t>(n) * dtype_size(out_dtype));
  P.upload(q.codes.data(), q.codes.size());
  out.fill(poison);
  bnb_scales_t sc;
  bnb_scales_init(&sc);
  std::unique_ptr<Buffer> absmax, aq, a2, off;
  if (nested == nullptr) {
    absmax = std::make_unique<Buffer>(ctx, q.absmax.size() * 4);
    absmax->upload(q.absmax.data(), q.absmax.size() * 4);
    sc.absmax = absmax->as<float>();
  } else {
    aq = std::make_unique<Buffer>(ctx, nested->absmax_q.size());
    a2 = std::make_unique<Buffer>(ctx, nested->absmax2.size() * 4);
    off = std::make_unique<Buffer>(ctx, 4);
    aq->upload(nested->absmax_q.data(), nested->absmax_q.size());
    a2->upload(nested->absmax2.data(), nested->absmax2.size() * 4);
    off->upload(&nested->offset, 4);
    sc.absmax = nullptr;
    sc.absmax_q = aq->as<uint8_t>();
    sc.absmax2 = a2->as<float>();
    sc.offset = off->as<float>();
    sc.blocksize2 = 256;
  }
  EXPECT_EQ(bnb_dequantize_4bit(ctx.get(), qt, P.as<uint8_t>(), &sc, n, bs, out_dtype, out.get(), nullptr), BNB_SUCCESS)
      << bnb_last_error_message();
  return out.download();
}

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kind_ = gpu_kind();
    if (kind_ == 0) GTEST_SKIP() << "no CUDA/HIP backend available (" << gpu_info() << ")";
    gpu_ = std::make_unique<Context>(kind_);
    ASSERT_TRUE(gpu_->ok()) << bnb_last_error_message();
    if (has_cpu() && !harness_check()) cpu_ = std::make_unique<Context>(BNB_BACKEND_CPU);
  }
  int32_t kind_ = 0;
  std::unique_ptr<Context> gpu_, cpu_;
};

// Runs everywhere, GPU or not: a GPU plugin that loaded but cannot run says why.
TEST(GpuPlugin, ReportsWhyItCannotRun) {
  int32_t count = 0;
  ASSERT_BNB_OK(bnb_backend_count(&count));
  int checked = 0;
  for (int32_t i = 0; i < count; ++i) {
    bnb_backend_info_t info;
    info.struct_size = sizeof info;
    ASSERT_BNB_OK(bnb_backend_get_info(i, &info));
    if (info.kind != BNB_BACKEND_CUDA && info.kind != BNB_BACKEND_HIP) continue;
    const std::string detail = info.detail;
    EXPECT_FALSE(detail.empty()) << info.name;
    if (info.available) {
      EXPECT_GT(info.device_count, 0) << info.name << ": " << detail;
    } else {
      EXPECT_EQ(info.device_count, 0) << info.name << ": " << detail;
      EXPECT_TRUE(detail.find("no ") != std::string::npos || detail.find("not found") != std::string::npos)
          << info.name << ": " << detail;
    }
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no GPU plugin registered";
}

// ---------------------------------------------------------------- 8-bit blockwise

struct Case8 {
  int32_t dtype;
  int64_t bs;
};

class GpuQuant8 : public GpuTest, public ::testing::WithParamInterface<Case8> {};

// Quantizes on the GPU and on every independent implementation available, expects identical
// codes and absmax, then decodes the GPU's codes into every output dtype on both sides.
void check_blockwise(const Context& gpu, const Context* cpu, int32_t dtype, int64_t n, int64_t bs,
                     const std::vector<float>& values, const std::vector<float>* code, const std::string& what) {
  SCOPED_TRACE(what);
  const std::vector<uint8_t> a = to_dtype(values, dtype);
  const Quantized g = quantize8(gpu, dtype, a, n, bs, code, 0xAB);
  const std::vector<float> table = code != nullptr ? *code : code_table(BNB_CODE_DYNAMIC_SIGNED);
  bool compared = false;
#if defined(BNB_HAVE_REF)
  {
    Quantized r;
    r.codes.assign(static_cast<size_t>(n), 0);
    r.absmax.assign(g.absmax.size(), 0.0f);
    bnb::ref::quantize_blockwise(dtype, a.data(), n, bs, table.data(), r.codes.data(), r.absmax.data());
    EXPECT_EQ(count_byte_diffs(g.codes, r.codes), 0) << "codes differ from the scalar reference";
    EXPECT_EQ(count_byte_diffs(bytes_of(g.absmax), bytes_of(r.absmax)), 0) << "absmax differs from the reference";
    for (int32_t od : {BNB_F32, BNB_F16, BNB_BF16}) {
      std::vector<uint8_t> want(static_cast<size_t>(n) * dtype_size(od));
      bnb::ref::dequantize_blockwise(g.codes.data(), g.absmax.data(), table.data(), n, bs, od, want.data());
      EXPECT_EQ(count_byte_diffs(dequantize8(gpu, g, n, bs, code, od, 0xCD), want), 0)
          << "dequantize to " << dtype_name(od) << " differs from the reference";
    }
    compared = true;
  }
#endif
  if (cpu != nullptr) {
    const Quantized c = quantize8(*cpu, dtype, a, n, bs, code, 0x5A);
    EXPECT_EQ(count_byte_diffs(g.codes, c.codes), 0) << "codes differ from the cpu backend";
    EXPECT_EQ(count_byte_diffs(bytes_of(g.absmax), bytes_of(c.absmax)), 0) << "absmax differs from the cpu backend";
    for (int32_t od : {BNB_F32, BNB_F16, BNB_BF16}) {
      EXPECT_EQ(count_byte_diffs(dequantize8(gpu, g, n, bs, code, od, 0xCD), dequantize8(*cpu, g, n, bs, code, od, 0x33)),
                0)
          << "dequantize to " << dtype_name(od) << " differs from the cpu backend";
    }
    compared = true;
  }
  if (!compared) GTEST_SKIP() << "neither the scalar reference nor the cpu backend is available to compare with";
}

TEST_P(GpuQuant8, MatchesReferenceOnRandomData) {
  const Case8 c = GetParam();
  for (int64_t n : {c.bs * 37 + 13, c.bs - 1, (int64_t{1} << 18) + 1}) {
    const std::vector<float> v = random_with_features(n, c.bs, static_cast<uint64_t>(n * 7 + c.bs + c.dtype));
    check_blockwise(*gpu_, cpu_.get(), c.dtype, n, c.bs, v, nullptr, "n=" + std::to_string(n));
  }
}

std::vector<Case8> cases8() {
  std::vector<Case8> v;
  for (int32_t d : {BNB_F32, BNB_F16, BNB_BF16})
    for (int64_t bs : {64, 128, 256, 512, 1024, 2048, 4096}) v.push_back({d, bs});
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, GpuQuant8, ::testing::ValuesIn(cases8()), [](const auto& info) {
  return std::string(dtype_name(info.param.dtype)) + "_bs" + std::to_string(info.param.bs);
});

TEST_F(GpuTest, BlockwiseOtherTables) {
  const int64_t n = 256 * 41 + 7;
  const std::vector<float> v = random_with_features(n, 256, 99);
  const std::vector<float> dyn_u = code_table(BNB_CODE_DYNAMIC_UNSIGNED);
  std::vector<float> abs_v(v);
  for (float& x : abs_v) x = std::fabs(x);
  check_blockwise(*gpu_, cpu_.get(), BNB_F16, n, 256, abs_v, &dyn_u, "unsigned dynamic map");
  // A strictly increasing random table (fast path with several midpoints per bucket).
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> random_table(256);
  for (float& x : random_table) x = u(rng);
  std::sort(random_table.begin(), random_table.end());
  random_table[255] = 1.0f;
  check_blockwise(*gpu_, cpu_.get(), BNB_F32, n, 256, v, &random_table, "random increasing table");
  // The reference's linear map with zeros inserted in the middle: not sorted, so the GPU must fall
  // back to the verbatim 7-step search.
  std::vector<float> linear;
  for (int i = 0; i < 255; ++i) linear.push_back(-1.0f + 2.0f * static_cast<float>(i) / 254.0f);
  linear.insert(linear.begin() + 127, 0.0f);
  check_blockwise(*gpu_, cpu_.get(), BNB_BF16, n, 256, v, &linear, "unsorted linear map");
}

// Every midpoint of the table and +-3 ulps around it (and the binary16 bucket edges the GPU's
// code selection keys on), in blocks whose absmax is 1 so x reaches the selection unscaled: the
// codes must equal the reference search's, ties included.
TEST_F(GpuTest, BlockwiseCodeBoundaries) {
  const int64_t bs = 256;
  for (int32_t which : {BNB_CODE_DYNAMIC_SIGNED, BNB_CODE_DYNAMIC_UNSIGNED}) {
    const std::vector<float> code = code_table(which);
    std::vector<float> probes;
    auto around = [&](float v) {
      uint32_t b;
      std::memcpy(&b, &v, 4);
      for (int d = -3; d <= 3; ++d) {
        const uint32_t c = b + static_cast<uint32_t>(d);
        float f;
        std::memcpy(&f, &c, 4);
        if (std::fabs(f) < 1.0f && (f == 0.0f || std::fabs(f) >= 1.17549435e-38f)) probes.push_back(f);
      }
    };
    for (int j = 0; j < 255; ++j) around((code[j] + code[j + 1]) * 0.5f);
    for (int e = -24; e < 0; ++e) {
      for (int m = 0; m < 64; m += 7) {
        around(std::ldexp(1.0f + m / 64.0f, e));
        around(-std::ldexp(1.0f + m / 64.0f, e));
      }
    }
    std::vector<float> v;
    for (size_t i = 0; i < probes.size(); ++i) {
      if (v.size() % bs == 0) v.push_back(1.0f);  // the block's absmax
      v.push_back(which == BNB_CODE_DYNAMIC_UNSIGNED ? std::fabs(probes[i]) : probes[i]);
    }
    const std::vector<float>* table = which == BNB_CODE_DYNAMIC_UNSIGNED ? &code : nullptr;
    check_blockwise(*gpu_, cpu_.get(), BNB_F32, static_cast<int64_t>(v.size()), bs, v, table,
                    which == BNB_CODE_DYNAMIC_UNSIGNED ? "unsigned map boundaries" : "signed map boundaries");
  }
}

TEST_F(GpuTest, BlockwiseMisalignedPointers) {
  // Offsets that rule out the 16-byte vector path on every side.
  const int64_t n = 4096 * 3 + 100;
  const std::vector<float> v = random_with_features(n, 1024, 7);
  const std::vector<uint8_t> a = to_dtype(v, BNB_F16);
  Buffer A(*gpu_, a.size() + 16), out(*gpu_, static_cast<size_t>(n) + 16), absmax(*gpu_, 4 * 16);
  std::vector<uint8_t> shifted(a.size() + 2);
  std::memcpy(shifted.data() + 2, a.data(), a.size());
  A.upload(shifted.data(), shifted.size());
  out.fill(0xEE);
  ASSERT_BNB_OK(bnb_quantize_blockwise(gpu_->get(), BNB_F16, A.as<uint8_t>() + 2, n, 1024, nullptr,
                                       out.as<uint8_t>() + 1, absmax.as<float>(), nullptr));
  const std::vector<uint8_t> got = out.download();
  const Quantized aligned = quantize8(*gpu_, BNB_F16, a, n, 1024, nullptr, 0x11);
  EXPECT_EQ(count_byte_diffs(std::vector<uint8_t>(got.begin() + 1, got.begin() + 1 + n), aligned.codes), 0);
  EXPECT_EQ(got[0], 0xEE) << "wrote before the output";
  EXPECT_EQ(got[static_cast<size_t>(n) + 1], 0xEE) << "wrote past the output";
}

// ---------------------------------------------------------------- 4-bit

struct Case4 {
  int32_t qt;
  int32_t dtype;
  int64_t bs;
};

class GpuQuant4 : public GpuTest, public ::testing::WithParamInterface<Case4> {};

TEST_P(GpuQuant4, MatchesReferenceOnRandomData) {
  const Case4 c = GetParam();
  for (int64_t n : {c.bs * 29 + 1, int64_t{3}, (int64_t{1} << 18) + 2}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const std::vector<float> v = random_with_features(n, c.bs, static_cast<uint64_t>(n + c.bs * 3 + c.qt));
    const std::vector<uint8_t> a = to_dtype(v, c.dtype);
    const Quantized g = quantize4(*gpu_, c.qt, c.dtype, a, n, c.bs, 0xAB);
    const Nested nested = compress(*gpu_, g.absmax, 0x77);
    bool compared = false;
#if defined(BNB_HAVE_REF)
    {
      Quantized r;
      r.codes.assign(g.codes.size(), 0);
      r.absmax.assign(g.absmax.size(), 0.0f);
      bnb::ref::quantize_4bit(c.qt, c.dtype, a.data(), n, c.bs, r.codes.data(), r.absmax.data());
      EXPECT_EQ(count_byte_diffs(g.codes, r.codes), 0) << "packed codes differ from the reference";
      EXPECT_EQ(count_byte_diffs(bytes_of(g.absmax), bytes_of(r.absmax)), 0) << "absmax differs from the reference";
      std::vector<float> rebuilt(g.absmax.size());
      bnb::ref::decompress_absmax(nested.absmax_q.data(), nested.absmax2.data(), nullptr, nested.offset,
                                  static_cast<int64_t>(g.absmax.size()), 256, rebuilt.data());
      for (int32_t od : {BNB_F32, BNB_F16, BNB_BF16}) {
        std::vector<uint8_t> want(static_cast<size_t>(n) * dtype_size(od));
        bnb::ref::dequantize_4bit(c.qt, g.codes.data(), g.absmax.data(), n, c.bs, od, want.data());
        EXPECT_EQ(count_byte_diffs(dequantize4(*gpu_, c.qt, g, nullptr, n, c.bs, od, 0xCD), want), 0)
            << "plain dequantize to " << dtype_name(od);
        bnb::ref::dequantize_4bit(c.qt, g.codes.data(), rebuilt.data(), n, c.bs, od, want.data());
        EXPECT_EQ(count_byte_diffs(dequantize4(*gpu_, c.qt, g, &nested, n, c.bs, od, 0xCD), want), 0)
            << "nested dequantize to " << dtype_name(od);
      }
      compared = true;
    }
#endif
    if (cpu_) {
      const Quantized q = quantize4(*cpu_, c.qt, c.dtype, a, n, c.bs, 0x5A);
      EXPECT_EQ(count_byte_diffs(g.codes, q.codes), 0) << "packed codes differ from the cpu backend";
      EXPECT_EQ(count_byte_diffs(bytes_of(g.absmax), bytes_of(q.absmax)), 0) << "absmax differs from the cpu backend";
      for (int32_t od : {BNB_F32, BNB_F16, BNB_BF16}) {
        EXPECT_EQ(count_byte_diffs(dequantize4(*gpu_, c.qt, g, nullptr, n, c.bs, od, 0xCD),
                                   dequantize4(*cpu_, c.qt, g, nullptr, n, c.bs, od, 0x33)),
                  0)
            << "plain dequantize to " << dtype_name(od);
        EXPECT_EQ(count_byte_diffs(dequantize4(*gpu_, c.qt, g, &nested, n, c.bs, od, 0xCD),
                                   dequantize4(*cpu_, c.qt, g, &nested, n, c.bs, od, 0x33)),
                  0)
            << "nested dequantize to " << dtype_name(od);
      }
      compared = true;
    }
    if (!compared) GTEST_SKIP() << "nothing to compare with";
  }
}

std::vector<Case4> cases4() {
  std::vector<Case4> v;
  for (int32_t qt : {BNB_NF4, BNB_FP4})
    for (int32_t d : {BNB_F32, BNB_F16, BNB_BF16})
      for (int64_t bs : {32, 64, 128, 256, 512, 1024, 2048, 4096}) v.push_back({qt, d, bs});
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, GpuQuant4, ::testing::ValuesIn(cases4()), [](const auto& info) {
  return std::string(info.param.qt == BNB_NF4 ? "nf4_" : "fp4_") + dtype_name(info.param.dtype) + "_bs" +
         std::to_string(info.param.bs);
});

// ---------------------------------------------------------------- double quantization

TEST_F(GpuTest, CompressAbsmaxMatchesReference) {
  for (int64_t nb : {int64_t{1}, int64_t{255}, int64_t{256}, int64_t{1000}, int64_t{70001}, int64_t{3} << 20}) {
    SCOPED_TRACE("nblocks=" + std::to_string(nb));
    std::vector<float> absmax = random_normal(nb, static_cast<uint64_t>(nb));
    for (float& x : absmax) x = std::fabs(x) + 0.01f;
    const Nested g = compress(*gpu_, absmax, 0x99);
    // The mean is a binary64 sum in a device-specific order: allow one ulp, then check the codes
    // against the reference quantizer run with the GPU's own offset.
    double sum = 0.0;
    for (float x : absmax) sum += x;
    const float mean = static_cast<float>(sum / static_cast<double>(nb));
    EXPECT_LE(std::abs(static_cast<int64_t>(bnb::float_to_bits(g.offset)) -
                       static_cast<int64_t>(bnb::float_to_bits(mean))),
              1)
        << g.offset << " vs " << mean;
#if defined(BNB_HAVE_REF)
    std::vector<float> r(absmax.size());
    for (size_t i = 0; i < r.size(); ++i) r[i] = absmax[i] - g.offset;
    Quantized want;
    want.codes.assign(absmax.size(), 0);
    want.absmax.assign(g.absmax2.size(), 0.0f);
    const std::vector<float> dyn = code_table(BNB_CODE_DYNAMIC_SIGNED);
    bnb::ref::quantize_blockwise(BNB_F32, r.data(), nb, 256, dyn.data(), want.codes.data(), want.absmax.data());
    EXPECT_EQ(count_byte_diffs(g.absmax_q, want.codes), 0);
    EXPECT_EQ(count_byte_diffs(bytes_of(g.absmax2), bytes_of(want.absmax)), 0);
#endif
    if (cpu_) {
      const Nested c = compress(*cpu_, absmax, 0x44);
      if (bnb::float_to_bits(c.offset) == bnb::float_to_bits(g.offset)) {
        EXPECT_EQ(count_byte_diffs(g.absmax_q, c.absmax_q), 0) << "codes differ from the cpu backend";
        EXPECT_EQ(count_byte_diffs(bytes_of(g.absmax2), bytes_of(c.absmax2)), 0);
      } else {
        std::printf("[gpu] compress_absmax nb=%lld: offsets differ by summation order (%a vs %a)\n",
                    static_cast<long long>(nb), static_cast<double>(g.offset), static_cast<double>(c.offset));
      }
    }
  }
}

// ---------------------------------------------------------------- large n

// Past 2^31 elements every index must be 64-bit. The data repeat a random pattern, so only the
// blocks around the 2^31 boundary and at the end need a reference.
TEST_F(GpuTest, QuantizePast2To31Elements) {
  const int64_t n = (int64_t{1} << 31) + 4096 * 3 + 1000;
  const int64_t bs = 4096;
  const int64_t pattern = 1 << 20;
  std::vector<uint16_t> host(static_cast<size_t>(n));
  {
    const std::vector<uint8_t> p = to_dtype(random_normal(pattern, 3), BNB_BF16);
    for (int64_t i = 0; i < n; i += pattern) {
      std::memcpy(&host[static_cast<size_t>(i)], p.data(), static_cast<size_t>(std::min(pattern, n - i)) * 2);
    }
  }
  void *A = nullptr, *out = nullptr, *absmax = nullptr, *packed = nullptr;
  const int64_t nb = (n + bs - 1) / bs;
  if (bnb_malloc(gpu_->get(), n * 2, &A) != BNB_SUCCESS) GTEST_SKIP() << "not enough device memory";
  ASSERT_BNB_OK(bnb_malloc(gpu_->get(), n, &out));
  ASSERT_BNB_OK(bnb_malloc(gpu_->get(), (n + 1) / 2, &packed));
  ASSERT_BNB_OK(bnb_malloc(gpu_->get(), nb * 4, &absmax));
  ASSERT_BNB_OK(bnb_memcpy(gpu_->get(), A, host.data(), n * 2, BNB_MEMCPY_HOST_TO_BACKEND, nullptr));
  ASSERT_BNB_OK(bnb_quantize_blockwise(gpu_->get(), BNB_BF16, A, n, bs, nullptr, static_cast<uint8_t*>(out),
                                       static_cast<float*>(absmax), nullptr));
  ASSERT_BNB_OK(bnb_synchronize(gpu_->get(), nullptr));
  // Blocks straddling the 2^31 boundary and the partial last block.
  const int64_t begin = ((int64_t{1} << 31) / bs - 2) * bs;
  const int64_t len = n - begin;
  std::vector<uint8_t> got(static_cast<size_t>(len));
  std::vector<float> got_absmax(static_cast<size_t>(nb - begin / bs));
  ASSERT_BNB_OK(bnb_memcpy(gpu_->get(), got.data(), static_cast<uint8_t*>(out) + begin, len,
                           BNB_MEMCPY_BACKEND_TO_HOST, nullptr));
  ASSERT_BNB_OK(bnb_memcpy(gpu_->get(), got_absmax.data(), static_cast<float*>(absmax) + begin / bs,
                           static_cast<int64_t>(got_absmax.size()) * 4, BNB_MEMCPY_BACKEND_TO_HOST, nullptr));
  ASSERT_BNB_OK(bnb_quantize_4bit(gpu_->get(), BNB_NF4, BNB_BF16, A, n, bs, static_cast<uint8_t*>(packed),
                                  static_cast<float*>(absmax), nullptr));
  std::vector<uint8_t> got4(static_cast<size_t>((len + 1) / 2));
  ASSERT_BNB_OK(bnb_memcpy(gpu_->get(), got4.data(), static_cast<uint8_t*>(packed) + begin / 2,
                           static_cast<int64_t>(got4.size()), BNB_MEMCPY_BACKEND_TO_HOST, nullptr));
  ASSERT_BNB_OK(bnb_synchronize(gpu_->get(), nullptr));
  bnb_free(gpu_->get(), A);
  bnb_free(gpu_->get(), out);
  bnb_free(gpu_->get(), packed);
  bnb_free(gpu_->get(), absmax);
#if defined(BNB_HAVE_REF)
  std::vector<uint8_t> want(static_cast<size_t>(len));
  std::vector<float> want_absmax(got_absmax.size());
  const std::vector<float> dyn = code_table(BNB_CODE_DYNAMIC_SIGNED);
  bnb::ref::quantize_blockwise(BNB_BF16, &host[static_cast<size_t>(begin)], len, bs, dyn.data(), want.data(),
                               want_absmax.data());
  EXPECT_EQ(count_byte_diffs(got, want), 0);
  EXPECT_EQ(count_byte_diffs(bytes_of(got_absmax), bytes_of(want_absmax)), 0);
  std::vector<uint8_t> want4(got4.size());
  bnb::ref::quantize_4bit(BNB_NF4, BNB_BF16, &host[static_cast<size_t>(begin)], len, bs, want4.data(),
                          want_absmax.data());
  EXPECT_EQ(count_byte_diffs(got4, want4), 0);
#else
  GTEST_SKIP() << "no scalar reference to compare with";
#endif
}

// ---------------------------------------------------------------- memory kinds and devices

TEST_F(GpuTest, HostPointerIsRejectedWithAMessage) {
  if (harness_check()) GTEST_SKIP() << "GPU-only behaviour: the CPU backend takes host memory and any device index";
  std::vector<float> host_in(1024, 1.0f);
  Buffer out(*gpu_, 1024), absmax(*gpu_, 16 * 4);
  const bnb_status_t st = bnb_quantize_blockwise(gpu_->get(), BNB_F32, host_in.data(), 1024, 64, nullptr,
                                                 out.as<uint8_t>(), absmax.as<float>(), nullptr);
  EXPECT_EQ(st, BNB_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(bnb_last_error_message()).find("host"), std::string::npos) << bnb_last_error_message();
  std::vector<uint8_t> host_out(1024);
  Buffer in(*gpu_, 1024 * 4);
  EXPECT_EQ(bnb_quantize_4bit(gpu_->get(), BNB_NF4, BNB_F32, in.get(), 1024, 64, host_out.data(), absmax.as<float>(),
                              nullptr),
            BNB_ERR_INVALID_ARGUMENT);
  EXPECT_STRNE(bnb_last_error_message(), "");
}

TEST_F(GpuTest, WrongDeviceIndexFailsWithAMessage) {
  if (harness_check()) GTEST_SKIP() << "GPU-only behaviour: the CPU backend takes host memory and any device index";
  for (int32_t device : {-1, 4096}) {
    bnb_context_options_t opts;
    bnb_context_options_init(&opts);
    opts.backend = kind_;
    opts.device = device;
    bnb_context_t ctx = nullptr;
    EXPECT_NE(bnb_context_create(&opts, &ctx), BNB_SUCCESS) << "device " << device;
    EXPECT_EQ(ctx, nullptr);
    EXPECT_NE(std::string(bnb_last_error_message()).find("device"), std::string::npos) << bnb_last_error_message();
  }
}

TEST_F(GpuTest, BackendInfoNamesTheDevice) {
  const std::string info = gpu_info();
  std::printf("[gpu] %s\n", info.c_str());
  EXPECT_NE(info.find(kind_ == BNB_BACKEND_CUDA ? "cuda" : "hip"), std::string::npos) << info;
}

// ---------------------------------------------------------------- streams and graphs (CUDA)

class GpuCudaTest : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    if (kind_ != BNB_BACKEND_CUDA) GTEST_SKIP() << "CUDA-only test";
    if (!drv_.load()) GTEST_SKIP() << "libcuda.so.1 not loadable: " << dlerror();
  }
  CudaDriver drv_;
};

// A quantize -> dequantize chain on a user stream, with uploads and downloads on that stream and
// one synchronisation at the end, gives the same result as the default-stream path.
TEST_F(GpuCudaTest, OpsRunOnTheCallersStream) {
  void* stream = nullptr;
  ASSERT_EQ(drv_.cuStreamCreate(&stream, 1 /* non-blocking */), 0);
  const int64_t n = (1 << 22) + 77;
  const std::vector<uint8_t> a = to_dtype(random_with_features(n, 64, 11), BNB_F16);
  Buffer A(*gpu_, a.size()), P(*gpu_, static_cast<size_t>((n + 1) / 2)), S(*gpu_, static_cast<size_t>(n / 64 + 1) * 4),
      Y(*gpu_, a.size());
  std::vector<uint8_t> y(a.size(), 0);
  ASSERT_BNB_OK(bnb_memcpy(gpu_->get(), A.get(), a.data(), static_cast<int64_t>(a.size()), BNB_MEMCPY_HOST_TO_BACKEND,
                           stream));
  ASSERT_BNB_OK(bnb_quantize_4bit(gpu_->get(), BNB_NF4, BNB_F16, A.get(), n, 64, P.as<uint8_t>(), S.as<float>(), stream));
  bnb_scales_t sc;
  bnb_scales_init(&sc);
  sc.absmax = S.as<float>();
  ASSERT_BNB_OK(bnb_dequantize_4bit(gpu_->get(), BNB_NF4, P.as<uint8_t>(), &sc, n, 64, BNB_F16, Y.get(), stream));
  ASSERT_BNB_OK(bnb_memcpy(gpu_->get(), y.data(), Y.get(), static_cast<int64_t>(y.size()), BNB_MEMCPY_BACKEND_TO_HOST,
                           stream));
  ASSERT_BNB_OK(bnb_synchronize(gpu_->get(), stream));
  const Quantized q = quantize4(*gpu_, BNB_NF4, BNB_F16, a, n, 64, 0);
  EXPECT_EQ(count_byte_diffs(y, dequantize4(*gpu_, BNB_NF4, q, nullptr, n, 64, BNB_F16, 0)), 0);
  drv_.cuStreamDestroy(stream);
}

// Every op can be captured into a CUDA graph (no host synchronisation, no allocation inside), and
// replaying the graph on new input data gives that data's result.
TEST_F(GpuCudaTest, OpsCanBeCapturedInAGraph) {
  void* stream = nullptr;
  ASSERT_EQ(drv_.cuStreamCreate(&stream, 1), 0);
  const int64_t n = 64 * 1000 + 3;
  const int64_t nb = (n + 63) / 64;
  Buffer A(*gpu_, static_cast<size_t>(n) * 2), Q8(*gpu_, static_cast<size_t>(n)), S8(*gpu_, static_cast<size_t>(nb) * 4),
      P(*gpu_, static_cast<size_t>((n + 1) / 2)), S(*gpu_, static_cast<size_t>(nb) * 4), AQ(*gpu_, static_cast<size_t>(nb)),
      A2(*gpu_, static_cast<size_t>((nb + 255) / 256) * 4), OFF(*gpu_, 4), Y(*gpu_, static_cast<size_t>(n) * 2),
      Y8(*gpu_, static_cast<size_t>(n) * 2);
  bnb_scales_t sc;
  bnb_scales_init(&sc);
  sc.absmax = nullptr;
  sc.absmax_q = AQ.as<uint8_t>();
  sc.absmax2 = A2.as<float>();
  sc.offset = OFF.as<float>();
  sc.blocksize2 = 256;
  auto enqueue = [&](void* s) {
    ASSERT_BNB_OK(bnb_quantize_blockwise(gpu_->get(), BNB_BF16, A.get(), n, 64, nullptr, Q8.as<uint8_t>(),
                                         S8.as<float>(), s));
    ASSERT_BNB_OK(bnb_dequantize_blockwise(gpu_->get(), Q8.as<uint8_t>(), S8.as<float>(), nullptr, n, 64, BNB_BF16,
                                           Y8.get(), s));
    ASSERT_BNB_OK(bnb_quantize_4bit(gpu_->get(), BNB_FP4, BNB_BF16, A.get(), n, 64, P.as<uint8_t>(), S.as<float>(), s));
    ASSERT_BNB_OK(bnb_compress_absmax(gpu_->get(), S.as<float>(), nb, AQ.as<uint8_t>(), A2.as<float>(),
                                      OFF.as<float>(), s));
    ASSERT_BNB_OK(bnb_dequantize_4bit(gpu_->get(), BNB_FP4, P.as<uint8_t>(), &sc, n, 64, BNB_BF16, Y.get(), s));
  };
  // Warm up outside the capture (module loading), then capture.
  A.upload(to_dtype(random_normal(n, 1), BNB_BF16).data(), static_cast<size_t>(n) * 2);
  enqueue(stream);
  ASSERT_BNB_OK(bnb_synchronize(gpu_->get(), stream));
  ASSERT_EQ(drv_.cuStreamBeginCapture(stream, 1 /* thread-local */), 0);
  enqueue(stream);
  void* graph = nullptr;
  ASSERT_EQ(drv_.cuStreamEndCapture(stream, &graph), 0) << "an op broke the capture";
  void* exec = nullptr;
  ASSERT_EQ(drv_.cuGraphInstantiateWithFlags(&exec, graph, 0), 0);
  const std::vector<uint8_t> fresh = to_dtype(random_with_features(n, 64, 2), BNB_BF16);
  A.upload(fresh.data(), fresh.size());
  Y.fill(0);
  Y8.fill(0);
  ASSERT_EQ(drv_.cuGraphLaunch(exec, stream), 0);
  ASSERT_EQ(drv_.cuStreamSynchronize(stream), 0);
  const std::vector<uint8_t> y = Y.download();
  const std::vector<uint8_t> y8 = Y8.download();
  drv_.cuGraphExecDestroy(exec);
  drv_.cuGraphDestroy(graph);
  drv_.cuStreamDestroy(stream);
  // The same chain without a graph, on the default stream.
  const Quantized q8 = quantize8(*gpu_, BNB_BF16, fresh, n, 64, nullptr, 0);
  EXPECT_EQ(count_byte_diffs(y8, dequantize8(*gpu_, q8, n, 64, nullptr, BNB_BF16, 0)), 0);
  const Quantized q = quantize4(*gpu_, BNB_FP4, BNB_BF16, fresh, n, 64, 0);
  const Nested nested = compress(*gpu_, q.absmax, 0);
  EXPECT_EQ(count_byte_diffs(y, dequantize4(*gpu_, BNB_FP4, q, &nested, n, 64, BNB_BF16, 0)), 0);
}

// Managed memory is accepted where device memory is.
TEST_F(GpuCudaTest, ManagedMemoryIsAccepted) {
  const int64_t n = 4096 + 5;
  unsigned long long a = 0, q = 0, s = 0;
  ASSERT_EQ(drv_.cuMemAllocManaged(&a, static_cast<size_t>(n) * 4, 1), 0);
  ASSERT_EQ(drv_.cuMemAllocManaged(&q, static_cast<size_t>(n), 1), 0);
  ASSERT_EQ(drv_.cuMemAllocManaged(&s, 3 * 4096, 1), 0);
  const std::vector<float> v = random_normal(n, 8);
  std::memcpy(reinterpret_cast<void*>(a), v.data(), v.size() * 4);
  ASSERT_BNB_OK(bnb_quantize_blockwise(gpu_->get(), BNB_F32, reinterpret_cast<void*>(a), n, 4096, nullptr,
                                       reinterpret_cast<uint8_t*>(q), reinterpret_cast<float*>(s), nullptr));
  ASSERT_BNB_OK(bnb_synchronize(gpu_->get(), nullptr));
  const Quantized ref = quantize8(*gpu_, BNB_F32, bytes_of(v), n, 4096, nullptr, 0);
  EXPECT_EQ(std::memcmp(reinterpret_cast<void*>(q), ref.codes.data(), static_cast<size_t>(n)), 0);
  drv_.cuMemFree(a);
  drv_.cuMemFree(q);
  drv_.cuMemFree(s);
}

}  // namespace
