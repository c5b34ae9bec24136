// `bnb quantize IN OUT --to nf4|fp4|int8`: a safetensors checkpoint (one file, or a directory with
// model.safetensors.index.json) into the layout transformers saves for bitsandbytes models
// (docs/FORMATS.md §5.2-5.5), through the public C API. It streams: one tensor at a time from the
// memory-mapped input, so the memory it needs is about that of the largest tensor. Everything is
// checked and laid out before anything is written, and the output appears under its final name
// only when complete.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bnb.h"
#include "cli.h"
#include "convert_util.h"
#include "half.h"
#include "int_math.h"
#include "safetensors.h"

namespace {

using namespace bnb_cli;
using Json = nlohmann::ordered_json;

constexpr int64_t kNestedBlocksize = 256;
const char kIndexName[] = "model.safetensors.index.json";
const char kSingleName[] = "model.safetensors";

const char kQuantizeUsage[] =
    "usage: bnb quantize IN OUT --to nf4|fp4|int8 [OPTIONS]\n"
    "Quantizes every 2-D F32/F16/BF16 tensor whose name ends in '.weight' into the keys transformers\n"
    "saves for bitsandbytes models; every other tensor is copied unchanged. IN and OUT are each a\n"
    ".safetensors file, or a directory holding model.safetensors.index.json (shards) or\n"
    "model.safetensors; a directory OUT gets the same shards, a new index and every other file of\n"
    "IN (tokenizer, generation config). config.json, if IN has one (beside the file), is written to\n"
    "OUT with the quantization_config transformers reads.\n"
    "  --to nf4|fp4|int8   4-bit NF4 or FP4, or LLM.int8 (row-wise int8 of the fp16 weight) (required)\n"
    "  --blocksize N       4-bit: elements per absmax block: 32, 64 (default), 128, ... 4096\n"
    "  --double-quant      4-bit: quantize the absmax values too (nested, blocks of 256)\n"
    "  --compute-dtype T   4-bit: bnb_4bit_compute_dtype in the config: float32 (default), float16,\n"
    "                      bfloat16\n"
    "  --quant-storage T   4-bit: the dtype the packed bytes are stored as: uint8 (default), int8,\n"
    "                      float16, bfloat16, float32\n"
    "  --skip PATTERN      leave the modules PATTERN names unquantized (repeatable), matched as\n"
    "                      transformers matches llm_int8_skip_modules: a regular expression from the\n"
    "                      start of the module name to a '.' boundary, or a suffix. lm_head and\n"
    "                      embedding modules (a last name part containing 'embed') are always skipped\n"
    "  --strict            a 2-D '.weight' of another dtype is an error instead of being copied\n"
    "  --backend B         cpu (default), cuda, hip or auto (the best available)\n"
    "  --threads N         CPU threads (default: $BNB_NUM_THREADS, else every core)\n"
    "A progress line (tensors, bytes read and written, rate, time left) goes to stderr on a terminal.\n"
    "OUT is written under a temporary name and renamed when complete; OUT may not be IN.\n";

enum class Target { kNone, kNf4, kFp4, kInt8 };

struct StorageType {
  const char* torch_name;
  const char* st_dtype;
  int64_t size;
};
constexpr StorageType kStorageTypes[] = {
    {"uint8", "U8", 1}, {"int8", "I8", 1}, {"float16", "F16", 2}, {"bfloat16", "BF16", 2}, {"float32", "F32", 4}};
constexpr const char* kComputeDtypes[] = {"float32", "float16", "bfloat16"};

struct QuantizeOptions {
  std::string in, out;
  Target to = Target::kNone;
  std::string type_name;  // nf4, fp4, int8
  int64_t blocksize = 64;
  bool nested = false;
  bool strict = false;
  int32_t threads = 0;  // 0: $BNB_NUM_THREADS, else every core
  int32_t backend = BNB_BACKEND_CPU;
  std::string compute_dtype = "float32";
  StorageType storage = kStorageTypes[0];
  std::vector<std::string> skip;        // the user's patterns, as given
  std::vector<std::regex> skip_regex;   // the same, compiled
  bool four_bit() const { return to == Target::kNf4 || to == Target::kFp4; }
  int32_t quant_type() const { return to == Target::kNf4 ? BNB_NF4 : BNB_FP4; }
};

// ------------------------------------------------------------------------------------------ options

int parse_quantize(const std::vector<std::string>& args, QuantizeOptions& o) {
  std::vector<std::string> positional;
  const std::set<std::string> with_value = {"--to",          "--blocksize",     "--skip",    "--threads",
                                            "--compute-dtype", "--quant-storage", "--backend"};
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i], v;
    const size_t eq = a.find('=');
    const bool has_eq = a.rfind("--", 0) == 0 && eq != std::string::npos;
    if (has_eq) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    if (with_value.count(a)) {
      if (!has_eq) {
        if (i + 1 >= args.size()) return usage_error("quantize", a + " needs a value");
        v = args[++i];
      }
      char* end = nullptr;
      if (a == "--to") {
        if (v == "nf4") o.to = Target::kNf4;
        else if (v == "fp4") o.to = Target::kFp4;
        else if (v == "int8") o.to = Target::kInt8;
        else return usage_error("quantize", "--to '" + v + "' is not one of nf4, fp4, int8");
        o.type_name = v;
      } else if (a == "--blocksize") {
        const long long b = std::strtoll(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || b < 32 || b > 4096 || (b & (b - 1)) != 0)
          return usage_error("quantize", "--blocksize '" + v + "' is not valid: use a power of two from 32 to 4096");
        o.blocksize = b;
      } else if (a == "--threads") {
        const long long t = std::strtoll(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || t < 0 || t > 4096)
          return usage_error("quantize", "--threads '" + v + "' is not valid: use 0 (default) to 4096");
        o.threads = static_cast<int32_t>(t);
      } else if (a == "--compute-dtype") {
        if (std::find(std::begin(kComputeDtypes), std::end(kComputeDtypes), v) == std::end(kComputeDtypes))
          return usage_error("quantize", "--compute-dtype '" + v + "' is not one of float32, float16, bfloat16");
        o.compute_dtype = v;
      } else if (a == "--quant-storage") {
        const auto it = std::find_if(std::begin(kStorageTypes), std::end(kStorageTypes),
                                     [&](const StorageType& s) { return v == s.torch_name; });
        if (it == std::end(kStorageTypes))
          return usage_error("quantize", "--quant-storage '" + v + "' is not one of uint8, int8, float16, bfloat16, float32");
        o.storage = *it;
      } else if (a == "--backend") {
        if (v == "cpu") o.backend = BNB_BACKEND_CPU;
        else if (v == "cuda") o.backend = BNB_BACKEND_CUDA;
        else if (v == "hip") o.backend = BNB_BACKEND_HIP;
        else if (v == "auto") o.backend = BNB_BACKEND_AUTO;
        else return usage_error("quantize", "--backend '" + v + "' is not one of cpu, cuda, hip, auto");
      } else {  // --skip
        if (v.empty()) return usage_error("quantize", "--skip needs a non-empty pattern");
        try {
          o.skip_regex.emplace_back(v);
        } catch (const std::regex_error& e) {
          return usage_error("quantize", "--skip '" + v + "' is not a regular expression: " + e.what());
        }
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
  if (o.to == Target::kNone) return usage_error("quantize", "--to nf4|fp4|int8 is required");
  if (o.to == Target::kInt8 && (o.nested || o.storage.size != 1 || o.storage.st_dtype != std::string("U8")))
    return usage_error("quantize", "--double-quant and --quant-storage apply to nf4 and fp4 only");
  o.in = positional[0];
  o.out = positional[1];
  return 0;
}

// ------------------------------------------------------------------------------------------ what is quantized

// transformers' rule for llm_int8_skip_modules (quantizers_utils.should_convert_module): the
// pattern, as a regular expression, matches the module name from its start up to a '.' boundary
// (the match ends before a '.', at the end, or just after a '.'), or the name ends with it.
bool user_skipped(const std::string& module, const QuantizeOptions& o) {
  for (size_t k = 0; k < o.skip.size(); ++k) {
    if (ends_with(module, o.skip[k])) return true;
    for (size_t end = 1; end <= module.size(); ++end) {
      const bool boundary = end == module.size() || module[end] == '.' || module[end - 1] == '.';
      if (boundary && std::regex_match(module.begin(), module.begin() + long(end), o.skip_regex[k])) return true;
    }
  }
  return false;
}

// The modules transformers leaves unquantized by default: the output head and embeddings.
bool default_skipped(const std::string& module) {
  const std::string last = module.substr(module.rfind('.') + 1);
  return last == "lm_head" || last.find("embed") != std::string::npos;
}

bool is_candidate(const Tensor& t, const QuantizeOptions& o) {
  if (!ends_with(t.name, ".weight") || t.shape.size() != 2) return false;
  const std::string module = t.name.substr(0, t.name.size() - 7);
  return !default_skipped(module) && !user_skipped(module, o);
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

// The output entries of one quantized weight, in the order they are written.
void plan_quantized(const QuantizeOptions& o, const Tensor& t, std::vector<TensorPlan>& plan) {
  const int64_t n = t.numel();
  if (o.to == Target::kInt8) {
    plan.push_back({t.name, "I8", t.shape, uint64_t(n)});
    const std::string module = t.name.substr(0, t.name.size() - 7);
    plan.push_back({module + ".SCB", "F32", {t.shape[0]}, uint64_t(t.shape[0]) * 4});
    plan.push_back({t.name + "_format", "U8", {}, 1});
    return;
  }
  const int64_t nb = bnb::ceil_div(n, o.blocksize), packed = bnb::ceil_div(n, 2);
  plan.push_back({t.name, o.storage.st_dtype, {packed / o.storage.size, 1}, uint64_t(packed)});
  plan.push_back({t.name + ".absmax", o.nested ? "U8" : "F32", {nb}, uint64_t(nb) * (o.nested ? 1 : 4)});
  plan.push_back({t.name + ".quant_map", "F32", {16}, 64});
  if (o.nested) {
    const int64_t nb2 = bnb::ceil_div(nb, kNestedBlocksize);
    plan.push_back({t.name + ".nested_absmax", "F32", {nb2}, uint64_t(nb2) * 4});
    plan.push_back({t.name + ".nested_quant_map", "F32", {256}, 1024});
  }
  // The blob's length depends on the offset's digits: plan for the longest.
  const uint64_t blob_max = state_blob(o, t, nullptr).size() + 96;
  plan.push_back({t.name + kBlobPrefix + o.type_name, "U8", {int64_t(blob_max)}, blob_max});
}

// One input file and its output: what happens to each tensor, decided before anything is written.
struct Shard {
  std::string in_path, out_name;  // out_name: the file name in OUT's directory, or OUT itself
  std::unique_ptr<SafetensorsFile> file;
  std::vector<bool> quantize;
  std::vector<TensorPlan> plan;
  int64_t quantized = 0;
};

void plan_shard(const QuantizeOptions& o, Shard& s) {
  const SafetensorsFile& in = *s.file;
  for (const Tensor& t : in.tensors())
    if (t.name.find(kBlobPrefix) != std::string::npos || ends_with(t.name, ".SCB"))
      throw FileError(in.path() + ": tensor '" + t.name + "': the checkpoint is already quantized");
  s.quantize.assign(in.tensors().size(), false);
  for (size_t i = 0; i < in.tensors().size(); ++i) {
    const Tensor& t = in.tensors()[i];
    const bool candidate = is_candidate(t, o);
    if (candidate && !is_float_dtype(t.dtype)) {
      if (o.strict)
        throw FileError(in.path() + ": tensor '" + t.name + "': dtype " + t.dtype +
                        " cannot be quantized (F32, F16 or BF16 only)");
      std::fprintf(stderr, "bnb quantize: %s: tensor '%s': dtype %s cannot be quantized, copied unchanged\n",
                   in.path().c_str(), t.name.c_str(), t.dtype.c_str());
    }
    if (!candidate || !is_float_dtype(t.dtype) || t.numel() == 0) {
      s.plan.push_back({t.name, t.dtype, t.shape, t.bytes()});
      continue;
    }
    const int64_t packed = bnb::ceil_div(t.numel(), 2);
    if (o.four_bit() && packed % o.storage.size != 0)
      throw FileError(in.path() + ": tensor '" + t.name + "': its " + std::to_string(packed) +
                      " packed bytes do not fill whole " + o.storage.torch_name + " elements (--quant-storage)");
    s.quantize[i] = true;
    ++s.quantized;
    plan_quantized(o, t, s.plan);
  }
}

// ------------------------------------------------------------------------------------------ running the ops

void check(bnb_status_t s, const std::string& what) {
  if (s != BNB_SUCCESS) throw std::runtime_error(what + ": " + bnb_status_string(s) + ": " + bnb_last_error_message());
}

// A context and the buffers the ops read and write, in the context's backend memory. On the CPU
// these are aligned host buffers (the mapping's offsets carry no alignment promise); on a GPU,
// device buffers that grow to the largest tensor.
class Workspace {
 public:
  explicit Workspace(const QuantizeOptions& o) {
    bnb_context_options_t opts;
    bnb_context_options_init(&opts);
    opts.backend = o.backend;
    opts.num_threads = o.threads;
    if (bnb_context_create(&opts, &ctx_) != BNB_SUCCESS)
      throw std::runtime_error(std::string("cannot create a context for --backend: ") + bnb_last_error_message());
    int32_t device = 0;
    bnb_context_get_backend(ctx_, &kind_, &device);
  }
  ~Workspace() {
    for (Slot& s : slots_)
      if (s.ptr != nullptr) bnb_free(ctx_, s.ptr);
    bnb_context_destroy(ctx_);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  bnb_context_t ctx() const { return ctx_; }
  const char* backend_name() const {
    return kind_ == BNB_BACKEND_CUDA ? "cuda" : kind_ == BNB_BACKEND_HIP ? "hip" : "cpu";
  }
  // A backend buffer of at least `bytes` for slot `i` (its contents are not kept across growth).
  void* buffer(size_t i, size_t bytes) {
    if (slots_.size() <= i) slots_.resize(i + 1);
    Slot& s = slots_[i];
    if (s.bytes < bytes) {
      if (s.ptr != nullptr) bnb_free(ctx_, s.ptr);
      s.ptr = nullptr;
      s.bytes = 0;
      check(bnb_malloc(ctx_, int64_t(bytes), &s.ptr), "bnb_malloc of " + human_bytes(bytes));
      s.bytes = bytes;
    }
    return s.ptr;
  }
  // `bytes` of host data as the op's input: on the CPU the data itself when it is aligned to its
  // `element` size (docs/API.md; safetensors offsets usually are), else a copy in slot `i`.
  const void* upload(size_t i, const void* host, size_t bytes, size_t element) {
    if (kind_ == BNB_BACKEND_CPU && reinterpret_cast<uintptr_t>(host) % element == 0) return host;
    void* p = buffer(i, bytes);
    check(bnb_memcpy(ctx_, p, host, int64_t(bytes), BNB_MEMCPY_HOST_TO_BACKEND, nullptr), "bnb_memcpy");
    return p;
  }
  // Queues a copy of `count` elements to the host; the data is there after wait().
  template <typename T>
  void fetch(std::vector<T>& host, const void* p, size_t count) {
    host.resize(count);
    check(bnb_memcpy(ctx_, host.data(), p, int64_t(count * sizeof(T)), BNB_MEMCPY_BACKEND_TO_HOST, nullptr),
          "bnb_memcpy");
  }
  void wait() { check(bnb_synchronize(ctx_, nullptr), "bnb_synchronize"); }

 private:
  struct Slot {
    void* ptr = nullptr;
    size_t bytes = 0;
  };
  bnb_context_t ctx_ = nullptr;
  int32_t kind_ = BNB_BACKEND_CPU;
  std::vector<Slot> slots_;
};

int32_t bnb_dtype_of(const std::string& st) { return st == "F32" ? BNB_F32 : st == "F16" ? BNB_F16 : BNB_BF16; }

// The fp16 rounding of a float weight (LLM.int8 quantizes the weight as float16, as bitsandbytes'
// Int8Params does), as raw binary16. bf16 goes through a table of all 65536 patterns.
void to_f16(const Tensor& t, std::vector<uint16_t>& h) {
  h.resize(static_cast<size_t>(t.numel()));
  if (t.dtype == "F16") {
    std::memcpy(h.data(), t.data, t.bytes());
  } else if (t.dtype == "BF16") {
    static const std::vector<uint16_t> table = [] {
      std::vector<uint16_t> v(65536);
      for (uint32_t b = 0; b < 65536; ++b) v[b] = bnb::f32_to_f16(bnb::bf16_to_f32(static_cast<uint16_t>(b)));
      return v;
    }();
    for (size_t i = 0; i < h.size(); ++i) {
      uint16_t b;
      std::memcpy(&b, t.data + 2 * i, 2);
      h[i] = table[b];
    }
  } else {
    for (size_t i = 0; i < h.size(); ++i) {
      float f;
      std::memcpy(&f, t.data + 4 * i, 4);
      h[i] = bnb::f32_to_f16(f);
    }
  }
}

class Quantizer {
 public:
  explicit Quantizer(const QuantizeOptions& o) : o_(o), ws_(o) {
    int64_t count = 0;
    if (o.four_bit())
      check(bnb_get_code_table(o.quant_type() == BNB_NF4 ? BNB_CODE_NF4 : BNB_CODE_FP4, quant_map_, &count),
            "code table");
    check(bnb_get_code_table(BNB_CODE_DYNAMIC_SIGNED, nested_map_, &count), "code table");
  }
  const char* backend_name() const { return ws_.backend_name(); }

  // Quantizes `t` (whose pages the caller then releases) into `out`; the 4-bit state blob is
  // returned for the end of the file, where its final length is known.
  void run(const SafetensorsFile& in, const Tensor& t, SafetensorsWriter& out,
           std::vector<std::pair<std::string, std::string>>& blobs) {
    const std::string where = in.path() + ": tensor '" + t.name + "': ";
    const int64_t n = t.numel();
    if (o_.to == Target::kInt8) {
      to_f16(t, half_);
      const int64_t rows = t.shape[0], cols = t.shape[1];
      const void* a = ws_.upload(0, half_.data(), half_.size() * 2, 2);
      void* q = ws_.buffer(1, size_t(n));
      void* stats = ws_.buffer(2, size_t(rows) * 4);
      check(bnb_int8_vectorwise_quant(ws_.ctx(), BNB_F16, rows, cols, a, 0.0f, static_cast<int8_t*>(q),
                                      static_cast<float*>(stats), nullptr),
            where + "bnb_int8_vectorwise_quant");
      ws_.fetch(bytes_, q, size_t(n));
      ws_.fetch(absmax_, stats, size_t(rows));
      ws_.wait();
      const std::string module = t.name.substr(0, t.name.size() - 7);
      const uint8_t format = 0;  // row-major
      out.add(t.name, "I8", t.shape, bytes_.data(), bytes_.size());
      out.add(module + ".SCB", "F32", {rows}, absmax_.data(), absmax_.size() * 4);
      out.add(t.name + "_format", "U8", {}, &format, 1);
      return;
    }
    const int64_t nb = bnb::ceil_div(n, o_.blocksize), np = bnb::ceil_div(n, 2);
    const void* a = ws_.upload(0, t.data, t.bytes(), dtype_size(t.dtype));
    void* packed = ws_.buffer(1, size_t(np));
    void* absmax = ws_.buffer(2, size_t(nb) * 4);
    check(bnb_quantize_4bit(ws_.ctx(), o_.quant_type(), bnb_dtype_of(t.dtype), a, n, o_.blocksize,
                            static_cast<uint8_t*>(packed), static_cast<float*>(absmax), nullptr),
          where + "bnb_quantize_4bit");
    ws_.fetch(bytes_, packed, size_t(np));
    if (!o_.nested) {
      ws_.fetch(absmax_, absmax, size_t(nb));
      ws_.wait();
      out.add(t.name, o_.storage.st_dtype, {np / o_.storage.size, 1}, bytes_.data(), bytes_.size());
      out.add(t.name + ".absmax", "F32", {nb}, absmax_.data(), absmax_.size() * 4);
      out.add(t.name + ".quant_map", "F32", {16}, quant_map_, 64);
      blobs.emplace_back(t.name + kBlobPrefix + o_.type_name, state_blob(o_, t, nullptr));
      return;
    }
    const int64_t nb2 = bnb::ceil_div(nb, kNestedBlocksize);
    void* absmax_q = ws_.buffer(3, size_t(nb));
    void* absmax2 = ws_.buffer(4, size_t(nb2) * 4);
    void* offset = ws_.buffer(5, 4);
    check(bnb_compress_absmax(ws_.ctx(), static_cast<float*>(absmax), nb, static_cast<uint8_t*>(absmax_q),
                              static_cast<float*>(absmax2), static_cast<float*>(offset), nullptr),
          where + "bnb_compress_absmax");
    ws_.fetch(codes_, absmax_q, size_t(nb));
    ws_.fetch(absmax_, absmax2, size_t(nb2));
    std::vector<float> off;
    ws_.fetch(off, offset, 1);
    ws_.wait();
    out.add(t.name, o_.storage.st_dtype, {np / o_.storage.size, 1}, bytes_.data(), bytes_.size());
    out.add(t.name + ".absmax", "U8", {nb}, codes_.data(), codes_.size());
    out.add(t.name + ".quant_map", "F32", {16}, quant_map_, 64);
    out.add(t.name + ".nested_absmax", "F32", {nb2}, absmax_.data(), absmax_.size() * 4);
    out.add(t.name + ".nested_quant_map", "F32", {256}, nested_map_, 1024);
    blobs.emplace_back(t.name + kBlobPrefix + o_.type_name, state_blob(o_, t, off.data()));
  }

 private:
  const QuantizeOptions& o_;
  Workspace ws_;
  float quant_map_[256] = {}, nested_map_[256] = {};
  std::vector<uint8_t> bytes_, codes_;
  std::vector<uint16_t> half_;
  std::vector<float> absmax_;
};

// ------------------------------------------------------------------------------------------ progress

// One line on stderr, redrawn at most ten times a second, when stderr is a terminal.
class Progress {
 public:
  Progress(size_t tensors, uint64_t bytes)
      : enabled_(::isatty(STDERR_FILENO) == 1), tensors_(tensors), total_(bytes), start_(Clock::now()) {}
  void advance(uint64_t read, uint64_t written) {
    ++done_;
    read_ += read;
    written_ += written;
    const auto now = Clock::now();
    if (enabled_ && (done_ == tensors_ || now - last_ >= std::chrono::milliseconds(100))) {
      last_ = now;
      draw(done_ == tensors_);
    }
  }

 private:
  using Clock = std::chrono::steady_clock;
  void draw(bool final) {
    const double s = std::chrono::duration<double>(Clock::now() - start_).count();
    const double rate = s > 0 ? read_ / s : 0;
    const double left = rate > 0 && total_ > read_ ? (total_ - read_) / rate : 0;
    constexpr int kWidth = 24;
    const int filled = total_ > 0 ? int(kWidth * double(read_) / double(total_)) : kWidth;
    std::fprintf(stderr, "\r[%s%s] %zu/%zu tensors  %s of %s read  %s written  %.1f MB/s  %s %d:%02d \x1b[K",
                 std::string(size_t(filled), '#').c_str(), std::string(size_t(kWidth - filled), '.').c_str(), done_,
                 tensors_, human_bytes(read_).c_str(), human_bytes(total_).c_str(), human_bytes(written_).c_str(),
                 rate / 1e6, final ? "took" : "ETA", int(final ? s : left) / 60, int(final ? s : left) % 60);
    if (final) std::fputc('\n', stderr);
    std::fflush(stderr);
  }
  bool enabled_;
  size_t tensors_, done_ = 0;
  uint64_t total_, read_ = 0, written_ = 0;
  Clock::time_point start_, last_;
};

// ------------------------------------------------------------------------------------------ files and directories

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

bool same_file(const std::string& a, const std::string& b) {
  if (a == b) return true;
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

std::string dir_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw FileError(path + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Json read_json(const std::string& path) {
  try {
    return Json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    throw FileError(path + ": not valid JSON: " + e.what());
  }
}

// Writes `text` to `path` through a temporary name in the same directory.
void write_text(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << text;
    f.flush();
    if (!f) {
      ::unlink(tmp.c_str());
      throw FileError(tmp + ": write failed");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw FileError(path + ": cannot rename " + tmp + " into place");
  }
}

// BitsAndBytesConfig.to_dict() of the options, the quantization_config transformers reads.
Json quantization_config(const QuantizeOptions& o) {
  const bool int8 = o.to == Target::kInt8;
  Json c = Json::object();
  c["_load_in_4bit"] = !int8;
  c["_load_in_8bit"] = int8;
  c["bnb_4bit_compute_dtype"] = o.compute_dtype;
  c["bnb_4bit_quant_storage"] = o.storage.torch_name;
  c["bnb_4bit_quant_type"] = int8 ? "fp4" : o.type_name;
  c["bnb_4bit_use_double_quant"] = o.nested;
  c["llm_int8_enable_fp32_cpu_offload"] = false;
  c["llm_int8_has_fp16_weight"] = false;
  if (o.skip.empty()) {
    c["llm_int8_skip_modules"] = nullptr;  // transformers' default: the output head
  } else {
    Json skip = Json::array({"lm_head"});
    for (const std::string& p : o.skip) skip.push_back(p);
    c["llm_int8_skip_modules"] = skip;
  }
  c["llm_int8_threshold"] = 6.0;
  c["load_in_4bit"] = !int8;
  c["load_in_8bit"] = int8;
  c["quant_method"] = "bitsandbytes";
  return c;
}

// config.json with the quantization_config added (an existing one is an error: already quantized).
std::string quantized_config(const QuantizeOptions& o, const std::string& path) {
  Json config = read_json(path);
  if (!config.is_object()) throw FileError(path + ": not a JSON object");
  if (config.contains("quantization_config"))
    throw FileError(path + ": has a quantization_config already: the model is quantized");
  config["quantization_config"] = quantization_config(o);
  return config.dump(2) + "\n";
}

// The names in a directory except "." and "..", sorted; *opened tells whether it could be read.
std::vector<std::string> dir_entries(const std::string& dir, bool* opened) {
  std::vector<std::string> names;
  const auto d = std::unique_ptr<DIR, int (*)(DIR*)>(::opendir(dir.c_str()), ::closedir);
  *opened = d != nullptr;
  if (d)
    while (const dirent* e = ::readdir(d.get()))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
  std::sort(names.begin(), names.end());
  return names;
}

// Removes a directory this run made, with what is in it (one level: the run writes no subfolders).
void remove_dir(const std::string& dir) {
  bool opened = false;
  for (const std::string& n : dir_entries(dir, &opened)) ::unlink((dir + "/" + n).c_str());
  ::rmdir(dir.c_str());
}

// The visible names in a directory (no dot files), sorted.
std::vector<std::string> list_dir(const std::string& dir) {
  bool opened = false;
  std::vector<std::string> names = dir_entries(dir, &opened);
  if (!opened) throw FileError(dir + ": cannot open the directory");
  names.erase(std::remove_if(names.begin(), names.end(), [](const std::string& n) { return n[0] == '.'; }),
              names.end());
  return names;
}

// ------------------------------------------------------------------------------------------ the command

int run_quantize_checked(const QuantizeOptions& o) {
  if (same_file(o.in, o.out)) return usage_error("quantize", "OUT '" + o.out + "' is the input: choose another name");
  const bool dir_mode = is_dir(o.in);
  std::vector<Shard> shards;
  Json index;  // the input index, in directory mode with shards
  std::string config_in;
  std::vector<std::string> extra_files;  // copied unchanged in directory mode
  if (dir_mode) {
    if (exists(o.out) && !(is_dir(o.out) && list_dir(o.out).empty()))
      return usage_error("quantize", "OUT '" + o.out + "' exists: give a new or empty directory for a directory IN");
    const std::string index_path = o.in + "/" + kIndexName;
    std::vector<std::string> files;
    if (exists(index_path)) {
      index = read_json(index_path);
      if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
        throw FileError(index_path + ": has no weight_map object");
      std::set<std::string> seen;
      for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
        if (!it.value().is_string()) throw FileError(index_path + ": weight_map['" + it.key() + "'] is not a file name");
        const std::string f = it.value().get<std::string>();
        if (f.empty() || f.find('/') != std::string::npos || f[0] == '.')
          throw FileError(index_path + ": weight_map['" + it.key() + "'] = '" + f + "' is not a file in the directory");
        if (seen.insert(f).second) files.push_back(f);
      }
    } else if (exists(o.in + "/" + kSingleName)) {
      files.push_back(kSingleName);
    } else {
      throw FileError(o.in + ": a directory IN needs " + kIndexName + " or " + kSingleName);
    }
    for (const std::string& f : files) {
      Shard s;
      s.in_path = o.in + "/" + f;
      s.out_name = f;
      shards.push_back(std::move(s));
    }
    for (const std::string& name : list_dir(o.in)) {
      const std::string p = o.in + "/" + name;
      if (name == "config.json") config_in = p;
      else if (!ends_with(name, ".safetensors") && name != kIndexName && !is_dir(p)) extra_files.push_back(name);
    }
  } else {
    if (is_dir(o.out)) return usage_error("quantize", "OUT '" + o.out + "' is a directory: name the output file");
    Shard s;
    s.in_path = o.in;
    s.out_name = o.out;
    shards.push_back(std::move(s));
    const std::string beside = dir_of(o.in) + "/config.json";
    if (exists(beside)) {
      if (same_file(dir_of(o.in), dir_of(o.out)))
        std::fprintf(stderr, "bnb quantize: %s not written: OUT is in IN's directory (it would replace IN's config)\n",
                     beside.c_str());
      else config_in = beside;
    }
  }

  // Check and lay out everything before writing anything.
  std::set<std::string> names;
  size_t n_tensors = 0;
  uint64_t in_bytes = 0;
  int64_t n_quantized = 0;
  for (Shard& s : shards) {
    s.file = std::make_unique<SafetensorsFile>(s.in_path);
    plan_shard(o, s);
    for (const TensorPlan& p : s.plan)
      if (!names.insert(p.name).second)
        throw FileError(s.in_path + ": tensor '" + p.name + "': the quantized output would hold this name twice");
    n_tensors += s.file->tensors().size();
    in_bytes += s.file->file_size();
    n_quantized += s.quantized;
  }
  if (!index.is_null())
    for (const Shard& s : shards)
      for (const Tensor& t : s.file->tensors())
        if (!index["weight_map"].contains(t.name) || index["weight_map"][t.name] != s.out_name)
          throw FileError(s.in_path + ": tensor '" + t.name + "' is not listed for this file in " + kIndexName);
  const std::string config_text = config_in.empty() ? "" : quantized_config(o, config_in);
  if (n_quantized == 0) std::fprintf(stderr, "bnb quantize: %s: no tensor to quantize, copying\n", o.in.c_str());

  // In directory mode everything goes into a temporary directory renamed at the end.
  const std::string out_dir = dir_mode ? o.out + ".tmp." + std::to_string(::getpid()) : "";
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      if (!dir.empty()) remove_dir(dir);
    }
  } cleanup;
  if (dir_mode) {
    if (::mkdir(out_dir.c_str(), 0755) != 0) throw FileError(out_dir + ": cannot create the directory");
    cleanup.dir = out_dir;
  }

  Quantizer quantizer(o);
  Progress progress(n_tensors, in_bytes);
  Json weight_map = Json::object();
  uint64_t out_bytes = 0;
  for (Shard& s : shards) {
    const SafetensorsFile& in = *s.file;
    SafetensorsWriter out(dir_mode ? out_dir + "/" + s.out_name : s.out_name,
                          SafetensorsWriter::header_bound(s.plan, in.metadata()));
    std::vector<std::pair<std::string, std::string>> blobs;  // written last: their size is known only then
    for (size_t i = 0; i < in.tensors().size(); ++i) {
      const Tensor& t = in.tensors()[i];
      const uint64_t before = out.data_bytes();
      if (s.quantize[i]) quantizer.run(in, t, out, blobs);
      else out.add(t.name, t.dtype, t.shape, t.data, t.bytes());
      in.release(t);
      progress.advance(t.bytes(), out.data_bytes() - before);
    }
    for (const auto& b : blobs) out.add(b.first, "U8", {int64_t(b.second.size())}, b.second.data(), b.second.size());
    out.finish(in.metadata());
    out_bytes += out.data_bytes();
    for (const TensorPlan& p : s.plan) weight_map[p.name] = s.out_name;
  }

  if (dir_mode) {
    if (!index.is_null()) {
      Json out_index = index;
      out_index["metadata"] = index.contains("metadata") && index["metadata"].is_object() ? index["metadata"] : Json::object();
      out_index["metadata"]["total_size"] = out_bytes;
      out_index["weight_map"] = weight_map;
      write_text(out_dir + "/" + kIndexName, out_index.dump(2) + "\n");
    }
    if (!config_text.empty()) write_text(out_dir + "/config.json", config_text);
    for (const std::string& name : extra_files) write_text(out_dir + "/" + name, read_text(o.in + "/" + name));
    if (is_dir(o.out) && ::rmdir(o.out.c_str()) != 0) throw FileError(o.out + ": cannot replace the empty directory");
    if (std::rename(out_dir.c_str(), o.out.c_str()) != 0)
      throw FileError(o.out + ": cannot rename " + out_dir + " into place");
    cleanup.dir.clear();
  } else if (!config_text.empty()) {
    write_text(dir_of(o.out) + "/config.json", config_text);
  }
  std::printf("%s: %lld of %zu tensors quantized to %s", o.out.c_str(), static_cast<long long>(n_quantized), n_tensors,
              o.type_name.c_str());
  if (o.four_bit())
    std::printf(" (blocksize %lld%s%s)", static_cast<long long>(o.blocksize), o.nested ? ", double quant" : "",
                o.storage.size == 1 && o.storage.st_dtype == std::string("U8")
                    ? ""
                    : (std::string(", stored as ") + o.storage.torch_name).c_str());
  std::printf(" on %s, %zu file%s, %s read, %s written%s\n", quantizer.backend_name(), shards.size(),
              shards.size() == 1 ? "" : "s", human_bytes(in_bytes).c_str(), human_bytes(out_bytes).c_str(),
              config_text.empty() ? "" : ", config.json with quantization_config");
  return 0;
}

}  // namespace

int run_quantize(const std::vector<std::string>& args) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::printf("%s", kQuantizeUsage);
    return 0;
  }
  QuantizeOptions o;
  if (const int rc = parse_quantize(args, o)) return rc;
  try {
    return run_quantize_checked(o);
  } catch (const std::exception& e) {  // FileError and library failures; the writers have removed their files
    std::fprintf(stderr, "bnb quantize: %s\n", e.what());
    return 1;
  }
}
