// Launchers of the 4-bit inference matmul (gemm4_kernels.cuh) and its entry in the ops table.
//
// Paths, best first:
//  * fp16/bf16, M <= 16, blocksize >= 64 (CUDA): gemm4_mma_small_kernel (gemm4_mma.cuh), the
//    tensor-core kernel built to stream W (a block's warps split K of a 16-row tile).
//  * fp16/bf16, 17 <= M <= 64, blocksize >= 64 (CUDA): gemm4_tile_kernel (gemm4_tile.cuh), blocks
//    of 64 W rows x 32 or 64 rows of A, A staged by cp.async, W decoded in registers, K split over
//    warps and (to fill the GPU) blocks. BNB_GEMM4_TILE=0 turns it off, =1 takes it for every M.
//  * fp16/bf16, 5..16 where the small kernel can't run (and 17..64 where the tiled one can't),
//    blocksize >= 64 (CUDA): gemm4_mma_kernel: W decoded in registers into mma.sync fragments,
//    rows of A staged in shared memory.
//  * M <= 16 otherwise (fp32, HIP, blocksize 32, misaligned W): the SIMT kernel (batch-1 GEMV for
//    M = 1; tiles of 2, 4 or 8 rows of A otherwise): weights streamed once per tile of A,
//    decoded in registers, 4-8 rows of W per warp.
//  * M > 16 (CUDA): weight slabs dequantized to the activation dtype in a stream-ordered
//    workspace (by dequantize_4bit's own kernel, each slab a whole number of scale blocks), then cuBLAS (cublasGemmEx, binary32 compute) — loaded with dlopen at first use
//    so the plugin never needs the library to load. Without it (or on HIP) the SIMT kernel
//    covers every M.
// Nothing here synchronises the host: every path is capturable in a CUDA graph.
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <type_traits>

#include "gemm4_kernels.cuh"
#include "int_math.h"
#include "gemm4_mma.cuh"
#include "gemm4_tile.cuh"
#include "gpu_backend.h"
#include "tables.h"

#if !defined(BNB_GPU_HIP)
#include "cublas_api.h"
#endif

