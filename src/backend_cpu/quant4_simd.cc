// SIMD kernels of NF4/FP4 quantization (docs/FORMATS.md §3), compiled once per Highway target
// (foreach_target) and chosen at run time (HWY_DYNAMIC_DISPATCH). Every result is bit-exact
// with docs/FORMATS.md and tests/ref: the same binary32 operations in the same order.
//
// A task walks its blocks in chunks (quant_blocks-inl.h: every absmax, then every exact RCP,
// then the codes; fp32 blocks of 32/64 on AVX3_DL: groups of 16 blocks, no chunks). Codes:
//  * AVX3_DL: x (FP4: |x|) picks one of 32 cells narrower than any gap between thresholds
//    (FMA + truncation; the cell tables are built on the host, quant_plan.cc); a VPERMB gives
//    the cell's code (its high nibble already shifted in even lanes), a VPERMI2PS its one
//    threshold, one compare decides;
//  * elsewhere: NF4 a 4-level search over the 15 thresholds; FP4 a 3-level search over the 7
//    magnitude thresholds, the pattern table, the sign. Even and odd elements are encoded in
//    separate vectors so a packed byte is (even << 4) | odd.
// Dequantizing uses a per-block pre-scaled 16-entry table (RN32(LUT[k] * absmax) equals the
// per-element product). Outputs of 16 MiB and more use non-temporal stores on AVX2/AVX-512.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "gemm4_common.h"  // gemm4_block_scale: a block's scale, plain or nested
#include "quant_plan.h"
#include "tables.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/backend_cpu/quant4_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include "simd-inl.h"
#include "quant_blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnb {
namespace cpu {
namespace HWY_NAMESPACE {

// ------------------------------------------------------------------ 4-bit

HWY_INLINE VI EncodeNF4(DF df, const float* HWY_RESTRICT levels, VF x) {
  // levels: [t8 | t4 t12 | t2 t6 t10 t14 | t1 t3 ... t15] (1-based thresholds), padded.
  // idx | s under a mask compiles to one masked OR on AVX-512.
  const DI di;
  VI idx = hn::IfThenElseZero(hn::RebindMask(di, hn::Gt(x, hn::Set(df, levels[0]))), hn::Set(di, 8));
  VF t = Lookup<2>(df, levels + 1, hn::ShiftRight<3>(idx));
  idx = hn::IfThenElse(hn::RebindMask(di, hn::Gt(x, t)), hn::Or(idx, hn::Set(di, 4)), idx);
  t = Lookup<4>(df, levels + 3, hn::ShiftRight<2>(idx));
  idx = hn::IfThenElse(hn::RebindMask(di, hn::Gt(x, t)), hn::Or(idx, hn::Set(di, 2)), idx);
  t = Lookup<8>(df, levels + 7, hn::ShiftRight<1>(idx));
  return hn::IfThenElse(hn::RebindMask(di, hn::Gt(x, t)), hn::Or(idx, hn::Set(di, 1)), idx);
}

// FP4: k = #{j : |x| > thr_j} by a 3-level search over the 7 magnitude thresholds
// (fp4_levels: [t4 | t2 t6 | t1 t3 t5 t7], 1-based), then pattern[k] and the sign (x < 0).
HWY_INLINE VI EncodeFP4(DF df, const float* HWY_RESTRICT fp4_levels, const int32_t* HWY_RESTRICT patterns,
                        VF x) {
  const DI di;
  constexpr size_t N = hn::MaxLanes(DF());
  const VF a = hn::Abs(x);
  VI k = hn::IfThenElseZero(hn::RebindMask(di, hn::Gt(a, hn::Set(df, fp4_levels[0]))), hn::Set(di, 4));
  VF t = Lookup<2>(df, fp4_levels + 1, hn::ShiftRight<2>(k));
  k = hn::IfThenElse(hn::RebindMask(di, hn::Gt(a, t)), hn::Or(k, hn::Set(di, 2)), k);
  t = Lookup<4>(df, fp4_levels + 3, hn::ShiftRight<1>(k));
  k = hn::IfThenElse(hn::RebindMask(di, hn::Gt(a, t)), hn::Or(k, hn::Set(di, 1)), k);
  VI code;
  if constexpr (N >= 8) {
    code = hn::TableLookupLanes(hn::LoadU(di, patterns), hn::IndicesFromVec(di, k));
  } else {
    code = hn::GatherIndex(di, patterns, k);
  }
  return hn::IfThenElse(hn::RebindMask(di, hn::Lt(x, hn::Zero(df))), hn::Or(code, hn::Set(di, 8)), code);
}

// Packs 2N codes (c0: elements 0..N-1, c1: N..2N-1) into N bytes, even element high.
HWY_INLINE void StorePacked(DF df, VI c0, VI c1, uint8_t* HWY_RESTRICT out) {
  (void)df;
#if HWY_TARGET == HWY_SCALAR
  out[0] = static_cast<uint8_t>((hn::GetLane(c0) << 4) | hn::GetLane(c1));
#else
  const DI di;
  const DU du;
  const hn::Repartition<uint64_t, DU> d64;
  const auto pair = [&](VI c) {
    const auto w = hn::BitCast(d64, c);
    return hn::BitCast(du, hn::Or(hn::ShiftLeft<4>(w), hn::ShiftRight<32>(w)));
  };
  const VU bytes = hn::And(hn::ConcatEven(du, pair(c1), pair(c0)), hn::Set(du, 0xffu));
  const hn::Rebind<uint8_t, DI> d8;
  hn::StoreU(hn::DemoteTo(d8, hn::BitCast(di, bytes)), d8, out);
#endif
}

#if HWY_TARGET == HWY_AVX3_DL
// NF4 through the cell tables (nf4_cells): clamp, one FMA and truncation give the cell, one
// byte permute its code (pre-shifted in even lanes), one two-table permute its threshold.
struct NF4CellEncoder {
  __m512i g;
  __m512 t0, t1, addend, scale, one;
  __m512i inc;
  explicit NF4CellEncoder(const NF4CellTables& tab)
      : g(_mm512_load_si512(tab.g)),
        t0(_mm512_load_ps(tab.t)),
        t1(_mm512_load_ps(tab.t + 16)),
        addend(_mm512_setr_ps(16.0f, 48.0f, 16.0f, 48.0f, 16.0f, 48.0f, 16.0f, 48.0f, 16.0f, 48.0f, 16.0f, 48.0f,
                              16.0f, 48.0f, 16.0f, 48.0f)),
        scale(_mm512_set1_ps(15.5f)),
        one(_mm512_set1_ps(1.0f)),
        inc(_mm512_setr_epi32(16, 1, 16, 1, 16, 1, 16, 1, 16, 1, 16, 1, 16, 1, 16, 1)) {}

