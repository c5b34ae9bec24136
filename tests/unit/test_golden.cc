// Golden vectors from bitsandbytes' CUDA kernels (tests/data/golden, `backend` = cuda; manifest.json
// and nonfinite.json): every available backend must reproduce the codes, absmax and dequantized
// values bit for bit (in dequantized values a NaN matches any NaN). A missing or damaged golden set
// fails these tests (load_golden throws); GoldenData checks that it does.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>

#include <unistd.h>

#include "golden.h"
#include "int_math.h"
#include "tables.h"
#include "util.h"

using namespace bnb_test;

namespace {

constexpr char kNonfinite[] = "nonfinite.json";  // the second manifest: NaN and +-inf inputs

int32_t code_table_id(const std::string& name) {
  if (name == "dynamic_signed") return BNB_CODE_DYNAMIC_SIGNED;
  if (name == "dynamic_unsigned") return BNB_CODE_DYNAMIC_UNSIGNED;
  return -1;
}

class Golden : public ::testing::TestWithParam<int32_t> {
 protected:
  void SetUp() override {
    ctx_ = std::make_unique<Context>(GetParam());
    ASSERT_TRUE(ctx_->ok()) << bnb_last_error_message();
  }
  void report(const char* what, int passed, size_t cases) const {
    std::printf("[golden] %s %s: %d/%zu cases bit-exact\n", backend_label(GetParam()).c_str(), what, passed, cases);
    EXPECT_EQ(static_cast<size_t>(passed), cases);
  }
  void check_quantize_blockwise(const std::vector<GoldenCase>& cases, const char* what) const;
  void check_quantize_4bit(const std::vector<GoldenCase>& cases, const char* what) const;
  void check_quantize_4bit_nested(const std::vector<GoldenCase>& cases, const char* what) const;
  std::unique_ptr<Context> ctx_;
};

std::string param_name(const ::testing::TestParamInfo<int32_t>& info) { return backend_label(info.param); }

// Guard bytes after an output that must keep their poison.
bool untouched(const std::vector<uint8_t>& buf, size_t from, uint8_t poison) {
  for (size_t i = from; i < buf.size(); ++i)
    if (buf[i] != poison) return false;
  return true;
}

// Codes and absmax bit for bit; the reference's codes dequantized to its dequant output (a NaN
// matching any NaN).
void Golden::check_quantize_blockwise(const std::vector<GoldenCase>& cases, const char* what) const {
  const Context& ctx = *ctx_;
  int passed = 0;
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.label());
    const GoldenArray& A = c.inputs.at("A");
    const int32_t dtype = dtype_from_name(A.dtype);
    const int64_t n = A.numel(), bs = c.param_int("blocksize"), nb = bnb::ceil_div(n, bs);
    const int32_t table = code_table_id(c.param_string("code"));
    ASSERT_GE(table, 0) << c.param_string("code");
    float code_host[256];
    int64_t count = 0;
    ASSERT_BNB_OK(bnb_get_code_table(table, code_host, &count));

    Buffer a(ctx, A.bytes.size()), code(ctx, sizeof code_host), q(ctx, n + 64), absmax(ctx, (nb + 16) * 4);
    a.upload(A.bytes.data(), A.bytes.size());
    code.upload(code_host, sizeof code_host);
    q.fill(0xA5);
    absmax.fill(0xA5);
    ASSERT_BNB_OK(bnb_quantize_blockwise(ctx.get(), dtype, a.get(), n, bs, code.as<float>(), q.as<uint8_t>(),
                                         absmax.as<float>(), nullptr));
    const std::vector<uint8_t> q_out = q.download(), am_out = absmax.download();
    const int64_t code_diffs = count_mismatches(q_out, c.outputs.at("q"));
    const int64_t absmax_diffs = count_mismatches(am_out, c.outputs.at("absmax"));
    EXPECT_EQ(code_diffs, 0);
    EXPECT_EQ(absmax_diffs, 0);
    ASSERT_TRUE(untouched(q_out, static_cast<size_t>(n), 0xA5)) << "wrote past the end of out";
    ASSERT_TRUE(untouched(am_out, static_cast<size_t>(nb) * 4, 0xA5)) << "wrote past the end of absmax";

