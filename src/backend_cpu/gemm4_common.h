// What the 4-bit matmul's CPU paths share (gemm4_simd.cc: Highway, every target; gemm4_bf16.cc:
// AVX512_BF16 dot products for bf16 activations; gemm4_onednn.cc: oneDNN's bf16 product over
// decoded weight slabs at large M). Internal to the CPU backend.
#ifndef BNB_BACKEND_CPU_GEMM4_COMMON_H_
#define BNB_BACKEND_CPU_GEMM4_COMMON_H_

#include <cstdint>

#include "backend_abi.h"
#include "int_math.h"
#include "thread_pool.h"
#include "tables.h"

namespace bnb {
namespace cpu {

// One call's weight-side arguments.
struct Gemm4Args {
  int64_t K;
  int64_t blocksize;
  const uint8_t* W;
  bnb_scales_resolved_t scales;
  alignas(64) float lut[16];  // the decoder's table (FP4: bit 3 is a sign, nibble 8 = -0.0)
};

// absmax of block b, reconstructed as every consumer does (docs/FORMATS.md §4.1) when nested
// (blocksize2 a power of two: a shift, not a division, per block).
inline float gemm4_block_scale(const bnb_scales_resolved_t& s, int64_t b) {
  if (s.absmax != nullptr) return s.absmax[b];
  const float c = s.code2 != nullptr ? s.code2[s.absmax_q[b]]
                                     : bnb::bits_to_float(bnb::BNB_DYNAMIC_SIGNED_BITS[s.absmax_q[b]]);
  const float scaled = c * s.absmax2[b >> log2_pow2(s.blocksize2)];
  return scaled + s.offset[0];
}

// ---- the AVX512_BF16 path (gemm4_bf16.cc); usable when blocksize >= 64 and K % 64 == 0.
constexpr int kGemm4Bf16Chunk = 64;  // weights per step; A is prepared in chunks of this size
// The CPU has AVX512_BF16 (and AVX512BW); false off x86-64.
bool gemm4_bf16_cpu_supported();
// Rows [m0, m1) of bf16 A (row length K) into Ad (row stride K, 64-byte aligned), each chunk of
// 64 elements split into [32 even k | 32 odd k].
void gemm4_bf16_prepare_a(const uint16_t* A, int64_t K, int64_t m0, int64_t m1, uint16_t* Ad);
// C[rows][n1 - n0] += Ad[rows][K] @ W[n0:n1, :]^T, K walked in chunks of kc (a multiple of 64).
void gemm4_bf16_panel(const Gemm4Args& a, const uint16_t* Ad, int64_t rows, int64_t n0, int64_t n1, int64_t kc,
                      float* C);
// The weights W[n0 + r][k0 : k0 + kc] for r < rows, decoded (RN32(LUT * absmax)) and rounded to bf16
// (RNE), into out[r * ldo + (k - k0)] in column order: the bf16 operand of oneDNN's product at
// large M (onednn.h). k0 and kc are multiples of 32. Needs AVX512_BF16.
void gemm4_bf16_decode(const Gemm4Args& a, int64_t n0, int64_t rows, int64_t k0, int64_t kc, uint16_t* out,
                       int64_t ldo);

// ---- bf16 activations at large M (gemm4_onednn.cc): rows of A from which the products go to oneDNN.
// The transposed product's register tiles hold out longer (bench/results/gemm4_onednn_cpu.md).
constexpr int64_t kGemm4OnednnMinRows = 64;
constexpr int64_t kGemm4OnednnMinRowsTransposed = 128;

constexpr int64_t kGemm4OnednnSlabBytes = int64_t{32} << 20;

// gemm_4bit (transposed: false; bias NULL or N values) or gemm_4bit_transposed (true; bias NULL)
// for bf16 A and out: W decoded to bf16 one slab of at most slab_bytes (at least one row, or 32
// columns) at a time (gemm4_bf16_decode, on the pool), each slab multiplied by oneDNN (binary32
// sums, one rounding to bf16). false when oneDNN is missing or declines; out must then be
// computed by the Highway kernels. Needs AVX512_BF16.
bool gemm4_bf16_onednn(ThreadPool& pool, bool transposed, int64_t M, int64_t N, int64_t K, const uint16_t* A,
                       const Gemm4Args& args, const uint16_t* bias, uint16_t* out,
                       int64_t slab_bytes = kGemm4OnednnSlabBytes);

// The call's weight-side arguments with the decode table of quant_type (BNB_NF4 / BNB_FP4).
Gemm4Args gemm4_args(int64_t K, const uint8_t* W, const bnb_scales_resolved_t& scales, int32_t quant_type,
                     int64_t blocksize);

}  // namespace cpu
}  // namespace bnb

#endif  // BNB_BACKEND_CPU_GEMM4_COMMON_H_
