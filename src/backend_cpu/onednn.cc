// oneDNN through dlopen (onednn.h): the library's C API resolved once, a cache of matmul
// primitives keyed by everything that defines one, and the OpenMP thread count applied per call.
// oneDNN runs on OpenMP here; the caller's thread count is applied to the calling thread's OpenMP
// setting for the call and restored afterwards.
#include "onednn.h"

#if defined(BNB_HAVE_DNNL)
#include <dlfcn.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
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
    // BNB_ONEDNN_LIBRARY: see onednn.h.
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
struct Primitive {
  dnnl_primitive_t prim = nullptr;
  dnnl_memory_desc_t a_md, b_md, bias_md, c_md;
  bool has_bias = false;
  Primitive() = default;
  Primitive(const Primitive&) = delete;
  Primitive& operator=(const Primitive&) = delete;
  ~Primitive() {
    if (prim != nullptr) dnnl().primitive_destroy(prim);
  }
};

dnnl_data_type_t dnnl_type(OnednnType t) {
  switch (t) {
    case OnednnType::kS8: return dnnl_s8;
    case OnednnType::kS32: return dnnl_s32;
    case OnednnType::kBF16: return dnnl_bf16;
    case OnednnType::kF32: return dnnl_f32;
    case OnednnType::kNone: break;
  }
  return dnnl_data_type_undef;
}

using Key = std::array<int64_t, 11>;

Key key_of(const OnednnMatmul& s) {
  return {s.M, s.N, s.K, static_cast<int64_t>(s.a), static_cast<int64_t>(s.b), static_cast<int64_t>(s.c),
          static_cast<int64_t>(s.bias), s.lda, s.ldb, s.ldc, s.b_rows_are_n ? 1 : 0};
}

// Primitives by OnednnMatmul. A shape oneDNN only offers its reference implementation for is
// remembered as declined.
class PrimitiveCache {
 public:
  // NULL: declined (or failed).
  std::shared_ptr<const Primitive> get(const OnednnMatmul& s) {
    const Key key = key_of(s);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = cache_.find(key);
      if (it != cache_.end()) return it->second;
    }
    bool remember = true;
    std::shared_ptr<const Primitive> prim = create(s, &remember);
    if (!remember) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    if (cache_.size() >= kCapacity) cache_.clear();
    cache_.emplace(key, prim);
    return prim;
  }

 private:
  static constexpr size_t kCapacity = 256;

  // *remember is false for a failure that may not recur (out of memory, ...).
  static std::shared_ptr<const Primitive> create(const OnednnMatmul& s, bool* remember) {
    const DnnlApi& api = dnnl();
    auto m = std::make_shared<Primitive>();
    const dnnl_dims_t a_dims = {s.M, s.K}, a_strides = {s.lda, 1};
    const dnnl_dims_t b_dims = {s.K, s.N};
    const dnnl_dims_t b_strides = {s.b_rows_are_n ? 1 : s.ldb, s.b_rows_are_n ? s.ldb : 1};
    const dnnl_dims_t c_dims = {s.M, s.N}, c_strides = {s.ldc, 1};
    const dnnl_dims_t bias_dims = {1, s.N}, bias_strides = {s.N, 1};
    m->has_bias = s.bias != OnednnType::kNone;
    dnnl_matmul_desc_t desc;
    if (api.memory_desc_init_by_strides(&m->a_md, 2, a_dims, dnnl_type(s.a), a_strides) != dnnl_success ||
        api.memory_desc_init_by_strides(&m->b_md, 2, b_dims, dnnl_type(s.b), b_strides) != dnnl_success ||
        api.memory_desc_init_by_strides(&m->c_md, 2, c_dims, dnnl_type(s.c), c_strides) != dnnl_success ||
        (m->has_bias && api.memory_desc_init_by_strides(&m->bias_md, 2, bias_dims, dnnl_type(s.bias),
                                                        bias_strides) != dnnl_success) ||
        api.matmul_desc_init(&desc, &m->a_md, &m->b_md, m->has_bias ? &m->bias_md : nullptr, &m->c_md) !=
            dnnl_success) {
      return nullptr;  // invalid shapes stay invalid
    }
    dnnl_primitive_desc_t pd = nullptr;
    const dnnl_status_t st = api.primitive_desc_create(&pd, &desc, nullptr, api.engine, nullptr);
    if (st != dnnl_success) {
      *remember = st == dnnl_unimplemented || st == dnnl_invalid_arguments;
      return nullptr;
    }
    // The reference implementation is far slower than our own kernels: decline it.
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
  std::map<Key, std::shared_ptr<const Primitive>> cache_;
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
  dnnl_memory_t mem_[4] = {nullptr, nullptr, nullptr, nullptr};
};

}  // namespace

bool onednn_available() { return dnnl().available; }

const char* onednn_description() { return dnnl().description.c_str(); }

bool onednn_matmul(int32_t threads, const OnednnMatmul& shape, const void* A, const void* B, const void* bias,
                   void* C) {
  const DnnlApi& api = dnnl();
  if (!api.available) return false;
  const std::shared_ptr<const Primitive> prim = primitive_cache().get(shape);
  if (prim == nullptr) return false;
  Memories mem(api);
  if (!mem.create(0, prim->a_md, const_cast<void*>(A)) || !mem.create(1, prim->b_md, const_cast<void*>(B)) ||
      !mem.create(2, prim->c_md, C) || (prim->has_bias && !mem.create(3, prim->bias_md, const_cast<void*>(bias)))) {
    return false;
  }
  thread_local ThreadStream stream;
  if (stream.stream == nullptr &&
      api.stream_create(&stream.stream, api.engine, static_cast<unsigned>(dnnl_stream_default_flags)) !=
          dnnl_success) {
    stream.stream = nullptr;
    return false;
  }
  const dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]},
                                   {DNNL_ARG_BIAS, mem[3]}};
  // One execution at a time: a oneDNN built without DNNL_ENABLE_CONCURRENT_EXEC (Debian's) gives
  // its primitives one shared scratchpad, and two threads running products at once (two contexts,
  // or one context from two threads) corrupted each other's results (~1 in 10 runs of two
  // concurrent M = 5 int8 products).
  static std::mutex execution;
  std::lock_guard<std::mutex> one_at_a_time(execution);
  ScopedOmpThreads scoped(api.omp, threads);
  if (api.primitive_execute(prim->prim, stream.stream, prim->has_bias ? 4 : 3, args) != dnnl_success) return false;
  return api.stream_wait(stream.stream) == dnnl_success;
}

#else  // !BNB_HAVE_DNNL

bool onednn_available() { return false; }

const char* onednn_description() { return "unavailable (built without the oneDNN headers)"; }

bool onednn_matmul(int32_t, const OnednnMatmul&, const void*, const void*, const void*, void*) { return false; }

#endif

}  // namespace cpu
}  // namespace bnb
