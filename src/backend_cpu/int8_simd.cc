// SIMD kernels of the LLM.int8() family, compiled once per Highway target (foreach_target) and
// chosen at run time (HWY_DYNAMIC_DISPATCH). Results are bit-exact with docs/FORMATS.md §6:
// every binary32 operation is the reference's, in the reference's order (this library is
// built with -ffp-contract=off, and the one fused multiply-add of mm_dequant is explicit).
//
//  * vectorwise quant: per row, one pass for the filtered absmax (and the outlier columns),
//    one exact RCP per row (rcp.h), one pass for the codes; outlier columns are zeroed after
//    all rows are done, because any row may make a column an outlier column.
//  * int8 matmul for small M: A is widened to int16 once; each row of B is read once, widened
//    in registers and multiplied with every row of A (pairwise 16-bit products summed into
//    int32 lanes: exact, |sum| < 2^31 for K <= 131071).
//  * mm_dequant: int32 -> binary32 (RN32), two products, the fp16 rounding, the conversion.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bnb.h"
#include "code8_select.h"
#include "half.h"
#include "int8_kernels.h"
#include "int_math.h"
#include "rcp.h"
#include "tables.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/backend_cpu/int8_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#ifndef BNB_BACKEND_CPU_INT8_SIMD_SHARED_
#define BNB_BACKEND_CPU_INT8_SIMD_SHARED_
namespace bnb {
namespace cpu {

struct Int8QuantArgs {
  int32_t dtype;
  int64_t rows;
  int64_t cols;
  const void* A;
  float threshold;  // > 0: outlier handling; already rounded to dtype (int8_kernels.h)
  int8_t* q;
  float* row_stats;
};

struct Int8OutlierArgs {
  int32_t dtype;
  int64_t cols;
  const void* A;
  float threshold;  // > 0, rounded to dtype
};

struct Int8RowsArgs {
  int64_t M, N, K;
  const int16_t* A16;  // A widened to int16, row stride K16
  int64_t K16;         // K rounded up to a whole number of int16 vectors (zero padded)
  const int8_t* B;
  int32_t* C;
};

struct Int8DequantArgs {
  int64_t M, N;
  const int32_t* C;
  const float* row_stats;
  const float* col_stats;
  const void* bias;
  int32_t out_dtype;
  void* out;
};

// Code of one element: rint(RN32(x * s)) with NaN -> 0, saturated to int8.
inline int8_t quant_scalar(float x, float s) {
  float p = x * s;
  if (std::isnan(p)) return 0;
  p = p < -128.0f ? -128.0f : (p > 127.0f ? 127.0f : p);
  return static_cast<int8_t>(std::nearbyint(p));
}

}  // namespace cpu
}  // namespace bnb
#endif  // BNB_BACKEND_CPU_INT8_SIMD_SHARED_

