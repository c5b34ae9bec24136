// `bnb quantize` and `bnb inspect` on small safetensors files and sharded directories written
// here: the output has the keys, dtypes and shapes transformers saves for bitsandbytes 4-bit and
// LLM.int8 models, its codes and scales are bit for bit what bnb_quantize_4bit (with
// bnb_compress_absmax) and bnb_int8_vectorwise_quant give for the same weight, and config.json
// gets the quantization_config; bad input (truncated file, lying or overlapping offsets, a dtype
// that cannot be quantized, a full disk, OUT == IN) is a non-zero exit naming the file and the
// tensor, with no output file left behind.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bnb.h"
#include "int_math.h"
#include "process.h"
#include "util.h"

using namespace bnb_test;
using Json = nlohmann::ordered_json;

namespace {

// The program: $BNB_CLI (binaries carried to another machine), else the one built beside the tests.
const char* cli_path() {
  if (const char* env = std::getenv("BNB_CLI")) return env;
#ifdef BNB_CLI_PATH
  return BNB_CLI_PATH;
#else
  return nullptr;
#endif
}
const char* const kCli = cli_path();

struct Entry {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
using Entries = std::vector<std::pair<std::string, Entry>>;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string with_length(const std::string& header) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((uint64_t(header.size()) >> (8 * i)) & 0xff);
  return out + header;
}

// A safetensors file with the tensors laid out in order; `header` may be edited before writing.
std::string make_file(const Entries& entries, Json* header_out = nullptr) {
  Json header = Json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const auto& e : entries) {
    header[e.first] = {{"dtype", e.second.dtype},
                       {"shape", e.second.shape},
                       {"data_offsets", {data.size(), data.size() + e.second.bytes.size()}}};
    data.append(reinterpret_cast<const char*>(e.second.bytes.data()), e.second.bytes.size());
  }
  if (header_out != nullptr) *header_out = header;
  return with_length(header.dump()) + data;
}

// name -> (dtype, shape, bytes) of a file this test reads back.
std::map<std::string, Entry> read_tensors(const std::string& path) {
  const std::string f = read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(f[i]);
  const Json header = Json::parse(f.substr(8, n));
  std::map<std::string, Entry> out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    Entry e;
    e.dtype = it.value()["dtype"].get<std::string>();
    e.shape = it.value()["shape"].get<std::vector<int64_t>>();
    const uint64_t b = it.value()["data_offsets"][0].get<uint64_t>(), end = it.value()["data_offsets"][1].get<uint64_t>();
    e.bytes.assign(f.begin() + long(8 + n + b), f.begin() + long(8 + n + end));
    out[it.key()] = e;
  }
  return out;
}

std::vector<uint8_t> as_bytes(const void* p, size_t n) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}

class CliConvert : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kCli == nullptr) GTEST_SKIP() << "the bnb program is not built (BNB_BUILD_TOOLS=OFF)";
    if (access(kCli, X_OK) != 0) GTEST_SKIP() << kCli << " not present (carried elsewhere: set BNB_CLI)";
    char tmpl[] = "/tmp/bnb_cli_convert_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty()) run_command("rm -rf '" + dir_ + "'");
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  static Outcome bnb(const std::string& args, const std::string& prefix = "") {
    return run_command(prefix + "env -u BNB_BACKEND -u BNB_LOG_LEVEL " + program(kCli) + " " + args);
  }
  // Every file in the test's directory (to see that nothing partial was left).
  std::vector<std::string> files() const {
    std::vector<std::string> names;
    DIR* d = opendir(dir_.c_str());
    while (const dirent* e = readdir(d))
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    closedir(d);
    std::sort(names.begin(), names.end());
    return names;
  }

  // A small model: two quantizable weights (f32, and bf16 with an odd element count and a partial
  // block), a bias, a norm, the embeddings and lm_head (skipped by default), an int32 2-D weight.
  Entries model() const {
    Entries e;
    auto f32 = [](int64_t n, uint64_t seed) {
      const std::vector<float> v = random_normal(n, seed, 0.05f);
      return as_bytes(v.data(), v.size() * 4);
    };
    e.push_back({"model.embed_tokens.weight", {"F32", {256, 64}, f32(256 * 64, 1)}});
    e.push_back({"model.layers.0.mlp.up_proj.weight", {"F32", {96, 64}, f32(96 * 64, 2)}});
    e.push_back({"model.layers.0.mlp.up_proj.bias", {"F32", {96}, f32(96, 3)}});
    e.push_back({"model.layers.0.self_attn.q_proj.weight",
                 {"BF16", {33, 41}, to_dtype(random_normal(33 * 41, 4, 0.05f), BNB_BF16)}});
    e.push_back({"model.layers.0.input_layernorm.weight", {"F32", {64}, f32(64, 5)}});
    std::vector<int32_t> ints(8 * 8);
    for (size_t i = 0; i < ints.size(); ++i) ints[i] = int32_t(i * 7 - 100);
    e.push_back({"model.layers.0.int_table.weight", {"I32", {8, 8}, as_bytes(ints.data(), ints.size() * 4)}});
    e.push_back({"lm_head.weight", {"F32", {16, 64}, f32(16 * 64, 6)}});
    return e;
  }

  std::string dir_;
};

