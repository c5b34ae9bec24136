// Per-target block helpers the 8-bit and 4-bit quantizers share (quant8_simd.cc,
// quant4_simd.cc): NaN-dropping absmax, 16 exact reciprocals at once, a block as binary32, and
// the chunked walk over blocks that computes every scale before encoding. Included after
// simd-inl.h; one copy per target (Highway's -inl.h idiom, see simd-inl.h).

#if defined(BNB_BACKEND_CPU_QUANT_BLOCKS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BNB_BACKEND_CPU_QUANT_BLOCKS_INL_H_
#undef BNB_BACKEND_CPU_QUANT_BLOCKS_INL_H_
#else
#define BNB_BACKEND_CPU_QUANT_BLOCKS_INL_H_
#endif

#include <algorithm>
#include <cstdint>

#include "int_math.h"
#include "quant_plan.h"
#include "rcp.h"
#include "simd-inl.h"
#include "tables.h"

HWY_BEFORE_NAMESPACE();
namespace bnb {
namespace cpu {
namespace HWY_NAMESPACE {

// ------------------------------------------------------------------ blocks

// NaN-dropping max |v| over p[0, count), from kAbsmaxEmpty (what a block without a non-NaN
// element keeps). Reads whole vectors: p must be readable up to count rounded up to the lane
// count; lanes past count (padding) are left out. Max(a, acc) keeps acc when a is NaN on every
// target (x86 max returns its second operand; EMU128 and SCALAR skip NaN).
HWY_INLINE float AbsMax(DF df, const float* HWY_RESTRICT p, int64_t count) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const VF empty = hn::Set(df, bnb::kAbsmaxEmpty);
  VF m0 = empty, m1 = empty, m2 = empty, m3 = empty;
  int64_t i = 0;
  for (; i + 4 * N <= count; i += 4 * N) {
    m0 = hn::Max(hn::Abs(hn::LoadU(df, p + i)), m0);
    m1 = hn::Max(hn::Abs(hn::LoadU(df, p + i + N)), m1);
    m2 = hn::Max(hn::Abs(hn::LoadU(df, p + i + 2 * N)), m2);
    m3 = hn::Max(hn::Abs(hn::LoadU(df, p + i + 3 * N)), m3);
  }
  for (; i + N <= count; i += N) m0 = hn::Max(hn::Abs(hn::LoadU(df, p + i)), m0);
  if (i < count) {
    const auto real = hn::FirstN(df, static_cast<size_t>(count - i));
    m1 = hn::Max(hn::IfThenElse(real, hn::Abs(hn::LoadU(df, p + i)), empty), m1);
  }
  return hn::GetLane(hn::MaxOfLanes(df, hn::Max(hn::Max(m0, m1), hn::Max(m2, m3))));
}

#if BNB_SIMD_PERMUTE2
// NaN-dropping max |v| of 16 consecutive blocks of 32 or 64 floats, written to out[0..16).
// Each block first folds to one vector; a transposing tree then reduces the sixteen vectors
// together (about 3 shuffles and maxes per block instead of a full reduction each).
HWY_INLINE void AbsMax16(DF df, const float* HWY_RESTRICT p, int64_t blocksize, float* out) {
  __m512 v[16];
  for (int j = 0; j < 16; ++j) {
    const float* q = p + j * blocksize;
    VF m = hn::Max(hn::Abs(hn::LoadU(df, q)), hn::Set(df, bnb::kAbsmaxEmpty));
    m = hn::Max(hn::Abs(hn::LoadU(df, q + 16)), m);
    if (blocksize == 64) {
      m = hn::Max(hn::Abs(hn::LoadU(df, q + 32)), m);
      m = hn::Max(hn::Abs(hn::LoadU(df, q + 48)), m);
    }
    v[j] = m.raw;  // NaN-free from here on
  }
  __m512 a[8], b[4], c[2];
  for (int j = 0; j < 8; ++j) {  // 256-bit halves: block 2j in quads 0-1, block 2j+1 in 2-3
    a[j] = _mm512_max_ps(_mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0x44),
                         _mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0xEE));
  }
  for (int j = 0; j < 4; ++j) {  // quad k: block 4j + k
    b[j] = _mm512_max_ps(_mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], 0x88),
                         _mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], 0xDD));
  }
  for (int j = 0; j < 2; ++j) {  // quad k: two lanes of block 8j + k, two of block 8j + 4 + k
    c[j] = _mm512_max_ps(_mm512_shuffle_ps(b[2 * j], b[2 * j + 1], 0x44),
                         _mm512_shuffle_ps(b[2 * j], b[2 * j + 1], 0xEE));
  }
  // Lane 4k + m holds block 4m + k; put block j in lane j.
  const __m512 d = _mm512_max_ps(_mm512_shuffle_ps(c[0], c[1], 0x88), _mm512_shuffle_ps(c[0], c[1], 0xDD));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  _mm512_storeu_ps(out, _mm512_permutexvar_ps(order, d));
}
#endif

