// The bf16 activation path of the 4-bit matmul on CPUs with AVX512_BF16 (Zen 4, Cooper Lake,
// Sapphire Rapids and later): VDPBF16PS multiplies 32 bf16 pairs per instruction, twice the
// work of a binary32 FMA. Highway 1.0.3 has no target with this instruction (its
// ReorderWidenMulAccumulate on bf16 widens to binary32 FMAs), so this file uses the intrinsics
// directly under a function-level target, chosen at run time only when the CPU has the
// instruction and Highway's AVX3_DL target is enabled (BNB_CPU_MAX_TARGET below it turns it off).
//
// 64 weights (32 packed bytes) per step: the bytes widened to 32 u16 lanes; the high nibbles
// (lane >> 4) and the bytes themselves index a 32-entry u16 table (VPERMW reads 5 index bits, so
// the 16 bf16 decode values are stored twice) -> the even-k and odd-k weights as bf16. A is
// copied once per call with each 64-element chunk split into [32 even k | 32 odd k]. The
// products of one quantization block are summed unscaled (binary32), then scaled by its absmax.
//
// Numerics: bf16(LUT[nibble]) * A exactly, binary32 sums, * absmax in binary32 — the weight is
// rounded to bf16 before the product, as in the reference's bf16 kernels (docs/OPS.md §4.1); the error
// stays far inside the bf16 bound (relative 1e-2).
#include "gemm4_common.h"

#include <cstring>

#include "half.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define BNB_GEMM4_BF16_TARGET \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx512bf16,avx2,fma,bmi2,f16c")))
#endif

namespace bnb {
namespace cpu {

#if defined(BNB_GEMM4_BF16_TARGET)

bool gemm4_bf16_cpu_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
}

void gemm4_bf16_prepare_a(const uint16_t* A, int64_t K, int64_t m0, int64_t m1, uint16_t* Ad) {
  for (int64_t m = m0; m < m1; ++m) {
    const uint16_t* src = A + m * K;
    uint16_t* dst = Ad + (m - m0) * K;
    for (int64_t k = 0; k < K; k += kGemm4Bf16Chunk) {
      for (int j = 0; j < kGemm4Bf16Chunk / 2; ++j) {
        dst[k + j] = src[k + 2 * j];
        dst[k + kGemm4Bf16Chunk / 2 + j] = src[k + 2 * j + 1];
      }
    }
  }
}

namespace {

template <int MR, int NR>
BNB_GEMM4_BF16_TARGET inline void tile(const Gemm4Args& p, __m512i table, const uint16_t* Ad, int64_t n0,
                                       int64_t k0, int64_t k1, float* C, int64_t ldc) {
  // Few tiles: the odd-k products get their own partial sums to halve the dependency chains.
  constexpr bool kSplit = MR * NR <= 4;
  const int64_t K = p.K, bs = p.blocksize;
  __m512 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  const uint8_t* wrow[NR];
  for (int r = 0; r < NR; ++r) wrow[r] = p.W + (n0 + r) * (K / 2);
  for (int64_t k = k0; k < k1;) {
    const int64_t block_end = (k / bs + 1) * bs;
    const int64_t seg_end = block_end < k1 ? block_end : k1;
    float scale[NR];
    for (int r = 0; r < NR; ++r) scale[r] = gemm4_block_scale(p.scales, (n0 + r) * (K / bs) + k / bs);
    __m512 part[MR][NR], part2[MR][NR];
    for (int m = 0; m < MR; ++m) {
      for (int r = 0; r < NR; ++r) {
        part[m][r] = _mm512_setzero_ps();
        part2[m][r] = _mm512_setzero_ps();
      }
    }
    for (; k < seg_end; k += kGemm4Bf16Chunk) {
      if ((k & 127) == 0) {  // the next tile of rows, as in gemm4_simd.cc
        for (int r = 0; r < NR; ++r) _mm_prefetch(reinterpret_cast<const char*>(wrow[r] + NR * (K / 2) + k / 2), _MM_HINT_T0);
      }
      __m512i w_even[NR], w_odd[NR];
      for (int r = 0; r < NR; ++r) {
        const __m512i bytes =
            _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wrow[r] + k / 2)));
        w_even[r] = _mm512_permutexvar_epi16(_mm512_srli_epi16(bytes, 4), table);
        w_odd[r] = _mm512_permutexvar_epi16(bytes, table);
      }
      for (int m = 0; m < MR; ++m) {
        const __m512i a_even = _mm512_load_si512(Ad + m * K + k);
        const __m512i a_odd = _mm512_load_si512(Ad + m * K + k + kGemm4Bf16Chunk / 2);
        for (int r = 0; r < NR; ++r) {
          part[m][r] = _mm512_dpbf16_ps(part[m][r], (__m512bh)w_even[r], (__m512bh)a_even);
          if constexpr (kSplit) {
            part2[m][r] = _mm512_dpbf16_ps(part2[m][r], (__m512bh)w_odd[r], (__m512bh)a_odd);
          } else {
            part[m][r] = _mm512_dpbf16_ps(part[m][r], (__m512bh)w_odd[r], (__m512bh)a_odd);
          }
        }
      }
    }
    for (int m = 0; m < MR; ++m) {
      for (int r = 0; r < NR; ++r) {
        const __m512 s = kSplit ? _mm512_add_ps(part[m][r], part2[m][r]) : part[m][r];
        acc[m][r] = _mm512_fmadd_ps(s, _mm512_set1_ps(scale[r]), acc[m][r]);
      }
    }
  }
  for (int m = 0; m < MR; ++m) {
    for (int r = 0; r < NR; ++r) {
      alignas(64) float lanes[16];
      _mm512_store_ps(lanes, acc[m][r]);
      float sum = 0.0f;
      for (float v : lanes) sum += v;
      C[m * ldc + r] += sum;
    }
  }
}

