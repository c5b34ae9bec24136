// Launchers of the LLM.int8() family and their entries in the ops table. The core has validated
// every argument (backend_abi.h). Semantics beyond bnb.h's comments are those of the CPU backend
// (src/backend_cpu/int8_kernels.h): the threshold is compared in the input dtype, every element
// of an outlier column is written as 0, the bias of mm_dequant has out_dtype.
//
// int8 matmul: cuBLASLt's int8 GEMM (int32 accumulation) above kRowsKernelMaxM rows of A when
// K % 4 == 0; otherwise, and whenever cuBLASLt is missing or offers no algorithm, the
// bandwidth-bound kernel that reads B once. cuBLASLt is loaded at run time (dlopen), so the
// plugin loads on machines without it. Nothing here synchronises except outlier_columns, whose
// contract returns a host-visible count (linear_outliers writes its count to device memory), and
// the first cuBLASLt product of a shape outside a graph capture, which times the candidate
// algorithms once (LtPlans::search).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "gpu_backend.h"
#include "half.h"
#include "int8_cutlass.h"
#include "int8_kernels.cuh"
#include "int_math.h"

#if !defined(BNB_GPU_HIP)
#include <cublasLt.h>
#include <dlfcn.h>
#endif

namespace bnb {
namespace gpu {
namespace {

using namespace int8;

// M = 16 measured 37 us on the rows kernel vs 18 us for cuBLASLt at M = 256 (N = K = 4096, H100).
constexpr int64_t kRowsKernelMaxM = 8;

unsigned grid_of(int64_t blocks, int64_t cap) {
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

// ---------------------------------------------------------------- vectorwise quantization

// row_quant_kernel (flag_bits, arrivals: the outlier columns' bits set there and *arrivals = 0).
template <int D>
bnb_status_t launch_row_quant(const GpuContext& ctx, int64_t rows, int64_t cols, const void* A, bool outliers,
                              float t, int8_t* q, float* row_stats, uint32_t* flag_bits, int64_t* arrivals,
                              gpuStream_t stream) {
  constexpr int kThreads = 256;
  const unsigned grid = grid_of(rows, int64_t{ctx.sm_count} * 16);
  const bool vec = cols % 16 == 0 && aligned16(A) && aligned16(q);
  row_quant_kernel<D, kThreads><<<grid, kThreads, 0, stream>>>(A, rows, cols, outliers, t, q, row_stats, vec,
                                                                flag_bits, arrivals);
  return check_launch("int8 row_quant_kernel");
}

// With outliers and more than one row, outlier_columns_kernel zeroes the outlier columns of q;
// given `flags`, it also writes the column flags there and 0 to *arrivals (the kernel that
// takes bnb_int8_linear_outliers' outlier step reads both).
template <int D>
bnb_status_t launch_vectorwise_quant(const GpuContext& ctx, int64_t rows, int64_t cols, const void* A,
                                     bool outliers, float t, int8_t* q, float* row_stats, int32_t* flags,
                                     int64_t* arrivals, gpuStream_t stream) {
  bnb_status_t st = launch_row_quant<D>(ctx, rows, cols, A, outliers, t, q, row_stats, nullptr, nullptr, stream);
  if (st != BNB_SUCCESS || !outliers || rows == 1) return st;  // one row: its outliers are already 0
  outlier_columns_kernel<D><<<static_cast<unsigned>((cols + 31) / 32), dim3(32, 32), 0, stream>>>(
      A, rows, cols, t, q, flags, arrivals);
  return check_launch("int8 outlier_columns_kernel (zero)");
}

// bnb_int8_vectorwise_quant, and with flags / arrivals the quantization step of
// bnb_int8_linear_outliers (launch_vectorwise_quant).
bnb_status_t vectorwise_quant(void* impl, int32_t dtype, int64_t rows, int64_t cols, const void* A, float threshold,
                              int8_t* q, float* row_stats, int32_t* flags, int64_t* arrivals, void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const bool outliers = threshold > 0.0f;
  const float t = outliers ? round_to_dtype(dtype, threshold) : 0.0f;
  const auto s = static_cast<gpuStream_t>(stream);
  return with_dtype(dtype, "int8_vectorwise_quant", [&](auto d) {
    return launch_vectorwise_quant<decltype(d)::value>(ctx, rows, cols, A, outliers, t, q, row_stats, flags,
                                                       arrivals, s);
  });
}

bnb_status_t op_vectorwise_quant(void* impl, int32_t dtype, int64_t rows, int64_t cols, const void* A,
                                 float threshold, int8_t* q, float* row_stats, void* stream) {
  return vectorwise_quant(impl, dtype, rows, cols, A, threshold, q, row_stats, nullptr, nullptr, stream);
}

// ---------------------------------------------------------------- outlier columns

template <int D>
void launch_outlier_flags(int64_t rows, int64_t cols, const void* A, float t, int32_t* flags, gpuStream_t stream) {
  outlier_columns_kernel<D><<<static_cast<unsigned>((cols + 31) / 32), dim3(32, 32), 0, stream>>>(
      A, rows, cols, t, nullptr, flags, nullptr);
}

bnb_status_t op_outlier_columns(void* impl, int32_t dtype, int64_t rows, int64_t cols, const void* A,
                                float threshold, int32_t* columns, int64_t capacity, int64_t* count, void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const auto s = static_cast<gpuStream_t>(stream);
  const float t = round_to_dtype(dtype, threshold);
  // Scratch: one flag per column and the count (this op synchronises anyway).
  void* scratch = nullptr;
  const size_t flag_bytes = static_cast<size_t>(cols) * 4;
  bnb_status_t st = check(gpuMalloc(&scratch, flag_bytes + 16), "allocating outlier-column scratch");
  if (st != BNB_SUCCESS) return st;
  auto* flags = static_cast<int32_t*>(scratch);
  auto* dcount = reinterpret_cast<int64_t*>(static_cast<uint8_t*>(scratch) + ((flag_bytes + 7) / 8) * 8);
  st = with_dtype(dtype, "int8_outlier_columns", [&](auto d) {
    launch_outlier_flags<decltype(d)::value>(rows, cols, A, t, flags, s);
    return check_launch("int8 outlier_columns_kernel (flags)");
  });
  if (st == BNB_SUCCESS) {
    compact_columns_kernel<<<1, 1024, 0, s>>>(flags, cols, columns, capacity, dcount);
    st = check_launch("int8 compact_columns_kernel");
  }
  int64_t host_count = 0;
  if (st == BNB_SUCCESS) st = check(gpuMemcpyAsync(&host_count, dcount, 8, gpuMemcpyDefault, s), "reading the count");
  if (st == BNB_SUCCESS) st = check(gpuStreamSynchronize(s), "waiting for the outlier columns");
  const bnb_status_t freed = check(gpuFree(scratch), "freeing outlier-column scratch");
  if (st == BNB_SUCCESS) st = freed;
  if (st == BNB_SUCCESS) *count = host_count;
  return st;
}

// ---------------------------------------------------------------- int8 matmul

// bnb_int8_linear_outliers' outlier step, for the kernels that take it along (int8_mma_rows_kernel's
// kOutliers): the activations, the threshold rounded to their dtype, the caller's columns (the
// flags there for M > 1) and count.
struct OutlierStep {
  const void* X;
  float t;
  int32_t* columns;
  int64_t* count;
};

// kernel<<<grid, block, 0, stream>>>(args...), launched as a programmatic dependent of the kernel
// before it in the stream where asked and offered (compute capability 9.0 on CUDA; a plain launch
// elsewhere or if the runtime declines): it may start while that one runs, and waits for it in
// grid_dependency_wait (a no-op after a plain launch).
template <class... Params, class... Args>
bnb_status_t launch_after(const GpuContext& ctx, bool dependent, void (*kernel)(Params...), dim3 grid, dim3 block,
                          gpuStream_t stream, const char* what, Args... args) {
#if !defined(BNB_GPU_HIP)
  if (dependent && ctx.cc_major >= 9) {
    gpuLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = 0;
    config.stream = stream;
    gpuLaunchAttribute attr[1];
    attr[0].id = gpuLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = attr;
    config.numAttrs = 1;
    if (gpuLaunchKernelEx(&config, kernel, args...) == gpuSuccess) return check_launch(what);
    (void)gpuGetLastError();  // not offered here: a plain launch below
  }
#else
  (void)ctx, (void)dependent;
#endif
  kernel<<<grid, block, 0, stream>>>(args...);
  return check_launch(what);
}

template <int kMaxM>
bnb_status_t launch_rows_matmul_m(int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B, int32_t* C,
                                  gpuStream_t stream) {
  constexpr int kRowsB = 4;
  constexpr int kThreads = 256;
  const int64_t warps = (N + kRowsB - 1) / kRowsB;
  const int64_t blocks = (warps * kWarpSize + kThreads - 1) / kThreads;
  const bool vec = K % 16 == 0 && aligned16(A) && aligned16(B);
  if (vec) {
    rows_matmul_kernel<kMaxM, kRowsB, true><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(A, B, C, M, N, K);
  } else {
    rows_matmul_kernel<kMaxM, kRowsB, false><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(A, B, C, M, N, K);
  }
  return check_launch("int8 rows_matmul_kernel");
}

#if !defined(BNB_GPU_HIP)

// The tensor-core kernel for M <= 16 (int8_mma_rows_kernel): compute capability 8.0, K % 16 == 0,
// 16-byte aligned A and B. BNB_INT8_MMA=0 turns it off (A/B measurements).
constexpr int64_t kMmaRowsMaxM = 16;

bool mma_rows_disabled() {
  static const bool off = env_zero("BNB_INT8_MMA");
  return off;
}

// Where it wins (H100, bench/results/h100_run12): M <= 8 at every size measured (4096^2 and 8192^2:
// 1.3x and 1.2x the rows kernel's matmul time); 8 < M <= 16 only up to 4096x4096 weights (1.2x faster
// there, but 1.4x SLOWER than the rows kernel at 8192x8192), so larger weights keep the rows kernel.
constexpr int64_t kMmaRowsWideMaxWeight = int64_t{4096} * 4096;

bool mma_rows_fit(const GpuContext& ctx, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B) {
  return ctx.cc_major >= 8 && M <= kMmaRowsMaxM && (M <= 8 || N * K <= kMmaRowsWideMaxWeight) && K % 16 == 0 && (N + 15) / 16 <= INT32_MAX && aligned16(A) &&
         aligned16(B) && !mma_rows_disabled();
}

// Tiles of 16 rows of W per block for 8 < M <= 16: 1 or 2 (BNB_INT8_MMA_RT, A/B measurements).
int mma_row_tiles(int64_t M) {
  static const int rt = [] {
    const char* e = std::getenv("BNB_INT8_MMA_RT");
    return e != nullptr && e[0] == '2' ? 2 : 1;
  }();
  return M > 8 ? rt : 1;
}

// int8_mma_rows_kernel with or without the outlier step (only with for kOut >= 0 and RT = 1:
// launch_mma_rows takes one tile of W per block for it).
template <int MT, int RT, int kOut, bool kBias, int kQuantD, int kWarps>
decltype(&int8_mma_rows_kernel<MT, RT, kOut, kBias, kQuantD, false, kWarps>) mma_rows_kernel_for(bool outliers) {
  if constexpr (kOut >= 0 && RT == 1) {
    if (outliers) return int8_mma_rows_kernel<MT, RT, kOut, kBias, kQuantD, true, kWarps>;
  }
  return int8_mma_rows_kernel<MT, RT, kOut, kBias, kQuantD, false, kWarps>;
}

// For M <= 8: kMmaWarpsWide (8) warps a block instead of 4 on weights of at most
// kMmaWarpsWideMaxWeight, without the outlier step: at M = 1..4, N = K = 4096 the product takes 8.0
// instead of 8.7 us and the layer 9.0 instead of 9.8 us; at 8192 x 8192 it is slower (28.0 against
// 26.9 us), at M = 16 too (H100, bench/results/h100_run19). BNB_INT8_MMA_WIDE=0 keeps 4 (A/B
// measurements).
constexpr int64_t kMmaWarpsWideMaxWeight = int64_t{4096} * 4096;
bool mma_rows_wide(int64_t N, int64_t K, const OutlierStep* os) {
  static const bool off = env_zero("BNB_INT8_MMA_WIDE");
  return !off && N * K <= kMmaWarpsWideMaxWeight && os == nullptr;
}

// A: q (int8, kQuantD < 0) or the activations (dtype kQuantD). dependent: launched as a
// programmatic dependent of the kernel before it in the stream (compute capability 9.0; a plain
// launch elsewhere or if the runtime declines). os (non-null, kOut >= 0): the kernel takes the
// outlier step too (kOutliers).
template <int MT, int RT, int kOut, bool kBias, int kQuantD, int kWarps = kMmaWarps>
bnb_status_t launch_mma_rows_mt(const GpuContext& ctx, bool dependent, int64_t M, int64_t N, int64_t K,
                                const void* A, const int8_t* B, int32_t* C, float* row_stats, const float* col_stats,
                                const void* bias, void* out, bool outliers, float t, int8_t* q,
                                const OutlierStep* os, gpuStream_t stream) {
  const auto kernel = mma_rows_kernel_for<MT, RT, kOut, kBias, kQuantD, kWarps>(os != nullptr);
  const float threshold = os != nullptr ? os->t : t;
  const void* X = os != nullptr ? os->X : nullptr;
  int32_t* columns = os != nullptr ? os->columns : nullptr;
  int64_t* count = os != nullptr ? os->count : nullptr;
  const dim3 grid(static_cast<unsigned>((N + 16 * RT - 1) / (16 * RT))), block(kWarps * 32);
  return launch_after(ctx, dependent, kernel, grid, block, stream, "int8_mma_rows_kernel", A, B, M, N, K, C,
                      row_stats, col_stats, bias, out, dependent, outliers, threshold, q, X, columns, count);
}

// The product of q and W for M <= 16: int32 C (kOut < 0) or dequantized into out (with the
// outlier step where os is non-null).
template <int kOut, bool kBias>
bnb_status_t launch_mma_rows(const GpuContext& ctx, bool dependent, int64_t M, int64_t N, int64_t K, const int8_t* A,
                             const int8_t* B, int32_t* C, const float* row_stats, const float* col_stats,
                             const void* bias, void* out, const OutlierStep* os, gpuStream_t stream) {
  float* rs = const_cast<float*>(row_stats);  // only the kQuantD kernels write it
  if (M <= 8) {
    const auto launch = mma_rows_wide(N, K, os) ? launch_mma_rows_mt<1, 1, kOut, kBias, -1, kMmaWarpsWide>
                                                : launch_mma_rows_mt<1, 1, kOut, kBias, -1, kMmaWarps>;
    return launch(ctx, dependent, M, N, K, A, B, C, rs, col_stats, bias, out, false, 0.0f, nullptr, os, stream);
  }
  if (mma_row_tiles(M) == 2 && os == nullptr) {  // the outlier step spills registers with two tiles
    return launch_mma_rows_mt<2, 2, kOut, kBias, -1>(ctx, dependent, M, N, K, A, B, C, rs, col_stats, bias, out,
                                                     false, 0.0f, nullptr, os, stream);
  }
  return launch_mma_rows_mt<2, 1, kOut, kBias, -1>(ctx, dependent, M, N, K, A, B, C, rs, col_stats, bias, out, false,
                                                   0.0f, nullptr, os, stream);
}

// The whole layer in one kernel (kQuantD): M <= 8, M * K <= kFusedQuantMaxElems, 16-byte aligned
// activations, no outlier columns to find across rows. Only with BNB_INT8_FUSED_QUANT=1: it is
// slower than the quantization followed by the dependent product (H100, M = 1: 12.9 against 9.8 us
// at 4096 x 4096, 38.7 against 26.9 us at 8192 x 8192; bench/results/h100_run19): every block
// reads and reduces the whole row before its first product.
bool fused_quant_fits(int64_t M, int64_t K, const void* A, float threshold) {
  static const bool on = env_on("BNB_INT8_FUSED_QUANT");
  return on && M <= 8 && M * K <= kFusedQuantMaxElems && (threshold == 0.0f || M == 1) &&
         (reinterpret_cast<uintptr_t>(A) & 15u) == 0;
}

template <int D>
bnb_status_t launch_fused_quant(const GpuContext& ctx, int64_t M, int64_t N, int64_t K, const void* A, bool outliers,
                                float t, const int8_t* W, const float* SCB, const void* bias, int8_t* q,
                                float* row_stats, void* out, const OutlierStep* os, gpuStream_t stream) {
  if (bias != nullptr) {
    return launch_mma_rows_mt<1, 1, D, true, D>(ctx, false, M, N, K, A, W, nullptr, row_stats, SCB, bias, out,
                                                outliers, t, q, os, stream);
  }
  return launch_mma_rows_mt<1, 1, D, false, D>(ctx, false, M, N, K, A, W, nullptr, row_stats, SCB, bias, out, outliers,
                                               t, q, os, stream);
}

#else

constexpr int64_t kMmaRowsMaxM = 0;
bool mma_rows_fit(const GpuContext&, int64_t, int64_t, int64_t, const int8_t*, const int8_t*) { return false; }

template <int kOut, bool kBias>
bnb_status_t launch_mma_rows(const GpuContext&, bool, int64_t, int64_t, int64_t, const int8_t*, const int8_t*,
                             int32_t*, const float*, const float*, const void*, void*, const OutlierStep*,
                             gpuStream_t) {
  return fail(BNB_ERR_INTERNAL, "int8_mma_rows_kernel is not built for HIP");
}
bool fused_quant_fits(int64_t, int64_t, const void*, float) { return false; }
template <int D>
bnb_status_t launch_fused_quant(const GpuContext&, int64_t, int64_t, int64_t, const void*, bool, float, const int8_t*,
                                const float*, const void*, int8_t*, float*, void*, const OutlierStep*, gpuStream_t) {
  return fail(BNB_ERR_INTERNAL, "int8_mma_rows_kernel is not built for HIP");
}

#endif  // !BNB_GPU_HIP

bnb_status_t launch_rows_matmul(int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B, int32_t* C,
                                gpuStream_t stream) {
  if (M <= 1) return launch_rows_matmul_m<1>(M, N, K, A, B, C, stream);
  if (M <= 2) return launch_rows_matmul_m<2>(M, N, K, A, B, C, stream);
  if (M <= 4) return launch_rows_matmul_m<4>(M, N, K, A, B, C, stream);
  if (M <= 8) return launch_rows_matmul_m<8>(M, N, K, A, B, C, stream);
  return launch_rows_matmul_m<16>(M, N, K, A, B, C, stream);
}

#if !defined(BNB_GPU_HIP)

// cuBLASLt, loaded once; absent = every product takes the kernel above.
struct CublasLt {
  decltype(&cublasLtCreate) create = nullptr;
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
  bool ok = false;

  CublasLt() {
    const std::string versioned = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);
    void* lib = dlopen(versioned.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) lib = dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return;
    ok = load(lib, "cublasLtCreate", &create) && load(lib, "cublasLtMatmulDescCreate", &desc_create) &&
         load(lib, "cublasLtMatmulDescSetAttribute", &desc_set) &&
         load(lib, "cublasLtMatrixLayoutCreate", &layout_create) &&
         load(lib, "cublasLtMatmulPreferenceCreate", &pref_create) &&
         load(lib, "cublasLtMatmulPreferenceSetAttribute", &pref_set) &&
         load(lib, "cublasLtMatmulPreferenceDestroy", &pref_destroy) &&
         load(lib, "cublasLtMatmulAlgoGetHeuristic", &heuristic) && load(lib, "cublasLtMatmul", &matmul);
  }
  template <class F>
  static bool load(void* lib, const char* name, F* fn) {
    *fn = reinterpret_cast<F>(dlsym(lib, name));
    return *fn != nullptr;
  }
};

const CublasLt& cublaslt() {
  static const CublasLt lt;
  return lt;
}

int alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int align = 16;
  while (align > 1 && (a % static_cast<uintptr_t>(align)) != 0) align /= 2;
  return align;
}

// The scratch cuBLASLt may use per product (the heuristic then also offers the algorithms that
// need one, e.g. split-K): 32 MiB, NVIDIA's advice for Hopper, taken from the stream-ordered pool
// per call, so concurrent streams never share it. BNB_INT8_LT_WORKSPACE=0: none (A/B timings).
size_t lt_workspace_limit() {
  static const size_t bytes = env_zero("BNB_INT8_LT_WORKSPACE") ? 0 : size_t{32} << 20;
  return bytes;
}

// The heuristic's first algorithm is not always the fastest (H100 run 18: with scratch allowed,
// M = 256, N = K = 8192 took 64 us where the first without took 41): it offers up to kLtCandidates
// with scratch and kLtCandidatesBare more without (asked separately: with scratch allowed its list
// leaves out some that need none, e.g. M = 256, N = K = 4096 ran 19.9 us without scratch and 21.7
// with the best of the first list, H100 run 19), and the first call of a shape times them
// (LtPlans::search). BNB_INT8_LT_SEARCH=0: the first (A/B timings).
constexpr int kLtCandidates = 8;
constexpr int kLtCandidatesBare = 4;
constexpr int kLtTimedRuns = 4;     // products per timed round of a candidate
constexpr float kLtMargin = 0.9f;   // another candidate must take at most this share of the first's time
bool lt_search_disabled() {
  static const bool off = env_zero("BNB_INT8_LT_SEARCH");
  return off;
}

struct LtAlgo {
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
};

// One product shape on one device: descriptors and the heuristic's candidates; `best` indexes the
// one calls run (the heuristic's first until the search has run).
struct LtPlan {
  bool ok = false;
  cublasLtHandle_t handle = nullptr;  // the device's
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t b_layout = nullptr, a_layout = nullptr, c_layout = nullptr;
  LtAlgo candidates[kLtCandidates + kLtCandidatesBare];
  int count = 0, best = 0;
  std::atomic<bool> searched{false};  // published after best (release), read before it (acquire)
  bool searching = false;             // a thread is timing the candidates (guarded by the plans' lock)
};

class LtPlans {
 public:
  // NULL when cuBLASLt is unavailable or has no algorithm for the shape.
  LtPlan* get(int device, int64_t M, int64_t N, int64_t K, int align_a, int align_b, int align_c) {
    const CublasLt& lt = cublaslt();
    if (!lt.ok) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    cublasLtHandle_t handle = handle_for(device, lt);
    if (handle == nullptr) return nullptr;
    const auto key = std::make_tuple(device, M, N, K, align_a * 256 + align_b * 16 + align_c);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second.ok ? &it->second : nullptr;
    LtPlan& plan = plans_[key];
    plan.handle = handle;
    plan.ok = make_plan(lt, handle, M, N, K, align_a, align_b, align_c, &plan);
    return plan.ok ? &plan : nullptr;
  }