    // Dequantize the reference's own codes and compare with its dequantized output.
    const GoldenArray& deq_ref = c.outputs.at("dequant");
    const int32_t out_dtype = dtype_from_name(deq_ref.dtype);
    Buffer out(ctx, deq_ref.bytes.size() + 64);
    out.fill(0x5A);
    q.upload(c.outputs.at("q").bytes.data(), static_cast<size_t>(n));
    absmax.upload(c.outputs.at("absmax").bytes.data(), static_cast<size_t>(nb) * 4);
    ASSERT_BNB_OK(bnb_dequantize_blockwise(ctx.get(), q.as<uint8_t>(), absmax.as<float>(), code.as<float>(), n, bs,
                                           out_dtype, out.get(), nullptr));
    const std::vector<uint8_t> deq = out.download();
    const int64_t deq_diffs = count_mismatches(deq, deq_ref, true);
    EXPECT_EQ(deq_diffs, 0);
    ASSERT_TRUE(untouched(deq, deq_ref.bytes.size(), 0x5A)) << "wrote past the end";
    if (code_diffs == 0 && absmax_diffs == 0 && deq_diffs == 0) ++passed;
  }
  report(what, passed, cases.size());
}

// Packed codes and absmax bit for bit; the reference's packed codes and absmax dequantized to its
// dequant output (a NaN matching any NaN).
void Golden::check_quantize_4bit(const std::vector<GoldenCase>& cases, const char* what) const {
  const Context& ctx = *ctx_;
  int passed = 0;
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.label());
    const GoldenArray& A = c.inputs.at("A");
    const int32_t dtype = dtype_from_name(A.dtype);
    const int64_t n = A.numel(), bs = c.param_int("blocksize"), nb = bnb::ceil_div(n, bs), nbytes = bnb::ceil_div(n, 2);
    const int32_t qt = c.param_string("quant_type") == "nf4" ? BNB_NF4 : BNB_FP4;
    Buffer a(ctx, A.bytes.size()), packed(ctx, nbytes + 64), absmax(ctx, (nb + 16) * 4);
    a.upload(A.bytes.data(), A.bytes.size());
    packed.fill(0xA5);
    absmax.fill(0xA5);
    ASSERT_BNB_OK(bnb_quantize_4bit(ctx.get(), qt, dtype, a.get(), n, bs, packed.as<uint8_t>(), absmax.as<float>(),
                                    nullptr));
    const std::vector<uint8_t> p_out = packed.download(), am_out = absmax.download();
    const int64_t packed_diffs = count_mismatches(p_out, c.outputs.at("packed"));
    const int64_t absmax_diffs = count_mismatches(am_out, c.outputs.at("absmax"));
    EXPECT_EQ(packed_diffs, 0);
    EXPECT_EQ(absmax_diffs, 0);
    ASSERT_TRUE(untouched(p_out, static_cast<size_t>(nbytes), 0xA5)) << "wrote past the end of packed";

    const GoldenArray& deq_ref = c.outputs.at("dequant");
    const int32_t out_dtype = dtype_from_name(deq_ref.dtype);
    Buffer out(ctx, deq_ref.bytes.size() + 64);
    out.fill(0x5A);
    packed.upload(c.outputs.at("packed").bytes.data(), static_cast<size_t>(nbytes));
    absmax.upload(c.outputs.at("absmax").bytes.data(), static_cast<size_t>(nb) * 4);
    bnb_scales_t scales;
    bnb_scales_init(&scales);
    scales.absmax = absmax.as<float>();
    ASSERT_BNB_OK(bnb_dequantize_4bit(ctx.get(), qt, packed.as<uint8_t>(), &scales, n, bs, out_dtype, out.get(),
                                      nullptr));
    const std::vector<uint8_t> deq = out.download();
    const int64_t deq_diffs = count_mismatches(deq, deq_ref, true);
    EXPECT_EQ(deq_diffs, 0);
    ASSERT_TRUE(untouched(deq, deq_ref.bytes.size(), 0x5A)) << "wrote past the end";
    if (packed_diffs == 0 && absmax_diffs == 0 && deq_diffs == 0) ++passed;
  }
  report(what, passed, cases.size());
}