// bnb::rcp_approx of 16 values at once: one division, one gather of the packed deviations.
HWY_INLINE VF RcpApprox16(DF df, VF x) {
  const DU du;
  const DI di;
  const VU bits = hn::BitCast(du, x);
  const VU sign = hn::And(bits, hn::Set(du, 0x80000000u));
  const VI mag = hn::BitCast(di, hn::Xor(bits, sign));
  const VU r = hn::BitCast(du, hn::Div(hn::Set(df, 1.0f), x));
  const VI rmag = hn::BitCast(di, hn::AndNot(hn::Set(du, 0x80000000u), r));
  // Deviation of significand i: bits 2 * (i % 16) of the i / 16-th little-endian dword.
  const VU sig = hn::And(bits, hn::Set(du, 0x7fffffu));
  const VI word = hn::GatherIndex(di, reinterpret_cast<const int32_t*>(bnb_rcp_delta_packed),
                                  hn::BitCast(di, hn::ShiftRight<4>(sig)));
  const VU shift = hn::ShiftLeft<1>(hn::And(sig, hn::Set(du, 15u)));
  const VI delta = hn::Sub(hn::BitCast(di, hn::And(hn::Shr(hn::BitCast(du, word), shift), hn::Set(du, 3u))),
                           hn::Set(di, 1));
  VU out = hn::BitCast(du, hn::Add(hn::BitCast(di, r), delta));
  out = hn::IfThenElse(hn::RebindMask(du, hn::Lt(rmag, hn::Set(di, 0x00800000))), sign, out);  // flushed
  out = hn::IfThenElse(hn::RebindMask(du, hn::Eq(mag, hn::Set(di, 0x7f800000))), sign, out);   // +-inf
  out = hn::IfThenElse(hn::RebindMask(du, hn::Lt(mag, hn::Set(di, 0x00800000))),
                       hn::Or(sign, hn::Set(du, 0x7f800000u)), out);                             // 0, subnormal
  out = hn::IfThenElse(hn::RebindMask(du, hn::Gt(mag, hn::Set(di, 0x7f800000))), bits, out);   // NaN
  return hn::BitCast(df, out);
}

// Points at block [begin, begin + count) as binary32 with `padded` readable elements
// (a multiple of 2 * lanes), converting or zero-padding into `scratch` when needed.
HWY_INLINE const float* BlockAsF32(DF df, int32_t dtype, const void* A, int64_t begin, int64_t count,
                                   int64_t padded, float* HWY_RESTRICT scratch) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  if (dtype == BNB_F32 && count == padded) return static_cast<const float*>(A) + begin;
  int64_t i = 0;
  for (; i + N <= count; i += N) hn::Store(LoadAsF32(df, dtype, A, begin + i), df, scratch + i);
  for (; i < count; ++i) {
    if (dtype == BNB_F32) {
      scratch[i] = static_cast<const float*>(A)[begin + i];
    } else {
      const uint16_t h = static_cast<const uint16_t*>(A)[begin + i];
      scratch[i] = dtype == BNB_BF16 ? bnb::bits_to_float(static_cast<uint32_t>(h) << 16)
                                     : hn::GetLane(F16BitsToF32(df, hn::Set(DU(), h)));
    }
  }
  for (; i < padded; ++i) scratch[i] = 0.0f;
  return scratch;
}