namespace bnb {
namespace gpu {
namespace {

using namespace gemm4;  // NOLINT(build/namespaces): this file's own kernels

constexpr int kThreads = kGemm4Warps * 32;
// Shared memory of the SIMT kernel: A (MB rows x kc elements as binary32), the table and code2
// in at most 96 KiB (the kernel's dynamic limit is raised once; smaller K takes less).
constexpr int kSimtSmemTail = 16 + 256;
constexpr int kStagedFloats = 96 * 1024 / 4 - kSimtSmemTail;
constexpr int64_t kSimtMaxM = 16;                          // larger M goes to the library GEMM
// 16-bit activations with M <= kMmaSmallMaxM take gemm4_mma_small_kernel; with kMmaMinM <= M <=
// kMmaMaxM (or 5..16 where the small kernel can't run) the tiled tensor-core kernel. Measured on
// the H100 (bench/gemm4/NOTES.md, v2): the tiled kernel ties with the SIMT kernel at M = 4 and
// is 1.2-1.3x faster than dequantize + cuBLAS at M = 64, 2.7x slower at M = 256 (each 64-row
// tile of A re-reads and re-decodes W there); v3: the small kernel is 1.9-2.0x faster than the
// SIMT kernel at M = 1..4 and 1.5-1.8x faster than the tiled one at M = 16.
constexpr int64_t kMmaMinM = 5;
constexpr int64_t kMmaSmallMaxM = 16;  // gemm4_mma_small_kernel: 1.4-2.6x of dense up to 16 (bench/gemm4/NOTES.md v3)
constexpr int64_t kMmaMaxM = 64;
// gemm4_tile_kernel from kTileMinM to kTileMaxM: on the H100 1.3x (M = 32) and 1.5x (M = 64)
// faster than gemm4_mma_kernel over the five bench shapes, slower than dequantize + cuBLAS from
// M = 128 on some shapes and on all from 256 (bench/results/h100_run15).
constexpr int64_t kTileMinM = 17;
constexpr int64_t kTileMaxM = 64;
constexpr int64_t kWorkspaceBytes = int64_t{128} << 20;  // dequantized slab of the large-M path

// The large-M paths' workspace in bytes: kWorkspaceBytes, or BNB_GEMM4_SLAB_BYTES (CTest runs the
// GPU suites with small slabs, so that weights cut into many of them stay tested).
int64_t workspace_bytes() {
  static const int64_t bytes = [] {
    const char* v = std::getenv("BNB_GEMM4_SLAB_BYTES");
    const long long b = v != nullptr ? std::atoll(v) : 0;
    return b > 0 ? static_cast<int64_t>(b) : kWorkspaceBytes;
  }();
  return bytes;
}

Table16 decode_table(int32_t quant_type) {
  const uint32_t* bits = quant_type == BNB_FP4 ? kFP4DecodeBits : kNF4Bits;
  Table16 t{};
  for (int i = 0; i < 16; ++i) t.v[i] = bits_to_float(bits[i]);
  return t;
}

struct Problem {
  int64_t M, N, K;
  const void* A;
  const uint8_t* W;
  Scales4 scales;
  Table16 table;
  int log2_blocksize;
  const void* bias;
  void* out;
  // As the core passed them, for dequantize_4bit_on (the large-M paths' slabs).
  const bnb_scales_resolved_t* resolved;
  int32_t quant_type;
  int64_t blocksize;
};

// ---------------------------------------------------------------- SIMT kernel

template <int D, int MB, int NR, int U, bool ALIGNED>
bnb_status_t launch_simt_tiles(const GpuContext& ctx, const Problem& p, gpuStream_t stream) {
  using T = typename Elem<D>::T;
  const auto kernel = gemm4_simt_kernel<D, MB, NR, U, ALIGNED>;
  // Raise the kernel's dynamic shared-memory limit once (not a stream operation: fine while a
  // stream is being captured). If that fails, stay within the default 48 KiB.
  static const int max_floats = [kernel] {
    const int want = (kStagedFloats + kSimtSmemTail) * static_cast<int>(sizeof(float));
    if (gpuFuncSetAttribute(reinterpret_cast<const void*>(kernel), gpuFuncAttributeMaxDynamicSharedMemorySize, want) ==
        gpuSuccess) {
      return kStagedFloats;
    }
    (void)gpuGetLastError();
    return 48 * 1024 / 4 - kSimtSmemTail;
  }();
  int64_t kc = max_floats / MB / 32 * 32;
  const int64_t k_rounded = (p.K + 31) / 32 * 32;
  if (kc > k_rounded) kc = k_rounded;
  const size_t smem = static_cast<size_t>(MB * kc + kSimtSmemTail) * sizeof(float);
  int per_sm = 0;
  if (gpuOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem) != gpuSuccess || per_sm < 1) {
    (void)gpuGetLastError();
    per_sm = 1;
  }
  const int64_t row_groups = ceil_div(p.N, kGemm4Warps * NR);
  const int64_t tiles = ceil_div(p.M, MB);
  // One row group per block up to 8 waves of resident blocks (the hardware hands finished
  // blocks' places to the next ones, so no wave quantisation at the tail; re-staging A per block
  // costs L2 reads only); beyond that, blocks walk several row groups.
  const int64_t resident = static_cast<int64_t>(ctx.sm_count) * per_sm;
  int64_t gx = row_groups;
  const int64_t cap = ceil_div(8 * resident, tiles);
  if (gx > cap) gx = cap < 1 ? 1 : cap;
  constexpr int64_t kMaxGridY = 65535;
  const T* A = static_cast<const T*>(p.A);
  T* out = static_cast<T*>(p.out);
  for (int64_t t0 = 0; t0 < tiles; t0 += kMaxGridY) {
    const int64_t ty = tiles - t0 < kMaxGridY ? tiles - t0 : kMaxGridY;
    const int64_t m0 = t0 * MB;
    const int64_t m = p.M - m0 < ty * MB ? p.M - m0 : ty * MB;
    const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(ty));
    kernel<<<grid, kThreads, smem, stream>>>(A + m0 * p.K, p.W, p.scales, p.table, static_cast<const T*>(p.bias),
                                             out + m0 * p.N, m, p.N, p.K, p.log2_blocksize, static_cast<int>(kc));
    const bnb_status_t st = check_launch("gemm4_simt_kernel");
    if (st != BNB_SUCCESS) return st;
  }
  return BNB_SUCCESS;
}

template <int D, int MB, int NR, int U>
bnb_status_t launch_simt(const GpuContext& ctx, const Problem& p, gpuStream_t stream) {
  return aligned16(p.W) ? launch_simt_tiles<D, MB, NR, U, true>(ctx, p, stream)
                        : launch_simt_tiles<D, MB, NR, U, false>(ctx, p, stream);
}

// Rows of W per warp (NR) grow with the tile of A so shared-memory reads of A (MB per weight
// piece, shared by NR rows) stay near the table look-ups (one per weight); NR * U 16-byte loads
// per lane are in flight.
template <int D>
bnb_status_t dispatch_simt(const GpuContext& ctx, const Problem& p, gpuStream_t stream) {
  if (p.M == 1) return launch_simt<D, 1, 4, 2>(ctx, p, stream);
  if (p.M == 2) return launch_simt<D, 2, 4, 2>(ctx, p, stream);
  if (p.M <= 4) return launch_simt<D, 4, 4, 2>(ctx, p, stream);
  return launch_simt<D, 8, 4, 2>(ctx, p, stream);
}

// Runs launch(partial) once: with partial = nullptr when splits == 1 (the kernel writes out), else
// over a zeroed binary32 workspace of M x N partial sums that gemm4_finish_kernel then adds
// the bias to and rounds (the transposed product passes N = its K). BNB_ERR_NOT_SUPPORTED when the workspace can't be had.
template <int D, typename Launch>
bnb_status_t with_split_k(const GpuContext& ctx, const Problem& p, gpuStream_t stream, int64_t splits, Launch launch) {
  using T = typename Elem<D>::T;
  if (splits == 1) return launch(static_cast<float*>(nullptr));
  const size_t bytes = static_cast<size_t>(p.M * p.N) * sizeof(float);
  StreamScratch scratch(bytes, stream);
  if (!scratch.ok()) return BNB_ERR_NOT_SUPPORTED;
  float* partial = scratch.get<float>();
  bnb_status_t st = check(gpuMemsetAsync(partial, 0, bytes, stream), "clearing the gemm_4bit partial sums");
  if (st == BNB_SUCCESS) st = launch(partial);
  if (st == BNB_SUCCESS) {
    const int64_t fgrid = persistent_grid(ctx, 8, (p.M * p.N + 255) / 256);
    gemm4_finish_kernel<D><<<static_cast<unsigned>(fgrid), 256, 0, stream>>>(
        partial, static_cast<const T*>(p.bias), static_cast<T*>(p.out), p.M, p.N);
    st = check_launch("gemm4_finish_kernel");
  }
  return scratch.finish(st, "freeing the gemm_4bit partial sums");
}

// `total` elements cut into at most `splits` ranges of whole `unit`s: the range length (a multiple
// of unit) and the number of ranges that gives (the split-K launchers' grid.z).
struct Ranges {
  int64_t length, count;
};
Ranges even_ranges(int64_t total, int64_t unit, int64_t splits) {
  const int64_t length = ceil_div(ceil_div(total, unit), splits) * unit;
  return {length, ceil_div(total, length)};
}

// out[M,K] = A[M,N] @ Wdq[N,K] on the SIMT kernel (no BLAS, no workspace but the partial sums):
// MB = 1 or 8 rows of A per block, W rows split over blocks until about four blocks per
// multiprocessor run (each split >= 64 rows).
template <int D, int MB>
bnb_status_t launch_transposed_simt(const GpuContext& ctx, const Problem& p, gpuStream_t stream) {
  using T = typename Elem<D>::T;
  const int64_t gx = ceil_div(p.K, kTransposedCols);
  const int64_t gy = ceil_div(p.M, MB);
  if (gx > 2147483647 || gy > 65535) return fail(BNB_ERR_NOT_SUPPORTED, "gemm_4bit_transposed: M or K too large");
  const int64_t want = 4 * static_cast<int64_t>(ctx.sm_count);
  int64_t splits = ceil_div(want, gx * gy);
  const int64_t max_splits = p.N / 64 > 1 ? p.N / 64 : 1;
  if (splits > max_splits) splits = max_splits;
  if (splits > 65535) splits = 65535;
  const Ranges rows = even_ranges(p.N, 1, splits);
  Problem sums = p;  // the partial sums are [M, K]
  sums.N = p.K;
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(rows.count));
  const bnb_status_t st = with_split_k<D>(ctx, sums, stream, rows.count, [&](float* partial) {
    gemm4_transposed_simt_kernel<D, MB><<<grid, kTransposedThreads, 0, stream>>>(
        static_cast<const T*>(p.A), p.W, p.scales, p.table, partial, static_cast<T*>(p.out), p.M, p.N, p.K,
        p.log2_blocksize, rows.length);
    return check_launch("gemm4_transposed_simt_kernel");
  });
  if (st == BNB_ERR_NOT_SUPPORTED) return fail(st, "gemm_4bit_transposed: no memory for the partial sums");
  return st;
}