  // The candidate a call runs: `best` once the shape's search has run, else the first call of a
  // shape on a stream that is not being captured searches. Every candidate runs on the caller's
  // own operands (C is written by the call that follows anyway), once to warm up, then in two
  // rounds of kLtTimedRuns between events on that stream (fastest(): which one is kept). The host
  // waits for it, once per shape. Under capture nothing is timed (the heuristic's first serves until a call outside one
  // searches). The timing runs outside the plans' lock, so other shapes' products go on; a
  // product of the same shape meanwhile runs the heuristic's first rather than wait. That is safe
  // because a plan is never moved or erased (std::map), its descriptors and candidates are fixed
  // once get() has made it, products already share the device's handle outside the lock, and
  // `best` is read only after `searched` (acquire) or as this function's result. The price: other
  // threads' products may now run on the GPU while the candidates are timed (as any other work on
  // the device always could), which can make the timings noisier.
  int search(LtPlan* plan, const int8_t* A, const int8_t* B, int32_t* C, gpuStream_t stream) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (plan->searched.load(std::memory_order_relaxed)) return plan->best;  // another thread's search
      if (plan->searching) return 0;
      if (plan->count < 2) {
        plan->searched.store(true, std::memory_order_release);
        return 0;
      }
      gpuStreamCaptureStatus capture = gpuStreamCaptureStatusNone;
      if (gpuStreamIsCapturing(stream, &capture) != gpuSuccess || capture != gpuStreamCaptureStatusNone) {
        (void)gpuGetLastError();
        return 0;
      }
      plan->searching = true;
    }
    const int best = fastest(*plan, A, B, C, stream);
    std::lock_guard<std::mutex> lock(mu_);
    plan->searching = false;
    if (best < 0) return 0;  // no events: a later call searches again
    plan->best = best;
    plan->searched.store(true, std::memory_order_release);
    return best;
  }

