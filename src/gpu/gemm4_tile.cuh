// The 4-bit matmul's tensor-core kernel for prefill and training sizes (M from 17 up, 16-bit
// activations, blocksize >= 64): out[M,N] = A[M,K] @ dequant(W)[N,K]^T (+ bias), the weights
// decoded in registers on their way into mma.sync m16n8k16 and never written to memory.
//
// It keeps the fragment layout of gemm4_mma_kernel (gemm4_mma.cuh: W rows are the 16-row
// operand, rows of A the 8-column operand, the same K permutation inside a 64-wide chunk, the
// chunk's unscaled sums scaled once per row) and reorganises the work so that each decoded
// weight and each staged activation serve many products:
//
// * A block of kTileWarps = 8 warps owns kTileRows = 64 W rows and 8 * MT rows of A. Warp w
//   takes W rows 32 (w & 1) .. + 32 (two 16-row groups) and every A row of the block, over the
//   chunks kg, kg + 4, ... (kg = w >> 1) of the block's K range: a warp's tile of 32 x 8 MT
//   products per chunk needs 2 x 16 table look-ups and MT x 2 16-byte activation reads for
//   2 x 4 x MT mma steps. The four K groups add their sums through shared memory at the end (in
//   a fixed order).
// * Rows of A go through shared memory kTileStages steps deep (cp.async, 16 bytes per copy; one
//   step = 4 chunks = 256 of K for all 8 MT rows); each lane reads its 32-byte activation run of
//   a chunk with two 16-byte loads (rows padded by 16 bytes: the loads of a quarter warp hit
//   distinct banks).
// * Packed weights go straight to registers, kTileRing steps ahead of their use (8 bytes of each
//   of the lane's four rows per chunk, evict-first), with the raw scale inputs: each of the four
//   lanes of a row group loads one of its four (row, chunk) scales and passes it on by shuffles.
// * The pair table (256 entries of two unscaled LUT values in dtype D) is replicated per lane as
//   in gemm4_mma_small_kernel, so a warp's look-ups hit 32 distinct banks.
// * grid = (M tiles, N / 64, K splits): the M tiles of one W row block are neighbours, so their
//   second reads of W come from L2. With a K split the block's sums are added to a binary32
//   workspace (atomics) and gemm4_finish_kernel adds the bias and rounds.
//
// Numerics are those of gemm4_mma_kernel (docs/GEMM4.md). tests/gpu_emu runs this kernel on the
// host (emulated mma and cp.async, one thread per CUDA thread).
#ifndef BNB_GPU_GEMM4_TILE_CUH_
#define BNB_GPU_GEMM4_TILE_CUH_

#include <cstdint>

#include "gemm4_mma.cuh"

namespace bnb {
namespace gpu {
namespace gemm4 {

constexpr int kTileWarps = 8;
constexpr int kTileRows = 64;                          // W rows per block
constexpr int kTileKGroups = 4;                        // warps splitting a step's K
constexpr int kTileStep = kTileKGroups * kMmaChunk;    // K per block step
constexpr int kTileStages = 4;                         // steps of A in shared memory (a power of two)
constexpr int kTileRing = 2;                           // steps of W in registers ahead of use
constexpr int kTileRowHalves = kTileStep + 8;          // staged row stride: +16 bytes

#if defined(BNB_GEMM4_HOST_MMA) || !defined(BNB_GPU_HIP)

// Dynamic shared memory of gemm4_tile_kernel<*, MT, *>: the replicated pair table, code2 and the
// stages of A (reused for the K groups' sums at the end).
__host__ __device__ constexpr int gemm4_tile_smem_bytes(int mt) {
  return kSmallTableBytes + 256 * 4 + kTileStages * 8 * mt * kTileRowHalves * 2;
}

template <int D, int MT, bool NESTED>
__global__ void __launch_bounds__(kTileWarps * 32, 1)
    gemm4_tile_kernel(const typename Elem<D>::T* __restrict__ A, const uint8_t* __restrict__ W, Scales4 scales,
                      Table16 table, const typename Elem<D>::T* __restrict__ bias, typename Elem<D>::T* __restrict__ out,
                      float* __restrict__ partial, int64_t M, int64_t N, int64_t K, int log2_blocksize,
                      int64_t k_split) {
  constexpr int kBM = 8 * MT;  // rows of A per block
  static_assert(kTileKGroups * 2 == kTileWarps, "two warp columns of W rows times the K groups");
  static_assert(3 * 2 * 32 * 2 * MT * 4 * 4 <= kTileStages * kBM * kTileRowHalves * 2,
                "the K groups' sums fit in the stages");
  BNB_GEMM4_DYNAMIC_SHARED uint32_t gemm4_tile_smem[];
  uint32_t* pairs = gemm4_tile_smem;                                          // [byte][64]: lanes in the first 32
  float* code2_s = reinterpret_cast<float*>(gemm4_tile_smem + kSmallTableBytes / 4);  // [256]
  uint16_t* stages = reinterpret_cast<uint16_t*>(code2_s + 256);             // [stage][kBM][kTileRowHalves]
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int ng = warp & 1, kg = warp >> 1;
  const char* table_bytes = reinterpret_cast<const char*>(pairs);
  const uint32_t lane_off = 4u * static_cast<uint32_t>(lane);

  const int64_t m_base = static_cast<int64_t>(blockIdx.x) * kBM;
  const int64_t n_base = static_cast<int64_t>(blockIdx.y) * kTileRows + 32 * ng;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * k_split;
  const int64_t k_end = k_begin + k_split < K ? k_begin + k_split : K;
  const int steps = static_cast<int>((k_end - k_begin + kTileStep - 1) / kTileStep);

  // The lane's four W rows: (group h, half e) = n_base + 16 h + 8 e + g, clamped to N - 1 (their
  // sums are never stored), as byte pointers at the lane's 8 bytes of a chunk.
  const uint8_t* w_row[2][2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      int64_t r = n_base + 16 * h + 8 * e + g;
      if (r >= N) r = N - 1;
      w_row[h][e] = W + r * (K / 2) + 8 * t;
    }
  }
  // The row whose scale this lane loads for its row group: (h, e) = (t >> 1, t & 1).
  int64_t s_row = n_base + 16 * (t >> 1) + 8 * (t & 1) + g;
  if (s_row >= N) s_row = N - 1;
  const float offset = NESTED ? __ldg(scales.offset) : 0.0f;

