// The tensor-core kernel of the 4-bit matmul for 16-bit activations (fp16, bf16) and M from 2 up
// to a few hundred: out[M,N] = A[M,K] @ dequant(W)[N,K]^T (+ bias), W decoded in registers and fed
// to mma.sync m16n8k16 as the 16-row operand, rows of A as the 8-column operand.
//
// Layout. A block of kMmaWarps warps owns 16 * kMmaWarps consecutive W rows and one range of K
// (grid.y splits K when there are too few row blocks to fill the GPU; the partial sums then go
// to a binary32 workspace with atomics and gemm4_finish_kernel adds the bias and rounds). A
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
    gemm4_mma_kernel(const typename Elem<D>::T* __restrict__ A, const uint8_t* __restrict__ W, Scales4 scales,
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

// ---------------------------------------------------------------- small M (1 .. 8 MT)
// gemm4_mma_small_kernel<D, MT, NESTED>: the same fragments for M <= 8 * MT (MT = 1, 2), built to
// stream W at memory bandwidth. A block of kSmallWarps warps owns one tile of 16 W rows
// (persistent: it walks tiles blockIdx.x, + gridDim.x, ...); its warps split that tile's K into
// contiguous chunk ranges and add their sums through shared memory at the end, so no partial-sum
// workspace, atomics or second kernel. Each warp keeps kDepth chunks of loads in flight (W
// bytes, the blocks' scale inputs and the activation fragments, read from global memory: they are
// L1/L2 resident) in a register ring indexed at compile time. The pair table is replicated once
// per lane: entry b of lane l is the word at byte 256 b + 4 l, so every look-up of a warp hits 32
// distinct banks and its address is one byte permute of the packed word and the lane's offset;
// the table is filled once per block. Rows past N read row N - 1 and rows of A past M read the
// last real row (their sums are never stored), so the loads need no predicates and M = 1 fetches
// each activation once per t.
constexpr int kSmallWarps = 8;  // 256 threads: one per pair-table entry when filling it
constexpr int kSmallTableBytes = 256 * 256;


// Dynamic shared memory of gemm4_mma_small_kernel<*, MT, *>: table, per-warp sums, code2.
__host__ __device__ constexpr int gemm4_mma_small_smem_bytes(int mt) {
  return kSmallTableBytes + kSmallWarps * 32 * 4 * mt * 4 + 256 * 4;
}

template <int D, int MT, bool NESTED>
__global__ void __launch_bounds__(kSmallWarps * 32, 2)  // two blocks per SM: <= 128 registers
    gemm4_mma_small_kernel(const typename Elem<D>::T* __restrict__ A, const uint8_t* __restrict__ W, Scales4 scales,
                           Table16 table, const typename Elem<D>::T* __restrict__ bias,
                           typename Elem<D>::T* __restrict__ out, int64_t M, int64_t N, int64_t K, int log2_blocksize) {
  using T = typename Elem<D>::T;
  constexpr int kDepth = MT == 1 ? 4 : 3;  // chunks in flight per warp (registers: MT = 2 holds more)
  static_assert(kDepth <= 4, "a row group has four lanes to load the scales of a cycle");
  BNB_GEMM4_DYNAMIC_SHARED uint32_t gemm4_small_smem[];
  uint32_t* pairs = gemm4_small_smem;                                       // [byte][64]: lanes in the first 32
  float* red = reinterpret_cast<float*>(gemm4_small_smem + kSmallTableBytes / 4);  // [warp][lane][tile][4]
  float* code2_s = red + kSmallWarps * 32 * 4 * MT;                                 // [256]
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const float offset = NESTED ? __ldg(scales.offset) : 0.0f;
  const char* table_bytes = reinterpret_cast<const char*>(pairs);
  const uint32_t lane_off = 4u * static_cast<uint32_t>(lane);
  bool filled = false;  // the tables are written once, while the first tile's loads are in flight

  const int64_t row_tiles = (N + 15) / 16;
  const int64_t tiles = row_tiles * ((M + 8 * MT - 1) / (8 * MT));
  const int nchunks = static_cast<int>(K / kMmaChunk);
  const int c_begin = static_cast<int>(int64_t{nchunks} * warp / kSmallWarps);
  const int c_end = static_cast<int>(int64_t{nchunks} * (warp + 1) / kSmallWarps);
  const int chunk_shift = log2_blocksize - 6;  // chunk index -> block index within a row

  struct Stage {
    uint2 w[2];      // 8 packed bytes of rows row0, row1
    uint4 b[MT][2];  // 16 activations of the lane's A row per tile of 8 rows
  };

  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {  // uniform across the block
    const int64_t rt = tile % row_tiles;
    const int64_t m_base = tile / row_tiles * 8 * MT;
    const int64_t mb = M - m_base < 8 * MT ? M - m_base : 8 * MT;
    // Per row h (g, g + 8): its packed bytes at the lane's offset and its first block (block
    // indices fit 32 bits: the launcher checks).
    const uint8_t* w_row[2];
    uint32_t blk0[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      int64_t r = rt * 16 + g + 8 * h;
      if (r >= N) r = N - 1;
      w_row[h] = W + r * (K / 2) + 8 * t;
      blk0[h] = static_cast<uint32_t>((r * K) >> log2_blocksize);
    }
    const T* a_rows[MT];
#pragma unroll
    for (int nt = 0; nt < MT; ++nt) {
      const int64_t r = nt * 8 + g < mb ? nt * 8 + g : mb - 1;
      a_rows[nt] = A + (m_base + r) * K + 16 * t;
    }
    // Scales: the four lanes of a row group load those of four consecutive chunks at once (one
    // sector instead of four) and pass them on with shuffles. Nested: a warp's chunk range meets
    // at most a few absmax2 entries; its first and last are loaded once per tile.
    uint32_t g_first[2] = {0u, 0u}, g_last[2] = {0u, 0u};
    float a2_first[2] = {0.0f, 0.0f}, a2_last[2] = {0.0f, 0.0f};
    if constexpr (NESTED) {
      if (c_begin < c_end) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          g_first[h] = (blk0[h] + (static_cast<uint32_t>(c_begin) >> chunk_shift)) >> scales.log2_blocksize2;
          g_last[h] = (blk0[h] + (static_cast<uint32_t>(c_end - 1) >> chunk_shift)) >> scales.log2_blocksize2;
          a2_first[h] = __ldg(scales.absmax2 + g_first[h]);
          a2_last[h] = __ldg(scales.absmax2 + g_last[h]);
        }
      }
    }
    // Raw scale inputs of chunk cb + t (clamped to the last chunk of the row).
    auto load_scales = [&](int cb, uint32_t (&q)[2], float (&a)[2]) {
      const int c = cb + t < nchunks ? cb + t : nchunks - 1;
      const uint32_t kb = static_cast<uint32_t>(c) >> chunk_shift;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t blk = blk0[h] + kb;
        if constexpr (NESTED) {
          q[h] = __ldg(scales.absmax_q + blk);
          const uint32_t gi = blk >> scales.log2_blocksize2;
          a[h] = gi == g_first[h] ? a2_first[h] : gi == g_last[h] ? a2_last[h] : __ldg(scales.absmax2 + gi);
        } else {
          q[h] = 0u;
          a[h] = __ldg(scales.absmax + blk);
        }
      }
    };
    auto load = [&](int c, Stage& s) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        s.w[h] = __ldcs(reinterpret_cast<const uint2*>(w_row[h] + 32 * static_cast<uint32_t>(c)));
      }
