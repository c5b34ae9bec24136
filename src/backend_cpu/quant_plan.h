// Host-side arguments and plans of the quantization kernels (not per target): the argument
// structs each task receives, when outputs are streamed, the 8-bit selector plans (built once
// for the built-in tables) and the NF4/FP4 cell tables of the AVX3_DL encoders. The per-target
// kernels are in quant8_simd.cc and quant4_simd.cc, the threading in quant_dispatch.cc.
#ifndef BNB_BACKEND_CPU_QUANT_PLAN_H_
#define BNB_BACKEND_CPU_QUANT_PLAN_H_

#include <cstdint>
#include <vector>

#include "backend_abi.h"

namespace bnb {
namespace cpu {

constexpr int64_t kMaxBlock = 4096;  // largest blocksize (docs/FORMATS.md §2.5, 3.7) and chunk size

// How the kernels select 8-bit codes for one table (built per call; cached with buckets for the
// built-in tables), from the table's bnb::Code8Plan (src/common/code8_select.h).
struct Quant8Plan {
  // The closed form applies: the level search below. Otherwise the 7-step search runs.
  bool fast = false;
  // Optional, for fast tables with at most one threshold per bucket of floats sharing their top
  // 16 bits: 65536 entries (count of thresholds below the bucket << 16) | low, where
  // low + (x's low 16 bits, inverted when x < 0) carries into bit 16 exactly when x is above
  // the bucket's threshold (low = 0xffff - its low bits when positive, its low bits when
  // negative; 0 without one). One gather and one add per lane then decide.
  const uint32_t* buckets = nullptr;
  // The thresholds in search-tree order (bnb::code8_levels).
  alignas(64) float levels[256 + 64] = {};
};

struct Quant8Args {
  int32_t dtype;
  const void* A;
  int64_t n;
  int64_t blocksize;
  const float* code;
  const Quant8Plan* plan;
  uint8_t* out;
  float* absmax;
  bool stream;  // non-temporal stores of the codes (large, 64-byte aligned output)
};

struct Dequant8Args {
  const uint8_t* q;
  const float* absmax;
  const float* code;
  int64_t n;
  int64_t blocksize;
  int32_t out_dtype;
  void* out;
  bool stream;  // non-temporal stores (large, 64-byte aligned output)
};

struct Quant4Args {
  int32_t quant_type;
  int32_t dtype;
  const void* A;
  int64_t n;
  int64_t blocksize;
  uint8_t* packed;
  float* absmax;
  bool stream;
};

struct Dequant4Args {
  int32_t quant_type;
  const uint8_t* packed;
  bnb_scales_resolved_t scales;
  int64_t n;
  int64_t blocksize;
  int32_t out_dtype;
  void* out;
  bool stream;
};

// Outputs at least this large bypass the caches (they cannot stay in them anyway).
constexpr int64_t kStreamBytes = int64_t{16} << 20;

inline bool use_streaming(const void* out, int64_t bytes) {
  return bytes >= kStreamBytes && reinterpret_cast<uintptr_t>(out) % 64 == 0;
}
inline bool use_streaming(const void* out, int64_t n, int32_t out_dtype) {
  return use_streaming(out, n * (out_dtype == BNB_F32 ? 4 : 2));
}

// NF4 by cell look-up (AVX3_DL): x (at most +1, at least -1 - a few ulp) falls in cell
// trunc(x * 15.5 + 16) (0..31; +32 in odd lanes, whose FMA adds 48). A cell is narrower than the smallest gap
// between NF4 thresholds, so it holds at most one: code = g[cell] + (x > t[cell]). g is
// stored shifted left by 4 for even lanes (the high nibble of a packed byte). Built by
// searching each cell's exact bounds with the same FMA and truncation; `ok` is false if the
// two lane parities would need different thresholds for a cell (then the search path runs).
struct NF4CellTables {
  alignas(64) uint8_t g[64];
  alignas(64) float t[32];
  bool ok = true;
};
const NF4CellTables& nf4_cells();  // built on first use

// FP4 likewise on a = min(|x|, 1): cell trunc(a * 15.5) (+16 in odd lanes, FMA addend 16),
// narrower than any gap between the 7 magnitude thresholds. Per cell the patterns below and
// above its threshold (even lanes << 4) and the threshold itself (per lane parity: 32
// cells); the sign is a compare and a masked OR. A NaN converts to key byte 0: pattern 0.
struct FP4CellTables {
  alignas(64) uint8_t lo[64];
  alignas(64) uint8_t hi[64];
  alignas(64) float t[32];
  bool ok = true;
};
const FP4CellTables& fp4_cells();  // built on first use

// The plan for `code`: a cached one (with buckets) for the built-in tables, else one built in
// `own` (with buckets in `own_buckets` when n is large enough to repay them).
const Quant8Plan* quant8_plan(const float* code, int64_t n, Quant8Plan* own, std::vector<uint32_t>* own_buckets);

// One task's share, blocks [b0, b1), on the best target (HWY_DYNAMIC_DISPATCH).
void quantize_blocks8(const Quant8Args& a, int64_t b0, int64_t b1);    // quant8_simd.cc
void dequantize_blocks8(const Dequant8Args& a, int64_t b0, int64_t b1);
void quantize_blocks4(const Quant4Args& a, int64_t b0, int64_t b1);    // quant4_simd.cc
void dequantize_blocks4(const Dequant4Args& a, int64_t b0, int64_t b1);

}  // namespace cpu
}  // namespace bnb

#endif  // BNB_BACKEND_CPU_QUANT_PLAN_H_