const std::vector<std::string> kQuantized = {"model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight"};

// Checks OUT against the library for each quantized weight of `in`.
void expect_matches_library(const Entries& in, const std::map<std::string, Entry>& out, int32_t quant_type,
                            const std::string& type_name, int64_t blocksize, bool nested) {
  Context ctx(BNB_BACKEND_CPU);
  ASSERT_TRUE(ctx.ok());
  float table[256], dyn[256];
  int64_t count = 0;
  ASSERT_BNB_OK(bnb_get_code_table(quant_type == BNB_NF4 ? BNB_CODE_NF4 : BNB_CODE_FP4, table, &count));
  ASSERT_BNB_OK(bnb_get_code_table(BNB_CODE_DYNAMIC_SIGNED, dyn, &count));
  size_t expected_keys = 0;
  for (const auto& e : in) {
    const std::string& name = e.first;
    const bool quantized = std::find(kQuantized.begin(), kQuantized.end(), name) != kQuantized.end();
    ASSERT_TRUE(out.count(name)) << name;
    if (!quantized) {
      EXPECT_EQ(out.at(name).dtype, e.second.dtype) << name;
      EXPECT_EQ(out.at(name).shape, e.second.shape) << name;
      EXPECT_TRUE(out.at(name).bytes == e.second.bytes) << name << " was not copied unchanged";
      ++expected_keys;
      continue;
    }
    const Entry& w = e.second;
    const int64_t n = w.shape[0] * w.shape[1], nb = bnb::ceil_div(n, blocksize);
    const int32_t dtype = w.dtype == "F32" ? BNB_F32 : BNB_BF16;
    std::vector<uint8_t> packed(size_t(bnb::ceil_div(n, 2)));
    std::vector<float> absmax(static_cast<size_t>(nb));
    ASSERT_BNB_OK(bnb_quantize_4bit(ctx.get(), quant_type, dtype, w.bytes.data(), n, blocksize, packed.data(),
                                    absmax.data(), nullptr));
    const Entry& q = out.at(name);
    EXPECT_EQ(q.dtype, "U8") << name;
    EXPECT_EQ(q.shape, (std::vector<int64_t>{bnb::ceil_div(n, 2), 1})) << name;
    EXPECT_TRUE(q.bytes == packed) << name << ": packed codes differ from bnb_quantize_4bit";
    const Entry& qm = out.at(name + ".quant_map");
    EXPECT_EQ(qm.dtype, "F32");
    EXPECT_EQ(qm.shape, (std::vector<int64_t>{16}));
    EXPECT_TRUE(qm.bytes == as_bytes(table, 64)) << name << ": quant_map";
    const std::string dtype_name = w.dtype == "F32" ? "float32" : "bfloat16";
    std::string blob = "{\"quant_type\": \"" + type_name + "\", \"blocksize\": " + std::to_string(blocksize) +
                       ", \"dtype\": \"" + dtype_name + "\", \"shape\": [" + std::to_string(w.shape[0]) + ", " +
                       std::to_string(w.shape[1]) + "]";
    const Entry& a = out.at(name + ".absmax");
    if (nested) {
      const int64_t nb2 = bnb::ceil_div(nb, 256);
      std::vector<uint8_t> absmax_q(static_cast<size_t>(nb));
      std::vector<float> absmax2(static_cast<size_t>(nb2));
      float offset = 0;
      ASSERT_BNB_OK(bnb_compress_absmax(ctx.get(), absmax.data(), nb, absmax_q.data(), absmax2.data(), &offset, nullptr));
      EXPECT_EQ(a.dtype, "U8");
      EXPECT_EQ(a.shape, (std::vector<int64_t>{nb}));
      EXPECT_TRUE(a.bytes == absmax_q) << name << ": nested absmax codes differ from bnb_compress_absmax";
      EXPECT_EQ(out.at(name + ".nested_absmax").dtype, "F32");
      EXPECT_EQ(out.at(name + ".nested_absmax").shape, (std::vector<int64_t>{nb2}));
      EXPECT_TRUE(out.at(name + ".nested_absmax").bytes == as_bytes(absmax2.data(), absmax2.size() * 4)) << name;
      EXPECT_TRUE(out.at(name + ".nested_quant_map").bytes == as_bytes(dyn, 1024)) << name;
      // The offset is printed as Python prints float(offset): it must read back to the same float.
      const Entry& b = out.at(name + ".quant_state.bitsandbytes__" + type_name);
      const std::string text(b.bytes.begin(), b.bytes.end());
      const std::string prefix = blob + ", \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": ";
      ASSERT_EQ(text.substr(0, prefix.size()), prefix) << text;
      EXPECT_EQ(static_cast<float>(Json::parse(text)["nested_offset"].get<double>()), offset) << text;
      expected_keys += 6;
    } else {
      EXPECT_EQ(a.dtype, "F32");
      EXPECT_EQ(a.shape, (std::vector<int64_t>{nb}));
      EXPECT_TRUE(a.bytes == as_bytes(absmax.data(), absmax.size() * 4)) << name << ": absmax differs";
      EXPECT_EQ(out.count(name + ".nested_absmax"), 0u);
      const Entry& b = out.at(name + ".quant_state.bitsandbytes__" + type_name);
      EXPECT_EQ(b.dtype, "U8");
      EXPECT_EQ(std::string(b.bytes.begin(), b.bytes.end()), blob + "}");
      expected_keys += 4;
    }
  }
  EXPECT_EQ(out.size(), expected_keys);
}

}  // namespace

