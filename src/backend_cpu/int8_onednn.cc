// oneDNN's s8 x s8 -> s32 matmul for the LLM.int8() product (the large-M path).
//
// oneDNN is not linked: libdnnl.so.2 is dlopen-ed on first use and its C API (dnnl.h, 2.x)
// is called through pointers resolved once, so the plugin loads on machines without it. When
// the library, one of its symbols, or a CPU engine is missing, oneDNN is "unavailable" and
// int8_matmul runs the Highway kernel for every shape. Only the headers are needed to build.
//
// B[N, K] row-major is B^T[K, N] with strides {1, K}: oneDNN reads it in place and packs it
// for its kernels per call (no cache keyed on user pointers: the caller may change B).
// Primitives are created once per shape. oneDNN runs on OpenMP here; the
// context's thread count is applied to the calling thread's OpenMP setting for the call and
// restored afterwards.
#include <cstdint>

#include "int8_kernels.h"

#if defined(BNB_HAVE_DNNL)
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <oneapi/dnnl/dnnl.h>
#endif

namespace bnb {
namespace cpu {

#if defined(BNB_HAVE_DNNL)
namespace {

// omp_get_max_threads / omp_set_num_threads of the OpenMP runtime oneDNN was built with
// (already loaded as its dependency); absent when oneDNN is not OpenMP-threaded.
struct OmpControl {
  int (*get_max)(void) = nullptr;
  void (*set_num)(int) = nullptr;
  void init(unsigned cpu_runtime) {
    if (cpu_runtime != DNNL_RUNTIME_OMP) return;
    void* lib = dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (lib == nullptr) lib = dlopen("libiomp5.so", RTLD_NOW | RTLD_NOLOAD);
    if (lib == nullptr) return;
    get_max = reinterpret_cast<int (*)(void)>(dlsym(lib, "omp_get_max_threads"));
    set_num = reinterpret_cast<void (*)(int)>(dlsym(lib, "omp_set_num_threads"));
    if (get_max == nullptr || set_num == nullptr) get_max = nullptr, set_num = nullptr;
  }
};

class ScopedOmpThreads {
 public:
  ScopedOmpThreads(const OmpControl& omp, int threads) : omp_(omp) {
    if (omp_.set_num == nullptr) return;
    previous_ = omp_.get_max();
    if (previous_ != threads) omp_.set_num(threads);
  }
  ~ScopedOmpThreads() {
    if (omp_.set_num != nullptr && previous_ > 0) omp_.set_num(previous_);
  }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  const OmpControl& omp_;
  int previous_ = 0;
};

// The part of oneDNN's C API used here, resolved from the dlopen-ed library; the types come
// from dnnl.h (decltype only: nothing is linked). The library is never closed.
struct DnnlApi {
  decltype(&::dnnl_version) version = nullptr;
  decltype(&::dnnl_engine_create) engine_create = nullptr;
  decltype(&::dnnl_stream_create) stream_create = nullptr;
  decltype(&::dnnl_stream_wait) stream_wait = nullptr;
  decltype(&::dnnl_stream_destroy) stream_destroy = nullptr;
  decltype(&::dnnl_memory_desc_init_by_strides) memory_desc_init_by_strides = nullptr;
  decltype(&::dnnl_matmul_desc_init) matmul_desc_init = nullptr;
  decltype(&::dnnl_primitive_desc_create) primitive_desc_create = nullptr;
  decltype(&::dnnl_primitive_desc_query) primitive_desc_query = nullptr;
  decltype(&::dnnl_primitive_desc_destroy) primitive_desc_destroy = nullptr;
  decltype(&::dnnl_primitive_create) primitive_create = nullptr;
  decltype(&::dnnl_primitive_execute) primitive_execute = nullptr;
  decltype(&::dnnl_primitive_destroy) primitive_destroy = nullptr;
  decltype(&::dnnl_memory_create) memory_create = nullptr;
  decltype(&::dnnl_memory_destroy) memory_destroy = nullptr;

  bool available = false;
  std::string description;  // "2.6.3" or "unavailable (<reason>)"
  dnnl_engine_t engine = nullptr;  // the CPU engine, never destroyed
  OmpControl omp;

  DnnlApi() {
    std::string reason;
    if (!load(&reason)) description = "unavailable (" + reason + ")";
  }

 private:
  template <class Fn>
  static bool resolve(void* lib, const char* name, Fn& fn, std::string* reason) {
    fn = reinterpret_cast<Fn>(dlsym(lib, name));
    if (fn == nullptr) *reason = std::string("missing symbol ") + name;
    return fn != nullptr;
  }

