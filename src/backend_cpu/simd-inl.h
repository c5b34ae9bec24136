// Per-target building blocks of the CPU backend's SIMD families (quantization, optimizers,
// LLM.int8(), the 4-bit matmul): the vector types, what each target can do, the fp16/bf16 <->
// binary32 conversions, the run-time to compile-time dtype switch, table look-ups and streaming
// stores. Written once here, compiled into every target of each foreach_target file that
// includes it.
//
// Include it after hwy/highway.h in a file that foreach_target.h re-includes: the guard below
// follows Highway's per-target idiom (it flips with HWY_TARGET_TOGGLE, so each target gets its
// own copy, inside its own HWY_NAMESPACE).
//
// Every conversion here is exact or rounds to nearest even exactly as half.h does; the kernels'
// bit-exactness (docs/FORMATS.md) rests on that.

#if defined(BNB_BACKEND_CPU_SIMD_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BNB_BACKEND_CPU_SIMD_INL_H_
#undef BNB_BACKEND_CPU_SIMD_INL_H_
#else
#define BNB_BACKEND_CPU_SIMD_INL_H_
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "bnb.h"
#include "half.h"
#include "hwy/highway.h"

// ------------------------------------------------------------------ what the target offers

// AVX-512's two-table permute (VPERMI2PS/VPERMT2PS): a 32-entry table in two registers.
#undef BNB_SIMD_PERMUTE2
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define BNB_SIMD_PERMUTE2 1
#else
#define BNB_SIMD_PERMUTE2 0
#endif

// F16C (x86 from AVX2 up; Highway's f16 PromoteTo/DemoteTo use it): one instruction per vector
// instead of the integer emulation below. Exact for every binary16 value; see LoadAsF32 for the
// one difference (signalling NaNs).
#undef BNB_SIMD_F16C
#if (HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL) && !defined(HWY_DISABLE_F16C)
#define BNB_SIMD_F16C 1
#else
#define BNB_SIMD_F16C 0
#endif

// Non-temporal stores (and the sfence that orders them).
#undef BNB_SIMD_STREAM
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define BNB_SIMD_STREAM 1
#else
#define BNB_SIMD_STREAM 0
#endif

// A vector fused multiply-add that rounds once (EMU128 and SCALAR may emulate it otherwise).
#undef BNB_SIMD_FMA
#if HWY_NATIVE_FMA && HWY_TARGET != HWY_EMU128 && HWY_TARGET != HWY_SCALAR
#define BNB_SIMD_FMA 1
#else
#define BNB_SIMD_FMA 0
#endif

// SVE's vectors are sizeless: no arrays or members of vectors (RegTable keeps its registers' lanes
// in an aligned array there and loads them where they are read).
#undef BNB_SIMD_SIZELESS
#if HWY_TARGET == HWY_SVE || HWY_TARGET == HWY_SVE2 || HWY_TARGET == HWY_SVE_256 || HWY_TARGET == HWY_SVE2_128
#define BNB_SIMD_SIZELESS 1
#else
#define BNB_SIMD_SIZELESS 0
#endif

HWY_BEFORE_NAMESPACE();
namespace bnb {
namespace cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The kernels work on full vectors of binary32 and their integer twins. The kernels size their
// tables, tiles and scratch by MaxLanes(DF) and need it to be the run-time lane count: the
// length-agnostic SVE and SVE2 targets (any vector length from 128 bits up) therefore use their
// first 128 bits, the width every SVE machine has; SVE_256 and SVE2_128 are built for one width
// and use all of it.
#if HWY_TARGET == HWY_SVE || HWY_TARGET == HWY_SVE2
using DF = hn::CappedTag<float, 4>;
#else
using DF = hn::ScalableTag<float>;
#endif
using DI = hn::RebindToSigned<DF>;
using DU = hn::RebindToUnsigned<DF>;
using D16 = hn::Rebind<uint16_t, DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;
using VU = hn::Vec<DU>;
using MF = hn::Mask<DF>;

// ------------------------------------------------------------------ fp16 / bf16 <-> binary32

// binary16 bits (in u32 lanes) -> binary32, exact; subnormals, inf and NaN (payload kept,
// signalling ones too) included.
HWY_INLINE VF F16BitsToF32(DF df, VU h) {
  const DU du;
  const VU sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(du, 0x8000u)));
  VU o = hn::ShiftLeft<13>(hn::And(h, hn::Set(du, 0x7fffu)));
  const VU exp = hn::And(o, hn::Set(du, 0x0f800000u));
  o = hn::Add(o, hn::Set(du, 0x38000000u));
  const auto is_special = hn::Eq(exp, hn::Set(du, 0x0f800000u));
  o = hn::IfThenElse(is_special, hn::Add(o, hn::Set(du, 0x38000000u)), o);
  // Subnormal: 2^-14 * (1 + m) - 2^-14, both steps exact.
  const auto is_small = hn::Eq(exp, hn::Zero(du));
  const VF sub = hn::Sub(hn::BitCast(df, hn::Add(o, hn::Set(du, 0x00800000u))),
                         hn::BitCast(df, hn::Set(du, 0x38800000u)));
  const VF mag = hn::IfThenElse(hn::RebindMask(df, is_small), sub, hn::BitCast(df, o));
  return hn::BitCast(df, hn::Or(hn::BitCast(du, mag), sign));
}