  // 16 consecutive elements (the first one even) -> codes, even lanes << 4.
  HWY_INLINE __m512i Encode(__m512 x) const {
    // min(1, x): +inf -> 1; a NaN stays NaN (vminps returns its second operand) and, like
    // -inf, converts to key byte 0 (code 0) and compares false. x >= -1 - 2 ulp otherwise.
    // The compare takes x itself (same result: x > 1 only for +inf, whose cell's threshold is
    // +inf), so the FMA may overwrite the clamped value instead of a copy of it.
    const __m512i key = _mm512_cvttps_epi32(_mm512_fmadd_ps(_mm512_min_ps(one, x), scale, addend));
    const __m512i code = _mm512_maskz_permutexvar_epi8(0x1111111111111111ull, key, g);
    const __m512 t = _mm512_permutex2var_ps(t0, key, t1);
    return _mm512_mask_add_epi32(code, _mm512_cmp_ps_mask(x, t, _CMP_GT_OQ), code, inc);
  }
};

struct FP4CellEncoder {
  __m512i lo, hi, sign;
  __m512 t0, t1, addend, scale, one;
  explicit FP4CellEncoder(const FP4CellTables& tab)
      : lo(_mm512_load_si512(tab.lo)),
        hi(_mm512_load_si512(tab.hi)),
        sign(_mm512_setr_epi32(128, 8, 128, 8, 128, 8, 128, 8, 128, 8, 128, 8, 128, 8, 128, 8)),
        t0(_mm512_load_ps(tab.t)),
        t1(_mm512_load_ps(tab.t + 16)),
        addend(_mm512_setr_ps(0.0f, 16.0f, 0.0f, 16.0f, 0.0f, 16.0f, 0.0f, 16.0f, 0.0f, 16.0f, 0.0f, 16.0f, 0.0f,
                              16.0f, 0.0f, 16.0f)),
        scale(_mm512_set1_ps(15.5f)),
        one(_mm512_set1_ps(1.0f)) {}

