// The 4-bit matmul kernel (gemm4_kernels.h) on every SIMD target compiled into bnb_cpu_kernels
// (and the AVX512_BF16 path where the CPU has it), against a float64 product with weights
// decoded by the scalar reference (tests/ref): ||out - ref|| / ||ref|| <= 1e-5 (fp32), 2e-3
// (fp16), 1e-2 (bf16); every output written (poisoned before) and nothing past the end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gemm4_common.h"
#include "gemm4_kernels.h"
#include "half.h"
#include "hwy/highway.h"
#include "hwy/targets.h"
#include "int_math.h"
#include "onednn.h"
#include "ref.h"
#include "tables.h"

namespace bnb {
namespace {

double tolerance(int32_t dtype) { return dtype == BNB_F32 ? 1e-5 : dtype == BNB_F16 ? 2e-3 : 1e-2; }
const char* dtype_name(int32_t dtype) { return dtype == BNB_F32 ? "f32" : dtype == BNB_F16 ? "f16" : "bf16"; }

struct Case {
  int64_t M, N, K, bs;
};

// A random [N, K] weight quantized and dequantized by the scalar reference, with plain or nested
// (double-quantized) scales.
struct Weight {
  std::vector<uint8_t> packed, absmax_q;
  std::vector<float> absmax, absmax2, effective, code2, dequantized;
  float offset = 0.0f;
  bnb_scales_resolved_t scales{};

  Weight(int64_t N, int64_t K, int64_t bs, int32_t qt, bool nested, std::mt19937& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int64_t n = N * K, nb = n / bs;
    std::vector<float> w(static_cast<size_t>(n));
    for (auto& v : w) v = normal(rng) / std::sqrt(static_cast<float>(K));
    packed.resize(static_cast<size_t>(n / 2));
    absmax.resize(static_cast<size_t>(nb));
    ref::quantize_4bit(qt, BNB_F32, w.data(), n, bs, packed.data(), absmax.data());
    effective = absmax;
    if (nested) {
      absmax_q.resize(static_cast<size_t>(nb));
      absmax2.resize(static_cast<size_t>(bnb::ceil_div(nb, 256)));
      code2.resize(256);
      ref::compress_absmax(absmax.data(), nb, absmax_q.data(), absmax2.data(), &offset);
      for (int i = 0; i < 256; ++i) code2[static_cast<size_t>(i)] = bits_to_float(BNB_DYNAMIC_SIGNED_BITS[i]);
      ref::decompress_absmax(absmax_q.data(), absmax2.data(), code2.data(), offset, nb, 256, effective.data());
      scales.absmax_q = absmax_q.data();
      scales.absmax2 = absmax2.data();
      scales.code2 = code2.data();
      scales.offset = &offset;
      scales.blocksize2 = 256;
    } else {
      scales.absmax = absmax.data();
    }
    dequantized.resize(static_cast<size_t>(n));
    ref::dequantize_4bit(qt, packed.data(), effective.data(), n, bs, BNB_F32, dequantized.data());
  }
  Weight(const Weight&) = delete;
  Weight& operator=(const Weight&) = delete;
};

class Gemm4Target : public testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { hwy::SetSupportedTargetsForTest(GetParam()); }
  void TearDown() override { hwy::SetSupportedTargetsForTest(0); }

