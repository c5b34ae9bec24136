// Golden vectors from bitsandbytes' CUDA kernels (tests/data/golden, `backend` = cuda): every
// available backend must reproduce the codes, absmax and dequantized values bit for bit. A missing
// or damaged golden set fails these tests (load_golden throws); GoldenData checks that it does.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <unistd.h>

#include "golden.h"
#include "tables.h"
#include "util.h"

using namespace bnb_test;

namespace {

int32_t code_table_id(const std::string& name) {
  if (name == "dynamic_signed") return BNB_CODE_DYNAMIC_SIGNED;
  if (name == "dynamic_unsigned") return BNB_CODE_DYNAMIC_UNSIGNED;
  return -1;
}

// Counts positions where two byte arrays differ, element-wise with `elem` bytes per element.
int64_t count_diffs(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, size_t elem, int64_t n) {
  int64_t diffs = 0;
  for (int64_t i = 0; i < n; ++i)
    if (std::memcmp(&a[static_cast<size_t>(i) * elem], &b[static_cast<size_t>(i) * elem], elem) != 0) ++diffs;
  return diffs;
}

std::vector<uint8_t> head(const std::vector<uint8_t>& v, size_t bytes) {
  return std::vector<uint8_t>(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(bytes));
}

class Golden : public ::testing::TestWithParam<int32_t> {
 protected:
  void SetUp() override {
    ctx_ = std::make_unique<Context>(GetParam());
    ASSERT_TRUE(ctx_->ok()) << bnb_last_error_message();
  }
  std::unique_ptr<Context> ctx_;
};

std::string param_name(const ::testing::TestParamInfo<int32_t>& info) { return backend_label(info.param); }

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
  const auto cases = load_golden("quantize_blockwise", "cuda");
  const Context& ctx = *ctx_;
  int passed = 0;
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.label());
    const GoldenArray& A = c.inputs.at("A");
    const int32_t dtype = dtype_from_name(A.dtype);
    const int64_t n = A.numel(), bs = c.param_int("blocksize"), nb = (n + bs - 1) / bs;
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
    const int64_t code_diffs = count_diffs(q_out, c.outputs.at("q").bytes, 1, n);
    const int64_t absmax_diffs = count_diffs(am_out, c.outputs.at("absmax").bytes, 4, nb);
    EXPECT_EQ(code_diffs, 0);
    EXPECT_EQ(absmax_diffs, 0);
    for (int64_t i = n; i < n + 64; ++i) ASSERT_EQ(q_out[i], 0xA5) << "wrote past the end of out";
    for (int64_t i = nb; i < nb + 16; ++i) ASSERT_EQ(am_out[i * 4], 0xA5) << "wrote past the end of absmax";

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
    const int64_t deq_diffs = count_diffs(head(deq, deq_ref.bytes.size()), deq_ref.bytes, dtype_size(out_dtype), n);
    EXPECT_EQ(deq_diffs, 0);
    for (size_t i = deq_ref.bytes.size(); i < deq.size(); ++i) ASSERT_EQ(deq[i], 0x5A) << "wrote past the end";
    if (code_diffs == 0 && absmax_diffs == 0 && deq_diffs == 0) ++passed;
  }
  std::printf("[golden] %s quantize_blockwise: %d/%zu cases bit-exact\n", backend_label(GetParam()).c_str(), passed,
              cases.size());
  EXPECT_EQ(static_cast<size_t>(passed), cases.size());
}

TEST_P(Golden, Quantize4bit) {
  const auto cases = load_golden("quantize_4bit", "cuda");
  const Context& ctx = *ctx_;
  int passed = 0;
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.label());
    const GoldenArray& A = c.inputs.at("A");
    const int32_t dtype = dtype_from_name(A.dtype);
    const int64_t n = A.numel(), bs = c.param_int("blocksize"), nb = (n + bs - 1) / bs, nbytes = (n + 1) / 2;
    const int32_t qt = c.param_string("quant_type") == "nf4" ? BNB_NF4 : BNB_FP4;
    Buffer a(ctx, A.bytes.size()), packed(ctx, nbytes + 64), absmax(ctx, (nb + 16) * 4);
    a.upload(A.bytes.data(), A.bytes.size());
    packed.fill(0xA5);
    absmax.fill(0xA5);
    ASSERT_BNB_OK(bnb_quantize_4bit(ctx.get(), qt, dtype, a.get(), n, bs, packed.as<uint8_t>(), absmax.as<float>(),
                                    nullptr));
    const std::vector<uint8_t> p_out = packed.download(), am_out = absmax.download();
    const int64_t packed_diffs = count_diffs(p_out, c.outputs.at("packed").bytes, 1, nbytes);
    const int64_t absmax_diffs = count_diffs(am_out, c.outputs.at("absmax").bytes, 4, nb);
    EXPECT_EQ(packed_diffs, 0);
    EXPECT_EQ(absmax_diffs, 0);
    for (int64_t i = nbytes; i < nbytes + 64; ++i) ASSERT_EQ(p_out[i], 0xA5) << "wrote past the end of packed";

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
    const int64_t deq_diffs = count_diffs(head(deq, deq_ref.bytes.size()), deq_ref.bytes, dtype_size(out_dtype), n);
    EXPECT_EQ(deq_diffs, 0);
    for (size_t i = deq_ref.bytes.size(); i < deq.size(); ++i) ASSERT_EQ(deq[i], 0x5A) << "wrote past the end";
    if (packed_diffs == 0 && absmax_diffs == 0 && deq_diffs == 0) ++passed;
  }
  std::printf("[golden] %s quantize_4bit: %d/%zu cases bit-exact\n", backend_label(GetParam()).c_str(), passed,
              cases.size());
  EXPECT_EQ(static_cast<size_t>(passed), cases.size());
}