  // One product C^T = B^T-view x A with candidate c and its scratch.
  static bool lt_run(const LtPlan& plan, const LtAlgo& c, const int8_t* A, const int8_t* B, int32_t* C, void* scratch,
                     gpuStream_t stream) {
    const int32_t alpha = 1, beta = 0;
    return cublaslt().matmul(plan.handle, plan.desc, &alpha, B, plan.b_layout, A, plan.a_layout, &beta, C,
                             plan.c_layout, C, plan.c_layout, &c.algo, scratch, c.workspace,
                             stream) == CUBLAS_STATUS_SUCCESS;
  }

 private:
  // The index of plan's fastest candidate on the caller's operands (search), or -1 when the
  // events to time them could not be had.
  static int fastest(const LtPlan& plan, const int8_t* A, const int8_t* B, int32_t* C, gpuStream_t stream) {
    gpuEvent_t start = nullptr, stop = nullptr;
    if (gpuEventCreate(&start) != gpuSuccess || gpuEventCreate(&stop) != gpuSuccess) {
      (void)gpuGetLastError();
      if (start != nullptr) (void)gpuEventDestroy(start);
      return -1;
    }
    float best_ms = 0.0f, first_ms = 0.0f;
    int best = 0;
    for (int i = 0; i < plan.count; ++i) {
      const LtAlgo& c = plan.candidates[i];
      StreamScratch scratch(c.workspace, stream);
      if (!scratch.ok()) continue;
      const auto run = [&] { return lt_run(plan, c, A, B, C, scratch.get(), stream); };
      // The faster of two rounds of kLtTimedRuns products after one to warm up.
      float ms = 0.0f;
      bool ok = run();
      for (int round = 0; ok && round < 2; ++round) {
        ok = gpuEventRecord(start, stream) == gpuSuccess;
        for (int r = 0; ok && r < kLtTimedRuns; ++r) ok = run();
        float round_ms = 0.0f;
        ok = ok && gpuEventRecord(stop, stream) == gpuSuccess && gpuEventSynchronize(stop) == gpuSuccess &&
             gpuEventElapsedTime(&round_ms, start, stop) == gpuSuccess;
        if (ok && (round == 0 || round_ms < ms)) ms = round_ms;
      }
      (void)scratch.finish(BNB_SUCCESS, "the int8 product's search scratch");
      if (!ok) {
        (void)gpuGetLastError();
        continue;
      }
      if (i == 0) first_ms = ms;
      if (best_ms == 0.0f || ms < best_ms) {
        best_ms = ms;
        best = i;
      }
    }
    (void)gpuEventDestroy(start);
    (void)gpuEventDestroy(stop);
    // Another candidate replaces the heuristic's first only when clearly faster: these timings are
    // of products launched one by one from the host, and where candidates come within a few per
    // cent of each other the order there is not the order in a CUDA graph (H100 run 20, three
    // processes: M = 256, N = K = 4096 kept a candidate of 23.4 us in one, of 19.8 in the others;
    // M = 64 one of 15.3 us where the first takes 13.3).
    if (best != 0 && first_ms > 0.0f && best_ms > kLtMargin * first_ms) best = 0;
    return best;
  }