// What the binary16 roundings below share: v's sign bit, its magnitude bits `a` (`ai` as signed
// lanes, for the range tests) and `a` plus the round-to-nearest-even bias for dropping the low 13
// bits (0xfff plus the lowest kept bit). Out-parameters, not a struct: SVE's vectors cannot be
// members.
HWY_INLINE void F16Split(DF df, VF v, VU& sign, VU& a, VU& biased, VI& ai) {
  (void)df;
  sign = hn::And(hn::BitCast(DU(), v), hn::Set(DU(), 0x80000000u));
  a = hn::Xor(hn::BitCast(DU(), v), sign);
  biased = hn::Add(hn::Add(a, hn::Set(DU(), 0xfffu)), hn::And(hn::ShiftRight<13>(a), hn::Set(DU(), 1u)));
  ai = hn::BitCast(DI(), a);
}

// Per lane by |v|'s range (ai = |v|'s bits): `tiny` below the smallest normal half (2^-14),
// `normal` up to what rounds to the largest finite half, `overflow` above, `nan` for NaN.
HWY_INLINE VU ByF16Range(VI ai, VU tiny, VU normal, VU overflow, VU nan) {
  const DU du;
  const DI di;
  VU r = hn::IfThenElse(hn::RebindMask(du, hn::Lt(ai, hn::Set(di, 0x38800000))), tiny, normal);
  r = hn::IfThenElse(hn::RebindMask(du, hn::Gt(ai, hn::Set(di, 0x477fefff))), overflow, r);
  return hn::IfThenElse(hn::RebindMask(du, hn::Gt(ai, hn::Set(di, 0x7f800000))), nan, r);
}

// binary32 -> binary16 bits in u32 lanes, round to nearest even; NaN -> 0x7e00 with its sign.
HWY_INLINE VU F32ToF16Bits(DF df, VF v) {
  const DU du;
  VU sign, a, biased;
  VI ai;
  F16Split(df, v, sign, a, biased, ai);
  // |v| >= 2^-14: drop 13 bits with RNE, re-bias by -112.
  const VU normal = hn::ShiftRight<13>(hn::Sub(biased, hn::Set(du, 0x38000000u)));
  // Below the smallest normal half: adding 0.5 rounds |v| to a multiple of 2^-24 (RNE).
  const VU tiny = hn::Sub(hn::BitCast(du, hn::Add(hn::BitCast(df, a), hn::Set(df, 0.5f))),
                          hn::Set(du, 0x3f000000u));
  const VU r = ByF16Range(ai, tiny, normal, hn::Set(du, 0x7c00u), hn::Set(du, 0x7e00u));
  return hn::Or(r, hn::ShiftRight<16>(sign));
}

// u (binary32 bits) with its top 16 bits rounded to bfloat16 (RNE; NaN kept and made quiet, as
// half.h's f32_to_bf16); the low 16 bits are left over.
HWY_INLINE VU RoundBitsToBF16(VU u) {
  const DU du;
  const DI di;
  const VU lsb = hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u));
  const VU rounded = hn::Add(hn::Add(u, hn::Set(du, 0x7fffu)), lsb);
  const VU quiet = hn::Or(u, hn::Set(du, 0x400000u));
  const VI mag = hn::BitCast(di, hn::And(u, hn::Set(du, 0x7fffffffu)));
  return hn::IfThenElse(hn::RebindMask(du, hn::Gt(mag, hn::Set(di, 0x7f800000))), quiet, rounded);
}