  HWY_INLINE __m512i Encode(__m512 x) const {
    // min(1, |x|): +inf -> 1, a NaN stays NaN (key byte 0, compares false). The compare takes
    // |x| (the same: |x| > 1 only for inf, whose cell's threshold is +inf).
    const __m512 a = _mm512_abs_ps(x);
    const __m512i key = _mm512_cvttps_epi32(_mm512_fmadd_ps(_mm512_min_ps(one, a), scale, addend));
    const __m512i below = _mm512_maskz_permutexvar_epi8(0x1111111111111111ull, key, lo);
    const __m512i above = _mm512_maskz_permutexvar_epi8(0x1111111111111111ull, key, hi);
    const __m512 t = _mm512_permutex2var_ps(t0, key, t1);
    const __m512i code = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(a, t, _CMP_GT_OQ), below, above);
    return _mm512_mask_or_epi32(code, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), code, sign);
  }
};

// Packs codes of 64 consecutive elements (c0..c3, from NF4CellEncoder) into 32 bytes.
HWY_INLINE void StorePackedCells4(__m512i c0, __m512i c1, __m512i c2, __m512i c3, uint8_t* HWY_RESTRICT out,
                                  bool stream) {
  // Dword lane i: byte v = lane i of c_v; then qword j: byte v = packed byte j of vector v.
  __m512i u = _mm512_ternarylogic_epi32(c0, _mm512_slli_epi32(c1, 8), _mm512_slli_epi32(c2, 16), 0xfe);
  u = _mm512_or_si512(u, _mm512_slli_epi32(c3, 24));
  u = _mm512_or_si512(u, _mm512_srli_epi64(u, 32));
  const __m512i order = _mm512_set_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                        0, 0, 0, 0, 0, 0,  // bytes 63..32 unused
                                        59, 51, 43, 35, 27, 19, 11, 3, 58, 50, 42, 34, 26, 18, 10, 2, 57, 49, 41,
                                        33, 25, 17, 9, 1, 56, 48, 40, 32, 24, 16, 8, 0);
  const __m256i bytes = _mm512_castsi512_si256(_mm512_permutexvar_epi8(order, u));
  if (stream) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(out), bytes);
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), bytes);
  }
}

// 32 elements -> 16 bytes.
HWY_INLINE void StorePackedCells2(__m512i c0, __m512i c1, uint8_t* HWY_RESTRICT out, bool stream) {
  __m512i u = _mm512_or_si512(c0, _mm512_slli_epi32(c1, 8));
  u = _mm512_or_si512(u, _mm512_srli_epi64(u, 32));
  const __m512i order = _mm512_set_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 57, 49,
                                        41, 33, 25, 17, 9, 1, 56, 48, 40, 32, 24, 16, 8, 0);
  const __m128i bytes = _mm512_castsi512_si128(_mm512_permutexvar_epi8(order, u));
  if (stream) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(out), bytes);
  } else {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), bytes);
  }
}