TEST_F(CliConvert, QuantizeNf4EqualsLibraryAndInspectListsIt) {
  const Entries in = model();
  write_raw(path("in.safetensors"), make_file(in));
  const Outcome r = bnb("quantize " + path("in.safetensors") + " " + path("out.safetensors") + " --to nf4");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "2 of 7 tensors quantized to nf4")) << r.output;
  // The int32 2-D weight is copied, and the command says so.
  EXPECT_TRUE(contains(r.output, "tensor 'model.layers.0.int_table.weight': dtype I32 cannot be quantized, copied"))
      << r.output;
  expect_matches_library(in, read_tensors(path("out.safetensors")), BNB_NF4, "nf4", 64, false);
  EXPECT_EQ(files(), (std::vector<std::string>{"in.safetensors", "out.safetensors"}));

  const Outcome i = bnb("inspect " + path("out.safetensors"));
  EXPECT_EQ(i.code, 0) << i.output;
  EXPECT_TRUE(contains(i.output, "quantized: nf4, blocksize 64, from bfloat16 [33, 41]")) << i.output;
  EXPECT_TRUE(contains(i.output, "quantized: nf4, blocksize 64, from float32 [96, 64]")) << i.output;
  EXPECT_TRUE(contains(i.output, "lm_head.weight")) << i.output;
  EXPECT_TRUE(contains(i.output, "total: 13 tensors, 2 quantized weights")) << i.output;
  EXPECT_TRUE(contains(i.output, "metadata: format = pt")) << i.output;
}

TEST_F(CliConvert, QuantizeFp4DoubleQuantEqualsLibrary) {
  const Entries in = model();
  write_raw(path("in.safetensors"), make_file(in));
  const Outcome r = bnb("quantize " + path("in.safetensors") + " " + path("out.safetensors") +
                        " --to=fp4 --blocksize 128 --double-quant --threads 1");
  ASSERT_EQ(r.code, 0) << r.output;
  expect_matches_library(in, read_tensors(path("out.safetensors")), BNB_FP4, "fp4", 128, true);
  const Outcome i = bnb("inspect " + path("out.safetensors"));
  EXPECT_EQ(i.code, 0) << i.output;
  EXPECT_TRUE(contains(i.output, "quantized: fp4, blocksize 128, from float32 [96, 64], nested (blocksize 256")) << i.output;
}

TEST_F(CliConvert, SkipPatternKeepsWeightsAndInt8IsShownByInspect) {
  Entries in = model();
  write_raw(path("in.safetensors"), make_file(in));
  Outcome r = bnb("quantize " + path("in.safetensors") + " " + path("out.safetensors") + " --to nf4 --skip q_proj");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto out = read_tensors(path("out.safetensors"));
  EXPECT_EQ(out.at("model.layers.0.self_attn.q_proj.weight").dtype, "BF16");
  EXPECT_EQ(out.count("model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4"), 1u);

  // An LLM.int8 layer as transformers saves it: I8 weight, F32 SCB, U8 weight_format 0.
  Entries int8;
  std::vector<int8_t> w(4 * 8, 3);
  std::vector<float> scb(4, 0.5f);
  int8.push_back({"l.weight", {"I8", {4, 8}, as_bytes(w.data(), w.size())}});
  int8.push_back({"l.SCB", {"F32", {4}, as_bytes(scb.data(), 16)}});
  int8.push_back({"l.weight_format", {"U8", {}, {0}}});
  write_raw(path("int8.safetensors"), make_file(int8));
  r = bnb("inspect " + path("int8.safetensors"));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "quantized: int8 (LLM.int8), SCB F32 [4], weight_format 0 (row-major)")) << r.output;
}

