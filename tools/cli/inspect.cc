// `bnb inspect FILE`: lists a safetensors checkpoint and checks the quantization state of the
// weights transformers saves for bitsandbytes models (docs/FORMATS.md §5.2-5.5).
#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli.h"
#include "convert_util.h"
#include "int_math.h"
#include "safetensors.h"

namespace {

using namespace bnb_cli;

const char kInspectUsage[] =
    "usage: bnb inspect FILE.safetensors\n"
    "Lists every tensor (name, dtype, shape, bytes) and the totals. A bitsandbytes 4-bit weight\n"
    "(its quant_state.bitsandbytes__nf4|fp4 entry) is shown decoded and checked against its\n"
    "absmax, quant_map and nested entries; an LLM.int8 weight shows its SCB and weight_format.\n"
    "Exit 1 on a file that is not valid safetensors or whose quantization state is inconsistent.\n";

// Describes and checks the 4-bit state of weight `w` from its JSON blob; problems are appended.
std::string describe_4bit(const SafetensorsFile& f, const std::string& w, const Tensor& blob,
                          std::vector<std::string>& problems) {
  auto problem = [&](const std::string& what) { problems.push_back(f.path() + ": tensor '" + w + "': " + what); };
  nlohmann::json qs;
  try {
    qs = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(blob.data), blob.bytes()));
  } catch (const nlohmann::json::parse_error&) {
    problem("'" + blob.name + "' is not JSON");
    return "4-bit, unreadable state";
  }
  if (!qs.is_object() || !qs.contains("quant_type") || !qs["quant_type"].is_string() || !qs.contains("blocksize") ||
      !qs["blocksize"].is_number_integer() || !qs.contains("shape") || !qs["shape"].is_array()) {
    problem("'" + blob.name + "' lacks quant_type, blocksize or shape");
    return "4-bit, incomplete state";
  }
  const std::string qt = qs["quant_type"].get<std::string>();
  const int64_t bs = qs["blocksize"].get<int64_t>();
  std::vector<int64_t> shape;
  int64_t n = 1;
  for (const auto& d : qs["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) {
      problem("shape " + qs["shape"].dump() + " is not a list of sizes");
      return "4-bit, bad shape";
    }
    shape.push_back(d.get<int64_t>());
    n *= d.get<int64_t>();
  }
  if (!ends_with(blob.name, qt)) problem("quant_type '" + qt + "' differs from the key's suffix");
  if (bs <= 0) {
    problem("blocksize " + std::to_string(bs) + " is not positive");
    return "4-bit, bad blocksize";
  }
  const Tensor* packed = f.find(w);
  // The packed bytes may be stored as another dtype (bnb_4bit_quant_storage): only their count matters.
  if (packed->bytes() != uint64_t(bnb::ceil_div(n, 2)))
    problem("packed weight is " + packed->dtype + " " + std::to_string(packed->bytes()) + " bytes, expected " +
            std::to_string(bnb::ceil_div(n, 2)) + " for shape " + bnb_cli::shape_string(shape));
  const bool nested = qs.contains("nested_blocksize");
  const int64_t nb = bnb::ceil_div(n, bs);
  const Tensor* absmax = f.find(w + ".absmax");
  if (absmax == nullptr) problem("no '" + w + ".absmax'");
  else if (absmax->dtype != (nested ? "U8" : "F32") || absmax->numel() != nb)
    problem("absmax is " + absmax->dtype + " " + bnb_cli::shape_string(absmax->shape) + ", expected " +
            (nested ? "U8 [" : "F32 [") + std::to_string(nb) + "]");
  const Tensor* qmap = f.find(w + ".quant_map");
  if (qmap == nullptr || qmap->dtype != "F32" || qmap->numel() != 16) problem("quant_map missing or not F32 [16]");
  std::string text = qt + ", blocksize " + std::to_string(bs) + ", from " +
                     (qs.contains("dtype") && qs["dtype"].is_string() ? qs["dtype"].get<std::string>() : "?") + " " +
                     bnb_cli::shape_string(shape);
  if (packed->dtype != "U8") text += ", stored as " + packed->dtype;
  if (nested) {
    const int64_t bs2 = qs["nested_blocksize"].is_number_integer() ? qs["nested_blocksize"].get<int64_t>() : 0;
    const Tensor* a2 = f.find(w + ".nested_absmax");
    if (bs2 <= 0) problem("nested_blocksize is not a positive integer");
    else if (a2 == nullptr || a2->dtype != "F32" || a2->numel() != bnb::ceil_div(nb, bs2))
      problem("nested_absmax missing or not F32 [" + std::to_string(bnb::ceil_div(nb, bs2)) + "]");
    const Tensor* m2 = f.find(w + ".nested_quant_map");
    if (m2 == nullptr || m2->dtype != "F32" || m2->numel() != 256) problem("nested_quant_map missing or not F32 [256]");
    if (!qs.contains("nested_offset") || !qs["nested_offset"].is_number()) problem("nested_offset missing");
    text += ", nested (blocksize " + std::to_string(bs2) + ", offset " +
            (qs.contains("nested_offset") ? qs["nested_offset"].dump() : "?") + ")";
  }
  return text;
}

