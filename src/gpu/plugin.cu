// The GPU plugin's entry points: probing, contexts, memory and the ops table. Built twice from
// this one source: by nvcc into libbnb_backend_cuda.so (static CUDA runtime, so a machine
// without a driver still loads it and scores 0) and by hipcc into libbnb_backend_hip.so.
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "backend_abi.h"
#include "gpu_backend.h"
#include "tables.h"

namespace bnb {
namespace gpu {
namespace {

const bnb_host_api_t* g_host = nullptr;

// What the plugin found when it first looked: the device count, or why there is none.
struct Probe {
  int count = 0;
  std::string detail;
};

std::string error_text(gpuError_t err) {
  return std::string(gpuGetErrorName(err)) + ": " + gpuGetErrorString(err);
}

Probe probe_devices() {
  Probe p;
  int count = 0;
  const gpuError_t err = gpuGetDeviceCount(&count);
  if (err != gpuSuccess) {
    (void)gpuGetLastError();
    if (err == gpuErrorInsufficientDriver) {
#if defined(BNB_GPU_HIP)
      p.detail = "no ROCm driver (" + error_text(err) + ")";
#else
      p.detail = "no CUDA driver (" + error_text(err) + ")";
#endif
    } else if (err == gpuErrorNoDevice) {
      p.detail = "no device (" + error_text(err) + ")";
    } else {
      p.detail = "no usable device (" + error_text(err) + ")";
    }
    return p;
  }
  if (count == 0) {
    p.detail = "no device";
    return p;
  }
  p.count = count;
  int driver = 0;
  int runtime = 0;
  (void)gpuDriverGetVersion(&driver);
  (void)gpuRuntimeGetVersion(&runtime);
  char buf[256];
  std::string names;
  for (int d = 0; d < count; ++d) {
    gpuDeviceProp prop;
    if (gpuGetDeviceProperties(&prop, d) != gpuSuccess) {
      (void)gpuGetLastError();
      continue;
    }
#if defined(BNB_GPU_HIP)
    std::snprintf(buf, sizeof buf, "%s%d: %s (%s, %d CUs, %.0f GiB)", d ? "; " : "", d, prop.name, prop.gcnArchName,
                  prop.multiProcessorCount, static_cast<double>(prop.totalGlobalMem) / (1u << 30));
#else
    std::snprintf(buf, sizeof buf, "%s%d: %s (sm_%d%d, %d SMs, %.0f GiB)", d ? "; " : "", d, prop.name, prop.major,
                  prop.minor, prop.multiProcessorCount, static_cast<double>(prop.totalGlobalMem) / (1u << 30));
#endif
    names += buf;
  }
#if defined(BNB_GPU_HIP)
  std::snprintf(buf, sizeof buf, "; HIP driver %d, runtime %d", driver, runtime);
#else
  std::snprintf(buf, sizeof buf, "; driver %d.%d, runtime %d.%d", driver / 1000, (driver % 1000) / 10,
                runtime / 1000, (runtime % 1000) / 10);
#endif
  p.detail = names + buf;
  return p;
}

const Probe& probe() {
  static const Probe p = probe_devices();
  return p;
}

int32_t device_count() { return probe().count; }

void describe(char* buf, size_t cap) {
  if (buf == nullptr || cap == 0) return;
  std::snprintf(buf, cap, "%s", probe().detail.c_str());
}

int32_t query_pointer_kind(const void* ptr, int32_t* device) {
  gpuPointerAttributes attr;
  std::memset(&attr, 0, sizeof attr);
  *device = -1;
  if (gpuPointerGetAttributes(&attr, ptr) != gpuSuccess) {
    (void)gpuGetLastError();  // HIP reports plain host memory as an error
    return BNB_PTR_HOST;
  }
  if (BNB_GPU_PTR_IS_MANAGED(attr)) {
    *device = attr.device;
    return BNB_PTR_MANAGED;
  }
  if (BNB_GPU_PTR_TYPE(attr) == gpuMemoryTypeDevice) {
    *device = attr.device;
    return BNB_PTR_DEVICE;
  }
  return BNB_PTR_HOST;
}

// The core classifies every pointer argument of every call, and one gpuPointerGetAttributes
// costs about half a microsecond: six per optimizer tensor made a 1000-tensor multi-tensor update
// take 3 ms for 0.45 ms of data. The answers are kept by address, per thread (no locks), in an
// open-addressing table. An address keeps its kind while the memory lives; after it is freed, the
// driver reuses device addresses only for device or managed memory (host memory never lands in
// its reserved range), both of which kernels accept. Every thread's cache is emptied when bnb
// frees memory itself (a global generation).
std::atomic<uint32_t> g_ptr_generation{1};

struct PtrCache {
  static constexpr size_t kSlots = 16384;  // a power of two
  static constexpr size_t kMaxEntries = kSlots / 2;
  static constexpr int kProbes = 16;
  struct Slot {
    uintptr_t ptr;
    uint64_t info;  // kind | (device + 1) << 8 | generation << 32; 0 = empty
  };
  std::unique_ptr<Slot[]> slots{new Slot[kSlots]()};
  size_t entries = 0;
  uint32_t generation = 0;

