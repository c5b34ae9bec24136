// The tensor-core kernel of the 4-bit matmul for 16-bit activations (fp16, bf16) and M from 2 up
// to a few hundred: out[M,N] = A[M,K] @ dequant(W)[N,K]^T (+ bias), W decoded in registers and fed
// to mma.sync m16n8k16 as the 16-row operand, rows of A as the 8-column operand.
//
// Layout. A block of kMmaWarps warps owns 16 * kMmaWarps consecutive W rows and one range of K
// (grid.y splits K when there are too few row blocks to fill the GPU; the partial sums then go
// to a binary32 workspace with atomics and gemm4_mma_finish_kernel adds the bias and rounds). A
// warp owns 16 W rows; in each 64-wide K chunk lane (g = lane / 4, t = lane % 4) loads the 8
// packed bytes [8t, 8t + 8) of rows g and g + 8 (weights k0 + 16t .. k0 + 16t + 15), decodes
// each byte through a 256-entry table of unscaled LUT pairs in dtype D (one shared-memory look-up
// per two weights) into the A fragments of four mma steps. The chunk lies inside one quantization
// block of each row (blocksize >= 64), so its products are summed unscaled by the tensor cores and
// scaled once per chunk and row: c += absmax * (LUT_D . A) in binary32.
// The K order inside a chunk is permuted consistently for both operands: fragment column 2t + c
// (c < 2) of step s is weight k0 + 16t + 4s + c, column 2t + 8 + c is k0 + 16t + 4s + 2 + c, so a
// lane's activation operand of step s is the 4 consecutive values A[m][k0 + 16t + 4s ...] and its
// operand for the whole chunk is one 32-byte run. MT tiles of 8 rows of A (blockIdx.z picks a
// group of 8 * MT rows) are staged in shared memory per K segment (rows padded by 16 bytes so the
// lanes' 16-byte reads hit distinct banks) and read by every warp of the block.
//
// Sums are binary32 inside the tensor cores (their order is the hardware's), one rounding to the
// output dtype; the LUT values are rounded to D (fp16: 2^-11, bf16: 2^-8 relative): within the
// documented bounds (docs/GEMM4.md), not bit-identical to other paths.
// tests/gpu_emu runs this kernel on the host with an emulated mma (same fragment layout).
#ifndef BNB_GPU_GEMM4_MMA_CUH_
#define BNB_GPU_GEMM4_MMA_CUH_

#include <cstdint>

#include "gemm4_kernels.cuh"

namespace bnb {
namespace gpu {
namespace gemm4 {

constexpr int kMmaWarps = 4;                       // warps per block: 64 W rows
constexpr int kMmaRows = 16 * kMmaWarps;
constexpr int kMmaChunk = 64;                      // K per step of a warp
constexpr int kMmaSegment = 512;                   // K staged in shared memory at a time
constexpr int kMmaRowHalves = kMmaSegment + 8;     // staged row stride: +16 bytes against bank conflicts

// Dynamic shared memory of gemm4_mma_kernel<MT>: the staged rows of A.
__host__ __device__ constexpr int gemm4_mma_smem_bytes(int mt) { return 8 * mt * kMmaRowHalves * 2; }

#if defined(BNB_GEMM4_HOST_MMA)
// Provided by the host emulation (tests/gpu_emu).
template <int D>
void gemm4_mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
#elif !defined(BNB_GPU_HIP)
template <int D>
__device__ __forceinline__ void gemm4_mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (D == kF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}
#endif

#if defined(BNB_GEMM4_HOST_MMA) || !defined(BNB_GPU_HIP)

// Two binary32 values rounded to dtype D, packed (lo in the low half).
template <int D>
__device__ __forceinline__ uint32_t gemm4_pack2(float lo, float hi) {
  return gemm4_bits<D>(gemm4_from_f32<D>(lo)) | (gemm4_bits<D>(gemm4_from_f32<D>(hi)) << 16);
}

// Entry b of the pair table: the unscaled LUT values of byte b's two nibbles in dtype D, the high
// nibble (even k) in the low half.
template <int D>
__device__ __forceinline__ uint32_t gemm4_lut_pair(const Table16& table, int b) {
  return gemm4_pack2<D>(table.v[b >> 4], table.v[b & 15]);
}

// MT tiles of 8 rows of A. partial != nullptr: the block's sums are added to partial[M, N]
// (split K); otherwise the block writes out (+ bias) itself. Requires blocksize >= 64, K % 64 == 0,
// A 16-byte and W 4-byte aligned (the launcher checks), and k_split % 64 == 0.
template <int D, int MT>
__global__ void __launch_bounds__(kMmaWarps * 32)
    gemm4_mma_kernel(const typename Elem<D>::T* __restrict__ A, const uint8_t* __restrict__ W, Gemm4Scales scales,
                     Table16 table, const typename Elem<D>::T* __restrict__ bias, typename Elem<D>::T* __restrict__ out,
                     float* __restrict__ partial, int64_t M, int64_t N, int64_t K, int log2_blocksize,
                     int64_t k_split) {
  BNB_GEMM4_DYNAMIC_SHARED uint16_t gemm4_mma_smem[];
  __shared__ uint32_t pairs[256];
  uint16_t* act = gemm4_mma_smem;  // [8 * MT][kMmaRowHalves]
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  for (int b = tid; b < 256; b += kMmaWarps * 32) pairs[b] = gemm4_lut_pair<D>(table, b);
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kMmaRows + warp * 16 + g;
  const int64_t row1 = row0 + 8;
  const int64_t m_base = static_cast<int64_t>(blockIdx.z) * 8 * MT;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.y) * k_split;
  const int64_t k_end = k_begin + k_split < K ? k_begin + k_split : K;
  float c[MT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i) c[i][0] = c[i][1] = c[i][2] = c[i][3] = 0.0f;

