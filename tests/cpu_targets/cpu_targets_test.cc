// Every CPU kernel, on every SIMD target compiled into bnb_cpu_kernels, must equal the scalar
// reference (tests/ref) bit for bit, write every output element and nothing past the end.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "half.h"
#include "hwy/highway.h"
#include "hwy/targets.h"
#include "int_math.h"
#include "quant_kernels.h"
#include "rcp.h"
#include "ref.h"
#include "tables.h"

namespace bnb {
namespace {

constexpr uint8_t kPoison = 0xcd;
constexpr size_t kGuard = 64;  // bytes checked past the end of every output

// An output buffer filled with poison, with a guard zone after `bytes`.
class Output {
 public:
  explicit Output(size_t bytes) : bytes_(bytes), buf_(bytes + kGuard, kPoison) {}
  void* data() { return buf_.data(); }
  template <class T>
  T* as() {
    return reinterpret_cast<T*>(buf_.data());
  }
  bool guard_intact() const {
    for (size_t i = bytes_; i < buf_.size(); ++i)
      if (buf_[i] != kPoison) return false;
    return true;
  }
  // Index of the first byte that differs from `expected`, or -1.
  int64_t first_mismatch(const void* expected) const {
    const uint8_t* e = static_cast<const uint8_t*>(expected);
    for (size_t i = 0; i < bytes_; ++i)
      if (buf_[i] != e[i]) return static_cast<int64_t>(i);
    return -1;
  }

 private:
  size_t bytes_;
  std::vector<uint8_t> buf_;
};

size_t dtype_size(int32_t dtype) { return dtype == BNB_F32 ? 4 : 2; }
const char* dtype_name(int32_t dtype) { return dtype == BNB_F32 ? "f32" : dtype == BNB_F16 ? "f16" : "bf16"; }

enum class Data { kNormal, kUniform, kZeroBlocks, kTiny, kSignedZeros, kOutliers, kTies, kSpecials, kNanBlocks };
constexpr Data kAllData[] = {Data::kNormal,   Data::kUniform, Data::kZeroBlocks, Data::kTiny,     Data::kSignedZeros,
                             Data::kOutliers, Data::kTies,    Data::kSpecials,   Data::kNanBlocks};

// Random input as binary32 values (later rounded to the dtype).
std::vector<float> make_values(Data kind, int64_t n, int64_t blocksize, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    float x = normal(rng);
    switch (kind) {
      case Data::kNormal: break;
      case Data::kUniform: x = uniform(rng) * 3.0f; break;
      case Data::kZeroBlocks: x = ((i / blocksize) % 3 == 1) ? 0.0f : x; break;
      case Data::kTiny: x *= 1e-30f; break;
      case Data::kSignedZeros: x = pick(rng) < 40 ? (pick(rng) < 50 ? -0.0f : 0.0f) : x * 1e-3f; break;
      case Data::kOutliers: x = pick(rng) < 2 ? x * 1000.0f : x; break;
      case Data::kTies: {
        // Fractions of a power of two: x / M lands exactly on or next to code boundaries.
        const int k = static_cast<int>(rng() % 129) - 64;
        x = static_cast<float>(k) / 64.0f * 4.0f;
        break;
      }
      case Data::kSpecials: {
        const int p = pick(rng);
        if (p < 3) x = std::nanf("");
        else if (p < 5) x = -std::nanf("");
        else if (p < 7) x = bits_to_float(0x00000400u) * (p == 5 ? -1.0f : 1.0f);  // subnormal
        break;
      }
      case Data::kNanBlocks:  // every third block and the last (often partial) one: absmax -FLT_MAX, or 0 when partial
        if ((i / blocksize) % 3 == 1 || i / blocksize == (n - 1) / blocksize) x = std::nanf("");
        break;
    }
    v[static_cast<size_t>(i)] = x;
  }
  return v;
}

// The values as raw dtype bytes.
std::vector<uint8_t> to_dtype(const std::vector<float>& v, int32_t dtype) {
  std::vector<uint8_t> out(v.size() * dtype_size(dtype));
  for (size_t i = 0; i < v.size(); ++i) ref::store_element(dtype, out.data(), static_cast<int64_t>(i), v[i]);
  return out;
}

std::vector<float> code_table(int which) {
  std::vector<float> c(256);
  copy_code_table(which, c.data());
  return c;
}

// A sorted random table (strictly increasing: takes the fast path).
std::vector<float> random_table(std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> c(256);
  for (float& x : c) x = u(rng);
  std::sort(c.begin(), c.end());
  for (size_t i = 1; i < c.size(); ++i)
    if (!(c[i] > c[i - 1])) c[i] = std::nextafter(c[i - 1], 2.0f);
  return c;
}

// A linear map with zeros inserted in the middle (docs/FORMATS.md §1.3): not strictly increasing, so the
// literal 7-step search runs.
std::vector<float> linear_with_zeros() {
  std::vector<float> c(256, 0.0f);
  for (int i = 0; i < 127; ++i) c[static_cast<size_t>(i)] = -1.0f + static_cast<float>(i) / 127.0f;
  for (int i = 0; i < 127; ++i) c[static_cast<size_t>(129 + i)] = static_cast<float>(i + 1) / 127.0f;
  return c;
}

std::vector<int64_t> sizes_for(int64_t blocksize, std::mt19937& rng) {
  std::vector<int64_t> sizes = {1, 3 * blocksize, 2 * blocksize + 1};
  sizes.push_back(1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(4 * blocksize)));
  // Many small blocks: the kernels reduce sixteen of them at a time.
  if (blocksize <= 256) sizes.push_back(37 * blocksize + 5);
  return sizes;
}