  cublasLtHandle_t handle_for(int device, const CublasLt& lt) {
    auto it = handles_.find(device);
    if (it != handles_.end()) return it->second;
    cublasLtHandle_t h = nullptr;
    if (lt.create(&h) != CUBLAS_STATUS_SUCCESS) h = nullptr;
    handles_[device] = h;
    return h;
  }

  // Column-major view: C^T[N, M] = op(B)[N, K] * A^T[K, M] with B stored K x N (ld K, transposed)
  // and A stored K x M (ld K): the "TN" int8 layout of cuBLASLt, written straight into row-major C.
  static bool make_plan(const CublasLt& lt, cublasLtHandle_t handle, int64_t M, int64_t N, int64_t K, int align_a,
                        int align_b, int align_c, LtPlan* plan) {
    if (lt.desc_create(&plan->desc, CUBLAS_COMPUTE_32I, CUDA_R_32I) != CUBLAS_STATUS_SUCCESS) return false;
    const cublasOperation_t trans = CUBLAS_OP_T;
    if (lt.desc_set(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans) != CUBLAS_STATUS_SUCCESS) return false;
    if (lt.layout_create(&plan->b_layout, CUDA_R_8I, static_cast<uint64_t>(K), static_cast<uint64_t>(N), K) !=
            CUBLAS_STATUS_SUCCESS ||
        lt.layout_create(&plan->a_layout, CUDA_R_8I, static_cast<uint64_t>(K), static_cast<uint64_t>(M), K) !=
            CUBLAS_STATUS_SUCCESS ||
        lt.layout_create(&plan->c_layout, CUDA_R_32I, static_cast<uint64_t>(N), static_cast<uint64_t>(M), N) !=
            CUBLAS_STATUS_SUCCESS) {
      return false;
    }
    cublasLtMatmulPreference_t pref = nullptr;
    if (lt.pref_create(&pref) != CUBLAS_STATUS_SUCCESS) return false;
    const uint64_t workspace = lt_workspace_limit();
    const uint32_t aa = static_cast<uint32_t>(align_a), ab = static_cast<uint32_t>(align_b),
                   ac = static_cast<uint32_t>(align_c);
    lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace);
    lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &ab, sizeof ab);  // cuBLASLt's A is our B
    lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &aa, sizeof aa);
    lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof ac);
    lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof ac);
    const auto add = [&](int wanted) {
      cublasLtMatmulHeuristicResult_t results[kLtCandidates] = {};
      int found = 0;
      if (lt.heuristic(handle, plan->desc, plan->b_layout, plan->a_layout, plan->c_layout, plan->c_layout, pref,
                       wanted, results, &found) != CUBLAS_STATUS_SUCCESS) {
        return;
      }
      for (int i = 0; i < found && i < wanted; ++i) {
        if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
        const auto same = [&](const LtAlgo& c) {  // the scratch-free list repeats some of the first
          return std::memcmp(&c.algo, &results[i].algo, sizeof c.algo) == 0;
        };
        if (std::none_of(plan->candidates, plan->candidates + plan->count, same)) {
          plan->candidates[plan->count++] = LtAlgo{results[i].algo, results[i].workspaceSize};
        }
      }
    };
    add(lt_search_disabled() ? 1 : kLtCandidates);
    if (!lt_search_disabled() && workspace > 0) {
      const uint64_t none = 0;
      lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &none, sizeof none);
      add(kLtCandidatesBare);
    }
    lt.pref_destroy(pref);
    return plan->count > 0;
  }

  std::mutex mu_;
  std::map<int, cublasLtHandle_t> handles_;
  std::map<std::tuple<int, int64_t, int64_t, int64_t, int>, LtPlan> plans_;
};