TEST_F(CliConvert, BadInputIsAnErrorNamingFileAndTensorWithNoOutput) {
  const Entries in = model();
  Json header;
  const std::string good = make_file(in, &header);
  const std::string out = path("out.safetensors");
  struct Case {
    std::string name, bytes, needle;
  };
  std::vector<Case> cases;
  // Truncated: the last tensors' data is gone.
  cases.push_back({"truncated", good.substr(0, good.size() - 100), "tensor 'lm_head.weight'"});
  cases.push_back({"tiny", good.substr(0, 5), "truncated"});
  {  // A header length larger than the file.
    std::string s = good;
    s[3] = 1;  // + 16 MiB: under the format's limit, past the end of the file
    cases.push_back({"header_length", s, "truncated: the header claims"});
  }
  {  // Offsets that disagree with the shape.
    Json h = header;
    h["model.layers.0.mlp.up_proj.bias"]["data_offsets"][1] = h["model.layers.0.mlp.up_proj.bias"]["data_offsets"][1].get<uint64_t>() - 4;
    cases.push_back({"lying", with_length(h.dump()) + good.substr(8 + header.dump().size()),
                     "tensor 'model.layers.0.mlp.up_proj.bias': shape [96] of F32 needs 384 bytes but data_offsets give 380"});
  }
  {  // Two tensors over the same bytes.
    Json h = header;
    h["model.layers.0.input_layernorm.weight"]["data_offsets"] = h["model.layers.0.mlp.up_proj.bias"]["data_offsets"];
    h["model.layers.0.input_layernorm.weight"]["shape"] = {96};
    cases.push_back({"overlap", with_length(h.dump()) + good.substr(8 + header.dump().size()), "overlap"});
  }
  {  // A negative dimension, and JSON that does not parse.
    Json h = header;
    h["lm_head.weight"]["shape"] = {-16, -64};
    cases.push_back({"negative", with_length(h.dump()) + good.substr(8 + header.dump().size()),
                     "tensor 'lm_head.weight': shape [-16,-64] has a negative"});
    cases.push_back({"json", with_length("{\"a\": [1, 2") + "xxxx", "not valid JSON"});
  }
  for (const Case& c : cases) {
    const std::string in_path = path(c.name + ".safetensors");
    write_raw(in_path, c.bytes);
    Outcome r = bnb("quantize " + in_path + " " + out + " --to nf4");
    EXPECT_EQ(r.code, 1) << c.name << ":\n" << r.output;
    EXPECT_TRUE(contains(r.output, in_path)) << c.name << ": the message does not name the file:\n" << r.output;
    EXPECT_TRUE(contains(r.output, c.needle)) << c.name << ":\n" << r.output;
    r = bnb("inspect " + in_path);
    EXPECT_EQ(r.code, 1) << c.name << ":\n" << r.output;
    EXPECT_TRUE(contains(r.output, c.needle)) << c.name << ":\n" << r.output;
    EXPECT_EQ(access(out.c_str(), F_OK), -1) << c.name << ": output left behind";
    ::unlink(in_path.c_str());
  }
  EXPECT_TRUE(files().empty()) << "temporary files left behind";

  // A dtype it cannot quantize, when asked to refuse rather than copy.
  write_raw(path("in.safetensors"), good);
  Outcome r = bnb("quantize " + path("in.safetensors") + " " + out + " --to nf4 --strict");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, path("in.safetensors") + ": tensor 'model.layers.0.int_table.weight': dtype I32 cannot be quantized"))
      << r.output;
  // OUT == IN, by the same name or another path to the same file.
  r = bnb("quantize " + path("in.safetensors") + " " + path("in.safetensors") + " --to nf4");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "is the input")) << r.output;
  r = bnb("quantize " + path("in.safetensors") + " " + dir_ + "/./in.safetensors --to nf4");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_EQ(read_file(path("in.safetensors")), good) << "the input was changed";
  // A name the quantized keys would repeat.
  Entries clash = {{"x.weight", {"F32", {4, 64}, std::vector<uint8_t>(1024, 0)}},
                   {"x.weight.absmax", {"F32", {4}, std::vector<uint8_t>(16, 0)}}};
  write_raw(path("clash.safetensors"), make_file(clash));
  r = bnb("quantize " + path("clash.safetensors") + " " + out + " --to nf4");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "tensor 'x.weight.absmax': the quantized output would hold this name twice")) << r.output;
  ::unlink(path("clash.safetensors").c_str());
  // An already quantized checkpoint.
  ASSERT_EQ(bnb("quantize " + path("in.safetensors") + " " + path("q.safetensors") + " --to nf4").code, 0);
  r = bnb("quantize " + path("q.safetensors") + " " + out + " --to nf4");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "already quantized")) << r.output;
  EXPECT_EQ(files(), (std::vector<std::string>{"in.safetensors", "q.safetensors"}));
}

TEST_F(CliConvert, FullDiskLeavesNoOutput) {
  write_raw(path("in.safetensors"), make_file(model()));
  // A file size limit of 40 KiB stands in for a full disk: writes past it fail with EFBIG (the
  // signal that would otherwise end the process is ignored).
  const Outcome r = bnb("quantize " + path("in.safetensors") + " " + path("out.safetensors") + " --to nf4",
                        "trap '' XFSZ; ulimit -f 80; ");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "write failed")) << r.output;
  EXPECT_TRUE(contains(r.output, "out.safetensors")) << r.output;
  EXPECT_TRUE(contains(r.output, "(tensor 'model.embed_tokens.weight')")) << r.output;
  EXPECT_EQ(files(), (std::vector<std::string>{"in.safetensors"}));
}

