#include "golden.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include <zlib.h>

#include "half.h"

namespace bnb_test {
namespace {

size_t dtype_size(const std::string& dtype) {
  if (dtype == "float32" || dtype == "int32") return 4;
  if (dtype == "float16" || dtype == "bfloat16") return 2;
  if (dtype == "uint8" || dtype == "int8") return 1;
  if (dtype == "int64") return 8;
  throw std::runtime_error("unknown golden dtype " + dtype);
}

// The whole of a gzip file. zlib checks the member's CRC-32 and length at its end, so a corrupt or
// truncated file is an error here rather than wrong data later.
std::vector<uint8_t> read_gzip(const std::string& path) {
  gzFile in = gzopen(path.c_str(), "rb");
  if (in == nullptr) throw std::runtime_error("cannot open " + path);
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  int got = 0;
  while ((got = gzread(in, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + got);
  if (gzdirect(in)) {  // zlib passes a file without a gzip header through unchecked
    gzclose(in);
    throw std::runtime_error(path + ": not gzip data");
  }
  // A truncated member ends the loop with 0 and Z_BUF_ERROR ("unexpected end of file"), a bad
  // check value with -1: both leave an error status.
  int err = Z_OK;
  const std::string why = gzerror(in, &err);
  gzclose(in);
  if (got < 0 || err != Z_OK) throw std::runtime_error(path + ": corrupt gzip data (" + why + ")");
  return out;
}

GoldenArray load_array(const std::string& dir, const nlohmann::json& j) {
  GoldenArray a;
  a.file = j.at("file").get<std::string>();
  a.dtype = j.at("dtype").get<std::string>();
  a.shape = j.at("shape").get<std::vector<int64_t>>();
  a.bytes = read_gzip(dir + "/" + a.file + ".gz");  // stored compressed: README.md there
  if (a.bytes.size() != static_cast<size_t>(a.numel()) * dtype_size(a.dtype))
    throw std::runtime_error(a.file + ": size does not match its shape and dtype");
  return a;
}

bool is_nan(const uint8_t* p, const std::string& dtype) {
  if (dtype == "float32") {
    uint32_t b;
    std::memcpy(&b, p, 4);
    return (b & 0x7fffffffu) > 0x7f800000u;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  if (dtype == "float16") return (h & 0x7fffu) > 0x7c00u;
  return dtype == "bfloat16" && (h & 0x7fffu) > 0x7f80u;
}

}  // namespace

int64_t count_mismatches(const std::vector<uint8_t>& got, const GoldenArray& want, bool any_nan_matches) {
  const size_t elem = dtype_size(want.dtype);
  const int64_t n = want.numel();
  if (got.size() < static_cast<size_t>(n) * elem) throw std::runtime_error("fewer results than " + want.file + " holds");
  const bool floating = want.dtype == "float32" || want.dtype == "float16" || want.dtype == "bfloat16";
  int64_t diffs = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* a = &got[static_cast<size_t>(i) * elem];
    const uint8_t* b = &want.bytes[static_cast<size_t>(i) * elem];
    if (std::memcmp(a, b, elem) == 0) continue;
    if (any_nan_matches && floating && is_nan(a, want.dtype) && is_nan(b, want.dtype)) continue;
    ++diffs;
  }
  return diffs;
}

int64_t GoldenArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> GoldenArray::as_f32() const {
  const int64_t n = numel();
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (dtype == "float32") {
      std::memcpy(&out[i], &bytes[i * 4], 4);
    } else {
      uint16_t h;
      std::memcpy(&h, &bytes[i * 2], 2);
      out[i] = dtype == "float16" ? bnb::f16_to_f32(h) : bnb::bf16_to_f32(h);
    }
  }
  return out;
}

std::string GoldenCase::param_string(const std::string& key) const {
  auto it = params.find(key);
  if (it == params.end()) return "";
  const nlohmann::json j = nlohmann::json::parse(it->second);
  return j.is_string() ? j.get<std::string>() : j.dump();
}

int64_t GoldenCase::param_int(const std::string& key) const {
  auto it = params.find(key);
  if (it == params.end()) throw std::runtime_error("golden case lacks param " + key);
  return nlohmann::json::parse(it->second).get<int64_t>();
}

std::string GoldenCase::label() const {
  std::ostringstream s;
  s << "#" << index << " " << op;
  for (const auto& kv : params) s << " " << kv.first << "=" << kv.second;
  auto it = inputs.find("A");
  if (it != inputs.end()) s << " " << it->second.dtype;
  return s.str();
}

std::string golden_dir() {
  if (const char* env = std::getenv("BNB_GOLDEN_DIR")) return env;
  return BNB_GOLDEN_DIR;
}

std::vector<GoldenCase> load_golden(const std::string& op, const std::string& backend, const std::string& manifest) {
  const std::string dir = golden_dir();
  const std::string path = dir + "/" + manifest;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("no golden vectors: cannot read " + path);
  const nlohmann::json root = nlohmann::json::parse(in);
  std::vector<GoldenCase> cases;
  int index = 0;
  for (const auto& c : root.at("cases")) {
    ++index;
    if (c.at("op") != op || c.at("backend") != backend) continue;
    GoldenCase g;
    g.index = index - 1;
    g.op = op;
    g.backend = backend;
    if (c.contains("note")) g.note = c.at("note").get<std::string>();
    if (c.contains("valid_steps")) g.valid_steps = c.at("valid_steps").get<int64_t>();
    for (auto it = c.at("params").begin(); it != c.at("params").end(); ++it) g.params[it.key()] = it.value().dump();
    for (auto it = c.at("inputs").begin(); it != c.at("inputs").end(); ++it)
      g.inputs[it.key()] = load_array(dir, it.value());
    for (auto it = c.at("outputs").begin(); it != c.at("outputs").end(); ++it)
      g.outputs[it.key()] = load_array(dir, it.value());
    cases.push_back(std::move(g));
  }
  if (cases.empty()) throw std::runtime_error(path + " has no " + backend + " " + op + " case");
  return cases;
}

}  // namespace bnb_test