LtPlans& lt_plans() {
  static LtPlans plans;
  return plans;
}

// false: cuBLASLt declined (nothing launched).
bool try_cublaslt(const GpuContext& ctx, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                  int32_t* C, gpuStream_t stream) {
  if (K % 4 != 0 || M > INT32_MAX || N > INT32_MAX) return false;
  LtPlan* plan = lt_plans().get(ctx.device, M, N, K, alignment_of(A), alignment_of(B), alignment_of(C));
  if (plan == nullptr) return false;
  const int best =
      plan->searched.load(std::memory_order_acquire) ? plan->best : lt_plans().search(plan, A, B, C, stream);
  const LtAlgo& c = plan->candidates[best];
  StreamScratch scratch(c.workspace, stream);
  if (!scratch.ok()) return false;
  const bool ok = LtPlans::lt_run(*plan, c, A, B, C, scratch.get(), stream);
  return scratch.finish(ok ? BNB_SUCCESS : BNB_ERR_DEVICE, "the int8 product's scratch") == BNB_SUCCESS;
}

#else

bool try_cublaslt(const GpuContext&, int64_t, int64_t, int64_t, const int8_t*, const int8_t*, int32_t*, gpuStream_t) {
  return false;
}

#endif  // !BNB_GPU_HIP

bnb_status_t op_matmul(void* impl, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B, int32_t* C,
                       void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const auto s = static_cast<gpuStream_t>(stream);
  if (mma_rows_fit(ctx, M, N, K, A, B)) {
    return launch_mma_rows<-1, false>(ctx, false, M, N, K, A, B, C, nullptr, nullptr, nullptr, nullptr, nullptr, s);
  }
  if (M > kRowsKernelMaxM && try_cublaslt(ctx, M, N, K, A, B, C, s)) return BNB_SUCCESS;
  return launch_rows_matmul(M, N, K, A, B, C, s);
}

