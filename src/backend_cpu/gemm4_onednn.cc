// The 4-bit products at large M through oneDNN: W is decoded one slab at a time (fp32: the exact
// weights; bf16: rounded to bf16) and each slab is multiplied by oneDNN's matmul (AMX or AVX-512
// BF16 for bf16, its fp32 GEMM kernels for fp32), which outruns the register tiles once there are
// enough rows to amortize the decode (bench/results/gemm4_onednn_cpu.md). Slabs bound the scratch
// (32 MiB by default) whatever the weight:
//   forward     out[:, n0:n1] = A[M, K] @ Wslab[n0:n1, 0:K]^T (+ bias[n0:n1])   rows of W
//   transposed  out[:, k0:k1] = A[M, N] @ Wslab[0:N, k0:k1]                     columns of W
// so every slab writes its own columns of out and nothing is summed across slabs.
#include <algorithm>
#include <cstdint>
#include <new>

#include "gemm4_common.h"
#include "hwy/aligned_allocator.h"
#include "onednn.h"

namespace bnb {
namespace cpu {
namespace {

// W[n0 : n0 + rows][k0 : k0 + kc] into slab (row stride kc; bf16 or binary32), the rows split
// over the pool.
void decode_slab(ThreadPool& pool, bool bf16, const Gemm4Args& args, int64_t n0, int64_t rows, int64_t k0, int64_t kc,
                 void* slab) {
  const int64_t tasks = std::min<int64_t>(rows, int64_t{4} * pool.num_threads());
  pool.run(tasks, [&](int64_t t) {
    const int64_t r0 = t * rows / tasks, r1 = (t + 1) * rows / tasks;
    if (bf16) {
      gemm4_bf16_decode(args, n0 + r0, r1 - r0, k0, kc, static_cast<uint16_t*>(slab) + r0 * kc, kc);
    } else {
      gemm4_decode_f32(args, n0 + r0, r1 - r0, k0, kc, static_cast<float*>(slab) + r0 * kc, kc);
    }
  });
}

}  // namespace

bool gemm4_onednn(ThreadPool& pool, bool transposed, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                  const Gemm4Args& args, const void* bias, void* out, int64_t slab_bytes) {
  if (!onednn_available()) return false;
  const bool bf16 = dtype == BNB_BF16;
  const OnednnType type = bf16 ? OnednnType::kBF16 : OnednnType::kF32;
  const int64_t es = bf16 ? 2 : 4;
  const int32_t threads = static_cast<int32_t>(pool.num_threads());
  // Along the slabbed dimension: how many rows (forward) or columns (transposed, a multiple of 32)
  // of W one slab holds.
  const int64_t other = transposed ? N : K;
  const int64_t step = transposed ? 32 : 1;
  const int64_t extent = transposed ? K : N;
  const int64_t per_slab = std::min(extent, std::max(step, slab_bytes / (es * other) / step * step));
  hwy::AlignedFreeUniquePtr<uint8_t[]> slab = hwy::AllocateAligned<uint8_t>(static_cast<size_t>(per_slab * other * es));
  if (!slab) throw std::bad_alloc();
  auto* o = static_cast<uint8_t*>(out);
  for (int64_t s0 = 0; s0 < extent; s0 += per_slab) {
    const int64_t width = std::min(per_slab, extent - s0);
    bool ok;
    if (transposed) {
      decode_slab(pool, bf16, args, 0, N, s0, width, slab.get());
      const OnednnMatmul shape{M, width, N, type, type, type, OnednnType::kNone, N, width, K, false};
      ok = onednn_matmul(threads, shape, A, slab.get(), nullptr, o + s0 * es);
    } else {
      decode_slab(pool, bf16, args, s0, width, 0, K, slab.get());
      const OnednnMatmul shape{M, width, K, type, type, type, bias != nullptr ? type : OnednnType::kNone, K, K, N, true};
      ok = onednn_matmul(threads, shape, A, slab.get(),
                         bias != nullptr ? static_cast<const uint8_t*>(bias) + s0 * es : nullptr, o + s0 * es);
    }
    if (!ok) return false;  // the caller recomputes all of out
  }
  return true;
}

}  // namespace cpu
}  // namespace bnb