// Double-quantized statistics: bit for bit given the reference's offset (our own offset may
// differ in the last ulp, docs/FORMATS.md §4.1); dequantization through the stored nested scales.
void Golden::check_quantize_4bit_nested(const std::vector<GoldenCase>& cases, const char* what) const {
  const Context& ctx = *ctx_;
  int passed = 0, offsets_equal = 0;
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.label());
    const GoldenArray& A = c.inputs.at("A");
    const int32_t dtype = dtype_from_name(A.dtype);
    const int64_t n = A.numel(), bs = c.param_int("blocksize"), nb = bnb::ceil_div(n, bs), nbytes = bnb::ceil_div(n, 2);
    const int64_t bs2 = c.param_int("nested_blocksize"), nb2 = bnb::ceil_div(nb, bs2);
    const int32_t qt = c.param_string("quant_type") == "nf4" ? BNB_NF4 : BNB_FP4;
    float offset_ref;
    std::memcpy(&offset_ref, c.outputs.at("absmax_offset").bytes.data(), 4);

    Buffer a(ctx, A.bytes.size()), packed(ctx, nbytes), absmax(ctx, nb * 4);
    a.upload(A.bytes.data(), A.bytes.size());
    ASSERT_BNB_OK(bnb_quantize_4bit(ctx.get(), qt, dtype, a.get(), n, bs, packed.as<uint8_t>(), absmax.as<float>(),
                                    nullptr));
    EXPECT_EQ(count_mismatches(packed.download(), c.outputs.at("packed")), 0);

    // Our own double quantization: the offset is a float32 mean whose summation order is not
    // specified, so it may differ in the last ulp; report it.
    Buffer qabs(ctx, nb), absmax2(ctx, nb2 * 4), offset(ctx, 4);
    ASSERT_BNB_OK(bnb_compress_absmax(ctx.get(), absmax.as<float>(), nb, qabs.as<uint8_t>(), absmax2.as<float>(),
                                      offset.as<float>(), nullptr));
    const float our_offset = offset.download_as<float>()[0];
    const bool same_offset = bnb::float_to_bits(our_offset) == bnb::float_to_bits(offset_ref);
    if (same_offset) {
      ++offsets_equal;
      EXPECT_EQ(count_mismatches(qabs.download(), c.outputs.at("absmax_q")), 0);
      EXPECT_EQ(count_mismatches(absmax2.download(), c.outputs.at("absmax_absmax")), 0);
    } else {
      EXPECT_NEAR(our_offset, offset_ref, std::abs(offset_ref) * 1e-6f);
    }

    // Given the reference's offset, the nested codes must be identical: quantize absmax - offset
    // with the signed dynamic map and blocksize 256 exactly as compress_absmax does.
    std::vector<float> centered = absmax.download_as<float>();
    for (float& x : centered) x = x - offset_ref;
    Buffer cen(ctx, nb * 4);
    cen.upload(centered.data(), centered.size() * 4);
    ASSERT_BNB_OK(bnb_quantize_blockwise(ctx.get(), BNB_F32, cen.get(), nb, bs2, nullptr, qabs.as<uint8_t>(),
                                         absmax2.as<float>(), nullptr));
    const int64_t qabs_diffs = count_mismatches(qabs.download(), c.outputs.at("absmax_q"));
    const int64_t am2_diffs = count_mismatches(absmax2.download(), c.outputs.at("absmax_absmax"));
    EXPECT_EQ(qabs_diffs, 0);
    EXPECT_EQ(am2_diffs, 0);

    // Dequantize through the nested scales exactly as stored by the reference.
    const GoldenArray& deq_ref = c.outputs.at("dequant");
    const int32_t out_dtype = dtype_from_name(deq_ref.dtype);
    packed.upload(c.outputs.at("packed").bytes.data(), static_cast<size_t>(nbytes));
    qabs.upload(c.outputs.at("absmax_q").bytes.data(), static_cast<size_t>(nb));
    absmax2.upload(c.outputs.at("absmax_absmax").bytes.data(), static_cast<size_t>(nb2) * 4);
    offset.upload(&offset_ref, 4);
    Buffer out(ctx, deq_ref.bytes.size());
    out.fill(0x5A);
    bnb_scales_t scales;
    bnb_scales_init(&scales);
    scales.absmax_q = qabs.as<uint8_t>();
    scales.absmax2 = absmax2.as<float>();
    scales.offset = offset.as<float>();
    scales.blocksize2 = bs2;
    ASSERT_BNB_OK(bnb_dequantize_4bit(ctx.get(), qt, packed.as<uint8_t>(), &scales, n, bs, out_dtype, out.get(),
                                      nullptr));
    const int64_t deq_diffs = count_mismatches(out.download(), deq_ref, true);
    EXPECT_EQ(deq_diffs, 0);
    if (qabs_diffs == 0 && am2_diffs == 0 && deq_diffs == 0) ++passed;
  }
  std::printf("[golden] %s: own offset identical in %d of %zu cases\n", what, offsets_equal, cases.size());
  report(what, passed, cases.size());
}

}  // namespace

