// `bnb inspect FILE` and `bnb quantize IN OUT --to nf4|fp4`: safetensors checkpoints in the layout
// transformers saves for bitsandbytes models (docs/FORMATS.md §5.2-5.5), through the public C API
// on the CPU backend. Quantize streams: one tensor at a time from the memory-mapped input.
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bnb.h"
#include "cli.h"
#include "safetensors.h"

namespace {

using bnb_cli::FileError;
using bnb_cli::is_float_dtype;
using bnb_cli::SafetensorsFile;
using bnb_cli::SafetensorsWriter;
using bnb_cli::Tensor;
using bnb_cli::TensorPlan;

const char kBlobPrefix[] = ".quant_state.bitsandbytes__";
constexpr int64_t kNestedBlocksize = 256;

int usage_error(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "bnb %s: %s\nrun 'bnb %s --help' for usage\n", command.c_str(), message.c_str(), command.c_str());
  return 2;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const char* torch_dtype_name(const std::string& st) {
  return st == "F32" ? "float32" : st == "F16" ? "float16" : st == "BF16" ? "bfloat16" : "?";
}

int32_t bnb_dtype_of(const std::string& st) { return st == "F32" ? BNB_F32 : st == "F16" ? BNB_F16 : BNB_BF16; }

// A double as Python's repr() prints it (what json.dumps writes): the shortest digits that read
// back to the same value, positional for exponents -4..15 and scientific with a 2-digit exponent
// otherwise.
std::string python_float(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  std::string out;
  if (s[0] == '-') {
    out = "-";
    s.erase(0, 1);
  }
  const size_t e = s.find('e');
  const int exp = std::atoi(s.c_str() + e + 1);
  std::string digits;
  for (size_t i = 0; i < e; ++i)
    if (s[i] != '.') digits += s[i];
  if (exp >= -4 && exp < 16) {
    if (exp < 0) return out + "0." + std::string(size_t(-exp - 1), '0') + digits;
    const size_t whole = size_t(exp) + 1;
    if (digits.size() <= whole) return out + digits + std::string(whole - digits.size(), '0') + ".0";
    return out + digits.substr(0, whole) + "." + digits.substr(whole);
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char ebuf[16];
  std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return out + ebuf;
}

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b < 1024) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  else if (b < (1u << 20)) std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else if (b < (1u << 30)) std::snprintf(buf, sizeof buf, "%.1f MiB", b / 1048576.0);
  else std::snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  return buf;
}