int inspect_command(const std::vector<std::string>& args) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::printf("%s", kInspectUsage);
    return 0;
  }
  if (args.size() != 1) return usage_error("inspect", "takes one FILE argument");
  try {
    const SafetensorsFile f(args[0]);
    std::vector<std::string> problems;
    std::map<std::string, std::string> quantized;  // weight name -> description
    for (const Tensor& t : f.tensors()) {
      const size_t at = t.name.find(kBlobPrefix);
      if (at != std::string::npos) {
        const std::string w = t.name.substr(0, at);
        if (f.find(w) == nullptr) problems.push_back(f.path() + ": tensor '" + t.name + "' has no weight '" + w + "'");
        else quantized[w] = describe_4bit(f, w, t, problems);
      } else if (ends_with(t.name, ".SCB")) {
        const std::string p = t.name.substr(0, t.name.size() - 4);
        const Tensor* w = f.find(p + ".weight");
        const Tensor* fmt = f.find(p + ".weight_format");
        if (w == nullptr || w->dtype != "I8" || w->shape.size() != 2 || t.dtype != "F32" || t.numel() != w->shape[0]) {
          problems.push_back(f.path() + ": tensor '" + t.name + "' does not match an I8 [N, K] '" + p + ".weight'");
          continue;
        }
        std::string fmt_text = "weight_format missing";
        if (fmt != nullptr && fmt->dtype == "U8" && fmt->bytes() == 1) {
          fmt_text = "weight_format " + std::to_string(fmt->data[0]) + (fmt->data[0] == 0 ? " (row-major)" : "");
          if (fmt->data[0] != 0) problems.push_back(f.path() + ": tensor '" + p + ".weight_format' is not 0 (row-major)");
        }
        quantized[p + ".weight"] = "int8 (LLM.int8), SCB F32 [" + std::to_string(t.numel()) + "], " + fmt_text;
      }
    }
    std::vector<const Tensor*> order;
    for (const Tensor& t : f.tensors()) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const Tensor* a, const Tensor* b) { return a->name < b->name; });
    size_t width = 4;
    for (const Tensor* t : order) width = std::max(width, t->name.size());
    std::printf("%s: %zu tensors, header %llu bytes\n", f.path().c_str(), f.tensors().size(),
                static_cast<unsigned long long>(f.header_size()));
    std::printf("%-*s  %-5s  %-16s  %12s\n", int(width), "name", "dtype", "shape", "bytes");
    uint64_t total = 0;
    for (const Tensor* t : order) {
      std::printf("%-*s  %-5s  %-16s  %12llu\n", int(width), t->name.c_str(), t->dtype.c_str(),
                  bnb_cli::shape_string(t->shape).c_str(), static_cast<unsigned long long>(t->bytes()));
      const auto q = quantized.find(t->name);
      if (q != quantized.end()) std::printf("%-*s    quantized: %s\n", int(width), "", q->second.c_str());
      total += t->bytes();
    }
    std::printf("total: %zu tensors, %zu quantized weights, %llu bytes (%s) of data\n", f.tensors().size(),
                quantized.size(), static_cast<unsigned long long>(total), human_bytes(total).c_str());
    for (const auto& kv : f.metadata()) std::printf("metadata: %s = %s\n", kv.first.c_str(), kv.second.c_str());
    for (const std::string& p : problems) std::fprintf(stderr, "bnb inspect: %s\n", p.c_str());
    return problems.empty() ? 0 : 1;
  } catch (const FileError& e) {
    std::fprintf(stderr, "bnb inspect: %s\n", e.what());
    return 1;
  }
}

}  // namespace

int run_inspect(const std::vector<std::string>& args) { return inspect_command(args); }