template <int NR>
BNB_GEMM4_BF16_TARGET inline void row_tiles(const Gemm4Args& p, __m512i table, const uint16_t* Ad,
                                            int64_t rows, int64_t n0, int64_t k0, int64_t k1, float* C,
                                            int64_t ldc) {
  int64_t m = 0;
  for (; m + 4 <= rows; m += 4) tile<4, NR>(p, table, Ad + m * p.K, n0, k0, k1, C + m * ldc, ldc);
  for (; m + 2 <= rows; m += 2) tile<2, NR>(p, table, Ad + m * p.K, n0, k0, k1, C + m * ldc, ldc);
  if (m < rows) tile<1, NR>(p, table, Ad + m * p.K, n0, k0, k1, C + m * ldc, ldc);
}

}  // namespace

BNB_GEMM4_BF16_TARGET void gemm4_bf16_panel(const Gemm4Args& p, const uint16_t* Ad, int64_t rows, int64_t n0,
                                            int64_t n1, int64_t kc, float* C) {
  // The decode table as bf16 (RNE), entries 0..15 repeated in 16..31.
  alignas(64) uint16_t t[32];
  for (int i = 0; i < 16; ++i) t[i] = t[i + 16] = bnb::f32_to_bf16(p.lut[i]);
  const __m512i table = _mm512_load_si512(t);
  constexpr int kNR = 4;
  const int64_t ldc = n1 - n0;
  for (int64_t k0 = 0; k0 < p.K; k0 += kc) {
    const int64_t k1 = k0 + kc < p.K ? k0 + kc : p.K;
    int64_t n = n0;
    if (rows >= 4) {
      for (; n + 2 <= n1; n += 2) row_tiles<2>(p, table, Ad, rows, n, k0, k1, C + (n - n0), ldc);
    }
    for (; n + kNR <= n1; n += kNR) row_tiles<kNR>(p, table, Ad, rows, n, k0, k1, C + (n - n0), ldc);
    for (; n < n1; ++n) row_tiles<1>(p, table, Ad, rows, n, k0, k1, C + (n - n0), ldc);
  }
}

// GCC 12's AVX-512 headers start several intrinsics from _mm512_undefined_epi32() and then warn
// that it "may be used uninitialized" once they are inlined here (a false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
BNB_GEMM4_BF16_TARGET void gemm4_bf16_decode(const Gemm4Args& p, int64_t n0, int64_t rows, int64_t k0, int64_t kc,
                                             uint16_t* out, int64_t ldo) {
  const int64_t K = p.K, bs = p.blocksize;
  const __m512 lut = _mm512_loadu_ps(p.lut);
  // out[2i] <- lane i (even k), out[2i + 1] <- lane 16 + i (odd k) of [16 even | 16 odd] bf16.
  alignas(64) uint16_t order[32];
  for (int i = 0; i < 16; ++i) order[2 * i] = static_cast<uint16_t>(i), order[2 * i + 1] = static_cast<uint16_t>(16 + i);
  const __m512i interleave = _mm512_load_si512(order);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* wrow = p.W + (n0 + r) * (K / 2);
    uint16_t* dst = out + r * ldo - k0;
    for (int64_t k = k0; k < k0 + kc;) {
      const int64_t block_end = (k / bs + 1) * bs;
      const int64_t seg_end = block_end < k0 + kc ? block_end : k0 + kc;
      // RN32(LUT[i] * absmax), the exact decoded weight (FORMATS 3.6), then RNE to bf16.
      const __m512 table = _mm512_mul_ps(lut, _mm512_set1_ps(gemm4_block_scale(p.scales, (n0 + r) * (K / bs) + k / bs)));
      for (; k < seg_end; k += 32) {
        const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wrow + k / 2)));
        const __m512 even = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table);
        const __m512 odd = _mm512_permutexvar_ps(bytes, table);  // reads the low 4 index bits only
        const __m512i halves = (__m512i)_mm512_cvtne2ps_pbh(odd, even);
        _mm512_storeu_si512(dst + k, _mm512_permutexvar_epi16(interleave, halves));
      }
    }
  }
}
#pragma GCC diagnostic pop

#else  // no x86-64 GCC/Clang: the path is never chosen

bool gemm4_bf16_cpu_supported() { return false; }
void gemm4_bf16_prepare_a(const uint16_t*, int64_t, int64_t, int64_t, uint16_t*) {}
void gemm4_bf16_panel(const Gemm4Args&, const uint16_t*, int64_t, int64_t, int64_t, int64_t, float*) {}
void gemm4_bf16_decode(const Gemm4Args&, int64_t, int64_t, int64_t, int64_t, uint16_t*, int64_t) {}

#endif

}  // namespace cpu
}  // namespace bnb