class CpuTarget : public testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { hwy::SetSupportedTargetsForTest(GetParam()); }
  void TearDown() override { hwy::SetSupportedTargetsForTest(0); }
};

std::string target_label(const testing::TestParamInfo<int64_t>& info) { return hwy::TargetName(info.param); }

TEST_P(CpuTarget, DispatchesToTheTargetUnderTest) {
  EXPECT_STREQ(cpu::chosen_target_name(), hwy::TargetName(GetParam()));
}

// Quantizes, compares codes and absmax, then dequantizes the reference codes to every dtype.
void check_blockwise(cpu::ThreadPool& pool, int32_t dtype, const std::vector<float>& values,
                     int64_t blocksize, const std::vector<float>& code, const std::string& what) {
  const int64_t n = static_cast<int64_t>(values.size());
  const int64_t nb = bnb::ceil_div(n, blocksize);
  const std::vector<uint8_t> A = to_dtype(values, dtype);
  std::vector<uint8_t> q_ref(static_cast<size_t>(n));
  std::vector<float> absmax_ref(static_cast<size_t>(nb));
  ref::quantize_blockwise(dtype, A.data(), n, blocksize, code.data(), q_ref.data(), absmax_ref.data());

  Output q(static_cast<size_t>(n)), absmax(static_cast<size_t>(nb) * 4);
  cpu::quantize_blockwise(pool, dtype, A.data(), n, blocksize, code.data(), q.as<uint8_t>(), absmax.as<float>());
  ASSERT_TRUE(q.guard_intact()) << what;
  ASSERT_TRUE(absmax.guard_intact()) << what;
  const int64_t bad_q = q.first_mismatch(q_ref.data());
  ASSERT_EQ(bad_q, -1) << what << ": code of element " << bad_q << " value "
                       << ref::load_element(dtype, A.data(), bad_q) << " got " << int(q.as<uint8_t>()[bad_q])
                       << " want " << int(q_ref[static_cast<size_t>(bad_q)]);
  ASSERT_EQ(absmax.first_mismatch(absmax_ref.data()), -1) << what;

  for (int32_t out_dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
    const size_t bytes = static_cast<size_t>(n) * dtype_size(out_dtype);
    std::vector<uint8_t> y_ref(bytes);
    ref::dequantize_blockwise(q_ref.data(), absmax_ref.data(), code.data(), n, blocksize, out_dtype, y_ref.data());
    Output y(bytes);
    cpu::dequantize_blockwise(pool, q_ref.data(), absmax_ref.data(), code.data(), n, blocksize, out_dtype, y.data());
    ASSERT_TRUE(y.guard_intact()) << what << " dequant " << dtype_name(out_dtype);
    ASSERT_EQ(y.first_mismatch(y_ref.data()), -1) << what << " dequant " << dtype_name(out_dtype);
  }
}