// binary32 -> bfloat16 bits in u32 lanes, round to nearest even, NaN kept quiet (half.h's
// f32_to_bf16).
HWY_INLINE VU F32ToBF16Bits(DF df, VF v) {
  (void)df;
  return hn::ShiftRight<16>(RoundBitsToBF16(hn::BitCast(DU(), v)));
}

// Rounds binary32 lanes to binary16 precision (RNE, overflow to inf, NaN kept and made quiet),
// still in binary32: for `p <- T(x)` steps that go on computing with the rounded value.
HWY_INLINE VF RoundToF16(DF df, VF v) {
  const DU du;
  VU sign, a, biased;
  VI ai;
  F16Split(df, v, sign, a, biased, ai);
  const VU normal = hn::And(biased, hn::Set(du, 0xffffe000u));
  const VF half = hn::Set(df, 0.5f);
  const VU tiny = hn::BitCast(du, hn::Sub(hn::Add(hn::BitCast(df, a), half), half));  // multiple of 2^-24
  const VU r = ByF16Range(ai, tiny, normal, hn::Set(du, 0x7f800000u), hn::Or(a, hn::Set(du, 0x400000u)));
  return hn::BitCast(df, hn::Or(r, sign));
}

// binary16 bits of lanes that RoundToF16 already made representable (cheaper than
// F32ToF16Bits: nothing left to round).
HWY_INLINE VU F16BitsOfRounded(DF df, VF v) {
  const DU du;
  const DI di;
  const VU u = hn::BitCast(du, v);
  const VU sign16 = hn::And(hn::ShiftRight<16>(u), hn::Set(du, 0x8000u));
  const VU a = hn::And(u, hn::Set(du, 0x7fffffffu));
  const VU normal = hn::ShiftRight<13>(hn::Sub(a, hn::Set(du, 0x38000000u)));
  const VU tiny = hn::BitCast(du, hn::ConvertTo(di, hn::Mul(hn::BitCast(df, a), hn::Set(df, 16777216.0f))));
  // Rounded lanes above the largest finite half are infinities (or NaN).
  const VU h = ByF16Range(hn::BitCast(di, a), tiny, normal, hn::Set(du, 0x7c00u), hn::Set(du, 0x7e00u));
  return hn::Or(h, sign16);
}

// Rounds to bfloat16 precision (RNE, NaN kept quiet), still binary32.
HWY_INLINE VF RoundToBF16(DF df, VF v) {
  const DU du;
  return hn::BitCast(df, hn::And(RoundBitsToBF16(hn::BitCast(du, v)), hn::Set(du, 0xffff0000u)));
}

// Lanes of 16-bit values (in u32 lanes, < 65536) stored as N uint16_t.
HWY_INLINE void StoreBits16(DF df, VU bits, uint16_t* HWY_RESTRICT dst) {
  (void)df;
  const D16 d16;
  hn::StoreU(hn::DemoteTo(d16, hn::BitCast(DI(), bits)), d16, dst);
}

// N 16-bit values (binary16 or bfloat16 bits) starting at element i, in u32 lanes.
HWY_INLINE VU LoadBits16(DF df, const void* src, int64_t i) {
  (void)df;
  return hn::PromoteTo(DU(), hn::LoadU(D16(), static_cast<const uint16_t*>(src) + i));
}

// bfloat16 bits (in u32 lanes) -> binary32, exact.
HWY_INLINE VF BF16BitsToF32(DF df, VU h) { return hn::BitCast(df, hn::ShiftLeft<16>(h)); }

// N elements of a binary32/binary16/bfloat16 array (kDt a bnb_dtype_t) starting at element i,
// widened to binary32 bit for bit (NaN payloads kept).
template <int kDt>
HWY_INLINE VF LoadAsF32(DF df, const void* src, int64_t i) {
  if constexpr (kDt == BNB_F32) {
    return hn::LoadU(df, static_cast<const float*>(src) + i);
  } else if constexpr (kDt == BNB_BF16) {
    return BF16BitsToF32(df, LoadBits16(df, src, i));
  } else {
    return F16BitsToF32(df, LoadBits16(df, src, i));
  }
}