TEST_F(CliConvert, UsageErrors) {
  const std::pair<const char*, const char*> cases[] = {
      {"quantize a b", "--to nf4|fp4|int8 is required"},
      {"quantize a b --to nf5", "--to 'nf5' is not one of nf4, fp4, int8"},
      {"quantize a b --to int8 --double-quant", "--double-quant and --quant-storage apply to nf4 and fp4 only"},
      {"quantize a b --to nf4 --compute-dtype float64", "--compute-dtype 'float64' is not one of float32, float16, bfloat16"},
      {"quantize a b --to nf4 --quant-storage int4", "--quant-storage 'int4' is not one of uint8, int8, float16"},
      {"quantize a b --to nf4 --backend tpu", "--backend 'tpu' is not one of cpu, cuda, hip, auto"},
      {"quantize a b --to nf4 --skip '(q'", "--skip '(q' is not a regular expression"},
      {"quantize a b --to nf4 --blocksize 48", "--blocksize '48' is not valid"},
      {"quantize a b --to nf4 --blocksize", "--blocksize needs a value"},
      {"quantize a --to nf4", "needs IN and OUT"},
      {"quantize a b --to nf4 --bogus", "unknown argument '--bogus'"},
      {"quantize a b --to nf4 --threads -2", "--threads '-2' is not valid: use 0 (default) to 4096"},
      {"inspect", "takes one FILE argument"},
  };
  for (const auto& c : cases) {
    const Outcome r = bnb(c.first);
    EXPECT_EQ(r.code, 2) << c.first << ":\n" << r.output;
    EXPECT_TRUE(contains(r.output, c.second)) << c.first << ":\n" << r.output;
  }
  Outcome r = bnb("quantize --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(contains(r.output, "--double-quant")) << r.output;
  r = bnb("--help");
  EXPECT_TRUE(contains(r.output, "bnb quantize IN OUT --to nf4|fp4|int8")) << r.output;
  EXPECT_TRUE(contains(r.output, "bnb inspect FILE")) << r.output;
  r = bnb("inspect /nonexistent/x.safetensors");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.output, "/nonexistent/x.safetensors: cannot open")) << r.output;
}

// The checkpoints real bitsandbytes saved through transformers (tests/data/hf_fixture) read back.
TEST_F(CliConvert, InspectReadsCheckpointsSavedByBitsandbytes) {
  std::string fixture = __FILE__;
  fixture = fixture.substr(0, fixture.rfind("/unit/")) + "/data/hf_fixture/";
  if (access((fixture + "nf4_dq/model.safetensors").c_str(), R_OK) != 0) GTEST_SKIP() << "no " << fixture;
  const std::pair<const char*, const char*> cases[] = {
      {"nf4_dq", "quantized: nf4, blocksize 64, from float32 [64, 128], nested (blocksize 256, offset 0.05134176090359688)"},
      {"fp4", "quantized: fp4, blocksize 64, from float32 [64, 128]\n"},
      {"int8", "quantized: int8 (LLM.int8), SCB F32 [64], weight_format 0 (row-major)"},
      {"float", "total: 21 tensors, 0 quantized weights"},
  };
  for (const auto& c : cases) {
    const Outcome r = bnb("inspect " + fixture + c.first + "/model.safetensors");
    EXPECT_EQ(r.code, 0) << c.first << ":\n" << r.output;
    EXPECT_TRUE(contains(r.output, c.second)) << c.first << ":\n" << r.output;
  }
}

// A quantized checkpoint whose state disagrees with itself is reported by inspect.
TEST_F(CliConvert, InspectChecksQuantizationState) {
  write_raw(path("in.safetensors"), make_file(model()));
  ASSERT_EQ(bnb("quantize " + path("in.safetensors") + " " + path("q.safetensors") + " --to nf4").code, 0);
  Entries broken;
  for (const auto& kv : read_tensors(path("q.safetensors"))) broken.push_back(kv);
  for (auto& e : broken)
    if (e.first == "model.layers.0.mlp.up_proj.weight.absmax") {  // one block short
      e.second.shape[0] -= 1;
      e.second.bytes.resize(e.second.bytes.size() - 4);
    }
  write_raw(path("broken.safetensors"), make_file(broken));
  const Outcome r = bnb("inspect " + path("broken.safetensors"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, path("broken.safetensors") + ": tensor 'model.layers.0.mlp.up_proj.weight': absmax is F32 [95], expected F32 [96]"))
      << r.output;
}

