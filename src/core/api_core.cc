// Entry points: version, status and errors, backends, contexts, code tables, backend memory.
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "context.h"
#include "optim_traits.h"
#include "tables.h"

using namespace bnb;

namespace {

void copy_string(char* dst, size_t cap, const std::string& src) {
  const size_t n = std::min(cap - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

// The environment a context reads. Every variable is checked on every bnb_context_create, so an
// invalid value is an error whichever backend is chosen.
struct Environment {
  int32_t backend = BNB_BACKEND_AUTO;  // $BNB_BACKEND; AUTO when unset, empty or "auto"
  std::string backend_origin = "BNB_BACKEND unset";
  int32_t num_threads = 0;             // $BNB_NUM_THREADS; 0 when unset or empty
  bool check_finite = false;           // $BNB_CHECK_FINITE; off when unset or empty
};

bnb_status_t read_environment(Environment* env) {
  int level = 0;
  const char* log = std::getenv("BNB_LOG_LEVEL");
  if (!parse_log_level(log, &level))
    return failf(BNB_ERR_INVALID_ARGUMENT,
                 "BNB_LOG_LEVEL=%s is not valid: use 0 (quiet), 1 (errors), 2 (loading decisions) or 3 (debug)",
                 log);

  if (const char* text = std::getenv("BNB_BACKEND"); text != nullptr && *text != '\0') {
    const std::string value = text;
    env->backend_origin = "BNB_BACKEND=" + value;
    if (value == "cpu") env->backend = BNB_BACKEND_CPU;
    else if (value == "cuda") env->backend = BNB_BACKEND_CUDA;
    else if (value == "hip") env->backend = BNB_BACKEND_HIP;
    else if (value != "auto")
      return failf(BNB_ERR_INVALID_ARGUMENT, "BNB_BACKEND=%s is not valid: use auto, cpu, cuda or hip (lower case)",
                   text);
  }

  if (const char* text = std::getenv("BNB_NUM_THREADS"); text != nullptr && *text != '\0') {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(text, &end, 10);
    if (*text < '0' || *text > '9' || *end != '\0' || errno != 0 || v < 1 || v > kMaxThreads)
      return failf(BNB_ERR_INVALID_ARGUMENT,
                   "BNB_NUM_THREADS=%s is not valid: use a whole number from 1 to %d (unset = all cores)", text,
                   kMaxThreads);
    env->num_threads = static_cast<int32_t>(v);
  }

  if (const char* text = std::getenv("BNB_CHECK_FINITE"); text != nullptr && *text != '\0') {
    if (std::strcmp(text, "0") != 0 && std::strcmp(text, "1") != 0)
      return failf(BNB_ERR_INVALID_ARGUMENT,
                   "BNB_CHECK_FINITE=%s is not valid: use 1 (scan float inputs for NaN and infinity) or 0 (unset = "
                   "0)",
                   text);
    env->check_finite = text[0] == '1';
  }
  return BNB_SUCCESS;
}

// The best available backend: highest score, ties to the lower kind (cpu first).
const Backend* best_backend() {
  const Backend* best = nullptr;
  for (const Backend& b : backends())
    if (b.available() && (best == nullptr || b.score > best->score)) best = &b;
  return best;
}

}  // namespace

extern "C" {

BNB_API int32_t bnb_version_number(void) { return BNB_VERSION_NUMBER; }

BNB_API const char* bnb_version_string(void) {
#define BNB_STR2(x) #x
#define BNB_STR(x) BNB_STR2(x)
  return BNB_STR(BNB_VERSION_MAJOR) "." BNB_STR(BNB_VERSION_MINOR) "." BNB_STR(BNB_VERSION_PATCH);
}

BNB_API const char* bnb_status_string(bnb_status_t status) {
  // A C caller may pass any 32-bit value; C++ may assume an enum holds only values in its range
  // (so even a switch on a negative one is undefined). Read the bits as an integer instead.
  static_assert(sizeof(bnb_status_t) == sizeof(int32_t), "BNB_STATUS_FORCE_32BIT keeps the enum 32 bits wide");
  int32_t value = 0;
  std::memcpy(&value, &status, sizeof value);
  switch (value) {
    case BNB_SUCCESS: return "BNB_SUCCESS";
    case BNB_ERR_INVALID_ARGUMENT: return "BNB_ERR_INVALID_ARGUMENT";
    case BNB_ERR_NOT_SUPPORTED: return "BNB_ERR_NOT_SUPPORTED";
    case BNB_ERR_OUT_OF_MEMORY: return "BNB_ERR_OUT_OF_MEMORY";
    case BNB_ERR_BACKEND_UNAVAILABLE: return "BNB_ERR_BACKEND_UNAVAILABLE";
    case BNB_ERR_DEVICE: return "BNB_ERR_DEVICE";
    case BNB_ERR_INTERNAL: return "BNB_ERR_INTERNAL";
    default: return "BNB_ERR_UNKNOWN_STATUS";
  }
}

BNB_API const char* bnb_last_error_message(void) { return last_error(); }

BNB_API bnb_status_t bnb_backend_count(int32_t* count) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_not_null(count, "count"));
  *count = static_cast<int32_t>(backends().size());
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_backend_get_info(int32_t index, bnb_backend_info_t* info) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_not_null(info, "info"));
  if (info->struct_size < sizeof(bnb_backend_info_t))
    return failf(BNB_ERR_INVALID_ARGUMENT, "info->struct_size %u is smaller than sizeof(bnb_backend_info_t) = %zu",
                 info->struct_size, sizeof(bnb_backend_info_t));
  const auto& list = backends();
  if (index < 0 || static_cast<size_t>(index) >= list.size())
    return failf(BNB_ERR_INVALID_ARGUMENT, "index %d is out of range: there are %zu backends", index, list.size());
  const Backend& b = list[static_cast<size_t>(index)];
  info->kind = b.kind;
  copy_string(info->name, sizeof info->name, b.name);
  info->available = b.available() ? 1 : 0;
  info->device_count = b.available() ? b.device_count : 0;
  copy_string(info->detail, sizeof info->detail, b.detail);
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_backend_get_capabilities(int32_t index, bnb_backend_capabilities_t* caps) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_not_null(caps, "caps"));
  if (caps->struct_size < sizeof(bnb_backend_capabilities_t))
    return failf(BNB_ERR_INVALID_ARGUMENT,
                 "caps->struct_size %u is smaller than sizeof(bnb_backend_capabilities_t) = %zu", caps->struct_size,
                 sizeof(bnb_backend_capabilities_t));
  const auto& list = backends();
  if (index < 0 || static_cast<size_t>(index) >= list.size())
    return failf(BNB_ERR_INVALID_ARGUMENT, "index %d is out of range: there are %zu backends", index, list.size());
  const Backend& b = list[static_cast<size_t>(index)];
  if (!b.available())
    return failf(BNB_ERR_BACKEND_UNAVAILABLE, "backend %s is unavailable: %s", b.name.c_str(), b.detail.c_str());
  bnb_backend_capabilities_t c{};
  c.struct_size = sizeof c;
  c.kind = b.kind;
  for (int32_t op = BNB_OP_QUANTIZE_BLOCKWISE; op < kOpEnd; ++op)
    if (backend_offers(b, op)) c.ops |= uint64_t{1} << op;
  const auto offers = [&](int32_t op) { return (c.ops >> op & 1) != 0; };
  c.float_dtypes = 1u << BNB_F32 | 1u << BNB_F16 | 1u << BNB_BF16;
  if (offers(BNB_OP_QUANTIZE_4BIT) || offers(BNB_OP_DEQUANTIZE_4BIT) || offers(BNB_OP_GEMM_4BIT))
    c.quant_types = 1u << BNB_FP4 | 1u << BNB_NF4;
  if (offers(BNB_OP_OPTIMIZER_UPDATE)) {
    for (int32_t opt = 1; opt <= kOptimCount; ++opt) c.optimizers |= 1u << opt;
    c.optimizer_state_bits = uint64_t{1} << 8 | uint64_t{1} << 32;
  }
  c.device_count = b.device_count;
  c.max_elements = kMaxElements;
  c.blocksize_8bit_min = kBlocksize8Min;
  c.blocksize_8bit_max = kBlocksize8Max;
  c.blocksize_4bit_min = kBlocksize4Min;
  c.blocksize_4bit_max = kBlocksize4Max;
  c.int8_max_k = kInt8MaxK;
  c.optimizer_block = kOptimBlock;
  c.optimizer_max_step = b.ops.optimizer_max_step > 0 ? b.ops.optimizer_max_step : INT64_MAX;
  std::memcpy(caps, &c, sizeof c);
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_context_options_init(bnb_context_options_t* options) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_not_null(options, "options"));
  std::memset(options, 0, sizeof *options);
  options->struct_size = sizeof *options;
  options->backend = BNB_BACKEND_AUTO;
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_context_create(const bnb_context_options_t* options, bnb_context_t* ctx) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_not_null(ctx, "ctx"));
  *ctx = nullptr;
  bnb_context_options_t opts;
  bnb_context_options_init(&opts);
  if (options != nullptr) {
    // The struct as first published ended at num_threads; fields appended since keep their
    // defaults for a caller built against it.
    constexpr size_t first_size = offsetof(bnb_context_options_t, num_threads) + sizeof(int32_t);
    if (options->struct_size < first_size)
      return failf(BNB_ERR_INVALID_ARGUMENT,
                   "options->struct_size %u is too small (at least %zu; sizeof(bnb_context_options_t) = %zu): "
                   "call bnb_context_options_init first",
                   options->struct_size, first_size, sizeof(bnb_context_options_t));
    std::memcpy(&opts, options, std::min<size_t>(options->struct_size, sizeof opts));
    opts.struct_size = sizeof opts;
  }
  if (opts.backend < BNB_BACKEND_AUTO || opts.backend > BNB_BACKEND_HIP)
    return failf(BNB_ERR_INVALID_ARGUMENT, "options->backend %d is not a bnb_backend_kind_t", opts.backend);
  if (opts.device < 0) return failf(BNB_ERR_INVALID_ARGUMENT, "options->device %d is negative", opts.device);
  if (opts.num_threads < 0 || opts.num_threads > kMaxThreads)
    return failf(BNB_ERR_INVALID_ARGUMENT, "options->num_threads %d is not valid: use 0 (default) to %d",
                 opts.num_threads, kMaxThreads);
  if (opts.check_finite < -1 || opts.check_finite > 1)
    return failf(BNB_ERR_INVALID_ARGUMENT,
                 "options->check_finite %d is not valid: use 1 (on), -1 (off) or 0 ($BNB_CHECK_FINITE)",
                 opts.check_finite);
  Environment env;
  BNB_CHECK(read_environment(&env));
  if (opts.num_threads == 0) opts.num_threads = env.num_threads;
  const bool check_finite = opts.check_finite == 0 ? env.check_finite : opts.check_finite == 1;

  int32_t kind = opts.backend;
  std::string origin = "options->backend";
  if (kind == BNB_BACKEND_AUTO) {
    kind = env.backend;
    origin = env.backend_origin;
  }
  const Backend* backend = nullptr;
  if (kind == BNB_BACKEND_AUTO) {
    backend = best_backend();
    if (backend == nullptr) {
      std::string why;
      for (const Backend& b : backends()) why += "; " + b.name + ": " + b.detail;
      return fail(BNB_ERR_BACKEND_UNAVAILABLE, "no backend is available" + why);
    }
  } else {
    // An explicit choice never falls back to another backend.
    backend = find_backend(kind);
    if (backend == nullptr || !backend->available())
      return failf(BNB_ERR_BACKEND_UNAVAILABLE, "backend %s (%s) is unavailable: %s", backend_name(kind),
                   origin.c_str(), backend ? backend->detail.c_str() : "unknown backend");
  }
  if (backend->kind != BNB_BACKEND_CPU && opts.device >= backend->device_count)
    return failf(BNB_ERR_INVALID_ARGUMENT, "options->device %d is out of range: %s has %d device(s)", opts.device,
                 backend->name.c_str(), backend->device_count);
  logf(2, "context: backend %s device %d (%s)", backend->name.c_str(), opts.device, origin.c_str());

  void* impl = nullptr;
  BNB_CHECK(backend->ops.context_create(&opts, &impl));
  auto* c = new (std::nothrow) bnb_context;
  if (c == nullptr) {
    backend->ops.context_destroy(impl);
    return fail(BNB_ERR_OUT_OF_MEMORY, "out of host memory creating the context");
  }
  c->backend = backend;
  c->impl = impl;
  c->kind = backend->kind;
  c->device = backend->kind == BNB_BACKEND_CPU ? 0 : opts.device;
  c->check_finite = check_finite;
  *ctx = c;
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_context_destroy(bnb_context_t ctx) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  ctx->backend->ops.context_destroy(ctx->impl);
  ctx->magic = 0;
  delete ctx;
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_context_get_backend(bnb_context_t ctx, int32_t* kind, int32_t* device) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  if (kind == nullptr && device == nullptr) return fail(BNB_ERR_INVALID_ARGUMENT, "kind and device are both NULL");
  if (kind != nullptr) *kind = ctx->kind;
  if (device != nullptr) *device = ctx->device;
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_get_code_table(int32_t which, float* out, int64_t* count) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_not_null(out, "out"));
  BNB_CHECK(check_not_null(count, "count"));
  if (which < BNB_CODE_DYNAMIC_SIGNED || which > BNB_CODE_FP4)
    return failf(BNB_ERR_INVALID_ARGUMENT, "which %d is not a bnb_code_table_t (0..3)", which);
  *count = copy_code_table(which, out);
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_malloc(bnb_context_t ctx, int64_t bytes, void** ptr) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_not_null(ptr, "ptr"));
  *ptr = nullptr;
  BNB_CHECK(check_count(bytes, "bytes"));
  return ctx->backend->ops.mem_alloc(ctx->impl, bytes, ptr);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_free(bnb_context_t ctx, void* ptr) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  if (ptr == nullptr) return BNB_SUCCESS;
  forget_declared(ptr);
  return ctx->backend->ops.mem_free(ctx->impl, ptr);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_memcpy(bnb_context_t ctx, void* dst, const void* src, int64_t bytes, int32_t kind,
                                void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  if (kind < BNB_MEMCPY_HOST_TO_HOST || kind > BNB_MEMCPY_BACKEND_TO_BACKEND)
    return failf(BNB_ERR_INVALID_ARGUMENT, "kind %d is not a bnb_memcpy_kind_t (0..3)", kind);
  if (bytes < 0) return failf(BNB_ERR_INVALID_ARGUMENT, "bytes = %lld is negative", static_cast<long long>(bytes));
  if (bytes == 0) return BNB_SUCCESS;
  BNB_CHECK(check_not_null(dst, "dst"));
  BNB_CHECK(check_not_null(src, "src"));
  const bool dst_backend = kind == BNB_MEMCPY_HOST_TO_BACKEND || kind == BNB_MEMCPY_BACKEND_TO_BACKEND;
  const bool src_backend = kind == BNB_MEMCPY_BACKEND_TO_HOST || kind == BNB_MEMCPY_BACKEND_TO_BACKEND;
  BNB_CHECK(dst_backend ? check_memory(ctx, dst, "dst", 1, bytes) : check_declared(dst, "dst", 1, bytes));
  BNB_CHECK(src_backend ? check_memory(ctx, src, "src", 1, bytes) : check_declared(src, "src", 1, bytes));
  return ctx->backend->ops.mem_copy(ctx->impl, dst, src, bytes, kind, stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_synchronize(bnb_context_t ctx, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  return ctx->backend->ops.synchronize(ctx->impl, stream);
  BNB_API_GUARD_END
}

}  // extern "C"