// The same for a dtype known at run time, through F16C where the target has it: exact for
// every value, but a signalling NaN comes back quiet (the kernels that use this treat every
// NaN alike).
HWY_INLINE VF LoadAsF32(DF df, int32_t dtype, const void* src, int64_t i) {
  if (dtype == BNB_F32) return LoadAsF32<BNB_F32>(df, src, i);
#if BNB_SIMD_F16C
  if (dtype == BNB_F16) {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(df, hn::LoadU(dh, static_cast<const hwy::float16_t*>(src) + i));
  }
#endif
  const VU h = LoadBits16(df, src, i);
  return dtype == BNB_BF16 ? BF16BitsToF32(df, h) : F16BitsToF32(df, h);
}

// 2N elements of a kDt array starting at element i, widened to binary32 (LoadAsF32<kDt>) and
// split: `even` gets elements i, i + 2, ..., `odd` gets i + 1, i + 3, ...
template <int kDt>
HWY_INLINE void LoadEvenOddAsF32(DF df, const void* src, int64_t i, VF& even, VF& odd) {
#if HWY_TARGET == HWY_SCALAR
  even = LoadAsF32<kDt>(df, src, i);
  odd = LoadAsF32<kDt>(df, src, i + 1);
#else
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  const VF lo = LoadAsF32<kDt>(df, src, i);
  const VF hi = LoadAsF32<kDt>(df, src, i + n);
  even = hn::ConcatEven(df, hi, lo);
  odd = hn::ConcatOdd(df, hi, lo);
#endif
}

// fn(std::integral_constant<int, dtype>()) for a run-time dtype (BNB_F32, BNB_F16, else BNB_BF16):
// one switch per call, so the loops inside fn use the compile-time LoadAsF32<kDt>.
template <class Fn>
HWY_INLINE auto WithDtype(int32_t dtype, const Fn& fn) {
  switch (dtype) {
    case BNB_F32:
      return fn(std::integral_constant<int, BNB_F32>());
    case BNB_F16:
      return fn(std::integral_constant<int, BNB_F16>());
    default:
      return fn(std::integral_constant<int, BNB_BF16>());
  }
}

// fn(std::bool_constant<flag>()) for a run-time flag: one branch per call, a kernel compiled
// for each value (e.g. kStream below).
template <class Fn>
HWY_INLINE auto WithFlag(bool flag, const Fn& fn) {
  return flag ? fn(std::true_type()) : fn(std::false_type());
}

// Stores N binary32 lanes into a dtype array at element i (RNE). kStream: non-temporal stores
// (dst + i aligned to the vector) for outputs far larger than the caches, which skip the
// read-for-ownership of every output line; the caller ends with EndStreaming().
template <bool kStream = false>
HWY_INLINE void StoreFromF32(DF df, VF v, int32_t dtype, void* dst, int64_t i) {
  if (dtype == BNB_F32) {
    if constexpr (kStream && BNB_SIMD_STREAM) {
      hn::Stream(v, df, static_cast<float*>(dst) + i);
    } else {
      hn::StoreU(v, df, static_cast<float*>(dst) + i);
    }
    return;
  }
#if BNB_SIMD_F16C
  if (dtype == BNB_F16) {
    const hn::Rebind<hwy::float16_t, DF> dh;
    hwy::float16_t* out = static_cast<hwy::float16_t*>(dst) + i;
    if constexpr (kStream && BNB_SIMD_STREAM) {
      hn::Stream(hn::DemoteTo(dh, v), dh, out);
    } else {
      hn::StoreU(hn::DemoteTo(dh, v), dh, out);
    }
    return;
  }
#endif
  const VU bits = dtype == BNB_BF16 ? F32ToBF16Bits(df, v) : F32ToF16Bits(df, v);
  uint16_t* out = static_cast<uint16_t*>(dst) + i;
  if constexpr (kStream && BNB_SIMD_STREAM) {
    const D16 d16;
    hn::Stream(hn::DemoteTo(d16, hn::BitCast(DI(), bits)), d16, out);
  } else {
    StoreBits16(df, bits, out);
  }
}

// Orders the non-temporal stores before whatever follows.
inline void EndStreaming() {
#if BNB_SIMD_STREAM
  _mm_sfence();
#endif
}

// Stores N lanes (each < 256) as bytes; `stream` (AVX-512 only, 16-byte aligned `out`) bypasses
// the caches for outputs far larger than them.
HWY_INLINE void StoreBytes(DF df, VI codes, uint8_t* HWY_RESTRICT out, bool stream = false) {
  (void)df;
#if BNB_SIMD_PERMUTE2
  const __m128i bytes = _mm512_cvtepi32_epi8(codes.raw);
  if (stream) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(out), bytes);
  } else {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), bytes);
  }