// Where to prefetch while encoding a block: `bytes` of input from `p`, `esize` bytes/element.
struct Ahead {
  const char* p;
  int64_t bytes;
  int64_t esize;
  // Prefetches the input that pairs with elements [i, i + count) of the current block.
  HWY_INLINE void Touch(int64_t i, int64_t count) const {
    if (p == nullptr) return;
    for (int64_t k = i * esize; k < (i + count) * esize && k < bytes; k += 64) __builtin_prefetch(p + k, 0, 2);
  }
};

// Visits blocks [b0, b1) in chunks of up to kMaxBlock elements: converts/pads a chunk once,
// takes every block's absmax, then every reciprocal (independent, so their table look-ups
// overlap instead of stalling each block), then calls
// encode(block, src, padded, valid, inv) with `padded` a multiple of `step`.
template <class Encode>
HWY_INLINE void ForEachScaledBlock(DF df, int32_t dtype, const void* A, int64_t n, int64_t blocksize,
                                   int64_t step, float* absmax, int64_t b0, int64_t b1,
                                   float* HWY_RESTRICT scratch, const Encode& encode) {
  const int64_t per_chunk = blocksize >= kMaxBlock ? 1 : kMaxBlock / blocksize;
  float inv[kMaxBlock / 32];
  for (int64_t c0 = b0; c0 < b1; c0 += per_chunk) {
    const int64_t c1 = c0 + per_chunk < b1 ? c0 + per_chunk : b1;
    const int64_t begin = c0 * blocksize;
    const int64_t end = c1 * blocksize < n ? c1 * blocksize : n;
    const int64_t count = end - begin;
    const int64_t padded = round_up(count, step);
    const float* src = BlockAsF32(df, dtype, A, begin, count, padded, scratch);
    int64_t b = c0;
#if BNB_SIMD_PERMUTE2
    // Small blocks: sixteen at a time, reduced together (full blocks only).
    if (blocksize == 32 || blocksize == 64) {
      for (; b + 16 <= c1 && (b + 16 - c0) * blocksize <= count; b += 16) {
        AbsMax16(df, src + (b - c0) * blocksize, blocksize, absmax + b);
      }
    }
#endif
    for (; b < c1; ++b) {  // over the real elements; a partial last block's padding counts as 0
      const int64_t off = (b - c0) * blocksize;
      absmax[b] = count - off < blocksize ? std::max(AbsMax(df, src + off, count - off), 0.0f)
                                          : AbsMax(df, src + off, blocksize);
    }
    int64_t r = c0;
#if BNB_SIMD_PERMUTE2
    for (; r + 16 <= c1; r += 16) hn::StoreU(RcpApprox16(df, hn::LoadU(df, absmax + r)), df, inv + (r - c0));
#endif
    for (; r < c1; ++r) inv[r - c0] = bnb::rcp_approx(absmax[r]);
    // While this chunk is encoded (from L1), the next one is prefetched: the memory stream
    // keeps going instead of idling during every encode phase.
    const int64_t esize = dtype == BNB_F32 ? 4 : 2;
    const int64_t next_end = (c1 + per_chunk) * blocksize < n ? (c1 + per_chunk) * blocksize : n;
    for (int64_t b = c0; b < c1; ++b) {
      const int64_t off = (b - c0) * blocksize;
      const int64_t len = padded - off < blocksize ? padded - off : blocksize;
      const int64_t valid = count - off < blocksize ? count - off : blocksize;
      const int64_t ahead_elem = end + off;  // same offset in the next chunk
      const Ahead ahead{ahead_elem < next_end ? static_cast<const char*>(A) + ahead_elem * esize : nullptr,
                        (next_end - ahead_elem) * esize, esize};
      encode(b, src + off, len, valid, inv[b - c0], ahead);
    }
  }
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace bnb
HWY_AFTER_NAMESPACE();

#endif  // BNB_BACKEND_CPU_QUANT_BLOCKS_INL_H_