// ---------------------------------------------------------------- large M: dequantize + cuBLAS
#if !defined(BNB_GPU_HIP)

CublasApi load_cublas() {
  if (env_on("BNB_GEMM4_NO_CUBLAS")) return CublasApi{};  // tests of the fallback
  return load_cublas_api();
}

const CublasApi& cublas() {
  static const CublasApi api = load_cublas();
  return api;
}

// One handle per thread and device (a handle's stream is per-handle state), created on first
// use and destroyed when the thread exits: the main thread's before static destructors and
// atexit handlers run, so while the CUDA runtime still stands.
class ThreadHandles {
 public:
  ThreadHandles() = default;
  ThreadHandles(const ThreadHandles&) = delete;
  ThreadHandles& operator=(const ThreadHandles&) = delete;
  ~ThreadHandles() {
    for (int device = 0; device < kMaxDevices; ++device) {
      if (handles_[device] == nullptr) continue;
      DeviceGuard guard(device);  // a handle is destroyed on the device it was created for
      cublas().destroy(handles_[device]);  // nothing to do about a failure at thread exit
    }
  }
  cublasHandle_t get(int device) {
    if (device < 0 || device >= kMaxDevices) return nullptr;
    if (handles_[device] == nullptr) {
      cublasHandle_t h = nullptr;
      if (cublas().create(&h) != CUBLAS_STATUS_SUCCESS) return nullptr;
      handles_[device] = h;
    }
    return handles_[device];
  }