// LLM.int8: each weight as bnb_int8_vectorwise_quant gives for its float16 rounding (as
// bitsandbytes' Int8Params quantizes it), SCB its row absmax, weight_format 0.
TEST_F(CliConvert, Int8EqualsLibrary) {
  const Entries in = model();
  write_raw(path("in.safetensors"), make_file(in));
  const Outcome r = bnb("quantize " + path("in.safetensors") + " " + path("out.safetensors") + " --to int8");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "2 of 7 tensors quantized to int8 on cpu")) << r.output;
  const auto out = read_tensors(path("out.safetensors"));
  Context ctx(BNB_BACKEND_CPU);
  ASSERT_TRUE(ctx.ok());
  for (const auto& e : in) {
    const std::string& name = e.first;
    if (std::find(kQuantized.begin(), kQuantized.end(), name) == kQuantized.end()) {
      EXPECT_TRUE(out.at(name).bytes == e.second.bytes) << name << " was not copied unchanged";
      continue;
    }
    const int64_t rows = e.second.shape[0], cols = e.second.shape[1];
    // The float16 rounding of the weight, independently of the command's conversion.
    std::vector<float> f(static_cast<size_t>(rows * cols));
    if (e.second.dtype == "F32") std::memcpy(f.data(), e.second.bytes.data(), f.size() * 4);
    else f = from_dtype(e.second.bytes, BNB_BF16);
    const std::vector<uint8_t> h = to_dtype(f, BNB_F16);
    std::vector<int8_t> q(f.size());
    std::vector<float> stats(static_cast<size_t>(rows));
    ASSERT_BNB_OK(bnb_int8_vectorwise_quant(ctx.get(), BNB_F16, rows, cols, h.data(), 0.0f, q.data(), stats.data(),
                                            nullptr));
    const std::string module = name.substr(0, name.size() - 7);
    EXPECT_EQ(out.at(name).dtype, "I8") << name;
    EXPECT_EQ(out.at(name).shape, e.second.shape) << name;
    EXPECT_TRUE(out.at(name).bytes == as_bytes(q.data(), q.size())) << name << ": codes differ";
    EXPECT_EQ(out.at(module + ".SCB").dtype, "F32");
    EXPECT_EQ(out.at(module + ".SCB").shape, (std::vector<int64_t>{rows}));
    EXPECT_TRUE(out.at(module + ".SCB").bytes == as_bytes(stats.data(), stats.size() * 4)) << name << ": SCB differs";
    EXPECT_EQ(out.at(name + "_format").dtype, "U8");
    EXPECT_TRUE(out.at(name + "_format").shape.empty());
    EXPECT_EQ(out.at(name + "_format").bytes, std::vector<uint8_t>{0});
  }
  EXPECT_EQ(out.size(), in.size() + 2 * kQuantized.size());
  const Outcome i = bnb("inspect " + path("out.safetensors"));
  EXPECT_EQ(i.code, 0) << i.output;
  EXPECT_TRUE(contains(i.output, "quantized: int8 (LLM.int8), SCB F32 [96], weight_format 0 (row-major)")) << i.output;
}

// --quant-storage: the packed bytes, unchanged, under another dtype; a weight whose packed bytes
// do not fill whole elements is an error naming it.
TEST_F(CliConvert, QuantStorageKeepsBytesUnderAnotherDtype) {
  const Entries in = model();
  write_raw(path("in.safetensors"), make_file(in));
  Outcome r = bnb("quantize " + path("in.safetensors") + " " + path("bf16.safetensors") + " --to nf4 --quant-storage bfloat16");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "tensor 'model.layers.0.self_attn.q_proj.weight': its 677 packed bytes do not fill whole bfloat16"))
      << r.output;
  EXPECT_EQ(files(), (std::vector<std::string>{"in.safetensors"}));
  r = bnb("quantize " + path("in.safetensors") + " " + path("u8.safetensors") + " --to nf4 --skip q_proj");
  ASSERT_EQ(r.code, 0) << r.output;
  r = bnb("quantize " + path("in.safetensors") + " " + path("bf16.safetensors") +
          " --to nf4 --skip q_proj --quant-storage bfloat16");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "stored as bfloat16")) << r.output;
  const auto u8 = read_tensors(path("u8.safetensors")), bf16 = read_tensors(path("bf16.safetensors"));
  const std::string w = "model.layers.0.mlp.up_proj.weight";
  EXPECT_EQ(u8.at(w).shape, (std::vector<int64_t>{3072, 1}));
  EXPECT_EQ(bf16.at(w).dtype, "BF16");
  EXPECT_EQ(bf16.at(w).shape, (std::vector<int64_t>{1536, 1}));
  EXPECT_TRUE(bf16.at(w).bytes == u8.at(w).bytes);
  ASSERT_EQ(bf16.size(), u8.size());
  for (const auto& kv : u8) EXPECT_TRUE(bf16.at(kv.first).bytes == kv.second.bytes) << kv.first;
  const Outcome i = bnb("inspect " + path("bf16.safetensors"));
  EXPECT_EQ(i.code, 0) << i.output;
  EXPECT_TRUE(contains(i.output, "from float32 [96, 64], stored as BF16")) << i.output;
}

