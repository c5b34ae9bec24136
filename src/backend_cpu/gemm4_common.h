// What the 4-bit matmul's CPU paths share (gemm4_simd.cc: Highway, every target; gemm4_bf16.cc:
// AVX512_BF16 dot products for bf16 activations). Internal to the CPU backend.
#ifndef BNB_BACKEND_CPU_GEMM4_COMMON_H_
#define BNB_BACKEND_CPU_GEMM4_COMMON_H_

#include <cstdint>

#include "backend_abi.h"
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

// absmax of block b, reconstructed as every consumer does (docs/FORMATS.md §4.1) when nested.
inline float gemm4_block_scale(const bnb_scales_resolved_t& s, int64_t b) {
  if (s.absmax != nullptr) return s.absmax[b];
  const float c = s.code2 != nullptr ? s.code2[s.absmax_q[b]]
                                     : bnb::bits_to_float(bnb::BNB_DYNAMIC_SIGNED_BITS[s.absmax_q[b]]);
  const float scaled = c * s.absmax2[b / s.blocksize2];
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

}  // namespace cpu
}  // namespace bnb

#endif  // BNB_BACKEND_CPU_GEMM4_COMMON_H_