 private:
  static constexpr int kMaxDevices = 64;
  cublasHandle_t handles_[kMaxDevices] = {};
};

cublasHandle_t thread_handle(int device) {
  thread_local ThreadHandles handles;
  return handles.get(device);
}

template <int D>
cudaDataType cuda_type() {
  return D == kF32 ? CUDA_R_32F : D == kF16 ? CUDA_R_16F : CUDA_R_16BF;
}

// The large-M paths' shape: W dequantized to the activation dtype, a slab of rows at a time, in a
// stream-ordered workspace, each slab handed to multiply(handle, n0, rows, ws) (a cuBLAS call).
// BNB_ERR_NOT_SUPPORTED (no message) when cuBLAS, a handle or the workspace is missing.
template <int D, typename Multiply>
bnb_status_t over_dequantized_slabs(const GpuContext& ctx, const Problem& p, gpuStream_t stream, Multiply multiply) {
  using T = typename Elem<D>::T;
  constexpr int64_t kIntMax = 2147483647;
  if (!cublas().ok || p.M > kIntMax || p.K > kIntMax || p.N > kIntMax) return BNB_ERR_NOT_SUPPORTED;
  cublasHandle_t handle = thread_handle(ctx.device);
  if (handle == nullptr || cublas().set_stream(handle, stream) != CUBLAS_STATUS_SUCCESS) return BNB_ERR_NOT_SUPPORTED;
  int64_t slab = workspace_bytes() / (p.K * static_cast<int64_t>(sizeof(T)));
  if (slab < p.N) {
    // Every slab starts on a whole block of scales (and of nested scales), so that it is a
    // dequantize_4bit of its own with offset scale pointers: a multiple of `rows` rows.
    const int64_t unit = p.blocksize * (p.resolved->absmax != nullptr ? 1 : p.resolved->blocksize2);
    const int64_t rows = unit / std::gcd(p.K, unit);
    slab = slab < rows ? rows : slab / rows * rows;
  }
  if (slab > p.N) slab = p.N;
  StreamScratch scratch(static_cast<size_t>(slab * p.K) * sizeof(T), stream);
  if (!scratch.ok()) return BNB_ERR_NOT_SUPPORTED;
  T* ws = scratch.get<T>();
  bnb_status_t st = BNB_SUCCESS;
  for (int64_t n0 = 0; n0 < p.N && st == BNB_SUCCESS; n0 += slab) {
    const int64_t rows = p.N - n0 < slab ? p.N - n0 : slab;
    const int64_t e0 = n0 * p.K;  // the slab's first weight, on a block boundary (above)
    const int64_t b0 = e0 >> p.log2_blocksize;
    bnb_scales_resolved_t s = *p.resolved;
    if (s.absmax != nullptr) {
      s.absmax += b0;
    } else {
      s.absmax_q += b0;
      s.absmax2 += b0 / s.blocksize2;
    }
    st = dequantize_4bit_on(ctx, p.quant_type, p.W + e0 / 2, &s, rows * p.K, p.blocksize, D, ws, stream);
    if (st == BNB_SUCCESS) st = multiply(handle, n0, rows, static_cast<const T*>(ws));
  }
  return scratch.finish(st, "freeing the gemm_4bit workspace");
}