// --skip follows transformers' llm_int8_skip_modules rule: a regular expression from the start of
// the module name to a '.' boundary, or a suffix.
TEST_F(CliConvert, SkipPatternsMatchAsTransformersDoes) {
  write_raw(path("in.safetensors"), make_file(model()));
  const std::pair<const char*, bool> cases[] = {
      {"model.layers.0.mlp", true},   // from the start, to a boundary
      {"model.layers.0.ml", false},   // not at a boundary
      {"layers.0.mlp", false},        // not from the start, not a suffix
      {"mlp.up_proj", true},          // a suffix
      {"model\\.layers\\.[0-9]+\\.mlp", true},  // a regular expression
      {"model.*up", false},           // ends inside a name part
  };
  for (const auto& c : cases) {
    const Outcome r = bnb("quantize " + path("in.safetensors") + " " + path("out.safetensors") + " --to nf4 --skip '" +
                          c.first + "'");
    ASSERT_EQ(r.code, 0) << c.first << ": " << r.output;
    const auto out = read_tensors(path("out.safetensors"));
    EXPECT_EQ(out.at("model.layers.0.mlp.up_proj.weight").dtype, c.second ? "F32" : "U8") << c.first;
    EXPECT_EQ(out.at("model.layers.0.self_attn.q_proj.weight").dtype, "U8") << c.first;
  }
}

namespace {

Json read_json_file(const std::string& path) { return Json::parse(read_file(path)); }

// A directory checkpoint: the model's tensors over two shards with their index, a config.json and
// files that are copied unchanged.
void write_sharded(const std::string& dir, const Entries& all) {
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  Entries first(all.begin(), all.begin() + 3), second(all.begin() + 3, all.end());
  write_raw(dir + "/model-00001-of-00002.safetensors", make_file(first));
  write_raw(dir + "/model-00002-of-00002.safetensors", make_file(second));
  Json index = {{"metadata", {{"total_size", 12345}}}, {"weight_map", Json::object()}};
  for (const auto& e : first) index["weight_map"][e.first] = "model-00001-of-00002.safetensors";
  for (const auto& e : second) index["weight_map"][e.first] = "model-00002-of-00002.safetensors";
  write_raw(dir + "/model.safetensors.index.json", index.dump(2));
  write_raw(dir + "/config.json", R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "torch_dtype": "float32"})");
  write_raw(dir + "/generation_config.json", R"({"do_sample": false})");
  write_raw(dir + "/tokenizer.json", "{\"not\": \"read\"}\n");
}

}  // namespace