// ------------------------------------------------------------------------------------------ inspect

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
  if (packed->dtype != "U8" || packed->bytes() != uint64_t((n + 1) / 2))
    problem("packed weight is " + packed->dtype + " " + std::to_string(packed->bytes()) + " bytes, expected U8 " +
            std::to_string((n + 1) / 2) + " for shape " + bnb_cli::shape_string(shape));
  const bool nested = qs.contains("nested_blocksize");
  const int64_t nb = (n + bs - 1) / bs;
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
  if (nested) {
    const int64_t bs2 = qs["nested_blocksize"].is_number_integer() ? qs["nested_blocksize"].get<int64_t>() : 0;
    const Tensor* a2 = f.find(w + ".nested_absmax");
    if (bs2 <= 0) problem("nested_blocksize is not a positive integer");
    else if (a2 == nullptr || a2->dtype != "F32" || a2->numel() != (nb + bs2 - 1) / bs2)
      problem("nested_absmax missing or not F32 [" + std::to_string((nb + bs2 - 1) / bs2) + "]");
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

// ------------------------------------------------------------------------------------------ quantize

const char kQuantizeUsage[] =
    "usage: bnb quantize IN.safetensors OUT.safetensors --to nf4|fp4 [OPTIONS]\n"
    "Quantizes every 2-D F32/F16/BF16 tensor whose name ends in '.weight' into the keys and packing\n"
    "transformers saves for bitsandbytes 4-bit models; every other tensor is copied unchanged.\n"
    "  --to nf4|fp4        the 4-bit format (required)\n"
    "  --blocksize N       elements per absmax block: 32, 64 (default), 128, ... 4096\n"
    "  --double-quant      quantize the absmax values too (nested, blocks of 256)\n"
    "  --skip PATTERN      leave weights whose name contains PATTERN unquantized (repeatable; the\n"
    "                      defaults 'lm_head' and 'embed' always apply)\n"
    "  --strict            a 2-D '.weight' of another dtype is an error instead of being copied\n"
    "  --threads N         CPU threads (default: $BNB_NUM_THREADS, else every core)\n"
    "OUT is written under a temporary name and renamed when complete; OUT may not be IN.\n";

struct QuantizeOptions {
  std::string in, out;
  int32_t quant_type = 0;
  std::string type_name;
  int64_t blocksize = 64;
  bool nested = false;
  bool strict = false;
  int32_t threads = 0;  // 0: $BNB_NUM_THREADS, else every core
  std::vector<std::string> skip = {"lm_head", "embed"};
};

// Returns 0 and fills `o`, or the exit status of a usage error.
int parse_quantize(const std::vector<std::string>& args, QuantizeOptions& o) {
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i], value;
    const size_t eq = a.find('=');
    const bool has_eq = a.rfind("--", 0) == 0 && eq != std::string::npos;
    if (has_eq) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    auto take = [&](std::string& v) {
      if (has_eq) return v = value, true;
      if (i + 1 >= args.size()) return false;
      v = args[++i];
      return true;
    };
    if (a == "--to" || a == "--blocksize" || a == "--skip" || a == "--threads") {
      std::string v;
      if (!take(v)) return usage_error("quantize", a + " needs a value");
      if (a == "--to") {
        if (v == "nf4") o.quant_type = BNB_NF4;
        else if (v == "fp4") o.quant_type = BNB_FP4;
        else if (v == "int8") return usage_error("quantize", "--to int8 is not supported yet: use nf4 or fp4");
        else return usage_error("quantize", "--to '" + v + "' is not one of nf4, fp4");
        o.type_name = v;
      } else if (a == "--blocksize") {
        char* end = nullptr;
        const long long b = std::strtoll(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || b < 32 || b > 4096 || (b & (b - 1)) != 0)
          return usage_error("quantize", "--blocksize '" + v + "' is not valid: use a power of two from 32 to 4096");
        o.blocksize = b;
      } else if (a == "--threads") {
        char* end = nullptr;
        const long long t = std::strtoll(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || t < 0 || t > 4096)
          return usage_error("quantize", "--threads '" + v + "' is not valid: use 0 (default) to 4096");
        o.threads = static_cast<int32_t>(t);
      } else {
        if (v.empty()) return usage_error("quantize", "--skip needs a non-empty pattern");
        o.skip.push_back(v);
      }
    } else if (a == "--double-quant" && !has_eq) {
      o.nested = true;
    } else if (a == "--strict" && !has_eq) {
      o.strict = true;
    } else if (a.rfind("--", 0) == 0) {
      return usage_error("quantize", "unknown argument '" + args[i] + "'");
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2)
    return usage_error("quantize", "needs IN and OUT (got " + std::to_string(positional.size()) + " file arguments)");
  if (o.quant_type == 0) return usage_error("quantize", "--to nf4|fp4 is required");
  o.in = positional[0];
  o.out = positional[1];
  return 0;
}

