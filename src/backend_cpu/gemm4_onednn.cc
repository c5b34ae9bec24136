// The 4-bit products with bf16 activations at large M: W is decoded to bf16 one slab at a time and
// each slab is multiplied by oneDNN's bf16 matmul (AMX or AVX-512 BF16, where the CPU has them),
// which outruns the register-tile kernels once there are enough rows to amortize the decode
// (bench/results/gemm4_onednn_cpu.md). Slabs bound the scratch (32 MiB by default) whatever the
// weight:
//   forward     out[:, n0:n1] = A[M, K] @ Wslab[n0:n1, 0:K]^T (+ bias[n0:n1])   rows of W
//   transposed  out[:, k0:k1] = A[M, N] @ Wslab[0:N, k0:k1]                     columns of W
// so every slab writes its own columns of out and nothing is accumulated across slabs.
#include <algorithm>
#include <cstdint>
#include <new>

#include "gemm4_common.h"
#include "hwy/aligned_allocator.h"
#include "onednn.h"

namespace bnb {
namespace cpu {
namespace {

// W[n0 : n0 + rows][k0 : k0 + kc] into slab (row stride kc), the rows split over the pool.
void decode_slab(ThreadPool& pool, const Gemm4Args& args, int64_t n0, int64_t rows, int64_t k0, int64_t kc,
                 uint16_t* slab) {
  const int64_t tasks = std::min<int64_t>(rows, int64_t{4} * pool.num_threads());
  pool.run(tasks, [&](int64_t t) {
    const int64_t r0 = t * rows / tasks, r1 = (t + 1) * rows / tasks;
    gemm4_bf16_decode(args, n0 + r0, r1 - r0, k0, kc, slab + r0 * kc, kc);
  });
}

}  // namespace

bool gemm4_bf16_onednn(ThreadPool& pool, bool transposed, int64_t M, int64_t N, int64_t K, const uint16_t* A,
                       const Gemm4Args& args, const uint16_t* bias, uint16_t* out, int64_t slab_bytes) {
  if (!onednn_available()) return false;
  const int32_t threads = static_cast<int32_t>(pool.num_threads());
  // Along the slabbed dimension: how many rows (forward) or columns (transposed, a multiple of 32)
  // of W one slab holds.
  const int64_t other = transposed ? N : K;
  const int64_t step = transposed ? 32 : 1;
  const int64_t extent = transposed ? K : N;
  const int64_t per_slab = std::min(extent, std::max(step, slab_bytes / (2 * other) / step * step));
  hwy::AlignedFreeUniquePtr<uint16_t[]> slab = hwy::AllocateAligned<uint16_t>(static_cast<size_t>(per_slab * other));
  if (!slab) throw std::bad_alloc();
  for (int64_t s0 = 0; s0 < extent; s0 += per_slab) {
    const int64_t width = std::min(per_slab, extent - s0);
    bool ok;
    if (transposed) {
      decode_slab(pool, args, 0, N, s0, width, slab.get());
      const OnednnMatmul shape{M, width, N, OnednnType::kBF16, OnednnType::kBF16, OnednnType::kBF16, OnednnType::kNone,
                               N, width, K, false};
      ok = onednn_matmul(threads, shape, A, slab.get(), nullptr, out + s0);
    } else {
      decode_slab(pool, args, s0, width, 0, K, slab.get());
      const OnednnMatmul shape{M, width, K, OnednnType::kBF16, OnednnType::kBF16, OnednnType::kBF16,
                               bias != nullptr ? OnednnType::kBF16 : OnednnType::kNone, K, K, N, true};
      ok = onednn_matmul(threads, shape, A, slab.get(), bias != nullptr ? bias + s0 : nullptr, out + s0);
    }
    if (!ok) return false;  // the caller recomputes all of out
  }
  return true;
}

}  // namespace cpu
}  // namespace bnb