// ---------------------------------------------------------------- dequantization

template <int O, bool kBias>
bnb_status_t launch_dequant(int64_t M, int64_t N, const int32_t* C, const float* row_stats, const float* col_stats,
                            const void* bias, void* out, gpuStream_t stream) {
  const dim3 grid(static_cast<unsigned>((N + kDequantCols - 1) / kDequantCols), grid_of(M, 65535));
  dequant_kernel<O, kBias><<<grid, 256, 0, stream>>>(C, row_stats, col_stats, bias, M, N, out);
  return check_launch("int8 dequant_kernel");
}

template <int O>
bnb_status_t launch_dequant_o(int64_t M, int64_t N, const int32_t* C, const float* row_stats, const float* col_stats,
                              const void* bias, void* out, gpuStream_t stream) {
  if (bias != nullptr) return launch_dequant<O, true>(M, N, C, row_stats, col_stats, bias, out, stream);
  return launch_dequant<O, false>(M, N, C, row_stats, col_stats, bias, out, stream);
}

bnb_status_t op_mm_dequant(void* impl, int64_t M, int64_t N, const int32_t* C, const float* row_stats,
                           const float* col_stats, const void* bias, int32_t out_dtype, void* out, void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const auto s = static_cast<gpuStream_t>(stream);
  return with_dtype(out_dtype, "int8_mm_dequant", [&](auto d) {
    return launch_dequant_o<decltype(d)::value>(M, N, C, row_stats, col_stats, bias, out, s);
  });
}

// ---------------------------------------------------------------- the whole layer

// BNB_INT8_OUTLIER_MMA=1: the tensor-core kernels take the outlier step along (off by default
// until it has run on a GPU: its host emulation covers the outlier sums and the epilogue's use of
// them, not the kernel they sit in); otherwise outlier_product_kernel does.
// BNB_INT8_OUTLIER_DEQUANT=0: the layer's own dequantization pass runs before
// outlier_product_kernel, which then adds in place (A/B measurements of the fused form).
bool outlier_mma_disabled() {
  static const bool off = !env_on("BNB_INT8_OUTLIER_MMA");
  return off;
}
bool outlier_dequant_disabled() {
  static const bool off = env_zero("BNB_INT8_OUTLIER_DEQUANT");
  return off;
}

// What linear() leaves of bnb_int8_linear_outliers' outlier step to outlier_product_kernel.
enum class OutlierLeft { kNothing, kProduct, kProductAndDequant };

// M <= 16 on tensor cores: for small M * K one kernel for everything (every block finds the row
// statistics itself); else the quantization, then one kernel for the product and its
// dequantization, launched as a programmatic dependent of the quantization so that its first
// loads of W overlap it. Otherwise the three ops in turn.
// os (non-null): bnb_int8_linear_outliers. The quantization of more than one row also writes the
// column flags into os->columns and 0 into *os->count (launch_vectorwise_quant); the tensor-core
// kernels take the outlier step along, and *left says what remains (on the path of the three
// ops, the outlier product and, unless BNB_INT8_OUTLIER_DEQUANT=0, the dequantization).
bnb_status_t linear(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A, float threshold,
                    const int8_t* W, const float* SCB, const void* bias, int8_t* q, float* row_stats, int32_t* C,
                    void* out, const OutlierStep* os, OutlierLeft* left, void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const auto s = static_cast<gpuStream_t>(stream);
  const OutlierStep* mma_os = outlier_mma_disabled() ? nullptr : os;
  if (left != nullptr) *left = mma_os != nullptr ? OutlierLeft::kNothing : OutlierLeft::kProduct;
  if (mma_rows_fit(ctx, M, N, K, q, W) && fused_quant_fits(M, K, A, threshold)) {
    const bool outliers = threshold > 0.0f;
    const float t = outliers ? round_to_dtype(dtype, threshold) : 0.0f;
    return with_dtype(dtype, "int8_linear", [&](auto d) {
      return launch_fused_quant<decltype(d)::value>(ctx, M, N, K, A, outliers, t, W, SCB, bias, q, row_stats, out,
                                                    mma_os, s);
    });
  }
  bnb_status_t st = vectorwise_quant(impl, dtype, M, K, A, threshold, q, row_stats,
                                     os != nullptr ? os->columns : nullptr, os != nullptr ? os->count : nullptr,
                                     stream);
  if (st != BNB_SUCCESS) return st;
  if (mma_rows_fit(ctx, M, N, K, q, W)) {
    return with_dtype(dtype, "int8_linear", [&](auto d) {
      constexpr int D = decltype(d)::value;
      return bias != nullptr
                 ? launch_mma_rows<D, true>(ctx, true, M, N, K, q, W, C, row_stats, SCB, bias, out, mma_os, s)
                 : launch_mma_rows<D, false>(ctx, true, M, N, K, q, W, C, row_stats, SCB, bias, out, mma_os, s);
    });
  }
  // fp16 out in a build with BNB_INT8_CUTLASS (int8_cutlass.h): product and dequantization in one
  // Hopper kernel, no int32 C.
  if (os == nullptr && dtype == kF16 && int8_cutlass_linear(ctx, M, N, K, q, W, row_stats, SCB, bias, out, s, &st)) {
    return st;
  }
  st = op_matmul(impl, M, N, K, q, W, C, stream);
  if (st != BNB_SUCCESS) return st;
  if (os != nullptr) {
    *left = OutlierLeft::kProduct;
    if (!outlier_dequant_disabled()) {
      *left = OutlierLeft::kProductAndDequant;
      return BNB_SUCCESS;
    }
  }
  return op_mm_dequant(impl, M, N, C, row_stats, SCB, bias, dtype, out, stream);
}