  bool load(std::string* reason) {
    // BNB_ONEDNN_LIBRARY replaces the library name given to dlopen. It exists for the tests
    // (BNB_ONEDNN_LIBRARY=/nonexistent runs every product through the Highway kernel on a
    // machine that has oneDNN) and is not a supported setting.
    const char* name = std::getenv("BNB_ONEDNN_LIBRARY");
    if (name == nullptr || *name == '\0') name = "libdnnl.so.2";
    void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* err = dlerror();
      *reason = err != nullptr ? err : (std::string("cannot load ") + name);
      return false;
    }
    if (!(resolve(lib, "dnnl_version", version, reason) &&
          resolve(lib, "dnnl_engine_create", engine_create, reason) &&
          resolve(lib, "dnnl_stream_create", stream_create, reason) &&
          resolve(lib, "dnnl_stream_wait", stream_wait, reason) &&
          resolve(lib, "dnnl_stream_destroy", stream_destroy, reason) &&
          resolve(lib, "dnnl_memory_desc_init_by_strides", memory_desc_init_by_strides, reason) &&
          resolve(lib, "dnnl_matmul_desc_init", matmul_desc_init, reason) &&
          resolve(lib, "dnnl_primitive_desc_create", primitive_desc_create, reason) &&
          resolve(lib, "dnnl_primitive_desc_query", primitive_desc_query, reason) &&
          resolve(lib, "dnnl_primitive_desc_destroy", primitive_desc_destroy, reason) &&
          resolve(lib, "dnnl_primitive_create", primitive_create, reason) &&
          resolve(lib, "dnnl_primitive_execute", primitive_execute, reason) &&
          resolve(lib, "dnnl_primitive_destroy", primitive_destroy, reason) &&
          resolve(lib, "dnnl_memory_create", memory_create, reason) &&
          resolve(lib, "dnnl_memory_destroy", memory_destroy, reason))) {
      return false;
    }
    const dnnl_version_t* v = version();
    if (v == nullptr) {
      *reason = "dnnl_version returned NULL";
      return false;
    }
    const std::string ver =
        std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
    // The C API used here (op descriptors, memory_desc_t by value) is oneDNN 2.x's.
    if (v->major != DNNL_VERSION_MAJOR) {
      *reason = "version " + ver + ", need " + std::to_string(DNNL_VERSION_MAJOR) + ".x";
      return false;
    }
    if (engine_create(&engine, dnnl_cpu, 0) != dnnl_success) {
      *reason = "cannot create a CPU engine";
      return false;
    }
    omp.init(v->cpu_runtime);
    available = true;
    description = ver;
    return true;
  }
};

const DnnlApi& dnnl() {
  // Never destroyed: the library stays loaded, and its objects must not be released after its
  // own static destructors ran.
  static std::once_flag once;
  static const DnnlApi* api = nullptr;
  std::call_once(once, [] { api = new DnnlApi(); });
  return *api;
}

// A matmul primitive and the memory descriptors of its operands.
struct Matmul {
  dnnl_primitive_t prim = nullptr;
  dnnl_memory_desc_t a_md, b_md, c_md;
  Matmul() = default;
  Matmul(const Matmul&) = delete;
  Matmul& operator=(const Matmul&) = delete;
  ~Matmul() {
    if (prim != nullptr) dnnl().primitive_destroy(prim);
  }
};

// Primitives by shape: creating the primitive descriptor costs about as much as a small
// product, so each shape is created once (oneDNN primitives may run from many threads at once).
// A shape oneDNN only offers its reference implementation for is remembered as declined.
class PrimitiveCache {
 public:
  // NULL: declined (or failed).
  std::shared_ptr<const Matmul> get(int64_t M, int64_t N, int64_t K) {
    const auto key = std::make_tuple(M, N, K);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = cache_.find(key);
      if (it != cache_.end()) return it->second;
    }
    bool remember = true;
    std::shared_ptr<const Matmul> prim = create(M, N, K, &remember);
    if (!remember) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    if (cache_.size() >= kCapacity) cache_.clear();
    cache_.emplace(key, prim);
    return prim;
  }

 private:
  static constexpr size_t kCapacity = 256;

