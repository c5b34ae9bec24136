// What `bnb inspect` (inspect.cc) and `bnb quantize` (quantize.cc) share: their messages, the
// names of dtypes in both vocabularies, and the text forms of sizes and floats.
#ifndef BNB_TOOLS_CLI_CONVERT_UTIL_H_
#define BNB_TOOLS_CLI_CONVERT_UTIL_H_

#include <cstdint>
#include <string>

namespace bnb_cli {

// The key suffix of a bitsandbytes 4-bit weight's packed JSON state ("<weight>" + this + quant type).
inline constexpr char kBlobPrefix[] = ".quant_state.bitsandbytes__";

// Prints "bnb COMMAND: MESSAGE" and where to find the usage to stderr; returns exit status 2.
int usage_error(const std::string& command, const std::string& message);
bool ends_with(const std::string& s, const std::string& suffix);
// torch's name of a safetensors float dtype ("BF16" -> "bfloat16"), "?" for others.
const char* torch_dtype_name(const std::string& safetensors_dtype);
// "12.3 MiB"
std::string human_bytes(uint64_t bytes);
// A double as Python's repr() prints it (what json.dumps writes): the shortest digits that read
// back to the same value, positional for exponents -4..15 and scientific otherwise.
std::string python_float(double v);

}  // namespace bnb_cli

#endif  // BNB_TOOLS_CLI_CONVERT_UTIL_H_