bnb_status_t op_linear(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A, float threshold,
                       const int8_t* W, const float* SCB, const void* bias, int8_t* q, float* row_stats, int32_t* C,
                       void* out, void* stream) {
  return linear(impl, dtype, M, N, K, A, threshold, W, SCB, bias, q, row_stats, C, out, nullptr, nullptr, stream);
}


template <int D, bool kRowFlags>
bnb_status_t launch_outlier_product(dim3 grid, int epi, const void* A, const int8_t* W, const float* SCB, float t,
                                    int32_t* columns, int64_t* count, int64_t M, int64_t N, int64_t K,
                                    const int32_t* C, const float* row_stats, const void* bias, void* out,
                                    gpuStream_t s) {
  if (epi == kOutlierDequantBias) {
    outlier_product_kernel<D, kRowFlags, kOutlierDequantBias><<<grid, kOutlierThreads, 0, s>>>(
        A, W, SCB, t, columns, count, M, N, K, C, row_stats, bias, out);
  } else if (epi == kOutlierDequant) {
    outlier_product_kernel<D, kRowFlags, kOutlierDequant><<<grid, kOutlierThreads, 0, s>>>(
        A, W, SCB, t, columns, count, M, N, K, C, row_stats, bias, out);
  } else {
    outlier_product_kernel<D, kRowFlags, kOutlierInPlace><<<grid, kOutlierThreads, 0, s>>>(
        A, W, SCB, t, columns, count, M, N, K, C, row_stats, bias, out);
  }
  return check_launch("int8 outlier_product_kernel");
}

// BNB_INT8_OUTLIER_TILED=1: bnb_int8_linear_outliers as linear_outliers_tiled where K <= kEpiMaxK
// (A/B measurements before it becomes the default).
bool outlier_tiled(int64_t K) {
  static const bool on = env_on("BNB_INT8_OUTLIER_TILED");
  return on && K <= kEpiMaxK;
}

// The most rows linear_outliers_tiled quantizes with row_quant_outliers_kernel (one block, its rows
// side by side) rather than row_quant_kernel (a block a row) and zero_outlier_columns_kernel: 4.
// H100, N = K = 4096, 0.5 % outlier columns (bench/results/h100_run21): the layer at M = 2 and 4
// 19.4-19.5 against 23.4-23.6 us, at M = 8 the same, at M = 16 30.3 against 26.9 us.
// BNB_INT8_OUTLIER_QUANT_ROWS=n (at most kOutlierQuantRows) for A/B measurements.
constexpr int64_t kOutlierQuantRowsDefault = 4;
int64_t outlier_quant_rows() {
  static const int64_t rows = [] {
    const char* e = std::getenv("BNB_INT8_OUTLIER_QUANT_ROWS");
    const int64_t n = e != nullptr ? std::atoll(e) : kOutlierQuantRowsDefault;
    return std::clamp<int64_t>(n, 0, kOutlierQuantRows);
  }();
  return rows;
}

// As a programmatic dependent of the product: its blocks list the columns and gather Wc while the
// product runs.
template <int D>
bnb_status_t launch_outlier_epilogue(const GpuContext& ctx, dim3 grid, int epi, const void* A, const int8_t* W,
                                     const float* SCB, int32_t* columns, int64_t* count, int64_t M, int64_t N,
                                     int64_t K, const int32_t* C, const float* row_stats, const void* bias, void* out,
                                     bool vec, gpuStream_t s) {
  const auto kernel = epi == kOutlierDequantBias ? outlier_epilogue_kernel<D, kOutlierDequantBias>
                      : epi == kOutlierDequant   ? outlier_epilogue_kernel<D, kOutlierDequant>
                                                 : outlier_epilogue_kernel<D, kOutlierInPlace>;
  return launch_after(ctx, true, kernel, grid, dim3(kEpiThreads), s, "int8 outlier_epilogue_kernel", A, W, SCB,
                      columns, count, M, N, K, C, row_stats, bias, out, vec);
}

