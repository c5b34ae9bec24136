// SIMD kernels of the 4-bit inference matmul, compiled once per Highway target (foreach_target)
// and chosen at run time (HWY_DYNAMIC_DISPATCH).
//
// out[m,n] = sum_k A[m,k] * W[n,k]: the packed weights are read once per tile of A rows and
// decoded in registers. A chunk of N packed bytes (one vector of u32 lanes after widening) holds
// 2N consecutive weights of a row: the high nibbles are the even k, the low nibbles the odd k.
// Rather than re-interleaving the decoded weights, A is copied once per call into binary32 with
// each 2N-element chunk split into [even k | odd k], so the decoded high/low vectors multiply
// the matching halves directly.
//
// Decoding: per block a 16-entry table LUT[i] * absmax (RN32, the exact weight value, FORMATS
// 3.6) is built in registers and indexed with lane permutes (AVX-512: one permute; AVX2: two
// and a blend; narrower targets gather from memory): simd-inl.h's RegTable<16>, as are the
// conversions of A (LoadEvenOddAsF32, LoadAsF32).
//
// Tiles: MR rows of A x NR rows of W share every decoded weight and every loaded A vector;
// accumulators are binary32 vectors, reduced once per tile and K chunk into a binary32 scratch
// that is rounded to the output dtype (with the bias added) at the end.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include "gemm4_common.h"
#include "gemm4_kernels.h"
#include "half.h"
#include "int_math.h"
#include "tables.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/backend_cpu/gemm4_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnb {
namespace cpu {
namespace HWY_NAMESPACE {

// Lanes per vector; x86 targets have a fixed count known at compile time.
constexpr int64_t kLanes = static_cast<int64_t>(hn::MaxLanes(DF()));
// One chunk = kLanes packed bytes = 2 * kLanes weights of one row.
constexpr int64_t kChunk = 2 * kLanes;
static_assert(32 % kChunk == 0, "K is a multiple of 32; chunks must tile it");

// A block's 16-entry table LUT[i] * absmax (simd-inl.h's RegTable: in registers where the
// target's permutes reach 16 entries, else read from its scratch by a gather).
using BlockLut = RegTable<16>;

// The weights of one packed chunk: the high nibbles (even k) and the low nibbles (odd k),
// decoded through the block's table.
HWY_INLINE void DecodeChunk(DF df, const BlockLut& lut, const uint8_t* HWY_RESTRICT packed, VF& even, VF& odd) {
  const hn::Rebind<uint8_t, DF> d8;
  const VI bytes = hn::BitCast(DI(), hn::PromoteTo(DU(), hn::LoadU(d8, packed)));
  even = lut.Get(df, hn::ShiftRight<4>(bytes));
  odd = lut.GetLow(df, bytes);
}

// Rows [m0, m1) of A (row length K, dtype) to binary32 at Ad (row stride K), each chunk of
// kChunk elements split into [even k | odd k].
void Gemm4PrepareA(int32_t dtype, const void* A, int64_t K, int64_t m0, int64_t m1, float* Ad) {
  WithDtype(dtype, [&](auto dt) {
    constexpr int kDt = decltype(dt)::value;
    const DF df;
    for (int64_t m = m0; m < m1; ++m) {
      float* HWY_RESTRICT dst = Ad + (m - m0) * K;
      for (int64_t k = 0; k < K; k += kChunk) {
        VF even, odd;
        LoadEvenOddAsF32<kDt>(df, A, m * K + k, even, odd);
        hn::Store(even, df, dst + k);
        hn::Store(odd, df, dst + k + kLanes);
      }
    }
  });
}

// Elements [i0, i1) of A (dtype) to binary32 at Af[0 : i1 - i0] (the transposed product's A).
void Gemm4ConvertA(int32_t dtype, const void* A, int64_t i0, int64_t i1, float* Af) {
  WithDtype(dtype, [&](auto dt) {
    constexpr int kDt = decltype(dt)::value;
    const DF df;
    int64_t i = i0;
    for (; i + kLanes <= i1; i += kLanes) hn::StoreU(LoadAsF32<kDt>(df, A, i), df, Af + (i - i0));
    for (; i < i1; ++i) Af[i - i0] = load_as_f32(kDt, A, i);
  });
}

// C[m * ldc + r] += sum_{k in [k0,k1)} Ad[m][k] * W[n0 + r][k] for m < MR, r < NR.
template <int MR, int NR>
HWY_INLINE void Tile(const Gemm4Args& a, const float* HWY_RESTRICT Ad, int64_t n0, int64_t k0, int64_t k1,
                     float* HWY_RESTRICT C, int64_t ldc) {
  const DF df;
  // Few accumulators: give the odd-k products their own to halve the dependency chains.
  constexpr bool kSplit = MR * NR <= 8;
  const int64_t K = a.K;
#if BNB_SIMD_SIZELESS
  // SVE (no arrays of vectors): one product at a time, each row of W decoded once per row of A,
  // with the accumulators of the tile below.
  BlockLut lut;
  alignas(64) float lut_mem[16];
  const int lbs = log2_pow2(a.blocksize);
  for (int r = 0; r < NR; ++r) {
    const uint8_t* HWY_RESTRICT wrow = a.W + (n0 + r) * (K / 2);
    for (int m = 0; m < MR; ++m) {
      VF acc = hn::Zero(df);
      VF acc2 = hn::Zero(df);
      for (int64_t k = k0; k < k1;) {
        const int64_t block_end = ((k >> lbs) + 1) << lbs;
        const int64_t seg_end = block_end < k1 ? block_end : k1;
        lut.LoadScaled(df, a.lut, gemm4_block_scale(a.scales, (n0 + r) * (K >> lbs) + (k >> lbs)), lut_mem);
        for (; k < seg_end; k += kChunk) {
          VF w_even, w_odd;
          DecodeChunk(df, lut, wrow + k / 2, w_even, w_odd);
          acc = hn::MulAdd(w_even, hn::Load(df, Ad + m * K + k), acc);
          if constexpr (kSplit) {
            acc2 = hn::MulAdd(w_odd, hn::Load(df, Ad + m * K + k + kLanes), acc2);
          } else {
            acc = hn::MulAdd(w_odd, hn::Load(df, Ad + m * K + k + kLanes), acc);
          }
        }
      }
      const VF v = kSplit ? hn::Add(acc, acc2) : acc;
      C[m * ldc + r] += hn::GetLane(hn::SumOfLanes(df, v));
    }
  }
#else
  VF acc[MR][NR];
  VF acc2[MR][NR];
  for (int m = 0; m < MR; ++m) {
    for (int r = 0; r < NR; ++r) {
      acc[m][r] = hn::Zero(df);
      acc2[m][r] = hn::Zero(df);
    }
  }
  const uint8_t* HWY_RESTRICT wrow[NR];
  for (int r = 0; r < NR; ++r) wrow[r] = a.W + (n0 + r) * (K / 2);
  BlockLut lut[NR];
  alignas(64) float lut_mem[NR][16];
  const int lbs = log2_pow2(a.blocksize);
  for (int64_t k = k0; k < k1;) {
    const int64_t block_end = ((k >> lbs) + 1) << lbs;
    const int64_t seg_end = block_end < k1 ? block_end : k1;
    for (int r = 0; r < NR; ++r) {
      const float scale = gemm4_block_scale(a.scales, (n0 + r) * (K >> lbs) + (k >> lbs));
      lut[r].LoadScaled(df, a.lut, scale, lut_mem[r]);
    }
    for (; k < seg_end; k += kChunk) {
      // The same cache line NR rows further on: the next tile of rows streams in while this
      // one is computed (its rows are short, too short for the hardware prefetcher alone).
      if ((k & 127) == 0) {
        for (int r = 0; r < NR; ++r) hwy::Prefetch(wrow[r] + NR * (K / 2) + k / 2);
      }
      VF w_even[NR], w_odd[NR];
      for (int r = 0; r < NR; ++r) DecodeChunk(df, lut[r], wrow[r] + k / 2, w_even[r], w_odd[r]);
      for (int m = 0; m < MR; ++m) {
        const VF a_even = hn::Load(df, Ad + m * K + k);
        const VF a_odd = hn::Load(df, Ad + m * K + k + kLanes);
        for (int r = 0; r < NR; ++r) {
          acc[m][r] = hn::MulAdd(w_even[r], a_even, acc[m][r]);
          if constexpr (kSplit) {
            acc2[m][r] = hn::MulAdd(w_odd[r], a_odd, acc2[m][r]);
          } else {
            acc[m][r] = hn::MulAdd(w_odd[r], a_odd, acc[m][r]);
          }
        }
      }
    }
  }
  for (int m = 0; m < MR; ++m) {
    for (int r = 0; r < NR; ++r) {
      const VF v = kSplit ? hn::Add(acc[m][r], acc2[m][r]) : acc[m][r];
      C[m * ldc + r] += hn::GetLane(hn::SumOfLanes(df, v));
    }
  }
#endif  // BNB_SIMD_SIZELESS
}

template <int NR>
HWY_INLINE void RowTiles(const Gemm4Args& a, const float* HWY_RESTRICT Ad, int64_t rows, int64_t n0, int64_t k0,
                         int64_t k1, float* HWY_RESTRICT C, int64_t ldc) {
  constexpr int kMR = 4;
  int64_t m = 0;
  for (; m + kMR <= rows; m += kMR) Tile<kMR, NR>(a, Ad + m * a.K, n0, k0, k1, C + m * ldc, ldc);
  const float* HWY_RESTRICT Am = Ad + m * a.K;
  float* HWY_RESTRICT Cm = C + m * ldc;
  switch (rows - m) {
    case 3: Tile<3, NR>(a, Am, n0, k0, k1, Cm, ldc); break;
    case 2: Tile<2, NR>(a, Am, n0, k0, k1, Cm, ldc); break;
    case 1: Tile<1, NR>(a, Am, n0, k0, k1, Cm, ldc); break;
    default: break;
  }
}

// C[rows][n1 - n0] += Ad[rows][K] @ W[n0:n1, :]^T, K walked in chunks of kc (a multiple of 32)
// so the A rows of a chunk stay in cache while the W rows stream past.
void Gemm4Panel(const Gemm4Args& a, const float* Ad, int64_t rows, int64_t n0, int64_t n1, int64_t kc, float* C) {
  constexpr int kNR = 4;
  const int64_t ldc = n1 - n0;
  for (int64_t k0 = 0; k0 < a.K; k0 += kc) {
    const int64_t k1 = k0 + kc < a.K ? k0 + kc : a.K;
    int64_t n = n0;
    for (; n + kNR <= n1; n += kNR) RowTiles<kNR>(a, Ad, rows, n, k0, k1, C + (n - n0), ldc);
    for (; n < n1; ++n) RowTiles<1>(a, Ad, rows, n, k0, k1, C + (n - n0), ldc);
  }
}

// ---- the transposed product out[M,K] = A[M,N] @ W[N,K] (bnb_gemm_4bit_transposed)

// Wd[r][0:kc] = the weights W[n0 + r][k0 : k0 + kc] for r < rows, decoded to binary32 with each
// chunk of kChunk columns split into [even k | odd k] (kc and k0 multiples of kChunk).
void Gemm4DecodeColumns(const Gemm4Args& a, int64_t n0, int64_t rows, int64_t k0, int64_t kc, float* Wd) {
  const DF df;
  const int64_t K = a.K;
  const int lbs = log2_pow2(a.blocksize);
  BlockLut lut;
  alignas(64) float lut_mem[16];
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* HWY_RESTRICT wrow = a.W + (n0 + r) * (K / 2);
    float* HWY_RESTRICT dst = Wd + r * kc - k0;
    for (int64_t k = k0; k < k0 + kc;) {
      const int64_t block_end = ((k >> lbs) + 1) << lbs;
      const int64_t seg_end = block_end < k0 + kc ? block_end : k0 + kc;
      lut.LoadScaled(df, a.lut, gemm4_block_scale(a.scales, (n0 + r) * (K >> lbs) + (k >> lbs)), lut_mem);
      for (; k < seg_end; k += kChunk) {
        VF even, odd;
        DecodeChunk(df, lut, wrow + k / 2, even, odd);
        hn::Store(even, df, dst + k);
        hn::Store(odd, df, dst + k + kLanes);
      }
    }
  }
}

// C[m][c0 : c0 + V * kLanes] += sum_{r < rows} Af[m][r] * Wd[r][c0 : ...] for m < MR: the MR x V
// accumulators stay in registers while the rows of Wd stream past.
template <int MR, int V>
HWY_INLINE void TransposedTile(const float* HWY_RESTRICT Af, int64_t lda, const float* HWY_RESTRICT Wd, int64_t ldw,
                               int64_t rows, int64_t c0, float* HWY_RESTRICT C, int64_t ldc) {
  const DF df;
#if BNB_SIMD_SIZELESS
  // SVE (no arrays of vectors): one vector of C at a time, each lane summed over r in the same
  // order.
  for (int m = 0; m < MR; ++m) {
    for (int v = 0; v < V; ++v) {
      VF acc = hn::Load(df, C + m * ldc + c0 + v * kLanes);
      for (int64_t r = 0; r < rows; ++r) {
        acc = hn::MulAdd(hn::Load(df, Wd + r * ldw + c0 + v * kLanes), hn::Set(df, Af[m * lda + r]), acc);
      }
      hn::Store(acc, df, C + m * ldc + c0 + v * kLanes);
    }
  }
#else
  VF acc[MR][V];
  for (int m = 0; m < MR; ++m) {
    for (int v = 0; v < V; ++v) acc[m][v] = hn::Load(df, C + m * ldc + c0 + v * kLanes);
  }
  for (int64_t r = 0; r < rows; ++r) {
    VF w[V];
    for (int v = 0; v < V; ++v) w[v] = hn::Load(df, Wd + r * ldw + c0 + v * kLanes);
    for (int m = 0; m < MR; ++m) {
      const VF x = hn::Set(df, Af[m * lda + r]);
      for (int v = 0; v < V; ++v) acc[m][v] = hn::MulAdd(w[v], x, acc[m][v]);
    }
  }
  for (int m = 0; m < MR; ++m) {
    for (int v = 0; v < V; ++v) hn::Store(acc[m][v], df, C + m * ldc + c0 + v * kLanes);
  }
#endif  // BNB_SIMD_SIZELESS
}

template <int MR>
HWY_INLINE void TransposedRows(const float* Af, int64_t lda, const float* Wd, int64_t rows, int64_t kc, float* C) {
  constexpr int kV = 4;
  int64_t c = 0;
  for (; c + kV * kLanes <= kc; c += kV * kLanes) TransposedTile<MR, kV>(Af, lda, Wd, kc, rows, c, C, kc);
  for (; c < kc; c += kLanes) TransposedTile<MR, 1>(Af, lda, Wd, kc, rows, c, C, kc);
}

// C[mr][kc] += Af[mr][0:rows] @ Wd[rows][kc] (Af with row stride lda; C and Wd with row stride kc).
void Gemm4TransposedAccumulate(const float* Af, int64_t lda, int64_t mr, const float* Wd, int64_t rows, int64_t kc,
                               float* C) {
  constexpr int kMR = 4;
  int64_t m = 0;
  for (; m + kMR <= mr; m += kMR) TransposedRows<kMR>(Af + m * lda, lda, Wd, rows, kc, C + m * kc);
  switch (mr - m) {
    case 3: TransposedRows<3>(Af + m * lda, lda, Wd, rows, kc, C + m * kc); break;
    case 2: TransposedRows<2>(Af + m * lda, lda, Wd, rows, kc, C + m * kc); break;
    case 1: TransposedRows<1>(Af + m * lda, lda, Wd, rows, kc, C + m * kc); break;
    default: break;
  }
}

// Lanes of one chunk's [even | odd] halves: where column j of a split chunk came from.
int64_t Gemm4ChunkLanes() { return kLanes; }

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace bnb
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnb {
namespace cpu {

HWY_EXPORT(Gemm4PrepareA);
HWY_EXPORT(Gemm4ConvertA);
HWY_EXPORT(Gemm4Panel);
HWY_EXPORT(Gemm4DecodeColumns);
HWY_EXPORT(Gemm4TransposedAccumulate);
HWY_EXPORT(Gemm4ChunkLanes);

namespace {

// Blocking (bytes): the prepared copy of A is made for at most this much A at a time; a task's
// A rows x K chunk should stay in L2 while the weights stream.
constexpr int64_t kMaxPreparedBytes = int64_t{64} << 20;
constexpr int64_t kTaskABytes = int64_t{256} << 10;
constexpr int64_t kMaxKChunk = 4096;
constexpr int64_t kMaxTaskRows = 64;   // rows of A per task
constexpr int64_t kMaxPanel = 256;     // rows of W per task

// AVX512_BF16 is present and Highway's AVX3_DL target is enabled (BNB_CPU_MAX_TARGET / a
// cap below it turns the bf16 path off with the rest of AVX3_DL).
bool bf16_dot_usable() {
  static const bool cpu = gemm4_bf16_cpu_supported();
  return cpu && (hwy::SupportedTargets() & HWY_AVX3_DL) != 0;
}

// bf16 activations of kGemm4OnednnMinRows (transposed: ...Transposed) rows or more go to oneDNN
// where the CPU has AVX512_BF16 (gemm4_onednn.cc; BNB_ONEDNN_LIBRARY=/nonexistent keeps them
// here, onednn.h).
bool onednn_bf16_path(bool transposed, int32_t dtype, int64_t M) {
  return dtype == BNB_BF16 && M >= (transposed ? kGemm4OnednnMinRowsTransposed : kGemm4OnednnMinRows) &&
         bf16_dot_usable();
}

// Tiles of the transposed product: kTRows rows of A (their binary32 copy) x kTCols columns of
// out per task, the weight decoded kTSlab rows at a time into a task's scratch (kTSlab x kTCols
// binary32: 128 KiB, L2-resident while every row of the task's A passes over it).
constexpr int64_t kTRows = 256;
constexpr int64_t kTCols = 128;
constexpr int64_t kTSlab = 256;

}  // namespace

Gemm4Args gemm4_args(int64_t K, const uint8_t* W, const bnb_scales_resolved_t& scales, int32_t quant_type,
                     int64_t blocksize) {
  Gemm4Args args;
  args.K = K;
  args.blocksize = blocksize;
  args.W = W;
  args.scales = scales;
  const uint32_t* lut_bits = quant_type == BNB_FP4 ? bnb::kFP4DecodeBits : bnb::kNF4Bits;
  for (int i = 0; i < 16; ++i) args.lut[i] = bnb::bits_to_float(lut_bits[i]);
  return args;
}

void gemm_4bit(ThreadPool& pool, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
               const uint8_t* W, const bnb_scales_resolved_t& scales, int32_t quant_type, int64_t blocksize,
               const void* bias, void* out) {
  const Gemm4Args args = gemm4_args(K, W, scales, quant_type, blocksize);
  if (onednn_bf16_path(false, dtype, M) &&
      gemm4_bf16_onednn(pool, false, M, N, K, static_cast<const uint16_t*>(A), args,
                        static_cast<const uint16_t*>(bias), static_cast<uint16_t*>(out))) {
    return;
  }

  const int64_t threads = pool.num_threads();
  const int64_t kc = K < kMaxKChunk ? K : kMaxKChunk;  // K and kMaxKChunk are multiples of 32
  int64_t mc = kTaskABytes / (kc * 4);
  mc = std::max<int64_t>(4, std::min<int64_t>(kMaxTaskRows, mc)) / 4 * 4;
  const int64_t mb = std::max<int64_t>(1, std::min<int64_t>(M, kMaxPreparedBytes / (K * 4)));

  hwy::AlignedFreeUniquePtr<float[]> Ad = hwy::AllocateAligned<float>(static_cast<size_t>(mb * K));
  if (!Ad) throw std::bad_alloc();
  // bf16 activations on CPUs with AVX512_BF16 take the dot-product path; A is then prepared as
  // bf16 in the same buffer (half the bytes).
  const bool bf16_dot = dtype == BNB_BF16 && blocksize >= kGemm4Bf16Chunk && K % kGemm4Bf16Chunk == 0 &&
                        bf16_dot_usable();
  uint16_t* Ad_bf16 = reinterpret_cast<uint16_t*>(Ad.get());

  for (int64_t mbegin = 0; mbegin < M; mbegin += mb) {
    const int64_t rows = std::min(mb, M - mbegin);
    const int64_t prep_tasks = std::min<int64_t>(rows, threads * 4);
    pool.run(prep_tasks, [&](int64_t t) {
      const int64_t r0 = t * rows / prep_tasks, r1 = (t + 1) * rows / prep_tasks;
      if (bf16_dot) {
        gemm4_bf16_prepare_a(static_cast<const uint16_t*>(A), K, mbegin + r0, mbegin + r1, Ad_bf16 + r0 * K);
      } else {
        HWY_DYNAMIC_DISPATCH(Gemm4PrepareA)(dtype, A, K, mbegin + r0, mbegin + r1, Ad.get() + r0 * K);
      }
    });

    // Tasks: (group of A rows) x (panel of W rows), about 8 per thread when the shape allows.
    const int64_t row_groups = ceil_div(rows, mc);
    const int64_t want_panels = std::max<int64_t>(1, ceil_div(threads * 8, row_groups));
    const int64_t panel = std::max<int64_t>(4, std::min<int64_t>(kMaxPanel, ceil_div(ceil_div(N, want_panels), 4) * 4));
    const int64_t panels = ceil_div(N, panel);
    pool.run(row_groups * panels, [&](int64_t t) {
      const int64_t g = t / panels, p = t % panels;
      const int64_t m0 = g * mc, mr = std::min(mc, rows - m0);
      const int64_t n0 = p * panel, n1 = std::min(N, n0 + panel);
      const int64_t ldc = n1 - n0;
      alignas(64) float C[kMaxTaskRows * kMaxPanel];
      std::memset(C, 0, sizeof(float) * static_cast<size_t>(mr * ldc));
      if (bf16_dot) {
        gemm4_bf16_panel(args, Ad_bf16 + m0 * K, mr, n0, n1, kc, C);
      } else {
        HWY_DYNAMIC_DISPATCH(Gemm4Panel)(args, Ad.get() + m0 * K, mr, n0, n1, kc, C);
      }
      for (int64_t m = 0; m < mr; ++m) {
        const int64_t row = (mbegin + m0 + m) * N;
        for (int64_t n = n0; n < n1; ++n) {
          float v = C[m * ldc + (n - n0)];
          if (bias != nullptr) v += bnb::load_as_f32(dtype, bias, n);
          bnb::store_from_f32(dtype, out, row + n, v);
        }
      }
    });
  }
}

void gemm_4bit_transposed(ThreadPool& pool, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                          const uint8_t* W, const bnb_scales_resolved_t& scales, int32_t quant_type,
                          int64_t blocksize, void* out) {
  const Gemm4Args args = gemm4_args(K, W, scales, quant_type, blocksize);
  if (onednn_bf16_path(true, dtype, M) &&
      gemm4_bf16_onednn(pool, true, M, N, K, static_cast<const uint16_t*>(A), args, nullptr,
                        static_cast<uint16_t*>(out))) {
    return;
  }
  const int64_t lanes = HWY_DYNAMIC_DISPATCH(Gemm4ChunkLanes)();
  const int64_t chunk = 2 * lanes;  // divides 32, hence K and kTCols
  // A as binary32 (f32 input is used in place), at most kMaxPreparedBytes of it at a time.
  const int64_t mb = dtype == BNB_F32 ? M : std::max<int64_t>(1, std::min<int64_t>(M, kMaxPreparedBytes / (N * 4)));
  hwy::AlignedFreeUniquePtr<float[]> Af;
  if (dtype != BNB_F32) {
    Af = hwy::AllocateAligned<float>(static_cast<size_t>(mb * N));
    if (!Af) throw std::bad_alloc();
  }
  const int64_t threads = pool.num_threads();
  for (int64_t mbegin = 0; mbegin < M; mbegin += mb) {
    const int64_t rows = std::min(mb, M - mbegin);
    const float* Am = static_cast<const float*>(A) + mbegin * N;
    if (dtype != BNB_F32) {
      const int64_t prep_tasks = std::min<int64_t>(rows, threads * 4);
      pool.run(prep_tasks, [&](int64_t t) {
        const int64_t r0 = t * rows / prep_tasks, r1 = (t + 1) * rows / prep_tasks;
        HWY_DYNAMIC_DISPATCH(Gemm4ConvertA)(dtype, A, (mbegin + r0) * N, (mbegin + r1) * N, Af.get() + r0 * N);
      });
      Am = Af.get();
    }
    const int64_t row_groups = ceil_div(rows, kTRows), col_groups = ceil_div(K, kTCols);
    pool.run(row_groups * col_groups, [&](int64_t t) {
      const int64_t m0 = (t / col_groups) * kTRows, mr = std::min(kTRows, rows - m0);
      const int64_t k0 = (t % col_groups) * kTCols, kc = std::min(kTCols, K - k0);
      hwy::AlignedFreeUniquePtr<float[]> scratch = hwy::AllocateAligned<float>(static_cast<size_t>((kTSlab + mr) * kc));
      if (!scratch) throw std::bad_alloc();
      float* Wd = scratch.get();
      float* C = Wd + kTSlab * kc;
      std::memset(C, 0, sizeof(float) * static_cast<size_t>(mr * kc));
      for (int64_t n0 = 0; n0 < N; n0 += kTSlab) {
        const int64_t nr = std::min(kTSlab, N - n0);
        HWY_DYNAMIC_DISPATCH(Gemm4DecodeColumns)(args, n0, nr, k0, kc, Wd);
        HWY_DYNAMIC_DISPATCH(Gemm4TransposedAccumulate)(Am + m0 * N + n0, N, mr, Wd, nr, kc, C);
      }
      // C holds each chunk split into [even k | odd k]: back to column order.
      for (int64_t m = 0; m < mr; ++m) {
        const int64_t row = (mbegin + m0 + m) * K + k0;
        for (int64_t j = 0; j < kc; j += chunk) {
          for (int64_t i = 0; i < lanes; ++i) {
            bnb::store_from_f32(dtype, out, row + j + 2 * i, C[m * kc + j + i]);
            bnb::store_from_f32(dtype, out, row + j + 2 * i + 1, C[m * kc + j + lanes + i]);
          }
        }
      }
    });
  }
}

}  // namespace cpu
}  // namespace bnb
#endif  // HWY_ONCE