// BNB_SUCCESS, or BNB_ERR_NOT_SUPPORTED when this path can't run (the caller falls back).
template <int D>
bnb_status_t gemm_via_cublas(const GpuContext& ctx, const Problem& p, gpuStream_t stream) {
  using T = typename Elem<D>::T;
  if (!cublas().ok) return BNB_ERR_NOT_SUPPORTED;  // before the bias is written
  T* out = static_cast<T*>(p.out);
  float beta = 0.0f;
  if (p.bias != nullptr) {
    const int64_t grid = persistent_grid(ctx, 8, (p.M * p.N + 255) / 256);
    gemm4_fill_bias_kernel<D><<<static_cast<unsigned>(grid), 256, 0, stream>>>(static_cast<const T*>(p.bias), out,
                                                                               p.M, p.N);
    const bnb_status_t st = check_launch("gemm4_fill_bias_kernel");
    if (st != BNB_SUCCESS) return st;
    beta = 1.0f;
  }
  return over_dequantized_slabs<D>(ctx, p, stream, [&](cublasHandle_t handle, int64_t n0, int64_t rows, const T* ws) {
    // Row-major out[M, N] is column-major out^T [N x M]: out^T[n0:n0+rows] = ws * A^T.
    const float alpha = 1.0f;
    const cublasStatus_t cs = cublas().gemm_ex(
        handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), static_cast<int>(p.M), static_cast<int>(p.K), &alpha,
        ws, cuda_type<D>(), static_cast<int>(p.K), p.A, cuda_type<D>(), static_cast<int>(p.K), &beta, out + n0,
        cuda_type<D>(), static_cast<int>(p.N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return cs == CUBLAS_STATUS_SUCCESS ? BNB_SUCCESS
                                       : fail(BNB_ERR_DEVICE, "gemm_4bit: cublasGemmEx failed with status %d", cs);
  });
}

// out[M,K] = A[M,N] @ Wdq[N,K] (bnb_gemm_4bit_transposed), for now the way the large-M forward
// works: each dequantized slab multiplied by cuBLAS into out (accumulating from the second on).
template <int D>
bnb_status_t transposed_via_cublas(const GpuContext& ctx, const Problem& p, gpuStream_t stream) {
  using T = typename Elem<D>::T;
  const T* A = static_cast<const T*>(p.A);
  const bnb_status_t st =
      over_dequantized_slabs<D>(ctx, p, stream, [&](cublasHandle_t handle, int64_t n0, int64_t rows, const T* ws) {
        // Column-major: out^T [K x M] (+)= ws^T [K x rows] * A^T[n0 : n0 + rows, :] ([rows x M], ld N).
        const float alpha = 1.0f, beta = n0 == 0 ? 0.0f : 1.0f;
        const cublasStatus_t cs = cublas().gemm_ex(
            handle, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(p.K), static_cast<int>(p.M), static_cast<int>(rows),
            &alpha, ws, cuda_type<D>(), static_cast<int>(p.K), A + n0, cuda_type<D>(), static_cast<int>(p.N), &beta,
            p.out, cuda_type<D>(), static_cast<int>(p.K), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        return cs == CUBLAS_STATUS_SUCCESS
                   ? BNB_SUCCESS
                   : fail(BNB_ERR_DEVICE, "gemm_4bit_transposed: cublasGemmEx failed with status %d", cs);
      });
  return st;  // BNB_ERR_NOT_SUPPORTED (no cuBLAS, a size past int32, no workspace): the SIMT kernel
}
#endif  // !BNB_GPU_HIP

// ---------------------------------------------------------------- tensor cores (CUDA, 16-bit A)
#if !defined(BNB_GPU_HIP)

bool mma_disabled() {
  static const bool off = env_on("BNB_GEMM4_NO_MMA");  // tests and A/B timings of the other paths
  return off;
}

// The blocks of a tensor-core kernel (launched with kBlockThreads threads and kSmem bytes of
// dynamic shared memory) the whole GPU holds at once: its resident blocks per multiprocessor,
// asked once per kernel, times the multiprocessors. 0 when it can't run with that shared memory;
// its launcher then returns BNB_ERR_NOT_SUPPORTED, and the next path takes the problem.
template <auto kKernel, int kBlockThreads, int kSmem>
int64_t resident_on_gpu(const GpuContext& ctx) {
  static const int per_sm = resident_blocks(kKernel, kBlockThreads, kSmem);
  return static_cast<int64_t>(ctx.sm_count) * per_sm;
}

// BNB_SUCCESS, or BNB_ERR_NOT_SUPPORTED when the kernel can't take the problem (the caller falls
// back to the other paths).
template <int D, int MT>
bnb_status_t launch_mma(const GpuContext& ctx, const Problem& p, gpuStream_t stream) {
  using T = typename Elem<D>::T;
  constexpr auto kernel = gemm4_mma_kernel<D, MT>;
  constexpr int kSmem = gemm4_mma_smem_bytes(MT);
  if (resident_on_gpu<kernel, kMmaWarps * 32, kSmem>(ctx) < 1) return BNB_ERR_NOT_SUPPORTED;
  const int64_t gx = ceil_div(p.N, kMmaRows);
  const int64_t gz = ceil_div(p.M, 8 * MT);
  if (gx > 2147483647 || gz > 65535) return BNB_ERR_NOT_SUPPORTED;
  // Split K while the grid has fewer than ~8 blocks per multiprocessor, keeping >= 512 of K each.
  const int64_t want = 8 * static_cast<int64_t>(ctx.sm_count);
  int64_t splits = ceil_div(want, gx * gz);
  const int64_t max_splits = p.K / kMmaSegment > 0 ? p.K / kMmaSegment : 1;
  if (splits > max_splits) splits = max_splits;
  if (splits < 1) splits = 1;
  const Ranges k = even_ranges(p.K, kMmaChunk, splits);
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(k.count), static_cast<unsigned>(gz));
  return with_split_k<D>(ctx, p, stream, k.count, [&](float* partial) {
    kernel<<<grid, kMmaWarps * 32, kSmem, stream>>>(static_cast<const T*>(p.A), p.W, p.scales, p.table,
                                                    static_cast<const T*>(p.bias), static_cast<T*>(p.out), partial,
                                                    p.M, p.N, p.K, p.log2_blocksize, k.length);
    return check_launch("gemm4_mma_kernel");
  });
}

// Whether gemm4_tile_kernel takes M rows: kTileMinM <= M <= kTileMaxM, or with BNB_GEMM4_TILE=0
// never, with BNB_GEMM4_TILE=1 every M >= kTileMinM (A/B timings of the other paths).
bool tile_takes(int64_t M) {
  static const int mode = env_zero("BNB_GEMM4_TILE") ? 0 : env_on("BNB_GEMM4_TILE") ? 2 : 1;
  return M >= kTileMinM && (mode == 2 || (mode == 1 && M <= kTileMaxM));
}

// The number of K splits for `blocks` blocks of at most `steps` steps each on `resident` block
// places: the fewest whose last wave is at least 90 % full (else the fullest), each split keeping
// at least 4 steps.
int64_t tile_splits(int64_t blocks, int64_t steps, int64_t resident) {
  const int64_t max_splits = steps / 4 > 1 ? steps / 4 : 1;
  int64_t best = 1;
  double best_fill = 0.0;
  for (int64_t s = 1; s <= max_splits && s <= 65535; ++s) {
    const int64_t total = blocks * s;
    const double fill = static_cast<double>(total) / static_cast<double>(round_up(total, resident));
    if (fill > best_fill + 0.02) {
      best = s;
      best_fill = fill;
    }
    if (fill >= 0.9) break;
  }
  return best;
}

template <int D, int MT, bool NESTED>
bnb_status_t launch_tile(const GpuContext& ctx, const Problem& p, gpuStream_t stream) {
  using T = typename Elem<D>::T;
  constexpr auto kernel = gemm4_tile_kernel<D, MT, NESTED>;
  constexpr int kSmem = gemm4_tile_smem_bytes(MT);
  const int64_t resident = resident_on_gpu<kernel, kTileWarps * 32, kSmem>(ctx);
  if (resident < 1) return BNB_ERR_NOT_SUPPORTED;
  const int64_t gx = ceil_div(p.M, 8 * MT);
  const int64_t gy = ceil_div(p.N, kTileRows);
  if (gx > 2147483647 || gy > 65535) return BNB_ERR_NOT_SUPPORTED;
  const int64_t splits = tile_splits(gx * gy, ceil_div(p.K, kTileStep), resident);
  const Ranges k = even_ranges(p.K, kTileStep, splits);
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(k.count));
  return with_split_k<D>(ctx, p, stream, k.count, [&](float* partial) {
    kernel<<<grid, kTileWarps * 32, kSmem, stream>>>(static_cast<const T*>(p.A), p.W, p.scales, p.table,
                                                     static_cast<const T*>(p.bias), static_cast<T*>(p.out), partial,
                                                     p.M, p.N, p.K, p.log2_blocksize, k.length);
    return check_launch("gemm4_tile_kernel");
  });
}