// Groups of 16 full fp32 blocks of 32 or 64 elements, without the chunk machinery: one
// AbsMax16, one RcpApprox16, then the blocks straight from the input (L1-hot after the
// absmax). Returns the first block not done.
template <int64_t kBlock, class Encoder>
HWY_INLINE int64_t QuantizeSmallBlocksCells(const Encoder enc, const Quant4Args& a, int64_t b0, int64_t b1) {
  // Locals (the encoder's tables included): the byte stores may alias anything in memory,
  // which would make the compiler reload them in every iteration.
  const DF df;
  const float* A = static_cast<const float*>(a.A);
  const int64_t n = a.n;
  float* absmax = a.absmax;
  uint8_t* packed = a.packed;
  // 32-byte non-temporal stores need 32-byte aligned codes: with blocks of 32 (16 bytes of
  // codes) that depends on the parity of the first block (groups move by 16 blocks).
  const bool stream = a.stream && (b0 * kBlock / 2) % 32 == 0;
  const char* input_end = reinterpret_cast<const char*>(A + n);
  alignas(64) float inv[16];
  int64_t b = b0;
  for (; b + 16 <= b1 && (b + 16) * kBlock <= n; b += 16) {
    const float* src = A + b * kBlock;
    AbsMax16(df, src, kBlock, absmax + b);
    hn::Store(RcpApprox16(df, hn::LoadU(df, absmax + b)), df, inv);
    const char* ahead = reinterpret_cast<const char*>(src + 32 * kBlock);  // two groups on
    uint8_t* dst = packed + b * kBlock / 2;
    for (int64_t i = 0; i < 16 * kBlock; i += 64) {  // one block (64) or two (32)
      const char* pf = ahead + i * 4;
      if (pf + 256 <= input_end) {
        __builtin_prefetch(pf, 0, 2);
        __builtin_prefetch(pf + 64, 0, 2);
        __builtin_prefetch(pf + 128, 0, 2);
        __builtin_prefetch(pf + 192, 0, 2);
      }
      const __m512 v0 = _mm512_set1_ps(inv[i / kBlock]);
      const __m512 v1 = _mm512_set1_ps(inv[(i + 32) / kBlock]);
      const __m512i c0 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i), v0));
      const __m512i c1 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 16), v0));
      const __m512i c2 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 32), v1));
      const __m512i c3 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 48), v1));
      StorePackedCells4(c0, c1, c2, c3, dst + i / 2, stream);
    }
  }
  return b;
}

template <class Encoder>
void QuantizeBlocks4Cells(const Encoder enc, const Quant4Args& a, int64_t b0, int64_t b1) {
  const DF df;
  if (a.dtype == BNB_F32 && a.blocksize == 64) b0 = QuantizeSmallBlocksCells<64>(enc, a, b0, b1);
  if (a.dtype == BNB_F32 && a.blocksize == 32) b0 = QuantizeSmallBlocksCells<32>(enc, a, b0, b1);
  if (b0 >= b1) {
    if (a.stream) EndStreaming();
    return;
  }
  alignas(64) float scratch[kMaxBlock + 64];
  alignas(64) uint8_t bytes[kMaxBlock / 2 + 64];
  ForEachScaledBlock(df, a.dtype, a.A, a.n, a.blocksize, 32, a.absmax, b0, b1, scratch,
                     [&](int64_t b, const float* src, int64_t padded, int64_t valid, float inv, const auto& ahead) {
    const __m512 vinv = _mm512_set1_ps(inv);
    uint8_t* dst = padded == valid ? a.packed + b * a.blocksize / 2 : bytes;
    const bool stream = a.stream && dst != bytes;
    int64_t i = 0;
    for (; i + 64 <= padded; i += 64) {
      ahead.Touch(i, 64);
      const __m512i c0 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i), vinv));
      const __m512i c1 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 16), vinv));
      const __m512i c2 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 32), vinv));
      const __m512i c3 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 48), vinv));
      StorePackedCells4(c0, c1, c2, c3, dst + i / 2, stream);
    }
    if (i < padded) {  // 32 left (blocksize 32, or a padded last block)
      ahead.Touch(i, 32);
      const __m512i c0 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i), vinv));
      const __m512i c1 = enc.Encode(_mm512_mul_ps(_mm512_loadu_ps(src + i + 16), vinv));
      StorePackedCells2(c0, c1, dst + i / 2, stream);
    }
    if (dst == bytes) std::memcpy(a.packed + b * a.blocksize / 2, bytes, static_cast<size_t>(ceil_div(valid, 2)));
  });
  if (a.stream) EndStreaming();
}
#endif