  // Step j's rows of A into stage j % kTileStages (nothing past the block's K range; rows past M
  // read row M - 1, whose sums are never stored). Always one group per call. Thread tid copies
  // the 16 bytes at piece tid % 32 of rows tid / 32 + 8 i (a warp: one row's 512 bytes).
  static_assert(kTileStep / 8 == 32 && kTileWarps == 8, "a warp copies one staged row per pass");
  const int a_piece = 8 * (tid & 31), a_row = tid >> 5;
  const bool a_full = m_base + kBM <= M;  // no row of the tile to clamp
  auto stage_a = [&](int j) {
    const int64_t k = k_begin + static_cast<int64_t>(j) * kTileStep + a_piece;
    if (j < steps && k < k_end) {
      uint16_t* dst = stages + (j & (kTileStages - 1)) * (kBM * kTileRowHalves) + a_row * kTileRowHalves + a_piece;
      const typename Elem<D>::T* src = A + (m_base + a_row) * K + k;
#pragma unroll
      for (int i = 0; i < kBM / 8; ++i) {
        const int64_t row = m_base + a_row + 8 * i;
        gpu_cp_async16(dst + 8 * i * kTileRowHalves, a_full || row < M ? src + 8 * i * K : A + (M - 1) * K + k);
      }
    }
    gpu_cp_async_commit();
  };

  struct Ring {
    uint2 w[2][2];  // 8 packed bytes of rows (h, e)
    uint32_t q;     // nested: absmax_q of the lane's scale row; else unused
    float a;        // nested: its absmax2 entry; plain: its absmax
  };
  // The first weight index (within a row) of the warp's chunk of step j, and whether the warp has
  // one there (uniform per warp).
  auto chunk_of = [&](int j) { return k_begin + static_cast<int64_t>(j) * kTileStep + kMmaChunk * kg; };
  auto has_chunk = [&](int j) { return j < steps && chunk_of(j) < k_end; };
  // The warp's chunk of step j (ring slot filled only when it has one).
  auto load_w = [&](int j, Ring& s) {
    const int64_t kc = chunk_of(j);
    if (has_chunk(j)) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int e = 0; e < 2; ++e) s.w[h][e] = __ldcs(reinterpret_cast<const uint2*>(w_row[h][e] + kc / 2));
      }
      const int64_t blk = (s_row * K + kc) >> log2_blocksize;
      if constexpr (NESTED) {
        s.q = __ldg(scales.absmax_q + blk);
        s.a = __ldg(scales.absmax2 + (blk >> scales.log2_blocksize2));
      } else {
        s.q = 0u;
        s.a = __ldg(scales.absmax + blk);
      }
    }
  };

  float c[2][MT][4];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int nt = 0; nt < MT; ++nt) c[h][nt][0] = c[h][nt][1] = c[h][nt][2] = c[h][nt][3] = 0.0f;
  }

  for (int j = 0; j < kTileStages - 1; ++j) stage_a(j);
  Ring ring[kTileRing];