#else
  (void)stream;
  const hn::Rebind<uint8_t, DI> d8;
  hn::StoreU(hn::DemoteTo(d8, codes), d8, out);
#endif
}

// Scalar twin of StoreFromF32 for the last few elements (the same rounding).
inline void StoreScalar(float v, int32_t dtype, void* dst, int64_t i) {
  if (dtype == BNB_F32) {
    static_cast<float*>(dst)[i] = v;
  } else if (dtype == BNB_BF16) {
    static_cast<uint16_t*>(dst)[i] = f32_to_bf16(v);  // what F32ToBF16Bits computes
  } else {
    const DF df;
    const DU du;
    alignas(64) uint32_t lanes[hn::MaxLanes(DU())];
    hn::Store(F32ToF16Bits(df, hn::Set(df, v)), du, lanes);
    static_cast<uint16_t*>(dst)[i] = static_cast<uint16_t>(lanes[0]);
  }
}

// ------------------------------------------------------------------ table look-ups

// `yes` in the lanes whose idx has bit kBit set, else `no`: which half of a split table a lane
// reads. AVX-512 tests the bit into a mask register; elsewhere the bit is shifted into the sign,
// which the blend reads directly (one shift instead of an and, a compare and a not).
template <int kBit>
HWY_INLINE VF IfBitThenElse(DF df, VI idx, VF yes, VF no) {
#if BNB_SIMD_PERMUTE2
  (void)df;
  const __mmask16 bit = _mm512_test_epi32_mask(idx.raw, _mm512_set1_epi32(1 << kBit));
  return VF{_mm512_mask_blend_ps(bit, no.raw, yes.raw)};
#else
  // On integer lanes: EMU128 and SCALAR compare the value with 0, which -0.0f would not pass.
  const DI di;
  return hn::BitCast(df, hn::IfNegativeThenElse(hn::ShiftLeft<31 - kBit>(idx), hn::BitCast(di, yes),
                                                hn::BitCast(di, no)));
#endif
}

// table[idx] for a table of K floats (K a power of two) starting at `table`; idx in [0, K).
// Up to two vectors of candidates use lane permutes; larger tables use halving permutes on
// AVX-512, else a gather.
template <size_t K>
HWY_INLINE VF Lookup(DF df, const float* HWY_RESTRICT table, VI idx) {
  constexpr size_t N = hn::MaxLanes(DF());
  if constexpr (K == 1) {
    (void)idx;
    return hn::Set(df, table[0]);
  } else if constexpr (K <= N) {
    return hn::TableLookupLanes(hn::LoadU(df, table), hn::IndicesFromVec(df, idx));
  } else if constexpr (K == 2 * N && N >= 4) {
#if BNB_SIMD_PERMUTE2
    return VF{_mm512_permutex2var_ps(hn::LoadU(df, table).raw, idx.raw, hn::LoadU(df, table + N).raw)};
#else
    const DI di;
    const VI lane = hn::And(idx, hn::Set(di, static_cast<int32_t>(N - 1)));
    const auto ix = hn::IndicesFromVec(df, lane);
    const VF lo = hn::TableLookupLanes(hn::LoadU(df, table), ix);
    const VF hi = hn::TableLookupLanes(hn::LoadU(df, table + N), ix);
    return IfBitThenElse<static_cast<int>(hwy::FloorLog2(N))>(df, idx, hi, lo);
#endif
  } else {
#if BNB_SIMD_PERMUTE2
    // vpermt2ps reads only the low 5 index bits: the halves need no masking of idx, and the
    // bit that picks a half is one test (the compiler shares repeated tests).
    constexpr size_t kHalf = K / 2;
    const VF lo = Lookup<kHalf>(df, table, idx);
    const VF hi = Lookup<kHalf>(df, table + kHalf, idx);
    return IfBitThenElse<static_cast<int>(hwy::FloorLog2(kHalf))>(df, idx, hi, lo);
#else
    return hn::GatherIndex(df, table, idx);
#endif
  }
}