template <bool kNF4>
void QuantizeBlocks4Impl(const Quant4Args& a, int64_t b0, int64_t b1) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  alignas(64) float scratch[kMaxBlock + 64];
  alignas(64) uint8_t bytes[kMaxBlock / 2 + 64];
  alignas(64) float levels[16 + 64] = {};
  static constexpr int kOrder[15] = {7, 3, 11, 1, 5, 9, 13, 0, 2, 4, 6, 8, 10, 12, 14};
  for (int j = 0; j < 15; ++j) levels[j] = bnb::bits_to_float(bnb::kNF4ThresholdBits[kOrder[j]]);
  alignas(64) float fp4_levels[8 + 64] = {};
  static constexpr int kFP4Order[7] = {3, 1, 5, 0, 2, 4, 6};
  for (int j = 0; j < 7; ++j) fp4_levels[j] = bnb::bits_to_float(bnb::kFP4ThresholdBits[kFP4Order[j]]);
  alignas(64) int32_t patterns[8 + 64] = {};
  for (int j = 0; j < 8; ++j) patterns[j] = bnb::kFP4Pattern[j];
  ForEachScaledBlock(df, a.dtype, a.A, a.n, a.blocksize, 2 * N, a.absmax, b0, b1, scratch,
                     [&](int64_t b, const float* src, int64_t padded, int64_t valid, float inv, const auto& ahead) {
    const VF vinv = hn::Set(df, inv);
    // Zero padding encodes 0.0 under this block's scale: the odd-n filler nibble.
    uint8_t* dst = padded == valid ? a.packed + b * a.blocksize / 2 : bytes;
    const bool stream = a.stream && dst != bytes;
    const auto encode = [&](VF x) { return kNF4 ? EncodeNF4(df, levels, x) : EncodeFP4(df, fp4_levels, patterns, x); };
    int64_t i = 0;
#if HWY_TARGET == HWY_SCALAR
    (void)ahead;
    (void)stream;
    for (; i < padded; i += 2) {
      StorePacked(df, encode(hn::Mul(hn::LoadU(df, src + i), vinv)), encode(hn::Mul(hn::LoadU(df, src + i + 1), vinv)),
                  dst + i / 2);
    }
#else
    // Even and odd elements go to separate vectors first, so a byte is just (even << 4) | odd.
    const auto pair = [&](int64_t at) {
      const VF lo = hn::LoadU(df, src + at);
      const VF hi = hn::LoadU(df, src + at + N);
      const VI even = encode(hn::Mul(hn::ConcatEven(df, hi, lo), vinv));
      const VI odd = encode(hn::Mul(hn::ConcatOdd(df, hi, lo), vinv));
      return hn::Or(hn::ShiftLeft<4>(even), odd);
    };
    for (; i + 4 * N <= padded; i += 4 * N) {  // two independent pairs per iteration
      ahead.Touch(i, 4 * N);
      const VI p0 = pair(i);
      const VI p1 = pair(i + 2 * N);
      StoreBytes(df, p0, dst + i / 2, stream);
      StoreBytes(df, p1, dst + i / 2 + N, stream);
    }
    for (; i < padded; i += 2 * N) StoreBytes(df, pair(i), dst + i / 2, stream);
#endif
    if (dst == bytes) std::memcpy(a.packed + b * a.blocksize / 2, bytes, static_cast<size_t>(ceil_div(valid, 2)));
  });
  if (a.stream) EndStreaming();
}

void QuantizeBlocks4(const Quant4Args& a, int64_t b0, int64_t b1) {
#if HWY_TARGET == HWY_AVX3_DL
  if (a.quant_type == BNB_NF4 && nf4_cells().ok) {
    QuantizeBlocks4Cells(NF4CellEncoder(nf4_cells()), a, b0, b1);
    return;
  }
  if (a.quant_type == BNB_FP4 && fp4_cells().ok) {
    QuantizeBlocks4Cells(FP4CellEncoder(fp4_cells()), a, b0, b1);
    return;
  }
#endif
  if (a.quant_type == BNB_FP4) {
    QuantizeBlocks4Impl<false>(a, b0, b1);
  } else {
    QuantizeBlocks4Impl<true>(a, b0, b1);
  }
}