TEST_P(Golden, Quantize4bitNested) {
  const auto cases = load_golden("quantize_4bit_nested", "cuda");
  const Context& ctx = *ctx_;
  int passed = 0, offsets_equal = 0;
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.label());
    const GoldenArray& A = c.inputs.at("A");
    const int32_t dtype = dtype_from_name(A.dtype);
    const int64_t n = A.numel(), bs = c.param_int("blocksize"), nb = (n + bs - 1) / bs, nbytes = (n + 1) / 2;
    const int64_t bs2 = c.param_int("nested_blocksize"), nb2 = (nb + bs2 - 1) / bs2;
    const int32_t qt = c.param_string("quant_type") == "nf4" ? BNB_NF4 : BNB_FP4;
    float offset_ref;
    std::memcpy(&offset_ref, c.outputs.at("absmax_offset").bytes.data(), 4);

    Buffer a(ctx, A.bytes.size()), packed(ctx, nbytes), absmax(ctx, nb * 4);
    a.upload(A.bytes.data(), A.bytes.size());
    ASSERT_BNB_OK(bnb_quantize_4bit(ctx.get(), qt, dtype, a.get(), n, bs, packed.as<uint8_t>(), absmax.as<float>(),
                                    nullptr));
    EXPECT_EQ(count_diffs(packed.download(), c.outputs.at("packed").bytes, 1, nbytes), 0);

    // Our own double quantization: the offset is a float32 mean whose summation order is not
    // specified, so it may differ in the last ulp; report it.
    Buffer qabs(ctx, nb), absmax2(ctx, nb2 * 4), offset(ctx, 4);
    ASSERT_BNB_OK(bnb_compress_absmax(ctx.get(), absmax.as<float>(), nb, qabs.as<uint8_t>(), absmax2.as<float>(),
                                      offset.as<float>(), nullptr));
    const float our_offset = offset.download_as<float>()[0];
    EXPECT_NEAR(our_offset, offset_ref, std::abs(offset_ref) * 1e-6f);
    const bool same_offset = bnb::float_to_bits(our_offset) == bnb::float_to_bits(offset_ref);
    if (same_offset) {
      ++offsets_equal;
      EXPECT_EQ(count_diffs(qabs.download(), c.outputs.at("absmax_q").bytes, 1, nb), 0);
      EXPECT_EQ(count_diffs(absmax2.download(), c.outputs.at("absmax_absmax").bytes, 4, nb2), 0);
    }

    // Given the reference's offset, the nested codes must be identical: quantize absmax - offset
    // with the signed dynamic map and blocksize 256 exactly as compress_absmax does.
    std::vector<float> centered = absmax.download_as<float>();
    for (float& x : centered) x = x - offset_ref;
    Buffer cen(ctx, nb * 4);
    cen.upload(centered.data(), centered.size() * 4);
    ASSERT_BNB_OK(bnb_quantize_blockwise(ctx.get(), BNB_F32, cen.get(), nb, bs2, nullptr, qabs.as<uint8_t>(),
                                         absmax2.as<float>(), nullptr));
    const int64_t qabs_diffs = count_diffs(qabs.download(), c.outputs.at("absmax_q").bytes, 1, nb);
    const int64_t am2_diffs = count_diffs(absmax2.download(), c.outputs.at("absmax_absmax").bytes, 4, nb2);
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
    const int64_t deq_diffs = count_diffs(out.download(), deq_ref.bytes, dtype_size(out_dtype), n);
    EXPECT_EQ(deq_diffs, 0);
    if (qabs_diffs == 0 && am2_diffs == 0 && deq_diffs == 0) ++passed;
  }
  std::printf("[golden] %s quantize_4bit_nested: %d/%zu cases bit-exact (own offset identical in %d)\n",
              backend_label(GetParam()).c_str(), passed, cases.size(), offsets_equal);
  EXPECT_EQ(static_cast<size_t>(passed), cases.size());
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
