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

#include "gemm4_kernels.h"
#include "half.h"
#include "hwy/highway.h"
#include "hwy/targets.h"
#include "ref.h"
#include "tables.h"

namespace bnb {
namespace {

double tolerance(int32_t dtype) { return dtype == BNB_F32 ? 1e-5 : dtype == BNB_F16 ? 2e-3 : 1e-2; }
const char* dtype_name(int32_t dtype) { return dtype == BNB_F32 ? "f32" : dtype == BNB_F16 ? "f16" : "bf16"; }

struct Case {
  int64_t M, N, K, bs;
};

class Gemm4Target : public testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { hwy::SetSupportedTargetsForTest(GetParam()); }
  void TearDown() override { hwy::SetSupportedTargetsForTest(0); }

  // Returns the relative error of one case (and checks poison and guard).
  double run(cpu::ThreadPool& pool, const Case& c, int32_t dtype, int32_t qt, bool nested, bool bias, uint64_t seed) {
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int64_t n = c.N * c.K, nb = n / c.bs;
    std::vector<float> w(static_cast<size_t>(n));
    for (auto& v : w) v = normal(rng) / std::sqrt(static_cast<float>(c.K));
    std::vector<uint8_t> packed(static_cast<size_t>(n / 2));
    std::vector<float> absmax(static_cast<size_t>(nb));
    ref::quantize_4bit(qt, BNB_F32, w.data(), n, c.bs, packed.data(), absmax.data());

    bnb_scales_resolved_t scales{};
    std::vector<uint8_t> absmax_q(static_cast<size_t>(nb));
    std::vector<float> absmax2(static_cast<size_t>((nb + 255) / 256)), effective = absmax, code2(256);
    float offset = 0.0f;
    if (nested) {
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
    std::vector<float> wdq(static_cast<size_t>(n));
    ref::dequantize_4bit(qt, packed.data(), effective.data(), n, c.bs, BNB_F32, wdq.data());

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

std::string target_name(const testing::TestParamInfo<int64_t>& info) { return hwy::TargetName(info.param); }

INSTANTIATE_TEST_SUITE_P(AllTargets, Gemm4Target, testing::ValuesIn(hwy::SupportedAndGeneratedTargets()),
                         target_name);

}  // namespace
}  // namespace bnb