bool mma_small_disabled() {
  static const bool off = env_on("BNB_GEMM4_NO_MMA_SMALL");  // A/B timings against the other paths
  return off;
}

// M <= 16: gemm4_mma_small_kernel, a persistent grid of at most the resident blocks.
template <int D, int MT, bool NESTED>
bnb_status_t launch_mma_small(const GpuContext& ctx, const Problem& p, gpuStream_t stream) {
  using T = typename Elem<D>::T;
  constexpr auto kernel = gemm4_mma_small_kernel<D, MT, NESTED>;
  constexpr int kSmem = gemm4_mma_small_smem_bytes(MT);
  const int64_t resident = resident_on_gpu<kernel, kSmallWarps * 32, kSmem>(ctx);
  if (resident < 1) return BNB_ERR_NOT_SUPPORTED;
  const int64_t tiles = ceil_div(p.N, 16) * ceil_div(p.M, 8 * MT);
  const int64_t gx = tiles < resident ? tiles : resident;
  kernel<<<static_cast<unsigned>(gx), kSmallWarps * 32, kSmem, stream>>>(
      static_cast<const T*>(p.A), p.W, p.scales, p.table, static_cast<const T*>(p.bias), static_cast<T*>(p.out), p.M,
      p.N, p.K, p.log2_blocksize);
  return check_launch("gemm4_mma_small_kernel");
}