// A table of K floats (K a power of two) held in registers where that pays off: K/N vectors
// (one when K <= N) on targets with a two-table permute (AVX-512) or when K <= 2N; otherwise
// look-ups read `mem`. Loaded once per task so the compiler need not reload it after every
// store of codes (uint8_t stores may alias the table).
template <size_t K>
struct RegTable {
  static constexpr size_t N = hn::MaxLanes(DF());
  static constexpr bool kInRegs = K <= 2 * N || (BNB_SIMD_PERMUTE2 && K <= 16 * N);
  static constexpr size_t kVecs = kInRegs ? (K <= N ? 1 : K / N) : 1;
#if BNB_SIMD_SIZELESS
  // The registers' lanes (SVE's vectors cannot be members), loaded where they are read.
  alignas(64) float lanes_[kVecs * N];
  HWY_INLINE VF Vec(size_t i) const { return hn::Load(DF(), lanes_ + i * N); }
  HWY_INLINE void SetVec(size_t i, VF x) { hn::Store(x, DF(), lanes_ + i * N); }
#else
  VF v[kVecs];
  HWY_INLINE VF Vec(size_t i) const { return v[i]; }
  HWY_INLINE void SetVec(size_t i, VF x) { v[i] = x; }
#endif
  const float* mem;

  explicit RegTable(DF df, const float* table) : mem(table) {
    for (size_t i = 0; i < kVecs; ++i) SetVec(i, hn::LoadU(df, table + i * N));
  }

  // Filled later by LoadScaled (arrays of tables). Declared, not implicit, so that it is
  // compiled for this target: GCC's implicit one is not, and fails to inline NEON's vector
  // constructors.
  RegTable() {}

  // Entry i becomes RN32(table[i] * scale): a block's decode table times its absmax. `scratch`
  // (max(K, N) floats, aligned to the vector, alive while the table is used) holds the entries
  // where look-ups read memory.
  HWY_INLINE void LoadScaled(DF df, const float* HWY_RESTRICT table, float scale, float* HWY_RESTRICT scratch) {
    const VF s = hn::Set(df, scale);
    if constexpr (kInRegs && K >= N) {
      for (size_t i = 0; i < kVecs; ++i) SetVec(i, hn::Mul(hn::LoadU(df, table + i * N), s));
      mem = nullptr;
    } else {
      for (size_t i = 0; i < K; i += N) hn::Store(hn::Mul(hn::LoadU(df, table + i), s), df, scratch + i);
      if constexpr (kInRegs) SetVec(0, hn::Load(df, scratch));
      mem = scratch;
    }
  }

  // table[idx]; idx in [0, K).
  HWY_INLINE VF Get(DF df, VI idx) const { return Select<K>(df, 0, idx); }

  // table[idx & (K - 1)] for any idx >= 0: the mask is left to the permutes that read only the
  // low index bits (AVX-512: one or two registers of table).
  HWY_INLINE VF GetLow(DF df, VI idx) const {
#if BNB_SIMD_PERMUTE2
    if constexpr (K == N) {
      (void)df;
      return VF{_mm512_permutexvar_ps(idx.raw, v[0].raw)};
    } else if constexpr (K == 2 * N) {
      (void)df;
      return VF{_mm512_permutex2var_ps(v[0].raw, idx.raw, v[1].raw)};
    }
#endif
    return Get(df, hn::And(idx, hn::Set(DI(), static_cast<int32_t>(K - 1))));
  }

 private:
  template <size_t kK>
  HWY_INLINE VF Select(DF df, size_t first, VI idx) const {
    if constexpr (!kInRegs) {
      return Lookup<K>(df, mem, idx);
    } else if constexpr (kK == 1) {
      (void)idx;
      return hn::Set(df, mem[first * N]);
    } else if constexpr (kK <= N) {
      return hn::TableLookupLanes(Vec(first), hn::IndicesFromVec(df, idx));
    } else if constexpr (kK == 2 * N && BNB_SIMD_PERMUTE2) {
#if BNB_SIMD_PERMUTE2
      return VF{_mm512_permutex2var_ps(v[first].raw, idx.raw, v[first + 1].raw)};
#endif
    } else {
      const DI di;
      constexpr size_t kHalf = kK / 2;
      const VI low = kHalf <= N ? hn::And(idx, hn::Set(di, static_cast<int32_t>(kHalf - 1))) : idx;
      const VF lo = Select<kHalf>(df, first, low);
      const VF hi = Select<kHalf>(df, first + kHalf / N, low);
      return IfBitThenElse<static_cast<int>(hwy::FloorLog2(kHalf))>(df, idx, hi, lo);
    }
  }
};

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace bnb
HWY_AFTER_NAMESPACE();

#endif  // BNB_BACKEND_CPU_SIMD_INL_H_