  // Returns the relative error of one case (and checks poison and guard).
  double run(cpu::ThreadPool& pool, const Case& c, int32_t dtype, int32_t qt, bool nested, bool bias, uint64_t seed) {
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const Weight wt(c.N, c.K, c.bs, qt, nested, rng);
    const std::vector<uint8_t>& packed = wt.packed;
    const bnb_scales_resolved_t& scales = wt.scales;
    const std::vector<float>& wdq = wt.dequantized;

    const size_t es = dtype == BNB_F32 ? 4 : 2;
    std::vector<uint8_t> a(static_cast<size_t>(c.M * c.K) * es), b(static_cast<size_t>(c.N) * es);
    std::vector<float> a_exact(static_cast<size_t>(c.M * c.K)), b_exact(static_cast<size_t>(c.N));
    for (size_t i = 0; i < a_exact.size(); ++i) {
      ref::store_element(dtype, a.data(), static_cast<int64_t>(i), normal(rng));
      a_exact[i] = ref::load_element(dtype, a.data(), static_cast<int64_t>(i));
    }
    for (size_t i = 0; i < b_exact.size(); ++i) {
      ref::store_element(dtype, b.data(), static_cast<int64_t>(i), 0.5f * normal(rng));
      b_exact[i] = ref::load_element(dtype, b.data(), static_cast<int64_t>(i));
    }
    constexpr size_t kGuard = 64;
    std::vector<uint8_t> out(static_cast<size_t>(c.M * c.N) * es + kGuard, 0xff);  // NaN in every dtype
    cpu::gemm_4bit(pool, dtype, c.M, c.N, c.K, a.data(), packed.data(), scales, qt, c.bs, bias ? b.data() : nullptr,
                   out.data());
    for (size_t i = out.size() - kGuard; i < out.size(); ++i) {
      if (out[i] != 0xff) {
        ADD_FAILURE() << "wrote past the end of out";
        break;
      }
    }
    double num = 0.0, den = 0.0;
    for (int64_t m = 0; m < c.M; ++m) {
      for (int64_t j = 0; j < c.N; ++j) {
        double s = bias ? b_exact[static_cast<size_t>(j)] : 0.0;
        for (int64_t k = 0; k < c.K; ++k)
          s += static_cast<double>(a_exact[static_cast<size_t>(m * c.K + k)]) * wdq[static_cast<size_t>(j * c.K + k)];
        const float o = ref::load_element(dtype, out.data(), m * c.N + j);
        if (!std::isfinite(o)) return INFINITY;
        num += (o - s) * (o - s);
        den += s * s;
      }
    }
    return std::sqrt(num / (den > 0.0 ? den : 1.0));
  }
};

TEST_P(Gemm4Target, MatchesFloat64Reference) {
  cpu::ThreadPool pool(2);
  const Case cases[] = {{1, 37, 64, 32},   {3, 65, 256, 64},  {1, 9, 8192, 512},  {6, 40, 1024, 128},
                        {17, 13, 512, 64}, {2, 7, 4096, 4096}, {5, 130, 96, 32}};
  uint64_t seed = 1;
  int index = 0;
  for (const Case& c : cases) {
    for (int32_t dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
      for (int32_t qt : {BNB_NF4, BNB_FP4}) {
        for (bool nested : {false, true}) {
          const bool bias = (index++ % 2) == 0;
          const double err = run(pool, c, dtype, qt, nested, bias, seed++);
          EXPECT_LE(err, tolerance(dtype)) << hwy::TargetName(GetParam()) << " M=" << c.M << " N=" << c.N
                                           << " K=" << c.K << " bs=" << c.bs << " " << dtype_name(dtype)
                                           << (qt == BNB_NF4 ? " nf4" : " fp4") << (nested ? " nested" : "")
                                           << (bias ? " bias" : "");
          if (HasFailure()) return;
        }
      }
    }
  }
}

// Large-M bf16 products through oneDNN (gemm4_onednn.cc) with slabs far smaller than the default,
// so that every call is many slabs of rows (forward) or columns (transposed) and the last one is
// partial: each orientation against the float64 product of the reference's dequantized weight.
TEST(Gemm4Onednn, SlabsMatchFloat64Reference) {
  if (!cpu::gemm4_bf16_cpu_supported() || !cpu::onednn_available()) {
    GTEST_SKIP() << "needs AVX512_BF16 and oneDNN (" << cpu::onednn_description() << ")";
  }
  cpu::ThreadPool pool(2);
  struct Shape {
    int64_t M, N, K, bs, slab_bytes;
  };
  // slab_bytes: 5 rows of K (forward) and 32..96 columns of N (transposed): not a divisor of either.
  const Shape shapes[] = {{64, 37, 512, 64, 5 * 512 * 2}, {100, 130, 256, 32, 3 * 32 * 130 * 2},
                          {70, 21, 1024, 128, 96 * 21 * 2}};
  uint64_t seed = 900;
  for (const Shape& c : shapes) {
    for (bool transposed : {false, true}) {
      for (bool nested : {false, true}) {
        std::mt19937 rng(static_cast<uint32_t>(seed++));
        std::normal_distribution<float> normal(0.0f, 1.0f);
        const int32_t qt = nested ? BNB_NF4 : BNB_FP4;
        const Weight w(c.N, c.K, c.bs, qt, nested, rng);
        const int64_t in = transposed ? c.N : c.K, width = transposed ? c.K : c.N;
        std::vector<uint16_t> a(static_cast<size_t>(c.M * in)), bias(static_cast<size_t>(c.N));
        for (auto& v : a) v = f32_to_bf16(normal(rng));
        for (auto& v : bias) v = f32_to_bf16(0.5f * normal(rng));
        std::vector<uint16_t> out(static_cast<size_t>(c.M * width) + 32, 0xffff);  // NaN, and a guard
        const cpu::Gemm4Args args = cpu::gemm4_args(c.K, w.packed.data(), w.scales, qt, c.bs);
        ASSERT_TRUE(cpu::gemm4_bf16_onednn(pool, transposed, c.M, c.N, c.K, a.data(), args,
                                           transposed ? nullptr : bias.data(), out.data(), c.slab_bytes));
        for (size_t i = out.size() - 32; i < out.size(); ++i) ASSERT_EQ(out[i], 0xffff) << "wrote past the end";
        double num = 0.0, den = 0.0;
        for (int64_t m = 0; m < c.M; ++m) {
          for (int64_t j = 0; j < width; ++j) {
            double ref = transposed ? 0.0 : bf16_to_f32(bias[static_cast<size_t>(j)]);
            for (int64_t i = 0; i < in; ++i) {
              const double x = bf16_to_f32(a[static_cast<size_t>(m * in + i)]);
              ref += x * w.dequantized[static_cast<size_t>(transposed ? i * c.K + j : j * c.K + i)];
            }
            const double got = bf16_to_f32(out[static_cast<size_t>(m * width + j)]);
            ASSERT_TRUE(std::isfinite(got)) << "unwritten or non-finite at " << m << "," << j;
            num += (got - ref) * (got - ref);
            den += ref * ref;
          }
        }
        EXPECT_LE(std::sqrt(num / den), 1e-2) << "M=" << c.M << " N=" << c.N << " K=" << c.K << " bs=" << c.bs
                                             << (transposed ? " transposed" : " forward")
                                             << (nested ? " nested" : "");
      }
    }
  }
}

std::string target_name(const testing::TestParamInfo<int64_t>& info) { return hwy::TargetName(info.param); }

INSTANTIATE_TEST_SUITE_P(AllTargets, Gemm4Target, testing::ValuesIn(hwy::SupportedAndGeneratedTargets()),
                         target_name);

}  // namespace
}  // namespace bnb