  // *remember is false for a failure that may not recur (out of memory, ...).
  static std::shared_ptr<const Matmul> create(int64_t M, int64_t N, int64_t K, bool* remember) {
    const DnnlApi& api = dnnl();
    auto m = std::make_shared<Matmul>();
    const dnnl_dims_t a_dims = {M, K}, a_strides = {K, 1};
    const dnnl_dims_t b_dims = {K, N}, b_strides = {1, K};
    const dnnl_dims_t c_dims = {M, N}, c_strides = {N, 1};
    dnnl_matmul_desc_t desc;
    if (api.memory_desc_init_by_strides(&m->a_md, 2, a_dims, dnnl_s8, a_strides) != dnnl_success ||
        api.memory_desc_init_by_strides(&m->b_md, 2, b_dims, dnnl_s8, b_strides) != dnnl_success ||
        api.memory_desc_init_by_strides(&m->c_md, 2, c_dims, dnnl_s32, c_strides) != dnnl_success ||
        api.matmul_desc_init(&desc, &m->a_md, &m->b_md, nullptr, &m->c_md) != dnnl_success) {
      return nullptr;  // invalid shapes stay invalid
    }
    dnnl_primitive_desc_t pd = nullptr;
    const dnnl_status_t st = api.primitive_desc_create(&pd, &desc, nullptr, api.engine, nullptr);
    if (st != dnnl_success) {
      *remember = st == dnnl_unimplemented || st == dnnl_invalid_arguments;
      return nullptr;
    }
    // The reference implementation is far slower than our own kernel: decline it.
    const char* impl = nullptr;
    if (api.primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || impl == nullptr ||
        std::strncmp(impl, "ref", 3) == 0) {
      api.primitive_desc_destroy(pd);
      return nullptr;
    }
    const dnnl_status_t created = api.primitive_create(&m->prim, pd);
    api.primitive_desc_destroy(pd);  // the primitive keeps its own copy
    if (created != dnnl_success) {
      m->prim = nullptr;
      *remember = false;
      return nullptr;
    }
    return m;
  }

  std::mutex mu_;
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::shared_ptr<const Matmul>> cache_;
};

PrimitiveCache& primitive_cache() {
  static PrimitiveCache* cache = new PrimitiveCache();  // never destroyed, as dnnl()
  return *cache;
}

// The calling thread's stream, destroyed when the thread exits.
struct ThreadStream {
  dnnl_stream_t stream = nullptr;
  ~ThreadStream() {
    if (stream != nullptr) dnnl().stream_destroy(stream);
  }
};

// Memory objects of one call.
class Memories {
 public:
  explicit Memories(const DnnlApi& api) : api_(api) {}
  ~Memories() {
    for (dnnl_memory_t m : mem_)
      if (m != nullptr) api_.memory_destroy(m);
  }
  Memories(const Memories&) = delete;
  Memories& operator=(const Memories&) = delete;
  bool create(int i, const dnnl_memory_desc_t& md, void* handle) {
    return api_.memory_create(&mem_[i], &md, api_.engine, handle) == dnnl_success;
  }
  dnnl_memory_t operator[](int i) const { return mem_[i]; }

 private:
  const DnnlApi& api_;
  dnnl_memory_t mem_[3] = {nullptr, nullptr, nullptr};
};

}  // namespace

bool int8_onednn_available() { return dnnl().available; }

const char* int8_onednn_description() { return dnnl().description.c_str(); }

bool int8_matmul_onednn(int32_t threads, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                        int32_t* C) {
  const DnnlApi& api = dnnl();
  if (!api.available) return false;
  const std::shared_ptr<const Matmul> prim = primitive_cache().get(M, N, K);
  if (prim == nullptr) return false;
  Memories mem(api);
  if (!mem.create(0, prim->a_md, const_cast<int8_t*>(A)) || !mem.create(1, prim->b_md, const_cast<int8_t*>(B)) ||
      !mem.create(2, prim->c_md, C)) {
    return false;
  }
  thread_local ThreadStream stream;
  if (stream.stream == nullptr &&
      api.stream_create(&stream.stream, api.engine, static_cast<unsigned>(dnnl_stream_default_flags)) !=
          dnnl_success) {
    stream.stream = nullptr;
    return false;
  }
  const dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]}};
  ScopedOmpThreads scoped(api.omp, threads);
  if (api.primitive_execute(prim->prim, stream.stream, 3, args) != dnnl_success) return false;
  return api.stream_wait(stream.stream) == dnnl_success;
}

#else  // !BNB_HAVE_DNNL

bool int8_onednn_available() { return false; }

const char* int8_onednn_description() { return "unavailable (built without the oneDNN headers)"; }

bool int8_matmul_onednn(int32_t, int64_t, int64_t, int64_t, const int8_t*, const int8_t*, int32_t*) {
  return false;
}

#endif

int64_t int8_rows_kernel_max_m() { return 4; }

void int8_matmul(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                 int32_t* C) {
  // Best first: oneDNN (when it could be loaded) above a few rows, the bandwidth-bound kernel
  // for the rest and whenever oneDNN is unavailable or declines.
  if (M > int8_rows_kernel_max_m() && int8_onednn_available() &&
      int8_matmul_onednn(pool.num_threads(), M, N, K, A, B, C)) {
    return;
  }
  int8_matmul_rows(pool, M, N, K, A, B, C);
}

}  // namespace cpu
}  // namespace bnb