#include "simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnb {
namespace cpu {
namespace HWY_NAMESPACE {

using DI8 = hn::Rebind<int8_t, DF>;

// ------------------------------------------------------------------ vectorwise quantization

// Marks the columns [c, c + lanes) whose |x| >= t in `flags`.
HWY_NOINLINE void MarkOutliers(int32_t dtype, const void* row, int64_t c, int64_t lanes, float t,
                               uint8_t* flags) {
  for (int64_t j = c; j < c + lanes; ++j) {
    if (std::fabs(load_as_f32(dtype, row, j)) >= t) flags[j] = 1;
  }
}

// The row statistic (filtered absmax, -0.0 when nothing counts); marks outlier columns when
// kOutliers.
template <bool kOutliers>
HWY_INLINE float RowAbsmax(int32_t dtype, const void* row, int64_t cols, float t, uint8_t* flags) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const VF vt = hn::Set(df, t);
  const VF empty = hn::Set(df, bnb::kAbsmaxEmpty);
  VF vmax = empty;
  int64_t c = 0;
  for (; c + N <= cols; c += N) {
    const VF a = hn::Abs(LoadAsF32(df, dtype, row, c));
    if (kOutliers) {
      vmax = hn::Max(vmax, hn::IfThenElse(hn::Lt(a, vt), a, empty));  // NaN and outliers dropped
      if (HWY_UNLIKELY(!hn::AllFalse(df, hn::Ge(a, vt)))) MarkOutliers(dtype, row, c, N, t, flags);
    } else {
      vmax = hn::Max(vmax, hn::IfThenElse(hn::Eq(a, a), a, empty));  // NaN dropped
    }
  }
  float m = hn::GetLane(hn::MaxOfLanes(df, vmax));
  for (; c < cols; ++c) {
    const float a = std::fabs(load_as_f32(dtype, row, c));
    if (kOutliers) {
      if (a < t) m = a > m ? a : m;
      if (a >= t) flags[c] = 1;
    } else if (a > m) {
      m = a;
    }
  }
  return bnb::row_stat_from_max(m);
}

template <bool kOutliers>
HWY_INLINE void RowCodes(int32_t dtype, const void* row, int64_t cols, float t, float s, int8_t* q) {
  const DF df;
  const DI di;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const VF vs = hn::Set(df, s);
  const VF vt = hn::Set(df, t);
  const VF lo = hn::Set(df, -128.0f);
  const VF hi = hn::Set(df, 127.0f);
  int64_t c = 0;
  for (; c + N <= cols; c += N) {
    const VF x = LoadAsF32(df, dtype, row, c);
    VF p = hn::Mul(x, vs);
    auto zero = hn::IsNaN(p);
    if (kOutliers) zero = hn::Or(zero, hn::Ge(hn::Abs(x), vt));
    p = hn::Min(hn::Max(hn::IfThenZeroElse(zero, p), lo), hi);
    hn::StoreU(hn::DemoteTo(DI8(), hn::NearestInt(p)), DI8(), q + c);
  }
  (void)di;
  for (; c < cols; ++c) {
    const float x = load_as_f32(dtype, row, c);
    q[c] = (kOutliers && std::fabs(x) >= t) ? int8_t{0} : quant_scalar(x, s);
  }
}

// Rows [r0, r1). flags: `cols` bytes this task may set (threshold > 0 only).
void QuantRowsInt8(const Int8QuantArgs& a, int64_t r0, int64_t r1, uint8_t* flags) {
  const size_t esize = a.dtype == BNB_F32 ? 4 : 2;
  const bool outliers = a.threshold > 0.0f;
  for (int64_t r = r0; r < r1; ++r) {
    const void* row = static_cast<const uint8_t*>(a.A) + static_cast<size_t>(r * a.cols) * esize;
    int8_t* q = a.q + r * a.cols;
    const float m = outliers ? RowAbsmax<true>(a.dtype, row, a.cols, a.threshold, flags)
                             : RowAbsmax<false>(a.dtype, row, a.cols, 0.0f, nullptr);
    a.row_stats[r] = m;
    // s = RN32(127 * RCP(SCB)). SCB = +-0 (or subnormal, flushed) gives s = +-inf: the reference's
    // 0 * inf = NaN converts to 0, and any non-zero element is NaN or an outlier, so the row is zero.
    const float s = 127.0f * bnb::rcp_approx(m);
    if (std::isinf(s)) {
      std::memset(q, 0, static_cast<size_t>(a.cols));
      continue;
    }
    if (outliers) {
      RowCodes<true>(a.dtype, row, a.cols, a.threshold, s, q);
    } else {
      RowCodes<false>(a.dtype, row, a.cols, 0.0f, s, q);
    }
  }
}

// Outlier columns of rows [r0, r1) into `flags` (cols bytes).
void OutlierRowsInt8(const Int8OutlierArgs& a, int64_t r0, int64_t r1, uint8_t* flags) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const size_t esize = a.dtype == BNB_F32 ? 4 : 2;
  const VF vt = hn::Set(df, a.threshold);
  for (int64_t r = r0; r < r1; ++r) {
    const void* row = static_cast<const uint8_t*>(a.A) + static_cast<size_t>(r * a.cols) * esize;
    int64_t c = 0;
    for (; c + N <= a.cols; c += N) {
      const VF x = LoadAsF32(df, a.dtype, row, c);
      if (HWY_UNLIKELY(!hn::AllFalse(df, hn::Ge(hn::Abs(x), vt)))) MarkOutliers(a.dtype, row, c, N, a.threshold, flags);
    }
    if (c < a.cols) MarkOutliers(a.dtype, row, c, a.cols - c, a.threshold, flags);
  }
}

// ------------------------------------------------------------------ int8 matmul, small M

#if HWY_TARGET == HWY_SCALAR
// One lane: no pairwise product; plain loops.
void WidenRowsInt8(const int8_t* A, int64_t M, int64_t K, int64_t K16, int16_t* A16) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < K16; ++k) A16[m * K16 + k] = k < K ? A[m * K + k] : int16_t{0};
  }
}

