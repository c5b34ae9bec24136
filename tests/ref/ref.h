// Scalar reference implementations of the bitsandbytes formats (docs/FORMATS.md §2-4),
// written to be obviously correct rather than fast. The CPU kernels' per-target tests and the
// golden tests compare against these, element by element.
//
// dtype arguments use bnb_dtype_t (BNB_F32, BNB_F16, BNB_BF16); quant_type bnb_quant4_t.
#ifndef BNB_TESTS_REF_REF_H_
#define BNB_TESTS_REF_REF_H_

#include <cstdint>

#include "bnb.h"

namespace bnb {
namespace ref {

// Element i of a fp32/fp16/bf16 array, widened exactly to binary32.
float load_element(int32_t dtype, const void* data, int64_t i);
// Stores v rounded (RNE) to dtype as element i.
void store_element(int32_t dtype, void* data, int64_t i, float v);

// Block absmax (docs/FORMATS.md §2.2 step 1) of the elements [begin, end) of a block of
// `blocksize`: NaN elements are dropped, -0 counts as 0, a block with no other element gets
// kAbsmaxEmpty (-FLT_MAX), and a partial last block's missing elements count as zeros.
float block_absmax(int32_t dtype, const void* A, int64_t begin, int64_t end, int64_t blocksize);

// Q_C(x): the reference's normative 7-step search over a 256-entry table (docs/FORMATS.md §2.3;
// bnb::code8_search, the one copy every backend uses).
uint8_t select_code8(const float* code, float x);

// 8-bit blockwise (docs/FORMATS.md §2.2, 2.4). out gets n codes, absmax ceil(n/blocksize) floats.
void quantize_blockwise(int32_t dtype, const void* A, int64_t n, int64_t blocksize, const float* code,
                        uint8_t* out, float* absmax);
void dequantize_blockwise(const uint8_t* q, const float* absmax, const float* code, int64_t n,
                          int64_t blocksize, int32_t out_dtype, void* out);

// 4-bit codes of one scaled value (docs/FORMATS.md §3.3).
uint8_t encode_nf4(float x);
uint8_t encode_fp4(float x);
// The decoder's value of a nibble (FP4: bit 3 is a sign, nibble 8 gives -0.0; docs/FORMATS.md §3.6).
float decode_4bit(int32_t quant_type, uint8_t nibble);

// 4-bit blockwise (docs/FORMATS.md §3.3-3.5): packed gets (n+1)/2 bytes, even element in the high nibble;
// for odd n the last low nibble encodes 0.0 under the last block's scale.
void quantize_4bit(int32_t quant_type, int32_t dtype, const void* A, int64_t n, int64_t blocksize,
                   uint8_t* packed, float* absmax);
// absmax: one float per block (already reconstructed when the scales were nested).
void dequantize_4bit(int32_t quant_type, const uint8_t* packed, const float* absmax, int64_t n,
                     int64_t blocksize, int32_t out_dtype, void* out);

// Double quantization of absmax (docs/FORMATS.md §4.1): offset = RN32(binary64 sum / nb),
// r_i = RN32(absmax_i - offset), r quantized 8-bit with DYN8S and blocksize 256.
void compress_absmax(const float* absmax, int64_t nblocks, uint8_t* absmax_q, float* absmax2,
                     float* offset);
// absmax'_i = RN32(RN32(code2[q_i] * absmax2[i / blocksize2]) + offset); code2 NULL = DYN8S.
void decompress_absmax(const uint8_t* absmax_q, const float* absmax2, const float* code2, float offset,
                       int64_t nblocks, int64_t blocksize2, float* absmax);

}  // namespace ref
}  // namespace bnb

#endif  // BNB_TESTS_REF_REF_H_