// Elements [begin, end) of one block through its pre-scaled table; returns where the vector
// part stopped (a multiple of 2N from begin).
template <bool kStream>
HWY_INLINE int64_t DequantizeRun4(const Dequant4Args& a, const float* HWY_RESTRICT lut, int64_t begin,
                                  int64_t end) {
#if HWY_TARGET == HWY_SCALAR
  (void)a;
  (void)lut;
  (void)end;
  return begin;
#else
  const DF df;
  const DU du;
  const DI di;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const hn::Rebind<uint8_t, DF> d8;                    // N bytes
  const hn::Rebind<uint16_t, DF> d16;                  // N u16 lanes
  const hn::Repartition<uint8_t, decltype(d16)> d8x2;  // the same bits as 2N bytes
  const hn::Half<decltype(d8x2)> d8h;
  int64_t i = begin;
  for (; i + 2 * N <= end; i += 2 * N) {
    const auto w = hn::PromoteTo(d16, hn::LoadU(d8, a.packed + i / 2));
    // u16 lane j = [high nibble of byte j | low nibble << 8]: as bytes, the nibbles in order.
    const auto nib = hn::BitCast(d8x2, hn::Or(hn::ShiftRight<4>(w), hn::ShiftLeft<8>(hn::And(w, hn::Set(d16, 15)))));
    const VI i0 = hn::BitCast(di, hn::PromoteTo(du, hn::LowerHalf(d8h, nib)));
    const VI i1 = hn::BitCast(di, hn::PromoteTo(du, hn::UpperHalf(d8h, nib)));
    StoreFromF32<kStream>(df, Lookup<16>(df, lut, i0), a.out_dtype, a.out, i);
    StoreFromF32<kStream>(df, Lookup<16>(df, lut, i1), a.out_dtype, a.out, i + N);
  }
  return i;
#endif
}

template <bool kStream>
void DequantizeBlocks4Impl(const Dequant4Args& a, int64_t b0, int64_t b1) {
  const uint32_t* lut_bits = a.quant_type == BNB_FP4 ? bnb::kFP4DecodeBits : bnb::kNF4Bits;
  alignas(64) float lut[16 + 64] = {};
  float code[16];
  for (int k = 0; k < 16; ++k) code[k] = bnb::bits_to_float(lut_bits[k]);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t begin = b * a.blocksize;
    const int64_t end = begin + a.blocksize <= a.n ? begin + a.blocksize : a.n;
    const float scale = gemm4_block_scale(a.scales, b);
    for (int k = 0; k < 16; ++k) lut[k] = code[k] * scale;
    const int64_t i = DequantizeRun4<kStream>(a, lut, begin, end);
    if (i < end) {  // only the last block (or every block on HWY_SCALAR)
      for (int64_t j = i; j < end; ++j) {
        const uint8_t byte = a.packed[j / 2];
        StoreScalar(lut[(j & 1) ? (byte & 15) : (byte >> 4)], a.out_dtype, a.out, j);
      }
    }
  }
  if (kStream) EndStreaming();
}

void DequantizeBlocks4(const Dequant4Args& a, int64_t b0, int64_t b1) {
  WithFlag(a.stream, [&](auto stream) { DequantizeBlocks4Impl<decltype(stream)::value>(a, b0, b1); });
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace bnb
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnb {
namespace cpu {

HWY_EXPORT(QuantizeBlocks4);
HWY_EXPORT(DequantizeBlocks4);

void quantize_blocks4(const Quant4Args& a, int64_t b0, int64_t b1) {
  HWY_DYNAMIC_DISPATCH(QuantizeBlocks4)(a, b0, b1);
}

void dequantize_blocks4(const Dequant4Args& a, int64_t b0, int64_t b1) {
  HWY_DYNAMIC_DISPATCH(DequantizeBlocks4)(a, b0, b1);
}

}  // namespace cpu
}  // namespace bnb
#endif  // HWY_ONCE