#pragma unroll
      for (int nt = 0; nt < MT; ++nt) {
        const uint4* src = reinterpret_cast<const uint4*>(a_rows[nt] + kMmaChunk * static_cast<uint32_t>(c));
        s.b[nt][0] = __ldg(src);
        s.b[nt][1] = __ldg(src + 1);
      }
    };
    float c[MT][4];
#pragma unroll
    for (int nt = 0; nt < MT; ++nt) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.0f;
    Stage ring[kDepth];
#pragma unroll
    for (int i = 0; i < kDepth; ++i) {
      if (c_begin + i < c_end) load(c_begin + i, ring[i]);
    }
    uint32_t sq[2];
    float sa[2];
    load_scales(c_begin, sq, sa);
    if (!filled) {  // uniform across the block
      // Thread i computes entry i once and writes its 32 copies, rotated so that a warp's stores
      // fall in distinct banks.
      const uint32_t v = gemm4_lut_pair<D>(table, tid);
      for (int j = 0; j < 32; ++j) pairs[tid * 64 + ((j + tid) & 31)] = v;
      if (NESTED) code2_s[tid] = __ldg(scales.code2 + tid);
      __syncthreads();
      filled = true;
    }
    // One chunk: decode, four mma steps, the scaled sums. sc: the chunk's two row scales.
    auto step = [&](const Stage& s, const float (&sc)[2]) {
      // Byte 2 st of a row holds the lane's weights 4 st, 4 st + 1, byte 2 st + 1 weights
      // 4 st + 2, 4 st + 3 (as gemm4_mma_kernel). The look-up address 256 b + 4 lane is one
      // byte permute: [lane_off, b, 0, 0].
      uint32_t a[4][4];
#pragma unroll
      for (int st = 0; st < 4; ++st) {
        const uint32_t w0 = (st >> 1) == 0 ? s.w[0].x : s.w[0].y;
        const uint32_t w1 = (st >> 1) == 0 ? s.w[1].x : s.w[1].y;
        const uint32_t lo = 2 * (st & 1), hi = lo + 1;  // byte numbers within the words
        a[st][0] = *reinterpret_cast<const uint32_t*>(table_bytes + __byte_perm(w0, lane_off, 0x5504u | (lo << 4)));
        a[st][1] = *reinterpret_cast<const uint32_t*>(table_bytes + __byte_perm(w1, lane_off, 0x5504u | (lo << 4)));
        a[st][2] = *reinterpret_cast<const uint32_t*>(table_bytes + __byte_perm(w0, lane_off, 0x5504u | (hi << 4)));
        a[st][3] = *reinterpret_cast<const uint32_t*>(table_bytes + __byte_perm(w1, lane_off, 0x5504u | (hi << 4)));
      }
#pragma unroll
      for (int nt = 0; nt < MT; ++nt) {
        const uint32_t b[8] = {s.b[nt][0].x, s.b[nt][0].y, s.b[nt][0].z, s.b[nt][0].w,
                               s.b[nt][1].x, s.b[nt][1].y, s.b[nt][1].z, s.b[nt][1].w};
        // Two independent chains of two mma steps (shorter dependence than one of four).
        float u[4] = {0.0f, 0.0f, 0.0f, 0.0f}, v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        gemm4_mma16816<D>(u, a[0], b[0], b[1]);
        gemm4_mma16816<D>(v, a[1], b[2], b[3]);
        gemm4_mma16816<D>(u, a[2], b[4], b[5]);
        gemm4_mma16816<D>(v, a[3], b[6], b[7]);
        c[nt][0] = __fmaf_rn(sc[0], u[0] + v[0], c[nt][0]);
        c[nt][1] = __fmaf_rn(sc[0], u[1] + v[1], c[nt][1]);
        c[nt][2] = __fmaf_rn(sc[1], u[2] + v[2], c[nt][2]);
        c[nt][3] = __fmaf_rn(sc[1], u[3] + v[3], c[nt][3]);
      }
    };
    // The scales of chunk cb + t for this cycle, from the raw inputs loaded a cycle earlier.
    auto cycle_scales = [&](float (&scl)[2]) {
#pragma unroll
      for (int h = 0; h < 2; ++h) scl[h] = NESTED ? __fadd_rn(__fmul_rn(code2_s[sq[h]], sa[h]), offset) : sa[h];
    };
    // Full cycles: no branches between chunks (the loads are predicated), so the chunks'
    // look-ups and mma chains interleave.
    int cb = c_begin;
    for (; cb + kDepth <= c_end; cb += kDepth) {
      float scl[2];
      cycle_scales(scl);
      if (cb + kDepth < c_end) load_scales(cb + kDepth, sq, sa);
#pragma unroll
      for (int i = 0; i < kDepth; ++i) {
        float sc[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) sc[h] = gpu_shfl(scl[h], (lane & ~3) | i, 32);
        step(ring[i], sc);
        if (cb + i + kDepth < c_end) load(cb + i + kDepth, ring[i]);
      }
    }
    if (cb < c_end) {  // the last c_end - cb < kDepth chunks, already in ring[0 ..]
      float scl[2];
      cycle_scales(scl);
#pragma unroll
      for (int i = 0; i < kDepth; ++i) {
        if (cb + i >= c_end) break;  // uniform across the warp
        float sc[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) sc[h] = gpu_shfl(scl[h], (lane & ~3) | i, 32);
        step(ring[i], sc);
      }
    }
    // The warps' sums of this tile, added in warp order (deterministic).
#pragma unroll
    for (int nt = 0; nt < MT; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) red[(warp * 32 + lane) * 4 * MT + nt * 4 + e] = c[nt][e];
    }
    __syncthreads();
    for (int i = tid; i < 32 * 4 * MT; i += kSmallWarps * 32) {
      float y = 0.0f;
#pragma unroll
      for (int w = 0; w < kSmallWarps; ++w) y = __fadd_rn(y, red[w * 32 * 4 * MT + i]);
      const int l = i / (4 * MT), nt = (i / 4) % MT, e = i % 4;
      const int64_t n = rt * 16 + (l >> 2) + (e < 2 ? 0 : 8);
      const int64_t m = nt * 8 + 2 * (l & 3) + (e & 1);
      if (n < N && m < mb) {
        if (bias != nullptr) y = __fadd_rn(y, gemm4_to_f32<D>(bias[n]));
        out[(m_base + m) * N + n] = gemm4_from_f32<D>(y);
      }
    }
    __syncthreads();  // red is rewritten by the next tile
  }
}

#endif  // BNB_GEMM4_HOST_MMA || !BNB_GPU_HIP

}  // namespace gemm4
}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_GEMM4_MMA_CUH_