// Calls fn(std::integral_constant<bool, NESTED>{}) for the problem's kind of scales.
template <class Fn>
bnb_status_t with_nested(const Problem& p, Fn&& fn) {
  return p.scales.absmax == nullptr ? fn(std::true_type{}) : fn(std::false_type{});
}

template <int D>
bnb_status_t dispatch_mma(const GpuContext& ctx, const Problem& p, gpuStream_t stream) {
  if constexpr (D == kF32) {
    return BNB_ERR_NOT_SUPPORTED;  // the tensor cores take 16-bit operands
  } else {
    const bool aligned = (reinterpret_cast<uintptr_t>(p.A) & 15u) == 0 && (reinterpret_cast<uintptr_t>(p.W) & 3u) == 0;
    if (mma_disabled() || p.K % kMmaChunk != 0 || p.log2_blocksize < 6 || !aligned) return BNB_ERR_NOT_SUPPORTED;
    const bool small_ok = (reinterpret_cast<uintptr_t>(p.W) & 7u) == 0 && ((p.N * p.K) >> p.log2_blocksize) < (int64_t{1} << 32);
    if (p.M <= kMmaSmallMaxM && !mma_small_disabled() && small_ok) {
      const bnb_status_t st = with_nested(p, [&](auto nested) {
        constexpr bool kNested = decltype(nested)::value;
        return p.M <= 8 ? launch_mma_small<D, 1, kNested>(ctx, p, stream)
                        : launch_mma_small<D, 2, kNested>(ctx, p, stream);
      });
      if (st != BNB_ERR_NOT_SUPPORTED || p.M < kMmaMinM) return st;
    }
    if (p.M < kMmaMinM) return BNB_ERR_NOT_SUPPORTED;
    if (tile_takes(p.M) && (reinterpret_cast<uintptr_t>(p.W) & 7u) == 0) {
      const bnb_status_t st = with_nested(p, [&](auto nested) {
        constexpr bool kNested = decltype(nested)::value;
        return p.M <= 32 ? launch_tile<D, 4, kNested>(ctx, p, stream) : launch_tile<D, 8, kNested>(ctx, p, stream);
      });
      if (st != BNB_ERR_NOT_SUPPORTED) return st;
    }
    if (p.M > kMmaMaxM) return BNB_ERR_NOT_SUPPORTED;
    if (p.M <= 8) return launch_mma<D, 1>(ctx, p, stream);
    if (p.M <= 16) return launch_mma<D, 2>(ctx, p, stream);
    if (p.M <= 32) return launch_mma<D, 4>(ctx, p, stream);
    return launch_mma<D, 8>(ctx, p, stream);
  }
}
#endif  // !BNB_GPU_HIP

