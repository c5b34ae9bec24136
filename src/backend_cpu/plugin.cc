// The CPU backend plugin: the two exported symbols, the ops table, contexts and the ops every
// backend must offer. Families fill their own slots (plugin.h).
#include "plugin.h"

#include <cpu_features_macros.h>
#if defined(CPU_FEATURES_ARCH_X86)
#include <cpuinfo_x86.h>
#elif defined(CPU_FEATURES_ARCH_AARCH64)
#include <cpuinfo_aarch64.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>

#include "half.h"
#include "int8_kernels.h"
#include "int_math.h"
#include "onednn.h"
#include "quant_kernels.h"
#include "tables.h"

namespace bnb {
namespace cpu {
namespace {

std::atomic<const bnb_host_api_t*> g_host{nullptr};
std::string g_target_cap;    // BNB_CPU_MAX_TARGET as read at init ("" = none)
std::string g_target_error;  // why BNB_CPU_MAX_TARGET was refused ("" = it was not)

struct CodeTables {
  float dynamic_signed[256];
  float dynamic_unsigned[256];
  float nf4[16];
  float fp4[16];
  CodeTables() {
    copy_code_table(BNB_CODE_DYNAMIC_SIGNED, dynamic_signed);
    copy_code_table(BNB_CODE_DYNAMIC_UNSIGNED, dynamic_unsigned);
    copy_code_table(BNB_CODE_NF4, nf4);
    copy_code_table(BNB_CODE_FP4, fp4);
  }
};
const CodeTables g_code_tables;

// Threads of a context that asks for none: the core has already put a valid $BNB_NUM_THREADS
// into options->num_threads, so this is all cores.
int32_t default_num_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int32_t>(hw) : 1;
}

int32_t op_device_count(void) { return 1; }

// The CPU's name and the ISA extensions the kernels can use, for op_describe.
void host_cpu(std::string* brand, std::string* isa) {
  const auto add = [isa](int present, const char* name) {
    if (present) {
      if (!isa->empty()) *isa += ' ';
      *isa += name;
    }
  };
#if defined(CPU_FEATURES_ARCH_X86)
  const cpu_features::X86Info info = cpu_features::GetX86Info();
  const cpu_features::X86Features& f = info.features;
  add(f.sse4_2, "sse4.2");
  add(f.avx2, "avx2");
  add(f.fma3, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512vnni, "avx512vnni");
  add(f.avx512vbmi2, "avx512vbmi2");
  add(f.avx512_bf16, "avx512bf16");
  add(f.amx_tile, "amx");
  *brand = info.brand_string[0] != '\0' ? info.brand_string : "unknown x86 CPU";
#elif defined(CPU_FEATURES_ARCH_AARCH64)
  // Linux gives no model name on Arm: the implementer and part numbers of MIDR_EL1 stand for it.
  const cpu_features::Aarch64Info info = cpu_features::GetAarch64Info();
  const cpu_features::Aarch64Features& f = info.features;
  add(f.asimd, "neon");
  add(f.asimdhp, "fp16");
  add(f.asimddp, "dotprod");
  add(f.i8mm, "i8mm");
  add(f.bf16, "bf16");
  add(f.sve, "sve");
  add(f.sve2, "sve2");
  char name[64];
  std::snprintf(name, sizeof name, "aarch64 CPU (implementer 0x%02x, part 0x%03x)", info.implementer, info.part);
  *brand = name;
#else
  *brand = "unknown CPU";
#endif
}

void op_describe(char* buf, size_t cap) {
  if (buf == nullptr || cap == 0) return;
  std::string brand, isa;
  host_cpu(&brand, &isa);
  std::string simd = chosen_target_name();
  if (!g_target_cap.empty()) simd += " (capped by BNB_CPU_MAX_TARGET=" + g_target_cap + ")";
  if (!g_target_error.empty()) simd += " (" + g_target_error + ")";
  std::snprintf(buf, cap, "%s; isa: %s; simd: %s; compiled: %s; cores: %d; onednn: %s", brand.c_str(), isa.c_str(),
                simd.c_str(), compiled_target_names().c_str(), default_num_threads(), onednn_description());
}

bnb_status_t op_context_create(const bnb_context_options_t* options, void** impl) {
  // An invalid cap is refused when a context is made (the plugin itself loads regardless, so
  // bnb_backend_get_info still describes it).
  if (!g_target_error.empty()) return fail(BNB_ERR_INVALID_ARGUMENT, g_target_error.c_str());
  int32_t threads = options != nullptr ? options->num_threads : 0;
  if (threads <= 0) threads = default_num_threads();
  try {
    *impl = new Context(threads);
  } catch (const std::bad_alloc&) {
    return fail(BNB_ERR_OUT_OF_MEMORY, "context_create: out of host memory for the thread pool");
  } catch (const std::system_error& e) {
    // EAGAIN (a thread or memory limit) is a resource shortage; anything else is unexpected.
    const bool resources = e.code() == std::errc::resource_unavailable_try_again ||
                           e.code() == std::errc::not_enough_memory;
    const std::string msg = "context_create: cannot start the " + std::to_string(threads - 1) +
                            " worker threads of num_threads = " + std::to_string(threads) + " (" + e.what() +
                            "): ask for fewer with options->num_threads or BNB_NUM_THREADS";
    return fail(resources ? BNB_ERR_OUT_OF_MEMORY : BNB_ERR_INTERNAL, msg.c_str());
  }
  return BNB_SUCCESS;
}

void op_context_destroy(void* impl) { delete context_of(impl); }

const float* op_default_code(void* /*impl*/, int32_t which) {
  switch (which) {
    case BNB_CODE_DYNAMIC_SIGNED: return g_code_tables.dynamic_signed;
    case BNB_CODE_DYNAMIC_UNSIGNED: return g_code_tables.dynamic_unsigned;
    case BNB_CODE_NF4: return g_code_tables.nf4;
    case BNB_CODE_FP4: return g_code_tables.fp4;
    default: return nullptr;
  }
}

bnb_status_t op_mem_alloc(void* /*impl*/, int64_t bytes, void** ptr) {
  const size_t size = (static_cast<size_t>(bytes) + 63) / 64 * 64;  // aligned_alloc wants a multiple
  *ptr = std::aligned_alloc(64, size == 0 ? 64 : size);
  if (*ptr == nullptr) return fail(BNB_ERR_OUT_OF_MEMORY, "mem_alloc: out of host memory");
  return BNB_SUCCESS;
}

bnb_status_t op_mem_free(void* /*impl*/, void* ptr) {
  std::free(ptr);
  return BNB_SUCCESS;
}

bnb_status_t op_mem_copy(void* /*impl*/, void* dst, const void* src, int64_t bytes, int32_t /*kind*/,
                         void* /*stream*/) {
  if (bytes > 0) std::memmove(dst, src, static_cast<size_t>(bytes));
  return BNB_SUCCESS;
}

bnb_status_t op_synchronize(void* /*impl*/, void* /*stream*/) { return BNB_SUCCESS; }

// Index of the first element of x[begin, end) whose exponent bits are all ones, or -1. The
// whole-chunk OR test has no early exit, so the compiler vectorises it; only a chunk that holds
// one is searched element by element.
template <typename Bits>
int64_t first_nonfinite_in(const Bits* x, int64_t begin, int64_t end, Bits mask) {
  constexpr int64_t kStep = 1024;
  for (int64_t i = begin; i < end; i += kStep) {
    const int64_t stop = std::min(end, i + kStep);
    bool any = false;
    for (int64_t j = i; j < stop; ++j) any |= (x[j] & mask) == mask;
    if (!any) continue;
    for (int64_t j = i; j < stop; ++j)
      if ((x[j] & mask) == mask) return j;
  }
  return -1;
}

template <typename Bits>
int64_t first_nonfinite(Context& ctx, const void* data, int64_t n, Bits mask) {
  const auto* x = static_cast<const Bits*>(data);
  constexpr int64_t kChunk = INT64_C(1) << 16;
  const int64_t chunks = ceil_div(n, kChunk);
  std::atomic<int64_t> first{INT64_MAX};
  ctx.pool.run(chunks, [&](int64_t c) {
    const int64_t begin = c * kChunk;
    if (begin >= first.load(std::memory_order_relaxed)) return;  // an earlier chunk has one
    const int64_t found = first_nonfinite_in(x, begin, std::min(n, begin + kChunk), mask);
    int64_t seen = first.load(std::memory_order_relaxed);
    while (found >= 0 && found < seen && !first.compare_exchange_weak(seen, found)) {
    }
  });
  const int64_t result = first.load();
  return result == INT64_MAX ? -1 : result;
}

bnb_status_t op_find_nonfinite(void* impl, int32_t dtype, const void* x, int64_t n, int64_t* first,
                               void* /*stream*/) {
  Context& ctx = *context_of(impl);
  switch (dtype) {
    case BNB_F32: *first = first_nonfinite<uint32_t>(ctx, x, n, kF32ExponentMask); break;
    case BNB_F16: *first = first_nonfinite<uint16_t>(ctx, x, n, kF16ExponentMask); break;
    default: *first = first_nonfinite<uint16_t>(ctx, x, n, kBF16ExponentMask); break;
  }
  return BNB_SUCCESS;
}

bnb_backend_ops_t make_ops() {
  bnb_backend_ops_t ops;
  std::memset(&ops, 0, sizeof ops);
  ops.struct_size = sizeof(bnb_backend_ops_t);
  ops.abi_version = BNB_BACKEND_ABI_VERSION;
  ops.kind = BNB_BACKEND_CPU;
  ops.name = "cpu";
  ops.device_count = op_device_count;
  ops.describe = op_describe;
  ops.pointer_kind = nullptr;
  ops.context_create = op_context_create;
  ops.context_destroy = op_context_destroy;
  ops.default_code = op_default_code;
  ops.mem_alloc = op_mem_alloc;
  ops.mem_free = op_mem_free;
  ops.mem_copy = op_mem_copy;
  ops.synchronize = op_synchronize;
  ops.find_nonfinite = op_find_nonfinite;
  register_quant_ops(&ops);
  register_gemm4_ops(&ops);
  register_int8_ops(&ops);
  register_optim_ops(&ops);
  return ops;
}

void apply_target_cap() {
  const char* cap = std::getenv("BNB_CPU_MAX_TARGET");
  if (cap == nullptr || *cap == '\0') return;
  if (cap_target(cap)) {
    g_target_cap = cap;
    return;
  }
  g_target_error = std::string("BNB_CPU_MAX_TARGET=") + cap + " is not valid: use " + cap_target_names() +
                   " (unset = the best target of this CPU)";
  if (const bnb_host_api_t* h = g_host.load()) h->log(1, ("cpu: " + g_target_error).c_str());
}

}  // namespace

const bnb_host_api_t* host() { return g_host.load(); }

bnb_status_t fail(bnb_status_t status, const char* message) {
  const bnb_host_api_t* h = g_host.load();
  return h != nullptr && h->fail != nullptr ? h->fail(status, message) : status;
}

}  // namespace cpu
}  // namespace bnb

extern "C" {

__attribute__((visibility("default"))) int32_t bnb_backend_score(void) {
  return 10;  // runs on any x86-64; GPU backends score higher
}

__attribute__((visibility("default"))) const bnb_backend_ops_t* bnb_backend_init(const bnb_host_api_t* host) {
  static std::once_flag once;
  static bnb_backend_ops_t ops;
  bnb::cpu::g_host.store(host);
  std::call_once(once, [] {
    bnb::cpu::apply_target_cap();
    ops = bnb::cpu::make_ops();
  });
  return &ops;
}

}  // extern "C"