  static size_t home(uintptr_t p) { return ((p >> 4) * 0x9E3779B97F4A7C15ull) >> (64 - 14); }
  void reset(uint32_t gen) {
    std::memset(slots.get(), 0, kSlots * sizeof(Slot));
    entries = 0;
    generation = gen;
  }
};

int32_t pointer_kind(const void* ptr, int32_t* device) {
  thread_local PtrCache cache;
  const uint32_t gen = g_ptr_generation.load(std::memory_order_acquire);
  if (cache.generation != gen) cache.reset(gen);
  const uintptr_t key = reinterpret_cast<uintptr_t>(ptr);
  size_t i = PtrCache::home(key);
  for (int probe = 0; probe < PtrCache::kProbes; ++probe, i = (i + 1) & (PtrCache::kSlots - 1)) {
    const PtrCache::Slot& slot = cache.slots[i];
    if (slot.info == 0) break;
    if (slot.ptr == key) {
      if (device != nullptr) *device = static_cast<int32_t>((slot.info >> 8) & 0xffffu) - 1;
      return static_cast<int32_t>(slot.info & 0xffu);
    }
  }
  int32_t dev = -1;
  const int32_t kind = query_pointer_kind(ptr, &dev);
  if (device != nullptr) *device = dev;
  if (cache.entries >= PtrCache::kMaxEntries) cache.reset(gen);
  i = PtrCache::home(key);
  for (int probe = 0; probe < PtrCache::kProbes; ++probe, i = (i + 1) & (PtrCache::kSlots - 1)) {
    PtrCache::Slot& slot = cache.slots[i];
    if (slot.info == 0) {
      slot.ptr = key;
      slot.info = static_cast<uint64_t>(kind & 0xff) | (static_cast<uint64_t>((dev + 1) & 0xffff) << 8) |
                  (static_cast<uint64_t>(gen) << 32);
      ++cache.entries;
      break;
    }
  }
  return kind;
}

}  // namespace

void forget_pointer_kinds() { g_ptr_generation.fetch_add(1, std::memory_order_acq_rel); }

namespace {

// The built-in tables, laid out once per context in one device allocation.
constexpr int kTableOffsets[4] = {0, 256, 512, 528};
constexpr int kTableFloats = 544;
// What the default memory pool keeps between calls: the large-M 4-bit workspace (128 MiB) twice.
constexpr uint64_t kRetainedPoolBytes = uint64_t{256} << 20;

bnb_status_t context_create(const bnb_context_options_t* options, void** impl) {
  const int device = options != nullptr ? options->device : 0;
  const int count = device_count();
  if (count == 0) {
    return fail(BNB_ERR_BACKEND_UNAVAILABLE, "the " BNB_GPU_NAME " backend has no device: %s",
                probe().detail.c_str());
  }
  if (device < 0 || device >= count) {
    return fail(BNB_ERR_INVALID_ARGUMENT, "options->device %d is not a " BNB_GPU_NAME
                " device index: this machine has %d (0..%d)", device, count, count - 1);
  }
  DeviceGuard guard(device);
  auto* ctx = new GpuContext;
  ctx->device = device;
  if (gpuDeviceGetAttribute(&ctx->sm_count, gpuDevAttrMultiProcessorCount, device) != gpuSuccess ||
      ctx->sm_count < 1) {
    (void)gpuGetLastError();
    ctx->sm_count = 1;
  }
#if !defined(BNB_GPU_HIP)
  if (gpuDeviceGetAttribute(&ctx->cc_major, gpuDevAttrComputeCapabilityMajor, device) != gpuSuccess) {
    (void)gpuGetLastError();
    ctx->cc_major = 0;
  }
#endif
  // The large-M 4-bit products take their workspace with gpuMallocAsync from the device's default
  // pool, which by default hands its memory back at every synchronisation: a call after a sync
  // then paid for a fresh 32 MB mapping (0.21 ms against 0.07 for dequantize + torch at M = 1,
  // 4096x4096, H100). The pool keeps up to kRetainedPoolBytes between calls instead.
  gpuMemPool_t pool;
  uint64_t retain = kRetainedPoolBytes;
  if (gpuDeviceGetDefaultMemPool(&pool, device) != gpuSuccess ||
      gpuMemPoolSetAttribute(pool, gpuMemPoolAttrReleaseThreshold, &retain) != gpuSuccess) {
    (void)gpuGetLastError();  // only speed depends on it
  }
  float host[kTableFloats] = {};
  for (int t = 0; t < 4; ++t) copy_code_table(t, host + kTableOffsets[t]);
  float* dev = nullptr;
  bnb_status_t st = check(gpuMalloc(reinterpret_cast<void**>(&dev), sizeof host), "allocating the code tables");
  if (st == BNB_SUCCESS) {
    st = check(gpuMemcpy(dev, host, sizeof host, gpuMemcpyHostToDevice), "copying the code tables");
  }
  if (st != BNB_SUCCESS) {
    if (dev != nullptr) (void)gpuFree(dev);
    delete ctx;
    return st;
  }
  for (int t = 0; t < 4; ++t) ctx->tables[t] = dev + kTableOffsets[t];
  st = optim_context_init(ctx);
  if (st != BNB_SUCCESS) {
    (void)gpuFree(dev);
    delete ctx;
    return st;
  }
  *impl = ctx;
  return BNB_SUCCESS;
}

void context_destroy(void* impl) {
  auto* ctx = static_cast<GpuContext*>(impl);
  if (ctx == nullptr) return;
  DeviceGuard guard(ctx->device);
  optim_context_free(ctx);
  (void)gpuFree(ctx->tables[0]);
  (void)gpuGetLastError();
  delete ctx;
}

const float* default_code(void* impl, int32_t which) {
  const auto* ctx = static_cast<const GpuContext*>(impl);
  return which >= 0 && which < 4 ? ctx->tables[which] : nullptr;
}

bnb_status_t mem_alloc(void* impl, int64_t bytes, void** ptr) {
  const auto* ctx = static_cast<const GpuContext*>(impl);
  DeviceGuard guard(ctx->device);
  const gpuError_t err = gpuMalloc(ptr, static_cast<size_t>(bytes));
  if (err != gpuSuccess) {
    (void)gpuGetLastError();
    *ptr = nullptr;
    return fail(BNB_ERR_OUT_OF_MEMORY, "allocating %lld bytes on " BNB_GPU_NAME " device %d failed (%s)",
                static_cast<long long>(bytes), ctx->device, error_text(err).c_str());
  }
  return BNB_SUCCESS;
}

bnb_status_t mem_free(void* impl, void* ptr) {
  const auto* ctx = static_cast<const GpuContext*>(impl);
  DeviceGuard guard(ctx->device);
  forget_pointer_kinds();
  return check(gpuFree(ptr), "freeing device memory");
}

bnb_status_t mem_copy(void* impl, void* dst, const void* src, int64_t bytes, int32_t kind, void* stream) {
  (void)kind;  // unified addressing tells the runtime where each side lives
  const auto* ctx = static_cast<const GpuContext*>(impl);
  DeviceGuard guard(ctx->device);
  return check(gpuMemcpyAsync(dst, src, static_cast<size_t>(bytes), gpuMemcpyDefault, static_cast<gpuStream_t>(stream)),
               "copying memory");
}

bnb_status_t synchronize(void* impl, void* stream) {
  const auto* ctx = static_cast<const GpuContext*>(impl);
  DeviceGuard guard(ctx->device);
  return check(gpuStreamSynchronize(static_cast<gpuStream_t>(stream)), "synchronizing the stream");
}

bnb_backend_ops_t make_ops() {
  bnb_backend_ops_t ops;
  std::memset(&ops, 0, sizeof ops);
  ops.struct_size = sizeof(bnb_backend_ops_t);
  ops.abi_version = BNB_BACKEND_ABI_VERSION;
  ops.kind = BNB_GPU_KIND;
  ops.name = BNB_GPU_NAME;
  ops.device_count = device_count;
  ops.describe = describe;
  ops.pointer_kind = pointer_kind;
  ops.context_create = context_create;
  ops.context_destroy = context_destroy;
  ops.default_code = default_code;
  ops.mem_alloc = mem_alloc;
  ops.mem_free = mem_free;
  ops.mem_copy = mem_copy;
  ops.synchronize = synchronize;
  // Each op family fills its own entries; later families add a file and a line here.
  register_quant_ops(&ops);
  register_gemm4_ops(&ops);
  register_int8_ops(&ops);
  register_optim_ops(&ops);
  register_finite_ops(&ops);
  return ops;
}

}  // namespace

bnb_status_t fail(bnb_status_t status, const char* format, ...) {
  char buf[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buf, sizeof buf, format, args);
  va_end(args);
  return g_host != nullptr ? g_host->fail(status, buf) : status;
}

bnb_status_t check(gpuError_t err, const char* what) {
  if (err == gpuSuccess) return BNB_SUCCESS;
  (void)gpuGetLastError();
  return fail(BNB_ERR_DEVICE, BNB_GPU_NAME " error while %s: %s", what, error_text(err).c_str());
}

bnb_status_t check_launch(const char* kernel) {
  const gpuError_t err = gpuGetLastError();
  if (err == gpuSuccess) return BNB_SUCCESS;
  return fail(BNB_ERR_DEVICE, "launching %s on " BNB_GPU_NAME " failed: %s", kernel, error_text(err).c_str());
}

DeviceGuard::DeviceGuard(int device) : device_(device) {
  if (gpuGetDevice(&previous_) != gpuSuccess) {
    (void)gpuGetLastError();
    previous_ = -1;
  }
  if (previous_ != device_) (void)gpuSetDevice(device_);
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0 && previous_ != device_) (void)gpuSetDevice(previous_);
}

int64_t persistent_grid(const GpuContext& ctx, int blocks_per_sm, int64_t tiles) {
  const int64_t full = static_cast<int64_t>(ctx.sm_count) * (blocks_per_sm > 0 ? blocks_per_sm : 1);
  if (tiles < 1) return 1;
  return tiles < full ? tiles : full;
}

}  // namespace gpu
}  // namespace bnb

extern "C" {

__attribute__((visibility("default"))) int32_t bnb_backend_score(void) {
#if defined(BNB_GPU_HIP)
  return bnb::gpu::device_count() > 0 ? 90 : 0;
#else
  return bnb::gpu::device_count() > 0 ? 100 : 0;
#endif
}

__attribute__((visibility("default"))) const bnb_backend_ops_t* bnb_backend_init(const bnb_host_api_t* host) {
  static std::once_flag once;
  static bnb_backend_ops_t ops;
  std::call_once(once, [&] {
    bnb::gpu::g_host = host;
    ops = bnb::gpu::make_ops();
  });
  return &ops;
}

}  // extern "C"
