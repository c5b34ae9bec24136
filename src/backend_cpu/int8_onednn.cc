// oneDNN's s8 x s8 -> s32 matmul for the LLM.int8() product (the large-M path).
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

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <oneapi/dnnl/dnnl.hpp>
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
  OmpControl() {
    if (dnnl::version()->cpu_runtime != DNNL_RUNTIME_OMP) return;
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

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

const OmpControl& omp_control() {
  static const OmpControl omp;
  return omp;
}

// Primitives by shape: creating the primitive descriptor costs about as much as a small
// product, so each shape is created once (oneDNN primitives may run from many threads at once).
// A shape oneDNN only offers its reference implementation for is remembered as declined.
class PrimitiveCache {
 public:
  // NULL: declined.
  std::shared_ptr<const dnnl::matmul> get(int64_t M, int64_t N, int64_t K) {
    const auto key = std::make_tuple(M, N, K);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = cache_.find(key);
      if (it != cache_.end()) return it->second;
    }
    std::shared_ptr<const dnnl::matmul> prim = create(M, N, K);
    std::lock_guard<std::mutex> lock(mu_);
    if (cache_.size() >= kCapacity) cache_.clear();
    cache_.emplace(key, prim);
    return prim;
  }

 private:
  static constexpr size_t kCapacity = 256;

  static std::shared_ptr<const dnnl::matmul> create(int64_t M, int64_t N, int64_t K) {
    using dnnl::memory;
    const memory::desc a_md({M, K}, memory::data_type::s8, memory::dims{K, 1});
    const memory::desc b_md({K, N}, memory::data_type::s8, memory::dims{1, K});
    const memory::desc c_md({M, N}, memory::data_type::s32, memory::dims{N, 1});
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), cpu_engine());
    // The reference implementation is far slower than our own kernel: decline it.
    const char* impl = pd.impl_info_str();
    if (impl == nullptr || std::strncmp(impl, "ref", 3) == 0) return nullptr;
    return std::make_shared<const dnnl::matmul>(pd);
  }

  std::mutex mu_;
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::shared_ptr<const dnnl::matmul>> cache_;
};

PrimitiveCache& primitive_cache() {
  static PrimitiveCache cache;
  return cache;
}

}  // namespace

bool int8_matmul_onednn(int32_t threads, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                        int32_t* C) {
  using dnnl::memory;
  try {
    const std::shared_ptr<const dnnl::matmul> prim = primitive_cache().get(M, N, K);
    if (prim == nullptr) return false;
    const dnnl::engine& engine = cpu_engine();
    memory a_mem({{M, K}, memory::data_type::s8, memory::dims{K, 1}}, engine, const_cast<int8_t*>(A));
    memory b_mem({{K, N}, memory::data_type::s8, memory::dims{1, K}}, engine, const_cast<int8_t*>(B));
    memory c_mem({{M, N}, memory::data_type::s32, memory::dims{N, 1}}, engine, C);
    thread_local dnnl::stream stream(engine);
    ScopedOmpThreads scoped(omp_control(), threads);
    prim->execute(stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
    stream.wait();
    return true;
  } catch (const dnnl::error&) {
    return false;
  }
}

#else  // !BNB_HAVE_DNNL

bool int8_matmul_onednn(int32_t, int64_t, int64_t, int64_t, const int8_t*, const int8_t*, int32_t*) {
  return false;
}

#endif

int64_t int8_rows_kernel_max_m() { return 4; }

void int8_matmul(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                 int32_t* C) {
  // Best first: oneDNN above a few rows, the bandwidth-bound kernel for the rest and whenever
  // oneDNN declines.
  if (M > int8_rows_kernel_max_m() && int8_matmul_onednn(pool.num_threads(), M, N, K, A, B, C)) return;
  int8_matmul_rows(pool, M, N, K, A, B, C);
}

}  // namespace cpu
}  // namespace bnb