TEST_P(CpuTarget, BlockwiseMatchesReference) {
  std::mt19937 rng(1234);
  const std::vector<std::pair<std::string, std::vector<float>>> tables = {
      {"dyn8s", code_table(BNB_CODE_DYNAMIC_SIGNED)},
      {"dyn8u", code_table(BNB_CODE_DYNAMIC_UNSIGNED)},
      {"random", random_table(rng)},
      {"linear0", linear_with_zeros()}};
  cpu::ThreadPool single(1), several(3);
  for (int64_t blocksize = 64; blocksize <= 4096; blocksize *= 2) {
    for (const auto& table : tables) {
      for (int32_t dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
        for (int64_t n : sizes_for(blocksize, rng)) {
          const Data kind = kAllData[rng() % (sizeof kAllData / sizeof kAllData[0])];
          const std::vector<float> values = make_values(kind, n, blocksize, rng);
          const std::string what = table.first + " " + dtype_name(dtype) + " bs=" + std::to_string(blocksize) +
                                   " n=" + std::to_string(n) + " data=" + std::to_string(static_cast<int>(kind));
          check_blockwise(n % 2 ? single : several, dtype, values, blocksize, table.second, what);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

TEST_P(CpuTarget, BlockwiseEveryDataKind) {
  std::mt19937 rng(99);
  cpu::ThreadPool pool(2);
  const std::vector<float> dyn = code_table(BNB_CODE_DYNAMIC_SIGNED);
  for (Data kind : kAllData) {
    for (int32_t dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
      const std::vector<float> values = make_values(kind, 5000, 256, rng);
      check_blockwise(pool, dtype, values, 256, dyn,
                      std::string("kind ") + std::to_string(static_cast<int>(kind)) + " " + dtype_name(dtype));
      if (HasFatalFailure()) return;
    }
  }
}

// A strictly increasing table with runs of nearly equal values: several midpoints share a
// bucket of floats, so the kernels must use the level search even for large inputs.
std::vector<float> clustered_table(std::mt19937& rng) {
  std::vector<float> c = random_table(rng);
  for (int i = 100; i < 110; ++i) c[static_cast<size_t>(i)] = std::nextafter(c[static_cast<size_t>(i - 1)], 2.0f);
  return c;
}

// Past ~1M elements a custom table gets its own bucket table (or is found unfit for one).
TEST_P(CpuTarget, BlockwiseLargeInputsWithCustomTables) {
  std::mt19937 rng(2024);
  cpu::ThreadPool pool(2);
  const std::vector<float> tables[] = {random_table(rng), clustered_table(rng), code_table(BNB_CODE_DYNAMIC_UNSIGNED)};
  int which = 0;
  for (const std::vector<float>& table : tables) {
    const std::vector<float> values = make_values(Data::kUniform, (int64_t{1} << 20) + 17, 4096, rng);
    check_blockwise(pool, BNB_F32, values, 4096, table, "large table " + std::to_string(which++));
    if (HasFatalFailure()) return;
  }
}

// Quantizes 4-bit, compares packed codes and absmax, then dequantizes with plain and nested scales.
void check_4bit(cpu::ThreadPool& pool, int32_t quant_type, int32_t dtype, const std::vector<float>& values,
                int64_t blocksize, const std::string& what) {
  const int64_t n = static_cast<int64_t>(values.size());
  const int64_t nb = bnb::ceil_div(n, blocksize);
  const int64_t nbytes = bnb::ceil_div(n, 2);
  const std::vector<uint8_t> A = to_dtype(values, dtype);
  std::vector<uint8_t> packed_ref(static_cast<size_t>(nbytes));
  std::vector<float> absmax_ref(static_cast<size_t>(nb));
  ref::quantize_4bit(quant_type, dtype, A.data(), n, blocksize, packed_ref.data(), absmax_ref.data());

  Output packed(static_cast<size_t>(nbytes)), absmax(static_cast<size_t>(nb) * 4);
  cpu::quantize_4bit(pool, quant_type, dtype, A.data(), n, blocksize, packed.as<uint8_t>(), absmax.as<float>());
  ASSERT_TRUE(packed.guard_intact()) << what;
  ASSERT_TRUE(absmax.guard_intact()) << what;
  const int64_t bad = packed.first_mismatch(packed_ref.data());
  ASSERT_EQ(bad, -1) << what << ": byte " << bad << " got " << int(packed.as<uint8_t>()[bad]) << " want "
                     << int(packed_ref[static_cast<size_t>(bad)]);
  ASSERT_EQ(absmax.first_mismatch(absmax_ref.data()), -1) << what;

  // Nested statistics from the reference, reconstructed by the reference.
  const int64_t nb2 = bnb::ceil_div(nb, 256);
  std::vector<uint8_t> absmax_q(static_cast<size_t>(nb));
  std::vector<float> absmax2(static_cast<size_t>(nb2)), rebuilt(static_cast<size_t>(nb));
  float offset = 0.0f;
  ref::compress_absmax(absmax_ref.data(), nb, absmax_q.data(), absmax2.data(), &offset);
  ref::decompress_absmax(absmax_q.data(), absmax2.data(), nullptr, offset, nb, 256, rebuilt.data());

  for (int nested = 0; nested < 2; ++nested) {
    bnb_scales_resolved_t scales{};
    if (nested) {
      scales.absmax_q = absmax_q.data();
      scales.absmax2 = absmax2.data();
      scales.code2 = nullptr;
      scales.offset = &offset;
      scales.blocksize2 = 256;
    } else {
      scales.absmax = absmax_ref.data();
    }
    for (int32_t out_dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
      const size_t bytes = static_cast<size_t>(n) * dtype_size(out_dtype);
      std::vector<uint8_t> y_ref(bytes);
      ref::dequantize_4bit(quant_type, packed_ref.data(), nested ? rebuilt.data() : absmax_ref.data(), n, blocksize,
                           out_dtype, y_ref.data());
      Output y(bytes);
      cpu::dequantize_4bit(pool, quant_type, packed_ref.data(), scales, n, blocksize, out_dtype, y.data());
      ASSERT_TRUE(y.guard_intact()) << what << " dequant nested=" << nested;
      const int64_t bad_y = y.first_mismatch(y_ref.data());
      ASSERT_EQ(bad_y, -1) << what << " dequant " << dtype_name(out_dtype) << " nested=" << nested
                           << " byte " << bad_y;
    }
  }
}

TEST_P(CpuTarget, FourBitMatchesReference) {
  std::mt19937 rng(777);
  cpu::ThreadPool single(1), several(3);
  for (int32_t quant_type : {BNB_NF4, BNB_FP4}) {
    for (int64_t blocksize = 32; blocksize <= 4096; blocksize *= 2) {
      for (int32_t dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
        for (int64_t n : sizes_for(blocksize, rng)) {
          const Data kind = kAllData[rng() % (sizeof kAllData / sizeof kAllData[0])];
          const std::vector<float> values = make_values(kind, n, blocksize, rng);
          const std::string what = std::string(quant_type == BNB_NF4 ? "nf4 " : "fp4 ") + dtype_name(dtype) +
                                   " bs=" + std::to_string(blocksize) + " n=" + std::to_string(n) +
                                   " data=" + std::to_string(static_cast<int>(kind));
          check_4bit(n % 2 ? several : single, quant_type, dtype, values, blocksize, what);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// x = A / 1 exactly (each block holds a 1.0, so absmax = 1 and RCP = 1): every float within
// 300 ulps of each NF4/FP4 threshold and of each boundary of the AVX3_DL look-up cells
// (k / 15.5 - 1 for NF4, k / 15.5 for FP4), of 0 and of +-1, and every 4099th float of
// [-1, 1]; blocks of 64 (grouped path) and 4096. Also x = +-inf / NaN (a block of subnormals).
TEST_P(CpuTarget, FourBitAroundEveryThreshold) {
  std::vector<float> centers = {0.0f, 1.0f, -1.0f};
  for (uint32_t t : kNF4ThresholdBits) centers.push_back(bits_to_float(t));
  for (uint32_t t : kFP4ThresholdBits) {
    centers.push_back(bits_to_float(t));
    centers.push_back(-bits_to_float(t));
  }
  for (int k = 0; k <= 32; ++k) {
    centers.push_back(static_cast<float>(k) / 15.5f - 1.0f);
    centers.push_back(static_cast<float>(k) / 15.5f);
    centers.push_back(-static_cast<float>(k) / 15.5f);
  }
  // Floats of [-1, 1] in increasing order <-> 0 .. 2 * 0x3f800000.
  const auto at = [](int64_t i) {
    return i < 0x3f800000 ? -bits_to_float(static_cast<uint32_t>(0x3f800000 - i))
                          : bits_to_float(static_cast<uint32_t>(i - 0x3f800000));
  };
  const auto index_of = [](float f) {
    const uint32_t b = float_to_bits(f);
    return (b & 0x80000000u) ? int64_t{0x3f800000} - (b & 0x7fffffffu) : int64_t{0x3f800000} + b;
  };
  std::vector<float> xs;
  for (float c : centers) {
    for (int64_t d = -300; d <= 300; ++d) {
      const int64_t i = index_of(c) + d;
      if (i >= 0 && i <= 2 * int64_t{0x3f800000}) xs.push_back(at(i));
    }
  }
  for (int64_t i = 0; i <= 2 * int64_t{0x3f800000}; i += 4099) xs.push_back(at(i));
  cpu::ThreadPool pool(2);
  for (int64_t blocksize : {int64_t{64}, int64_t{4096}}) {
    std::vector<float> a;
    for (float x : xs) {
      if (a.size() % static_cast<size_t>(blocksize) == 0) a.push_back(1.0f);
      a.push_back(x);
    }
    while (a.size() % static_cast<size_t>(blocksize) != 0) a.push_back(0.5f);
    // A block of subnormals: M subnormal, RCP(M) = +inf, x = +-inf or NaN.
    const float sub[8] = {bits_to_float(0x400u), bits_to_float(0x80000400u), 0.0f, -0.0f,
                          std::nanf(""), -std::nanf(""), bits_to_float(1u), bits_to_float(0x80000001u)};
    for (int64_t j = 0; j < blocksize; ++j) a.push_back(sub[j % 8]);
    const int64_t n = static_cast<int64_t>(a.size());
    const int64_t nb = n / blocksize;
    for (int32_t quant_type : {BNB_NF4, BNB_FP4}) {
      std::vector<uint8_t> packed_ref(static_cast<size_t>(n / 2));
      std::vector<float> absmax_ref(static_cast<size_t>(nb));
      ref::quantize_4bit(quant_type, BNB_F32, a.data(), n, blocksize, packed_ref.data(), absmax_ref.data());
      Output packed(static_cast<size_t>(n / 2));
      std::vector<float> absmax(static_cast<size_t>(nb));
      cpu::quantize_4bit(pool, quant_type, BNB_F32, a.data(), n, blocksize, packed.as<uint8_t>(), absmax.data());
      const int64_t bad = packed.first_mismatch(packed_ref.data());
      ASSERT_EQ(bad, -1) << (quant_type == BNB_NF4 ? "nf4" : "fp4") << " bs=" << blocksize << " byte " << bad
                         << " x=" << a[static_cast<size_t>(bad < 0 ? 0 : 2 * bad)] << ", "
                         << a[static_cast<size_t>(bad < 0 ? 0 : 2 * bad + 1)];
      ASSERT_TRUE(packed.guard_intact());
      ASSERT_EQ(absmax, absmax_ref);
    }
  }
}

TEST_P(CpuTarget, FourBitEveryDataKind) {
  std::mt19937 rng(4242);
  cpu::ThreadPool pool(2);
  for (int32_t quant_type : {BNB_NF4, BNB_FP4}) {
    for (Data kind : kAllData) {
      for (int32_t dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
        const std::vector<float> values = make_values(kind, 4099, 64, rng);
        check_4bit(pool, quant_type, dtype, values, 64,
                   std::string("kind ") + std::to_string(static_cast<int>(kind)) + " " + dtype_name(dtype));
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST_P(CpuTarget, CompressAbsmaxMatchesReference) {
  std::mt19937 rng(31337);
  std::exponential_distribution<float> expo(3.0f);
  cpu::ThreadPool pool(2);
  for (int64_t nb : {1, 2, 255, 256, 257, 1025, 70000}) {
    std::vector<float> absmax(static_cast<size_t>(nb));
    for (float& a : absmax) a = expo(rng);
    std::vector<uint8_t> q_ref(static_cast<size_t>(nb));
    std::vector<float> a2_ref(static_cast<size_t>(bnb::ceil_div(nb, 256)));
    float off_ref = 0.0f;
    ref::compress_absmax(absmax.data(), nb, q_ref.data(), a2_ref.data(), &off_ref);
    Output q(static_cast<size_t>(nb)), a2(a2_ref.size() * 4), off(4);
    cpu::compress_absmax(pool, absmax.data(), nb, q.as<uint8_t>(), a2.as<float>(), off.as<float>());
    EXPECT_TRUE(q.guard_intact() && a2.guard_intact() && off.guard_intact()) << nb;
    EXPECT_EQ(q.first_mismatch(q_ref.data()), -1) << nb;
    EXPECT_EQ(a2.first_mismatch(a2_ref.data()), -1) << nb;
    EXPECT_EQ(off.first_mismatch(&off_ref), -1) << nb;
  }
}

// Outputs of 16 MiB and more (64-byte aligned) are written with non-temporal stores.
TEST_P(CpuTarget, LargeDequantizeOutputs) {
  std::mt19937 rng(8);
  cpu::ThreadPool pool(2);
  const int64_t n = (int64_t{9} << 20) + 5, blocksize = 256, nb = bnb::ceil_div(n, blocksize);
  std::vector<uint8_t> q(static_cast<size_t>(n)), packed(static_cast<size_t>(bnb::ceil_div(n, 2)));
  for (auto& v : q) v = static_cast<uint8_t>(rng());
  for (auto& v : packed) v = static_cast<uint8_t>(rng());
  std::vector<float> absmax(static_cast<size_t>(nb));
  for (auto& a : absmax) a = std::uniform_real_distribution<float>(0.0f, 4.0f)(rng);
  const std::vector<float> dyn = code_table(BNB_CODE_DYNAMIC_SIGNED);
  for (int32_t out_dtype : {BNB_F32, BNB_F16}) {
    const size_t bytes = static_cast<size_t>(n) * dtype_size(out_dtype);
    std::vector<uint8_t> want(bytes);
    uint8_t* got = static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + kGuard + 63) / 64 * 64));
    for (int family = 0; family < 2; ++family) {
      std::memset(got, kPoison, bytes + kGuard);
      if (family == 0) {
        ref::dequantize_blockwise(q.data(), absmax.data(), dyn.data(), n, blocksize, out_dtype, want.data());
        cpu::dequantize_blockwise(pool, q.data(), absmax.data(), dyn.data(), n, blocksize, out_dtype, got);
      } else {
        ref::dequantize_4bit(BNB_NF4, packed.data(), absmax.data(), n, blocksize, out_dtype, want.data());
        bnb_scales_resolved_t scales{};
        scales.absmax = absmax.data();
        cpu::dequantize_4bit(pool, BNB_NF4, packed.data(), scales, n, blocksize, out_dtype, got);
      }
      EXPECT_EQ(std::memcmp(got, want.data(), bytes), 0) << "family " << family << " " << dtype_name(out_dtype);
      bool guard = true;
      for (size_t i = bytes; i < bytes + kGuard; ++i) guard = guard && got[i] == kPoison;
      EXPECT_TRUE(guard) << "family " << family;
    }
    std::free(got);
  }
}

// Codes of 16 MiB and more (64-byte aligned) are written with non-temporal stores too. The
// reference runs once; every target is compared with it.
TEST_P(CpuTarget, LargeQuantizeOutputs) {
  struct Expected {
    std::vector<float> values;
    std::vector<uint8_t> q, packed, packed32;
    std::vector<float> absmax8, absmax4, absmax32;
  };
  constexpr int64_t n8 = (int64_t{16} << 20) + 64 * 3 + 7, n4 = (int64_t{32} << 20) + 5;
  static const Expected expected = [] {
    Expected e;
    std::mt19937 rng(77);
    e.values = make_values(Data::kNormal, n4, 64, rng);
    const std::vector<float> dyn = code_table(BNB_CODE_DYNAMIC_SIGNED);
    e.q.resize(static_cast<size_t>(n8));
    e.absmax8.resize(static_cast<size_t>(bnb::ceil_div(n8, 256)));
    ref::quantize_blockwise(BNB_F32, e.values.data(), n8, 256, dyn.data(), e.q.data(), e.absmax8.data());
    e.packed.resize(static_cast<size_t>(bnb::ceil_div(n4, 2)));
    e.absmax4.resize(static_cast<size_t>((n4 + 63) / 64));
    ref::quantize_4bit(BNB_NF4, BNB_F32, e.values.data(), n4, 64, e.packed.data(), e.absmax4.data());
    // Blocks of 32: 16 bytes of codes each, so a task may start off a 32-byte boundary.
    e.packed32.resize(static_cast<size_t>(bnb::ceil_div(n4, 2)));
    e.absmax32.resize(static_cast<size_t>((n4 + 31) / 32));
    ref::quantize_4bit(BNB_FP4, BNB_F32, e.values.data(), n4, 32, e.packed32.data(), e.absmax32.data());
    return e;
  }();
  cpu::ThreadPool pool(2);
  const std::vector<float> dyn = code_table(BNB_CODE_DYNAMIC_SIGNED);
  const size_t q_bytes = expected.q.size(), p_bytes = expected.packed.size();
  uint8_t* q = static_cast<uint8_t*>(std::aligned_alloc(64, (q_bytes + kGuard + 63) / 64 * 64));
  uint8_t* packed = static_cast<uint8_t*>(std::aligned_alloc(64, (p_bytes + kGuard + 63) / 64 * 64));
  std::memset(q, kPoison, q_bytes + kGuard);
  std::memset(packed, kPoison, p_bytes + kGuard);
  std::vector<float> absmax8(expected.absmax8.size()), absmax4(expected.absmax4.size());
  cpu::quantize_blockwise(pool, BNB_F32, expected.values.data(), n8, 256, dyn.data(), q, absmax8.data());
  cpu::quantize_4bit(pool, BNB_NF4, BNB_F32, expected.values.data(), n4, 64, packed, absmax4.data());
  EXPECT_EQ(std::memcmp(q, expected.q.data(), q_bytes), 0);
  EXPECT_EQ(std::memcmp(packed, expected.packed.data(), p_bytes), 0);
  EXPECT_EQ(absmax8, expected.absmax8);
  EXPECT_EQ(absmax4, expected.absmax4);
  std::vector<float> absmax32(expected.absmax32.size());
  for (int threads : {2, 3}) {
    cpu::ThreadPool pool32(threads);
    cpu::quantize_4bit(pool32, BNB_FP4, BNB_F32, expected.values.data(), n4, 32, packed, absmax32.data());
    EXPECT_EQ(std::memcmp(packed, expected.packed32.data(), p_bytes), 0) << "bs=32, threads " << threads;
    EXPECT_EQ(absmax32, expected.absmax32);
  }
  bool guards = true;
  for (size_t i = 0; i < kGuard; ++i) guards = guards && q[q_bytes + i] == kPoison && packed[p_bytes + i] == kPoison;
  EXPECT_TRUE(guards);
  std::free(q);
  std::free(packed);
}

INSTANTIATE_TEST_SUITE_P(AllTargets, CpuTarget, testing::ValuesIn(hwy::SupportedAndGeneratedTargets()),
                         target_label);

// ---------------------------------------------------------------- RCP table

std::vector<int8_t> read_deltas() {
  std::vector<int8_t> d(size_t{1} << 23);
  gzFile in = gzopen(BNB_RCP_DELTA_GZ, "rb");
  if (in == nullptr) return {};
  size_t got = 0;
  while (got < d.size()) {
    const int r = gzread(in, d.data() + got, static_cast<unsigned>(d.size() - got));
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  gzclose(in);
  if (got != d.size()) return {};
  return d;
}

TEST(RcpApprox, MatchesTheMeasuredTableAtEverySignificand) {
  const std::vector<int8_t> deltas = read_deltas();
  ASSERT_FALSE(deltas.empty()) << "cannot read " << BNB_RCP_DELTA_GZ;
  int64_t nonzero = 0;
  for (uint32_t sig = 0; sig < (1u << 23); ++sig) {
    for (uint32_t exp : {1u, 100u, 127u, 200u, 253u}) {
      const float x = bits_to_float((exp << 23) | sig);
      const float rn = 1.0f / x;
      uint32_t want = float_to_bits(rn) + static_cast<uint32_t>(static_cast<int32_t>(deltas[sig]));
      if (float_to_bits(rn) < 0x00800000u) want = 0;  // a subnormal reciprocal is flushed
      ASSERT_EQ(float_to_bits(rcp_approx(x)), want) << "significand " << sig << " exponent " << exp;
      ASSERT_EQ(float_to_bits(rcp_approx(-x)), want | 0x80000000u) << "significand " << sig;
    }
    nonzero += deltas[sig] != 0;
  }
  EXPECT_GT(nonzero, 1000000);  // ~13 % of significands deviate
}

TEST(RcpApprox, SpecialValues) {
  EXPECT_EQ(float_to_bits(rcp_approx(0.0f)), 0x7f800000u);
  EXPECT_EQ(float_to_bits(rcp_approx(-0.0f)), 0xff800000u);
  EXPECT_EQ(float_to_bits(rcp_approx(bits_to_float(0x00000001u))), 0x7f800000u);  // subnormal: flushed
  EXPECT_EQ(float_to_bits(rcp_approx(bits_to_float(0x007fffffu))), 0x7f800000u);
  EXPECT_EQ(float_to_bits(rcp_approx(INFINITY)), 0x00000000u);
  EXPECT_EQ(float_to_bits(rcp_approx(-INFINITY)), 0x80000000u);
  EXPECT_TRUE(std::isnan(rcp_approx(std::nanf(""))));
  EXPECT_EQ(float_to_bits(rcp_approx(bits_to_float(0x7effffffu))), 0u);  // 1/x subnormal: flushed
  EXPECT_EQ(rcp_approx(2.0f), 0.5f);
  EXPECT_EQ(float_to_bits(rcp_approx(bits_to_float(0x7e800000u))), 0x00800000u);  // 2^126 -> FLT_MIN
}

// ---------------------------------------------------------------- thread pool

TEST(ThreadPool, ConcurrentCallersShareOnePool) {
  cpu::ThreadPool pool(3);
  std::mt19937 rng(5);
  const std::vector<float> dyn = code_table(BNB_CODE_DYNAMIC_SIGNED);
  const std::vector<float> values = make_values(Data::kNormal, 300000, 256, rng);
  std::vector<uint8_t> q_ref(values.size());
  std::vector<float> a_ref(values.size() / 256 + 1);
  ref::quantize_blockwise(BNB_F32, values.data(), static_cast<int64_t>(values.size()), 256, dyn.data(),
                          q_ref.data(), a_ref.data());
  std::vector<int> ok(6, 0);
  std::vector<std::thread> callers;
  for (int t = 0; t < 6; ++t) {
    callers.emplace_back([&, t] {
      for (int rep = 0; rep < 5; ++rep) {
        std::vector<uint8_t> q(values.size());
        std::vector<float> a(a_ref.size());
        cpu::quantize_blockwise(pool, BNB_F32, values.data(), static_cast<int64_t>(values.size()), 256, dyn.data(),
                                q.data(), a.data());
        if (q == q_ref && a == a_ref) ++ok[static_cast<size_t>(t)];
      }
    });
  }
  for (std::thread& c : callers) c.join();
  for (int t = 0; t < 6; ++t) EXPECT_EQ(ok[static_cast<size_t>(t)], 5) << "caller " << t;
}

TEST(ThreadPool, RunsEveryTaskOnce) {
  cpu::ThreadPool pool(4);
  for (int64_t tasks : {1, 2, 7, 100, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(tasks));
    pool.run(tasks, [&](int64_t t) { hits[static_cast<size_t>(t)].fetch_add(1); });
    for (int64_t t = 0; t < tasks; ++t) EXPECT_EQ(hits[static_cast<size_t>(t)].load(), 1) << tasks << " " << t;
  }
}

}  // namespace
}  // namespace bnb