template <int NB>
HWY_INLINE void DotColumns(const Int8RowsArgs& a, int64_t n0) {
  for (int64_t m = 0; m < a.M; ++m) {
    for (int j = 0; j < NB; ++j) {
      const int8_t* b = a.B + (n0 + j) * a.K;
      const int16_t* r = a.A16 + m * a.K16;
      int32_t s = 0;
      for (int64_t k = 0; k < a.K; ++k) s += static_cast<int32_t>(r[k]) * b[k];
      a.C[m * a.N + n0 + j] = s;
    }
  }
}
#else
using D32 = hn::ScalableTag<int32_t>;
using DW = hn::RepartitionToNarrow<D32>;  // int16, twice the lanes
using DB = hn::Rebind<int8_t, DW>;        // int8, as many lanes as DW (half a vector)

// A[m, :] (int8) -> int16, zero padded to K16.
void WidenRowsInt8(const int8_t* A, int64_t M, int64_t K, int64_t K16, int16_t* A16) {
  const DW dw;
  const int64_t L = static_cast<int64_t>(hn::Lanes(dw));
  for (int64_t m = 0; m < M; ++m) {
    const int8_t* a = A + m * K;
    int16_t* o = A16 + m * K16;
    int64_t k = 0;
    for (; k + L <= K; k += L) hn::StoreU(hn::PromoteTo(dw, hn::LoadU(DB(), a + k)), dw, o + k);
    for (; k < K; ++k) o[k] = a[k];
    for (; k < K16; ++k) o[k] = 0;
  }
}

// C[m0..m0+MB, n0..n0+NB] with MB <= 4, NB <= 4 (compile-time), every k.
template <int MB, int NB>
HWY_INLINE void DotTile(const Int8RowsArgs& a, int64_t m0, int64_t n0) {
  const D32 d32;
  const DW dw;
  const int64_t L = static_cast<int64_t>(hn::Lanes(dw));
  const int64_t K = a.K;
  const int64_t kmain = K - K % L;
#if BNB_SIMD_SIZELESS
  // SVE (no arrays of vectors): one dot product at a time, each with the accumulator pair below
  // (integer sums: the same values in any order).
  for (int i = 0; i < MB; ++i) {
    const int16_t* arow = a.A16 + (m0 + i) * a.K16;
    for (int j = 0; j < NB; ++j) {
      const int8_t* b = a.B + (n0 + j) * K;
      hn::Vec<D32> acc = hn::Zero(d32);
      hn::Vec<D32> acc2 = hn::Zero(d32);
      for (int64_t k = 0; k < kmain; k += L) {
        acc = hn::ReorderWidenMulAccumulate(d32, hn::LoadU(dw, arow + k), hn::PromoteTo(dw, hn::LoadU(DB(), b + k)),
                                            acc, acc2);
      }
      int32_t s = hn::GetLane(hn::SumOfLanes(d32, hn::Add(acc, acc2)));
      for (int64_t k = kmain; k < K; ++k) s += static_cast<int32_t>(arow[k]) * b[k];
      a.C[(m0 + i) * a.N + n0 + j] = s;
    }
  }
#else
  hn::Vec<D32> acc[MB][NB];
  hn::Vec<D32> unused[MB][NB];  // the second accumulator of the pairwise product (x86: untouched)
  for (int i = 0; i < MB; ++i) {
    for (int j = 0; j < NB; ++j) {
      acc[i][j] = hn::Zero(d32);
      unused[i][j] = hn::Zero(d32);
    }
  }
  const int8_t* b[NB];
  for (int j = 0; j < NB; ++j) b[j] = a.B + (n0 + j) * K;
  const int16_t* arow[MB];
  for (int i = 0; i < MB; ++i) arow[i] = a.A16 + (m0 + i) * a.K16;
  for (int64_t k = 0; k < kmain; k += L) {
    hn::Vec<DW> bv[NB];
    for (int j = 0; j < NB; ++j) bv[j] = hn::PromoteTo(dw, hn::LoadU(DB(), b[j] + k));
    for (int i = 0; i < MB; ++i) {
      const hn::Vec<DW> av = hn::LoadU(dw, arow[i] + k);
      for (int j = 0; j < NB; ++j) acc[i][j] = hn::ReorderWidenMulAccumulate(d32, av, bv[j], acc[i][j], unused[i][j]);
    }
  }
  for (int i = 0; i < MB; ++i) {
    for (int j = 0; j < NB; ++j) {
      int32_t s = hn::GetLane(hn::SumOfLanes(d32, hn::Add(acc[i][j], unused[i][j])));
      for (int64_t k = kmain; k < K; ++k) s += static_cast<int32_t>(arow[i][k]) * b[j][k];
      a.C[(m0 + i) * a.N + n0 + j] = s;
    }
  }
#endif  // BNB_SIMD_SIZELESS
}