template <int D>
bnb_status_t dispatch(const GpuContext& ctx, const Problem& p, gpuStream_t stream) {
#if !defined(BNB_GPU_HIP)
  {
    const bnb_status_t st = dispatch_mma<D>(ctx, p, stream);
    if (st != BNB_ERR_NOT_SUPPORTED) return st;
  }
  if (p.M > kSimtMaxM) {
    const bnb_status_t st = gemm_via_cublas<D>(ctx, p, stream);
    if (st != BNB_ERR_NOT_SUPPORTED) return st;
  }
#endif
  return dispatch_simt<D>(ctx, p, stream);
}

Problem make_problem(int64_t M, int64_t N, int64_t K, const void* A, const uint8_t* W,
                     const bnb_scales_resolved_t* scales, int32_t quant_type, int64_t blocksize, const void* bias,
                     void* out) {
  Problem p;
  p.M = M;
  p.N = N;
  p.K = K;
  p.A = A;
  p.W = W;
  p.scales = scales4_of(*scales);
  p.table = decode_table(quant_type);
  p.log2_blocksize = log2_of(blocksize);
  p.bias = bias;
  p.out = out;
  p.resolved = scales;
  p.quant_type = quant_type;
  p.blocksize = blocksize;
  return p;
}

bnb_status_t gemm_4bit(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A, const uint8_t* W,
                       const bnb_scales_resolved_t* scales, int32_t quant_type, int64_t blocksize, const void* bias,
                       void* out, void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const Problem p = make_problem(M, N, K, A, W, scales, quant_type, blocksize, bias, out);
  const auto s = static_cast<gpuStream_t>(stream);
  return with_dtype(dtype, "gemm_4bit", [&](auto d) { return dispatch<decltype(d)::value>(ctx, p, s); });
}

template <int D>
bnb_status_t dispatch_transposed(const GpuContext& ctx, const Problem& p, gpuStream_t stream) {
#if !defined(BNB_GPU_HIP)
  const bnb_status_t st = transposed_via_cublas<D>(ctx, p, stream);
  if (st != BNB_ERR_NOT_SUPPORTED) return st;
#endif
  return p.M == 1 ? launch_transposed_simt<D, 1>(ctx, p, stream) : launch_transposed_simt<D, 8>(ctx, p, stream);
}

bnb_status_t gemm_4bit_transposed(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                                  const uint8_t* W, const bnb_scales_resolved_t* scales, int32_t quant_type,
                                  int64_t blocksize, void* out, void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const Problem p = make_problem(M, N, K, A, W, scales, quant_type, blocksize, nullptr, out);
  const auto s = static_cast<gpuStream_t>(stream);
  return with_dtype(dtype, "gemm_4bit_transposed",
                    [&](auto d) { return dispatch_transposed<decltype(d)::value>(ctx, p, s); });
}

}  // namespace

void register_gemm4_ops(bnb_backend_ops_t* ops) {
  ops->gemm_4bit = gemm_4bit;
  ops->gemm_4bit_transposed = gemm_4bit_transposed;
}

}  // namespace gpu
}  // namespace bnb