bool same_file(const std::string& a, const std::string& b) {
  if (a == b) return true;
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool skipped(const std::string& name, const std::vector<std::string>& patterns) {
  for (const std::string& p : patterns)
    if (name.find(p) != std::string::npos) return true;
  return false;
}

// The JSON text bitsandbytes packs into `quant_state.bitsandbytes__<type>` (json.dumps defaults,
// keys in QuantState.as_dict order).
std::string state_blob(const QuantizeOptions& o, const Tensor& t, const float* offset) {
  std::string s = "{\"quant_type\": \"" + o.type_name + "\", \"blocksize\": " + std::to_string(o.blocksize) +
                  ", \"dtype\": \"" + torch_dtype_name(t.dtype) + "\", \"shape\": [" + std::to_string(t.shape[0]) +
                  ", " + std::to_string(t.shape[1]) + "]";
  if (offset != nullptr)
    s += ", \"nested_blocksize\": " + std::to_string(kNestedBlocksize) +
         ", \"nested_dtype\": \"float32\", \"nested_offset\": " + python_float(static_cast<double>(*offset));
  return s + "}";
}

class Context {
 public:
  explicit Context(int32_t threads) {
    bnb_context_options_t opts;
    bnb_context_options_init(&opts);
    opts.backend = BNB_BACKEND_CPU;
    opts.num_threads = threads;
    if (bnb_context_create(&opts, &ctx_) != BNB_SUCCESS)
      throw std::runtime_error(std::string("cannot create a CPU context: ") + bnb_last_error_message());
  }
  ~Context() { bnb_context_destroy(ctx_); }
  bnb_context_t get() const { return ctx_; }

 private:
  bnb_context_t ctx_ = nullptr;
};

void check(bnb_status_t s, const std::string& what) {
  if (s != BNB_SUCCESS) throw std::runtime_error(what + ": " + bnb_status_string(s) + ": " + bnb_last_error_message());
}

int run_quantize_checked(const QuantizeOptions& o) {
  if (same_file(o.in, o.out)) return usage_error("quantize", "OUT '" + o.out + "' is the input file: choose another name");
  const SafetensorsFile in(o.in);
  for (const Tensor& t : in.tensors())
    if (t.name.find(kBlobPrefix) != std::string::npos || ends_with(t.name, ".SCB"))
      throw FileError(in.path() + ": tensor '" + t.name + "': the checkpoint is already quantized");

  // Decide what happens to each tensor and lay out the output before writing any of it.
  std::vector<bool> quantize(in.tensors().size(), false);
  std::vector<TensorPlan> plan;
  int64_t n_quantized = 0;
  for (size_t i = 0; i < in.tensors().size(); ++i) {
    const Tensor& t = in.tensors()[i];
    const bool candidate = ends_with(t.name, ".weight") && t.shape.size() == 2 && !skipped(t.name, o.skip);
    if (candidate && !is_float_dtype(t.dtype)) {
      if (o.strict)
        throw FileError(in.path() + ": tensor '" + t.name + "': dtype " + t.dtype +
                        " cannot be quantized (F32, F16 or BF16 only)");
      std::fprintf(stderr, "bnb quantize: %s: tensor '%s': dtype %s cannot be quantized, copied unchanged\n",
                   in.path().c_str(), t.name.c_str(), t.dtype.c_str());
    }
    if (!candidate || !is_float_dtype(t.dtype) || t.numel() == 0) {
      plan.push_back({t.name, t.dtype, t.shape, t.bytes()});
      continue;
    }
    quantize[i] = true;
    ++n_quantized;
    const int64_t n = t.numel(), nb = (n + o.blocksize - 1) / o.blocksize;
    plan.push_back({t.name, "U8", {(n + 1) / 2, 1}, uint64_t((n + 1) / 2)});
    plan.push_back({t.name + ".absmax", o.nested ? "U8" : "F32", {nb}, uint64_t(nb) * (o.nested ? 1 : 4)});
    plan.push_back({t.name + ".quant_map", "F32", {16}, 64});
    if (o.nested) {
      const int64_t nb2 = (nb + kNestedBlocksize - 1) / kNestedBlocksize;
      plan.push_back({t.name + ".nested_absmax", "F32", {nb2}, uint64_t(nb2) * 4});
      plan.push_back({t.name + ".nested_quant_map", "F32", {256}, 1024});
    }
    // The blob's length depends on the offset's digits: plan for the longest.
    const uint64_t blob_max = state_blob(o, t, nullptr).size() + 96;
    plan.push_back({t.name + kBlobPrefix + o.type_name, "U8", {int64_t(blob_max)}, blob_max});
  }
  std::set<std::string> names;
  for (const TensorPlan& p : plan)
    if (!names.insert(p.name).second)
      throw FileError(in.path() + ": tensor '" + p.name + "': the quantized output would hold this name twice");
  if (n_quantized == 0) std::fprintf(stderr, "bnb quantize: %s: no tensor to quantize, copying\n", in.path().c_str());

  Context ctx(o.threads);
  float quant_map[256], nested_map[256];
  int64_t count = 0;
  check(bnb_get_code_table(o.quant_type == BNB_NF4 ? BNB_CODE_NF4 : BNB_CODE_FP4, quant_map, &count), "code table");
  check(bnb_get_code_table(BNB_CODE_DYNAMIC_SIGNED, nested_map, &count), "code table");

  SafetensorsWriter out(o.out, SafetensorsWriter::header_bound(plan, in.metadata()));
  std::vector<std::pair<std::string, std::string>> blobs;  // written last: their size is known only then
  std::vector<uint8_t> staging, packed, absmax_q;
  std::vector<float> absmax, absmax2;
  for (size_t i = 0; i < in.tensors().size(); ++i) {
    const Tensor& t = in.tensors()[i];
    if (!quantize[i]) {
      out.add(t.name, t.dtype, t.shape, t.data, t.bytes());
      in.release(t);
      continue;
    }
    const int64_t n = t.numel(), nb = (n + o.blocksize - 1) / o.blocksize;
    // The mapping's offsets carry no alignment promise; the kernels get an aligned copy.
    staging.resize(t.bytes() + 64);
    uint8_t* aligned = staging.data() + (64 - reinterpret_cast<uintptr_t>(staging.data()) % 64) % 64;
    std::memcpy(aligned, t.data, t.bytes());
    in.release(t);
    packed.resize(size_t((n + 1) / 2));
    absmax.resize(size_t(nb));
    const std::string where = in.path() + ": tensor '" + t.name + "': ";
    check(bnb_quantize_4bit(ctx.get(), o.quant_type, bnb_dtype_of(t.dtype), aligned, n, o.blocksize, packed.data(),
                            absmax.data(), nullptr),
          where + "bnb_quantize_4bit");
    out.add(t.name, "U8", {(n + 1) / 2, 1}, packed.data(), packed.size());
    float offset = 0.0f;
    if (o.nested) {
      const int64_t nb2 = (nb + kNestedBlocksize - 1) / kNestedBlocksize;
      absmax_q.resize(size_t(nb));
      absmax2.resize(size_t(nb2));
      check(bnb_compress_absmax(ctx.get(), absmax.data(), nb, absmax_q.data(), absmax2.data(), &offset, nullptr),
            where + "bnb_compress_absmax");
      out.add(t.name + ".absmax", "U8", {nb}, absmax_q.data(), absmax_q.size());
      out.add(t.name + ".quant_map", "F32", {16}, quant_map, 64);
      out.add(t.name + ".nested_absmax", "F32", {nb2}, absmax2.data(), absmax2.size() * 4);
      out.add(t.name + ".nested_quant_map", "F32", {256}, nested_map, 1024);
    } else {
      out.add(t.name + ".absmax", "F32", {nb}, absmax.data(), absmax.size() * 4);
      out.add(t.name + ".quant_map", "F32", {16}, quant_map, 64);
    }
    blobs.emplace_back(t.name + kBlobPrefix + o.type_name, state_blob(o, t, o.nested ? &offset : nullptr));
  }
  for (const auto& b : blobs) out.add(b.first, "U8", {int64_t(b.second.size())}, b.second.data(), b.second.size());
  out.finish(in.metadata());
  std::printf("%s: %lld of %zu tensors quantized to %s (blocksize %lld%s), %s read, %s written\n", o.out.c_str(),
              static_cast<long long>(n_quantized), in.tensors().size(), o.type_name.c_str(),
              static_cast<long long>(o.blocksize), o.nested ? ", double quant" : "",
              human_bytes(in.file_size()).c_str(), human_bytes(out.data_bytes()).c_str());
  return 0;
}

}  // namespace

int run_inspect(const std::vector<std::string>& args) { return inspect_command(args); }

int run_quantize(const std::vector<std::string>& args) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::printf("%s", kQuantizeUsage);
    return 0;
  }
  QuantizeOptions o;
  if (const int rc = parse_quantize(args, o)) return rc;
  try {
    return run_quantize_checked(o);
  } catch (const std::exception& e) {  // FileError and library failures; the writer has removed its file
    std::fprintf(stderr, "bnb quantize: %s\n", e.what());
    return 1;
  }
}
