// Reader for the golden vectors produced by bitsandbytes (tests/data/golden, see its README.md).
#ifndef BNB_TESTS_GOLDEN_H_
#define BNB_TESTS_GOLDEN_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bnb_test {

struct GoldenArray {
  std::string file;
  std::string dtype;           // float32, float16, bfloat16, uint8, int8, int32, int64
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // raw little-endian contents
  int64_t numel() const;
  std::vector<float> as_f32() const;  // widened exactly from float32/float16/bfloat16
};

struct GoldenCase {
  int index = 0;
  std::string op, backend, note;
  int64_t valid_steps = 0;  // optimizer cases: how many steps are valid targets (0 = all)
  std::map<std::string, std::string> params;  // scalar params as JSON text ("64", "\"nf4\"")
  std::map<std::string, GoldenArray> inputs, outputs;
  std::string param_string(const std::string& key) const;  // unquoted string param
  int64_t param_int(const std::string& key) const;
  std::string label() const;  // "#12 quantize_4bit nf4 bs64 n=13289 float16"
};

// Elements of `want` that `got` (raw bytes holding at least as many elements of want's dtype) does
// not reproduce bit for bit. With any_nan_matches, a NaN matches any NaN: the rule for dequantized
// values, whose NaN payload and sign the format leaves free.
int64_t count_mismatches(const std::vector<uint8_t>& got, const GoldenArray& want, bool any_nan_matches = false);

// The golden directory: $BNB_GOLDEN_DIR, else the path configured at build time (the repository's
// tests/data/golden).
std::string golden_dir();
// Every case of `op` for `backend` in the golden directory's `manifest` (manifest.json, or another
// index of the same layout such as nonfinite.json), with arrays loaded. Throws std::runtime_error
// (a test failure in GoogleTest) when the manifest is missing, names no such case, or an array
// file is missing, corrupt or of the wrong size: the golden tests never skip.
std::vector<GoldenCase> load_golden(const std::string& op, const std::string& backend,
                                    const std::string& manifest = "manifest.json");

}  // namespace bnb_test

#endif  // BNB_TESTS_GOLDEN_H_