TEST_P(Golden, CodeTables) {
  const auto cases = load_golden("code_tables", "cuda");
  const std::pair<const char*, int32_t> tables[] = {{"dynamic_signed", BNB_CODE_DYNAMIC_SIGNED},
                                                    {"dynamic_unsigned", BNB_CODE_DYNAMIC_UNSIGNED},
                                                    {"nf4", BNB_CODE_NF4},
                                                    {"fp4", BNB_CODE_FP4}};
  for (const auto& t : tables) {
    float table[256];
    int64_t count = 0;
    ASSERT_BNB_OK(bnb_get_code_table(t.second, table, &count));
    const GoldenArray& ref = cases[0].outputs.at(t.first);
    ASSERT_EQ(count, ref.numel()) << t.first;
    EXPECT_EQ(std::memcmp(table, ref.bytes.data(), static_cast<size_t>(count) * 4), 0) << t.first;
  }
}

TEST_P(Golden, QuantizeBlockwise) {
  check_quantize_blockwise(load_golden("quantize_blockwise", "cuda"), "quantize_blockwise");
}

TEST_P(Golden, Quantize4bit) { check_quantize_4bit(load_golden("quantize_4bit", "cuda"), "quantize_4bit"); }

TEST_P(Golden, Quantize4bitNested) {
  check_quantize_4bit_nested(load_golden("quantize_4bit_nested", "cuda"), "quantize_4bit_nested");
}

// NaN and +-inf (tests/data/golden/nonfinite.json): blocks with one NaN, +-inf, all NaN (absmax
// -FLT_MAX), NaN beside inf, zeros or -0.0 with a NaN, both infinities, all +inf.
TEST_P(Golden, NonfiniteQuantizeBlockwise) {
  check_quantize_blockwise(load_golden("quantize_blockwise", "cuda", kNonfinite), "nonfinite quantize_blockwise");
}

TEST_P(Golden, NonfiniteQuantize4bit) {
  check_quantize_4bit(load_golden("quantize_4bit", "cuda", kNonfinite), "nonfinite quantize_4bit");
}

TEST_P(Golden, NonfiniteQuantize4bitNested) {
  check_quantize_4bit_nested(load_golden("quantize_4bit_nested", "cuda", kNonfinite), "nonfinite quantize_4bit_nested");
}

INSTANTIATE_TEST_SUITE_P(Backends, Golden, ::testing::ValuesIn(available_backends()), param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Golden);