  for (int64_t seg = k_begin; seg < k_end; seg += kMmaSegment) {
    const int seg_len = static_cast<int>(k_end - seg < kMmaSegment ? k_end - seg : kMmaSegment);
    __syncthreads();  // the previous segment's readers are done (and the pair table is written)
    {
      // Stage rows m_base .. m_base + 8 MT of A, K range [seg, seg + seg_len): 16 bytes per load.
      const int per_row = seg_len / 8;
      const int total = 8 * MT * per_row;
      for (int i = tid; i < total; i += kMmaWarps * 32) {
        const int r = i / per_row;
        const int k8 = (i - r * per_row) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (m_base + r < M) v = __ldg(reinterpret_cast<const uint4*>(A + (m_base + r) * K + seg + k8));
        *reinterpret_cast<uint4*>(act + r * kMmaRowHalves + k8) = v;
      }
    }
    __syncthreads();
    // The lane's 8 packed bytes of rows row0 and row1 at chunk k0, and their blocks' scales.
    auto load = [&](int64_t k0, uint32_t (&w)[2][2], float (&s)[2]) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t row = h == 0 ? row0 : row1;
        w[h][0] = w[h][1] = 0u;
        s[h] = 0.0f;
        if (row < N) {
          const int64_t e = row * K + k0 + 16 * t;  // first weight of the lane's 16
          const uint32_t* q = reinterpret_cast<const uint32_t*>(W + e / 2);
          w[h][0] = __ldcs(q);
          w[h][1] = __ldcs(q + 1);
          s[h] = gemm4_block_scale(scales, e >> log2_blocksize);  // the chunk's block (blocksize >= 64)
        }
      }
    };
    // Two chunks ahead are in flight while one is decoded and multiplied.
    uint32_t w[2][2], wn[2][2] = {{0u, 0u}, {0u, 0u}};
    float s[2], sn[2] = {0.0f, 0.0f};
    load(seg, w, s);
    if (kMmaChunk < seg_len) load(seg + kMmaChunk, wn, sn);
    for (int kc = 0; kc < seg_len; kc += kMmaChunk) {
      uint32_t wnn[2][2] = {{0u, 0u}, {0u, 0u}};
      float snn[2] = {0.0f, 0.0f};
      if (kc + 2 * kMmaChunk < seg_len) load(seg + kc + 2 * kMmaChunk, wnn, snn);
      // Byte 2s of a row holds weights 4s, 4s + 1 of the lane's 16, byte 2s + 1 weights 4s + 2, 4s + 3.
      uint32_t a[4][4];
#pragma unroll
      for (int st = 0; st < 4; ++st) {
        const int sh = 16 * (st & 1);
        const int word = st >> 1;
        a[st][0] = pairs[(w[0][word] >> sh) & 0xffu];
        a[st][1] = pairs[(w[1][word] >> sh) & 0xffu];
        a[st][2] = pairs[(w[0][word] >> (sh + 8)) & 0xffu];
        a[st][3] = pairs[(w[1][word] >> (sh + 8)) & 0xffu];
      }
#pragma unroll
      for (int nt = 0; nt < MT; ++nt) {
        const uint16_t* src = act + (nt * 8 + g) * kMmaRowHalves + kc + 16 * t;
        const uint4 q0 = *reinterpret_cast<const uint4*>(src);
        const uint4 q1 = *reinterpret_cast<const uint4*>(src + 8);
        const uint32_t b[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
        float u[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // this chunk, unscaled
#pragma unroll
        for (int st = 0; st < 4; ++st) gemm4_mma16816<D>(u, a[st], b[2 * st], b[2 * st + 1]);
        c[nt][0] = __fmaf_rn(s[0], u[0], c[nt][0]);
        c[nt][1] = __fmaf_rn(s[0], u[1], c[nt][1]);
        c[nt][2] = __fmaf_rn(s[1], u[2], c[nt][2]);
        c[nt][3] = __fmaf_rn(s[1], u[3], c[nt][3]);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        w[h][0] = wn[h][0];
        w[h][1] = wn[h][1];
        s[h] = sn[h];
        wn[h][0] = wnn[h][0];
        wn[h][1] = wnn[h][1];
        sn[h] = snn[h];
      }
    }
  }

  // c[nt]: (row0, m 2t), (row0, m 2t + 1), (row1, m 2t), (row1, m 2t + 1) of tile nt.
#pragma unroll
  for (int nt = 0; nt < MT; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t n = e < 2 ? row0 : row1;
      const int64_t m = m_base + nt * 8 + 2 * t + (e & 1);
      if (n >= N || m >= M) continue;
      if (partial != nullptr) {
        atomicAdd(partial + m * N + n, c[nt][e]);
      } else {
        float y = c[nt][e];
        if (bias != nullptr) y = __fadd_rn(y, gemm4_to_f32<D>(bias[n]));
        out[m * N + n] = gemm4_from_f32<D>(y);
      }
    }
  }
}

// out[m, n] = RN_D(partial[m, n] + bias[n]) after a split-K launch.
template <int D>
__global__ void gemm4_mma_finish_kernel(const float* __restrict__ partial, const typename Elem<D>::T* __restrict__ bias,
                                        typename Elem<D>::T* __restrict__ out, int64_t M, int64_t N) {
  const int64_t total = M * N;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float y = partial[i];
    if (bias != nullptr) y = __fadd_rn(y, gemm4_to_f32<D>(bias[i % N]));
    out[i] = gemm4_from_f32<D>(y);
  }
}

#endif  // BNB_GEMM4_HOST_MMA || !BNB_GPU_HIP

}  // namespace gemm4
}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_GEMM4_MMA_CUH_