TEST_F(CliConvert, ShardedDirectoryKeepsShardsAndRewritesIndexAndConfig) {
  const Entries in = model();
  write_sharded(path("in"), in);
  const Outcome r = bnb("quantize " + path("in") + " " + path("out") + " --to nf4 --double-quant --compute-dtype bfloat16");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "2 files")) << r.output;
  EXPECT_EQ(files(), (std::vector<std::string>{"in", "out"}));
  const std::vector<std::string> shard_names = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
  // Each shard holds its own tensors, quantized as the library quantizes them.
  std::map<std::string, Entry> all_out;
  uint64_t data_bytes = 0;
  for (int s = 0; s < 2; ++s) {
    const Entries part = s == 0 ? Entries(in.begin(), in.begin() + 3) : Entries(in.begin() + 3, in.end());
    const auto out = read_tensors(path("out/" + shard_names[size_t(s)]));
    expect_matches_library(part, out, BNB_NF4, "nf4", 64, true);
    for (const auto& kv : out) {
      all_out[kv.first] = kv.second;
      data_bytes += kv.second.bytes.size();
    }
  }
  const Json index = read_json_file(path("out/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), data_bytes);
  EXPECT_EQ(index["weight_map"].size(), all_out.size());
  for (const auto& kv : all_out) {
    const std::string shard = index["weight_map"].value(kv.first, std::string("(missing)"));
    EXPECT_TRUE(read_tensors(path("out/" + shard)).count(kv.first)) << kv.first << " is not in " << shard;
  }
  const Json config = read_json_file(path("out/config.json"));
  EXPECT_EQ(config["hidden_size"], 64);
  const Json& qc = config["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "bitsandbytes");
  EXPECT_EQ(qc["load_in_4bit"], true);
  EXPECT_EQ(qc["load_in_8bit"], false);
  EXPECT_EQ(qc["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(qc["bnb_4bit_use_double_quant"], true);
  EXPECT_EQ(qc["bnb_4bit_compute_dtype"], "bfloat16");
  EXPECT_EQ(qc["bnb_4bit_quant_storage"], "uint8");
  EXPECT_TRUE(qc["llm_int8_skip_modules"].is_null());
  for (const char* f : {"generation_config.json", "tokenizer.json"})
    EXPECT_EQ(read_file(path(std::string("out/") + f)), read_file(path(std::string("in/") + f))) << f;

  // A directory that is not empty is not replaced; a shard that breaks leaves no output.
  Outcome again = bnb("quantize " + path("in") + " " + path("out") + " --to nf4");
  EXPECT_EQ(again.code, 2) << again.output;
  EXPECT_TRUE(contains(again.output, "exists: give a new or empty directory")) << again.output;
  const std::string second = path("in/" + shard_names[1]);
  const std::string bytes = read_file(second);
  write_raw(second, bytes.substr(0, bytes.size() - 50));
  again = bnb("quantize " + path("in") + " " + path("out2") + " --to nf4");
  EXPECT_EQ(again.code, 1) << again.output;
  EXPECT_TRUE(contains(again.output, second)) << again.output;
  EXPECT_EQ(files(), (std::vector<std::string>{"in", "out"}));
  write_raw(second, bytes);
  // The index must list every tensor of each shard under that shard.
  Json bad = read_json_file(path("in/model.safetensors.index.json"));
  bad["weight_map"].erase("lm_head.weight");
  write_raw(path("in/model.safetensors.index.json"), bad.dump());
  again = bnb("quantize " + path("in") + " " + path("out3") + " --to nf4");
  EXPECT_EQ(again.code, 1) << again.output;
  EXPECT_TRUE(contains(again.output, "tensor 'lm_head.weight' is not listed for this file in model.safetensors.index.json"))
      << again.output;
  EXPECT_EQ(files(), (std::vector<std::string>{"in", "out"}));
}

// A single file with config.json beside it: OUT in another directory gets the config with its
// quantization_config; user skip patterns are listed there with lm_head.
TEST_F(CliConvert, ConfigBesideFileIsWrittenBesideOut) {
  ASSERT_EQ(::mkdir(path("src").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(path("dst").c_str(), 0755), 0);
  write_raw(path("src/model.safetensors"), make_file(model()));
  write_raw(path("src/config.json"), R"({"hidden_size": 64})");
  Outcome r = bnb("quantize " + path("src/model.safetensors") + " " + path("dst/model.safetensors") +
                  " --to int8 --skip q_proj");
  ASSERT_EQ(r.code, 0) << r.output;
  const Json qc = read_json_file(path("dst/config.json"))["quantization_config"];
  EXPECT_EQ(qc["load_in_8bit"], true);
  EXPECT_EQ(qc["load_in_4bit"], false);
  EXPECT_EQ(qc["llm_int8_threshold"], 6.0);
  EXPECT_EQ(qc["llm_int8_skip_modules"], Json::array({"lm_head", "q_proj"}));
  // Beside IN, the input's config is left alone and the command says so.
  r = bnb("quantize " + path("src/model.safetensors") + " " + path("src/q.safetensors") + " --to nf4");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "config.json not written: OUT is in IN's directory")) << r.output;
  EXPECT_EQ(read_file(path("src/config.json")), R"({"hidden_size": 64})");
  // A config that already has a quantization_config means the checkpoint is quantized.
  r = bnb("quantize " + path("src/model.safetensors") + " " + path("dst/again.safetensors") + " --to nf4");
  EXPECT_EQ(r.code, 0) << r.output;  // dst's config is not IN's
  write_raw(path("src/config.json"), R"({"quantization_config": {"load_in_4bit": true}})");
  r = bnb("quantize " + path("src/model.safetensors") + " " + path("dst/third.safetensors") + " --to nf4");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "has a quantization_config already")) << r.output;
  EXPECT_EQ(access(path("dst/third.safetensors").c_str(), F_OK), -1);
}

// The progress line goes to a terminal only: under a pseudo-terminal (script(1)) it is drawn and
// ends with the time taken; through a pipe nothing of it appears.
TEST_F(CliConvert, ProgressOnlyOnATerminal) {
  if (run_command("command -v script").code != 0) GTEST_SKIP() << "script(1) is not installed";
  write_raw(path("in.safetensors"), make_file(model()));
  const std::string cmd = program(kCli) + " quantize " + path("in.safetensors") + " " + path("out.safetensors") + " --to nf4";
  Outcome r = run_command("script -qec '" + cmd + "' /dev/null");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "7/7 tensors")) << r.output;
  EXPECT_TRUE(contains(r.output, "took 0:0")) << r.output;
  EXPECT_TRUE(contains(r.output, "MB/s")) << r.output;
  r = bnb("quantize " + path("in.safetensors") + " " + path("out.safetensors") + " --to nf4");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_FALSE(contains(r.output, "tensors  ")) << r.output;
  EXPECT_FALSE(contains(r.output, "\r")) << r.output;
}

// Every available backend writes the same bytes (the formats are bit-exact across backends).
TEST_F(CliConvert, EveryBackendWritesTheSameBytes) {
  write_raw(path("in.safetensors"), make_file(model()));
  const char* const options[] = {"--to nf4", "--to fp4 --double-quant --blocksize 256", "--to int8"};
  int compared = 0;
  for (const char* opt : options) {
    Outcome r = bnb("quantize " + path("in.safetensors") + " " + path("cpu.safetensors") + " " + opt + " --backend cpu");
    ASSERT_EQ(r.code, 0) << r.output;
    const std::string want = read_file(path("cpu.safetensors"));
    for (const int32_t kind : available_backends()) {
      if (kind == BNB_BACKEND_CPU) continue;
      const std::string name = backend_label(kind);
      r = bnb("quantize " + path("in.safetensors") + " " + path(name + ".safetensors") + " " + opt + " --backend " + name);
      ASSERT_EQ(r.code, 0) << name << ": " << r.output;
      EXPECT_TRUE(contains(r.output, " on " + name + ",")) << r.output;
      EXPECT_TRUE(read_file(path(name + ".safetensors")) == want) << opt << ": " << name << " differs from cpu";
      ++compared;
    }
  }
  std::printf("[cli] %d backend comparisons with cpu\n", compared);
}