// ---------------------------------------------------------------- the reader refuses damaged data
namespace {

namespace fs = std::filesystem;

std::vector<char> read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_all(const fs::path& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A one-case golden set in a fresh directory (the NF4 table copied from the real set), with
// BNB_GOLDEN_DIR pointing at it for the fixture's lifetime.
class GoldenData : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* env = std::getenv("BNB_GOLDEN_DIR")) saved_ = env;
    real_ = golden_dir();
    dir_ = fs::temp_directory_path() / ("bnb_golden_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    gz_ = read_all(fs::path(real_) / "data" / "0003_nf4.bin.gz");
    ASSERT_GT(gz_.size(), 20u) << "the real golden set lacks data/0003_nf4.bin.gz in " << real_;
    write_manifest(16);
    write_all(dir_ / "data" / "0003_nf4.bin.gz", gz_);
    setenv("BNB_GOLDEN_DIR", dir_.c_str(), 1);
  }
  void TearDown() override {
    if (saved_.empty()) {
      unsetenv("BNB_GOLDEN_DIR");
    } else {
      setenv("BNB_GOLDEN_DIR", saved_.c_str(), 1);
    }
    fs::remove_all(dir_);
  }
  void write_manifest(int elements) {
    std::ofstream(dir_ / "manifest.json")
        << R"({"cases": [{"op": "code_tables", "backend": "cuda", "params": {}, "inputs": {}, "outputs": )"
        << R"({"nf4": {"file": "data/0003_nf4.bin", "dtype": "float32", "shape": [)" << elements << "]}}}]}";
  }
  std::string saved_, real_;
  fs::path dir_;
  std::vector<char> gz_;
};

}  // namespace

TEST_F(GoldenData, IntactCopyLoads) {
  const auto cases = load_golden("code_tables", "cuda");
  ASSERT_EQ(cases.size(), 1u);
  const GoldenArray& nf4 = cases[0].outputs.at("nf4");
  ASSERT_EQ(nf4.bytes.size(), 64u);
  EXPECT_EQ(std::memcmp(nf4.bytes.data(), bnb::kNF4Bits, 64), 0);
}

TEST_F(GoldenData, MissingSetFails) {
  fs::remove_all(dir_);
  EXPECT_THROW(load_golden("code_tables", "cuda"), std::runtime_error);
}

TEST_F(GoldenData, MissingSecondManifestFails) {
  EXPECT_THROW(load_golden("code_tables", "cuda", "nonfinite.json"), std::runtime_error);
}

TEST_F(GoldenData, MissingArrayFails) {
  fs::remove(dir_ / "data" / "0003_nf4.bin.gz");
  EXPECT_THROW(load_golden("code_tables", "cuda"), std::runtime_error);
}

TEST_F(GoldenData, AbsentOpFails) { EXPECT_THROW(load_golden("quantize_4bit", "cuda"), std::runtime_error); }

TEST_F(GoldenData, TruncatedArrayFails) {
  write_all(dir_ / "data" / "0003_nf4.bin.gz", std::vector<char>(gz_.begin(), gz_.end() - 6));
  EXPECT_THROW(load_golden("code_tables", "cuda"), std::runtime_error);
}

TEST_F(GoldenData, DamagedArrayFails) {
  std::vector<char> bad = gz_;
  bad[bad.size() - 8] ^= 0x01;  // the CRC-32 of the trailer
  write_all(dir_ / "data" / "0003_nf4.bin.gz", bad);
  EXPECT_THROW(load_golden("code_tables", "cuda"), std::runtime_error);
}

TEST_F(GoldenData, UncompressedArrayFails) {
  const auto cases = load_golden("code_tables", "cuda");
  const std::vector<uint8_t>& raw = cases[0].outputs.at("nf4").bytes;
  write_all(dir_ / "data" / "0003_nf4.bin.gz", std::vector<char>(raw.begin(), raw.end()));
  EXPECT_THROW(load_golden("code_tables", "cuda"), std::runtime_error);
}

TEST_F(GoldenData, SizeOtherThanShapeFails) {
  write_manifest(17);
  EXPECT_THROW(load_golden("code_tables", "cuda"), std::runtime_error);
}