#pragma unroll
  for (int i = 0; i < kTileRing; ++i) load_w(i, ring[i]);
  {
    // The tables, while the first loads are in flight. Thread i computes entry i once and writes
    // its 32 copies, rotated so that a warp's stores fall in distinct banks.
    const uint32_t v = gemm4_lut_pair<D>(table, tid);
    for (int j = 0; j < 32; ++j) pairs[tid * 64 + ((j + tid) & 31)] = v;
    if (NESTED) code2_s[tid] = __ldg(scales.code2 + tid);
  }

  // One chunk of the warp: decode its four rows, then per tile of 8 rows of A four mma steps
  // per row group, scaled once.
  auto compute = [&](const Ring& s, const uint16_t* stage) {
    const float mine = NESTED ? __fadd_rn(__fmul_rn(code2_s[s.q], s.a), offset) : s.a;
    float sc[2][2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int e = 0; e < 2; ++e) sc[h][e] = gpu_shfl(mine, (lane & ~3) | (2 * h + e), 32);
    }
    // Byte 2 st of a row holds the lane's weights 4 st, 4 st + 1, byte 2 st + 1 weights
    // 4 st + 2, 4 st + 3; the look-up address 256 b + 4 lane is one byte permute.
    uint32_t a[2][4][4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int st = 0; st < 4; ++st) {
        const uint32_t w0 = (st >> 1) == 0 ? s.w[h][0].x : s.w[h][0].y;
        const uint32_t w1 = (st >> 1) == 0 ? s.w[h][1].x : s.w[h][1].y;
        const uint32_t lo = 2 * (st & 1), hi = lo + 1;
        a[h][st][0] = *reinterpret_cast<const uint32_t*>(table_bytes + __byte_perm(w0, lane_off, 0x5504u | (lo << 4)));
        a[h][st][1] = *reinterpret_cast<const uint32_t*>(table_bytes + __byte_perm(w1, lane_off, 0x5504u | (lo << 4)));
        a[h][st][2] = *reinterpret_cast<const uint32_t*>(table_bytes + __byte_perm(w0, lane_off, 0x5504u | (hi << 4)));
        a[h][st][3] = *reinterpret_cast<const uint32_t*>(table_bytes + __byte_perm(w1, lane_off, 0x5504u | (hi << 4)));
      }
    }
#pragma unroll
    for (int nt = 0; nt < MT; ++nt) {
      const uint16_t* src = stage + (nt * 8 + g) * kTileRowHalves + kMmaChunk * kg + 16 * t;
      const uint4 q0 = *reinterpret_cast<const uint4*>(src);
      const uint4 q1 = *reinterpret_cast<const uint4*>(src + 8);
      const uint32_t b[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        // One chain of four steps per (h, nt): 2 MT independent chains per chunk hide its latency,
        // and no adds of partial chains (the loop is issue-bound: bench/gemm4/NOTES.md v4).
        float u[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int st = 0; st < 4; ++st) gemm4_mma16816<D>(u, a[h][st], b[2 * st], b[2 * st + 1]);
        c[h][nt][0] = __fmaf_rn(sc[h][0], u[0], c[h][nt][0]);
        c[h][nt][1] = __fmaf_rn(sc[h][0], u[1], c[h][nt][1]);
        c[h][nt][2] = __fmaf_rn(sc[h][1], u[2], c[h][nt][2]);
        c[h][nt][3] = __fmaf_rn(sc[h][1], u[3], c[h][nt][3]);
      }
    }
  };

  // Steps in groups of kTileRing so that the ring slot is a compile-time index.
  for (int j0 = 0; j0 < steps; j0 += kTileRing) {
#pragma unroll
    for (int r = 0; r < kTileRing; ++r) {
      const int j = j0 + r;
      if (j >= steps) break;  // uniform across the block
      gpu_cp_async_wait<kTileStages - 2>();  // step j's group has landed (this thread's copies)
      __syncthreads();  // everyone's copies of step j are visible, step j - 1's readers are done
      stage_a(j + kTileStages - 1);  // into the stage step j - 1 used
      if (has_chunk(j)) compute(ring[r], stages + (j & (kTileStages - 1)) * (kBM * kTileRowHalves));
      load_w(j + kTileRing, ring[r]);
    }
  }

  // The K groups' sums: groups 1..3 park theirs in the stages, group 0 adds them in order.
  gpu_cp_async_wait<0>();
  __syncthreads();
  float* red = reinterpret_cast<float*>(stages);  // [(kg - 1) * 2 + ng][value][lane]
  constexpr int kValues = 2 * MT * 4;
  if (kg > 0) {
    float* dst = red + ((kg - 1) * 2 + ng) * kValues * 32 + lane;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int nt = 0; nt < MT; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) dst[((h * MT + nt) * 4 + e) * 32] = c[h][nt][e];
      }
    }
  }
  __syncthreads();
  if (kg != 0) return;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int nt = 0; nt < MT; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float y = c[h][nt][e];
        for (int o = 0; o < kTileKGroups - 1; ++o) y += red[((o * 2 + ng) * kValues + (h * MT + nt) * 4 + e) * 32 + lane];
        // c[h][nt]: (row g, m 2t), (row g, m 2t + 1), (row g + 8, m 2t), (row g + 8, m 2t + 1).
        const int64_t n = n_base + 16 * h + g + (e < 2 ? 0 : 8);
        const int64_t m = m_base + nt * 8 + 2 * t + (e & 1);
        if (n >= N || m >= M) continue;
        if (partial != nullptr) {
          atomicAdd(partial + m * N + n, y);
        } else {
          if (bias != nullptr) y = __fadd_rn(y, gemm4_to_f32<D>(bias[n]));
          out[m * N + n] = gemm4_from_f32<D>(y);
        }
      }
    }
  }
}

#endif  // BNB_GEMM4_HOST_MMA || !BNB_GPU_HIP

}  // namespace gemm4
}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_GEMM4_TILE_CUH_