// bnb_int8_linear_outliers with the outlier step after the product in one tiled pass
// (outlier_epilogue_kernel). The quantization writes the flag bits (in `columns`) and zeroes
// *count: for few rows one block does all of it (row_quant_outliers_kernel); else the bits are
// cleared, row_quant_kernel sets them and zero_outlier_columns_kernel zeroes those columns of q.
// Then int8_mma_rows_kernel or, for fp16 where it is built, the CUTLASS kernel (both dequantize
// into out; the step adds in place), else op_matmul's int32 product (the step dequantizes it);
// then the step.
bnb_status_t linear_outliers_tiled(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                                   float threshold, const int8_t* W, const float* SCB, const void* bias, int8_t* q,
                                   float* row_stats, int32_t* C, int32_t* columns, int64_t* count, void* out,
                                   void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const auto s = static_cast<gpuStream_t>(stream);
  const float t = round_to_dtype(dtype, threshold);
  auto* bits = reinterpret_cast<uint32_t*>(columns);
  bnb_status_t st = BNB_SUCCESS;
  // Up to outlier_quant_rows() rows: row_quant_outliers_kernel, one block without the clearing
  // memset and the zeroing kernel.
  if (M <= outlier_quant_rows() && K % 16 == 0 && K <= kOutlierQuantMaxCols && aligned16(A) && aligned16(q)) {
    st = with_dtype(dtype, "int8_linear_outliers", [&](auto d) {
      row_quant_outliers_kernel<decltype(d)::value><<<1, kOutlierQuantThreads, 0, s>>>(A, M, K, t, q, row_stats,
                                                                                      bits, count);
      return check_launch("int8 row_quant_outliers_kernel");
    });
  } else {
    st = check(gpuMemsetAsync(bits, 0, static_cast<size_t>(ceil_div(K, 32)) * sizeof *bits, s),
               "clearing the outlier flags");
    if (st != BNB_SUCCESS) return st;
    st = with_dtype(dtype, "int8_linear_outliers", [&](auto d) {
      return launch_row_quant<decltype(d)::value>(ctx, M, K, A, true, t, q, row_stats, bits, count, s);
    });
    if (st == BNB_SUCCESS && M > 1) {  // one row: its outlier elements are already 0
      zero_outlier_columns_kernel<<<grid_of(ceil_div(M, int64_t{kZeroRows}), INT32_MAX), kZeroThreads, 0, s>>>(
          bits, M, K, q);
      st = check_launch("int8 zero_outlier_columns_kernel");
    }
  }
  if (st != BNB_SUCCESS) return st;
  int epi = kOutlierInPlace;
  if (mma_rows_fit(ctx, M, N, K, q, W)) {
    st = with_dtype(dtype, "int8_linear_outliers", [&](auto d) {
      constexpr int D = decltype(d)::value;
      return bias != nullptr
                 ? launch_mma_rows<D, true>(ctx, true, M, N, K, q, W, C, row_stats, SCB, bias, out, nullptr, s)
                 : launch_mma_rows<D, false>(ctx, true, M, N, K, q, W, C, row_stats, SCB, bias, out, nullptr, s);
    });
  } else if (dtype != kF16 || !int8_cutlass_linear(ctx, M, N, K, q, W, row_stats, SCB, bias, out, s, &st)) {
    st = op_matmul(impl, M, N, K, q, W, C, stream);
    epi = bias != nullptr ? kOutlierDequantBias : kOutlierDequant;
  }  // else the CUTLASS kernel (BNB_INT8_CUTLASS, fp16) dequantized into out: the step adds in place
  if (st != BNB_SUCCESS) return st;
  const int64_t n_tiles = ceil_div(N, int64_t{kEpiCols});
  const dim3 grid(grid_of(n_tiles, INT32_MAX),
                  grid_of(std::min(ceil_div(int64_t{ctx.sm_count} * kEpiBlocksPerSm, n_tiles),
                                   ceil_div(M, int64_t{kEpiRows})),
                          65535));
  const bool vec = N % 4 == 0 && aligned16(out) && aligned16(SCB) && (epi == kOutlierInPlace || aligned16(C));
  return with_dtype(dtype, "int8_linear_outliers", [&](auto d) {
    return launch_outlier_epilogue<decltype(d)::value>(ctx, grid, epi, A, W, SCB, columns, count, M, N, K, C,
                                                       row_stats, bias, out, vec, s);
  });
}

// bnb_int8_linear_outliers: bnb_int8_linear's kernels taking the outlier step along where they
// can (linear()), else outlier_product_kernel after them; either writes the column list and the
// count. With more than one row, the quantization's outlier_columns_kernel writes the column
// flags into `columns` and zeroes *count (the blocks of the kernel with the outlier step count
// themselves there); one row has no such kernel (its outlier elements are already 0 in q), and
// the outlier columns are found in A's row. No host synchronisation and no allocation:
// capturable.
bnb_status_t op_linear_outliers(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                                float threshold, const int8_t* W, const float* SCB, const void* bias, int8_t* q,
                                float* row_stats, int32_t* C, int32_t* columns, int64_t* count, void* out,
                                void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const auto s = static_cast<gpuStream_t>(stream);
  if (!(threshold > 0.0f)) {
    const bnb_status_t st = op_linear(impl, dtype, M, N, K, A, threshold, W, SCB, bias, q, row_stats, C, out, stream);
    if (st != BNB_SUCCESS) return st;
    return check(gpuMemsetAsync(count, 0, sizeof *count, s), "writing the outlier count");
  }
  if (outlier_tiled(K)) {
    return linear_outliers_tiled(impl, dtype, M, N, K, A, threshold, W, SCB, bias, q, row_stats, C, columns, count,
                                 out, stream);
  }
  const OutlierStep os{A, round_to_dtype(dtype, threshold), columns, count};
  OutlierLeft left = OutlierLeft::kNothing;
  const bnb_status_t st = linear(impl, dtype, M, N, K, A, threshold, W, SCB, bias, q, row_stats, C, out, &os, &left,
                                 stream);
  if (st != BNB_SUCCESS || left == OutlierLeft::kNothing) return st;
  const int epi = left == OutlierLeft::kProduct ? kOutlierInPlace
                                                : (bias != nullptr ? kOutlierDequantBias : kOutlierDequant);
  const int64_t n_tiles = ceil_div(N, int64_t{kOutlierTile}), m_tiles = ceil_div(M, int64_t{kOutlierTile});
  // Along M, blocks walk their m-tiles with their n-tiles' Wc kept: as many as are resident in
  // all (kOutlierBlocksPerSm per multiprocessor), at most one per m-tile.
  const dim3 grid(grid_of(n_tiles, 1 << 30),
                  grid_of(std::min(ceil_div(int64_t{ctx.sm_count} * kOutlierBlocksPerSm, n_tiles), m_tiles), 65535));
  return with_dtype(dtype, "int8_linear_outliers", [&](auto d) {
    constexpr int D = decltype(d)::value;
    return M == 1 ? launch_outlier_product<D, true>(grid, epi, A, W, SCB, os.t, columns, count, M, N, K, C,
                                                    row_stats, bias, out, s)
                  : launch_outlier_product<D, false>(grid, epi, A, W, SCB, os.t, columns, count, M, N, K, C,
                                                     row_stats, bias, out, s);
  });
}

}  // namespace

void register_int8_ops(bnb_backend_ops_t* ops) {
  ops->int8_vectorwise_quant = op_vectorwise_quant;
  ops->int8_outlier_columns = op_outlier_columns;
  ops->int8_matmul = op_matmul;
  ops->int8_mm_dequant = op_mm_dequant;
  ops->int8_linear = op_linear;
  ops->int8_linear_outliers = op_linear_outliers;
}

}  // namespace gpu
}  // namespace bnb