template <int NB>
HWY_INLINE void DotColumns(const Int8RowsArgs& a, int64_t n0) {
  int64_t m = 0;
  for (; m + 4 <= a.M; m += 4) DotTile<4, NB>(a, m, n0);
  switch (a.M - m) {
    case 3: DotTile<3, NB>(a, m, n0); break;
    case 2: DotTile<2, NB>(a, m, n0); break;
    case 1: DotTile<1, NB>(a, m, n0); break;
    default: break;
  }
}

#endif  // HWY_TARGET == HWY_SCALAR

// Columns [n0, n1) of C.
void MatmulRowsInt8(const Int8RowsArgs& a, int64_t n0, int64_t n1) {
  int64_t n = n0;
  // One or two rows of A: B is read as one sequential stream (row after row), which the
  // hardware prefetchers follow best; more rows of A share each load of four rows of B.
  if (a.M > 2) {
    for (; n + 4 <= n1; n += 4) DotColumns<4>(a, n);
  }
  for (; n < n1; ++n) DotColumns<1>(a, n);
}

// ------------------------------------------------------------------ dequantization

// Elements [e0, e1) of the flattened [M, N] output.
void DequantInt8(const Int8DequantArgs& a, int64_t e0, int64_t e1) {
  const DF df;
  const DI di;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const float kdq = bnb::bits_to_float(kDequantScaleBits);
  const VF vk = hn::Set(df, kdq);
  const bool fused_bias = a.bias != nullptr && a.out_dtype == BNB_F16;
  const bool late_bias = a.bias != nullptr && a.out_dtype != BNB_F16;
  alignas(64) float tbuf[HWY_MAX_BYTES / sizeof(float)];
  alignas(64) uint32_t hbuf[HWY_MAX_BYTES / sizeof(float)] = {};
  int64_t e = e0;
  while (e < e1) {
    const int64_t m = e / a.N;
    const int64_t n_begin = e - m * a.N;
    const int64_t n_end = (e1 - m * a.N) < a.N ? e1 - m * a.N : a.N;
    const int32_t* crow = a.C + m * a.N;
    const float rs = a.row_stats[m];
    const VF vrs = hn::Set(df, rs);
    int64_t n = n_begin;
    const auto store = [&](VU h, int64_t at) {
      if (late_bias) h = F32ToF16Bits(df, hn::Add(F16BitsToF32(df, h), LoadAsF32(df, a.out_dtype, a.bias, at)));
      const int64_t o = m * a.N + at;
      if (a.out_dtype == BNB_F16) {
        StoreBits16(df, h, static_cast<uint16_t*>(a.out) + o);
      } else if (a.out_dtype == BNB_F32) {
        hn::StoreU(F16BitsToF32(df, h), df, static_cast<float*>(a.out) + o);
      } else {
        StoreBits16(df, F32ToBF16Bits(df, F16BitsToF32(df, h)), static_cast<uint16_t*>(a.out) + o);
      }
    };
    for (; n + L <= n_end; n += L) {
      const VF c = hn::ConvertTo(df, hn::LoadU(di, crow + n));
      const VF t = hn::Mul(hn::Mul(c, vrs), hn::LoadU(df, a.col_stats + n));
      VF y;
      if (fused_bias) {
        const VF b = LoadAsF32(df, BNB_F16, a.bias, n);
#if BNB_SIMD_FMA
        y = hn::MulAdd(t, vk, b);
#else
        hn::Store(t, df, tbuf);
        alignas(64) float bb[HWY_MAX_BYTES / sizeof(float)];
        hn::Store(b, df, bb);
        for (int64_t j = 0; j < L; ++j) tbuf[j] = std::fma(tbuf[j], kdq, bb[j]);
        y = hn::Load(df, tbuf);
#endif
      } else {
        y = hn::Mul(t, vk);
      }
      store(F32ToF16Bits(df, y), n);
    }
    if (n < n_end) {
      // Tail: the same steps on a vector padded with zeros.
      const int64_t rem = n_end - n;
      alignas(64) int32_t cb[HWY_MAX_BYTES / sizeof(float)] = {};
      alignas(64) float colb[HWY_MAX_BYTES / sizeof(float)] = {};
      alignas(64) float biasb[HWY_MAX_BYTES / sizeof(float)] = {};
      for (int64_t j = 0; j < rem; ++j) {
        cb[j] = crow[n + j];
        colb[j] = a.col_stats[n + j];
        if (a.bias != nullptr) biasb[j] = load_as_f32(a.out_dtype, a.bias, n + j);
      }
      const VF c = hn::ConvertTo(df, hn::Load(di, cb));
      const VF t = hn::Mul(hn::Mul(c, vrs), hn::Load(df, colb));
      hn::Store(t, df, tbuf);
      for (int64_t j = 0; j < L; ++j) tbuf[j] = fused_bias ? std::fma(tbuf[j], kdq, biasb[j]) : tbuf[j] * kdq;
      VU h = F32ToF16Bits(df, hn::Load(df, tbuf));
      if (late_bias) h = F32ToF16Bits(df, hn::Add(F16BitsToF32(df, h), hn::Load(df, biasb)));
      if (a.out_dtype == BNB_BF16) h = F32ToBF16Bits(df, F16BitsToF32(df, h));
      hn::Store(h, DU(), hbuf);
      const int64_t o = m * a.N + n;
      for (int64_t j = 0; j < rem; ++j) {
        if (a.out_dtype == BNB_F32) {
          static_cast<float*>(a.out)[o + j] = f16_to_f32(static_cast<uint16_t>(hbuf[j]));
        } else {
          static_cast<uint16_t*>(a.out)[o + j] = static_cast<uint16_t>(hbuf[j]);
        }
      }
      n = n_end;
    }
    e = m * a.N + n_end;
  }
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace cpu
}  // namespace bnb
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnb {
namespace cpu {

HWY_EXPORT(QuantRowsInt8);
HWY_EXPORT(OutlierRowsInt8);
HWY_EXPORT(WidenRowsInt8);
HWY_EXPORT(MatmulRowsInt8);
HWY_EXPORT(DequantInt8);

namespace {

// ORs the per-task flags into the first row of `flags` (tasks x cols bytes).
void merge_flags(uint8_t* flags, int64_t tasks, int64_t cols) {
  for (int64_t t = 1; t < tasks; ++t) {
    const uint8_t* f = flags + t * cols;
    for (int64_t c = 0; c < cols; ++c) flags[c] |= f[c];
  }
}

}  // namespace

void int8_vectorwise_quant(ThreadPool& pool, int32_t dtype, int64_t rows, int64_t cols, const void* A,
                           float threshold, int8_t* q, float* row_stats) {
  const bool outliers = threshold > 0.0f;
  const Int8QuantArgs args{dtype, rows, cols, A, outliers ? round_to_dtype(dtype, threshold) : 0.0f,
                           q, row_stats};
  const int64_t tasks = pool.task_count(rows, cols);
  std::vector<uint8_t> flags(outliers ? static_cast<size_t>(tasks * cols) : 0, 0);
  pool.run(tasks, [&](int64_t t) {
    HWY_DYNAMIC_DISPATCH(QuantRowsInt8)(args, t * rows / tasks, (t + 1) * rows / tasks,
                                        outliers ? flags.data() + t * cols : nullptr);
  });
  if (!outliers) return;
  merge_flags(flags.data(), tasks, cols);
  std::vector<int64_t> cols_out;
  for (int64_t c = 0; c < cols; ++c) {
    if (flags[static_cast<size_t>(c)]) cols_out.push_back(c);
  }
  if (cols_out.empty()) return;
  // Zero every element of the outlier columns (docs/FORMATS.md §6.1).
  const int64_t ztasks = pool.task_count(rows, static_cast<int64_t>(cols_out.size()) * 16);
  pool.run(ztasks, [&](int64_t t) {
    for (int64_t r = t * rows / ztasks; r < (t + 1) * rows / ztasks; ++r) {
      int8_t* row = q + r * cols;
      for (const int64_t c : cols_out) row[c] = 0;
    }
  });
}

int64_t int8_outlier_columns(ThreadPool& pool, int32_t dtype, int64_t rows, int64_t cols, const void* A,
                             float threshold, int32_t* columns, int64_t capacity) {
  const Int8OutlierArgs args{dtype, cols, A, round_to_dtype(dtype, threshold)};
  const int64_t tasks = pool.task_count(rows, cols);
  std::vector<uint8_t> flags(static_cast<size_t>(tasks * cols), 0);
  pool.run(tasks, [&](int64_t t) {
    HWY_DYNAMIC_DISPATCH(OutlierRowsInt8)(args, t * rows / tasks, (t + 1) * rows / tasks, flags.data() + t * cols);
  });
  merge_flags(flags.data(), tasks, cols);
  int64_t count = 0;
  for (int64_t c = 0; c < cols; ++c) {
    if (!flags[static_cast<size_t>(c)]) continue;
    if (count < capacity) columns[count] = static_cast<int32_t>(c);
    ++count;
  }
  return count;
}

void int8_matmul_rows(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                      int32_t* C) {
  constexpr int64_t kPad = 64;  // >= int16 lanes of any target
  const int64_t K16 = round_up(K, kPad);
  std::vector<int16_t> A16(static_cast<size_t>(M * K16));
  HWY_DYNAMIC_DISPATCH(WidenRowsInt8)(A, M, K, K16, A16.data());
  const Int8RowsArgs args{M, N, K, A16.data(), K16, B, C};
  // Tasks over groups of 4 columns of C (4 rows of B).
  const int64_t groups = ceil_div(N, 4);
  const int64_t tasks = pool.task_count(groups, 4 * K * (M < 4 ? 1 : M / 4));
  pool.run(tasks, [&](int64_t t) {
    const int64_t g0 = t * groups / tasks;
    const int64_t g1 = (t + 1) * groups / tasks;
    const int64_t n1 = g1 * 4 < N ? g1 * 4 : N;
    HWY_DYNAMIC_DISPATCH(MatmulRowsInt8)(args, g0 * 4, n1);
  });
}

void int8_mm_dequant(ThreadPool& pool, int64_t M, int64_t N, const int32_t* C, const float* row_stats,
                     const float* col_stats, const void* bias, int32_t out_dtype, void* out) {
  const Int8DequantArgs args{M, N, C, row_stats, col_stats, bias, out_dtype, out};
  const int64_t total = M * N;
  const int64_t tasks = pool.task_count(ceil_div(total, 1024), 1024);
  pool.run(tasks, [&](int64_t t) {
    // Split on multiples of 64 elements so no task boundary splits a vector needlessly.
    const int64_t units = ceil_div(total, 64);
    const int64_t e0 = t * units / tasks * 64;
    int64_t e1 = (t + 1) * units / tasks * 64;
    if (e1 > total) e1 = total;
    if (e0 < e1) HWY_DYNAMIC_DISPATCH(DequantInt8)(args, e0, e1);
  });
}

void int8_add_outlier_product(ThreadPool& pool, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                              const int8_t* W, const float* SCB, const int32_t* columns, int64_t count, void* out) {
  if (count == 0) return;
  // Binary32 as the GPU's ftz instructions compute it: subnormal operands and results are 0.
  const float inv127 = bits_to_float(kInv127Bits);
  const auto cnt = static_cast<size_t>(count);
  std::vector<float> a(static_cast<size_t>(M) * cnt), w(static_cast<size_t>(N) * cnt);
  for (int64_t m = 0; m < M; ++m)
    for (size_t j = 0; j < cnt; ++j) a[m * cnt + j] = c8_ftz(load_as_f32(dtype, A, m * K + columns[j]));
  for (int64_t n = 0; n < N; ++n) {
    const float scb = c8_ftz(SCB[n]);
    for (size_t j = 0; j < cnt; ++j) {
      const float ws = c8_ftz(static_cast<float>(W[n * K + columns[j]]) * scb);
      w[n * cnt + j] = round_to_dtype(dtype, c8_ftz(ws * inv127));
    }
  }
  const int64_t tasks = pool.task_count(M, N * count);
  pool.run(tasks, [&](int64_t t) {
    for (int64_t m = t * M / tasks; m < (t + 1) * M / tasks; ++m) {
      const float* am = a.data() + m * cnt;
      for (int64_t n = 0; n < N; ++n) {
        const float* wn = w.data() + n * cnt;
        float sum = 0.0f;
        for (size_t j = 0; j < cnt; ++j) sum = c8_ftz(std::fma(am[j], wn[j], sum));
        const float o = c8_ftz(load_as_f32(dtype, out, m * N + n));
        store_from_f32(dtype, out, m * N + n, c8_ftz(o + round_to_dtype(dtype, sum)));
      }
    }
  });
}

}  // namespace cpu
}  // namespace bnb
#endif  // HWY_ONCE
