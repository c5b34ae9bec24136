#include "ref.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "code8_select.h"
#include "half.h"
#include "rcp.h"
#include "tables.h"

namespace bnb {
namespace ref {

float load_element(int32_t dtype, const void* data, int64_t i) {
  switch (dtype) {
    case BNB_F16: return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case BNB_BF16: return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
    default: return static_cast<const float*>(data)[i];
  }
}

void store_element(int32_t dtype, void* data, int64_t i, float v) {
  switch (dtype) {
    case BNB_F16: static_cast<uint16_t*>(data)[i] = f32_to_f16(v); break;
    case BNB_BF16: static_cast<uint16_t*>(data)[i] = f32_to_bf16(v); break;
    default: static_cast<float*>(data)[i] = v; break;
  }
}

float block_absmax(int32_t dtype, const void* A, int64_t begin, int64_t end, int64_t blocksize) {
  float m = end - begin < blocksize ? 0.0f : kAbsmaxEmpty;  // the padding's zeros
  for (int64_t i = begin; i < end; ++i) {
    const float a = std::fabs(load_element(dtype, A, i));
    if (a > m) m = a;  // false for NaN: dropped
  }
  return m;
}

uint8_t select_code8(const float* code, float x) { return static_cast<uint8_t>(code8_search(code, x)); }

namespace {

int64_t num_blocks(int64_t n, int64_t blocksize) { return (n + blocksize - 1) / blocksize; }

// x = RN32(A * RCP(M)), the scaled value every quantizer selects a code for.
float scale(float a, float inv) { return a * inv; }

}  // namespace

void quantize_blockwise(int32_t dtype, const void* A, int64_t n, int64_t blocksize, const float* code,
                        uint8_t* out, float* absmax) {
  for (int64_t b = 0; b < num_blocks(n, blocksize); ++b) {
    const int64_t begin = b * blocksize;
    const int64_t end = begin + blocksize < n ? begin + blocksize : n;
    const float m = block_absmax(dtype, A, begin, end, blocksize);
    absmax[b] = m;
    const float inv = rcp_approx(m);
    for (int64_t i = begin; i < end; ++i) out[i] = select_code8(code, scale(load_element(dtype, A, i), inv));
  }
}

void dequantize_blockwise(const uint8_t* q, const float* absmax, const float* code, int64_t n,
                          int64_t blocksize, int32_t out_dtype, void* out) {
  for (int64_t i = 0; i < n; ++i) store_element(out_dtype, out, i, code[q[i]] * absmax[i / blocksize]);
}

uint8_t encode_nf4(float x) {
  uint8_t nibble = 0;
  for (uint32_t t : kNF4ThresholdBits) nibble += x > bits_to_float(t) ? 1 : 0;
  return nibble;
}

uint8_t encode_fp4(float x) {
  const uint8_t sign = x < 0.0f ? 8 : 0;
  const float a = std::fabs(x);
  int k = 0;
  for (uint32_t t : kFP4ThresholdBits) k += a > bits_to_float(t) ? 1 : 0;
  return static_cast<uint8_t>(sign + kFP4Pattern[k]);
}

float decode_4bit(int32_t quant_type, uint8_t nibble) {
  return bits_to_float(quant_type == BNB_FP4 ? kFP4DecodeBits[nibble & 15] : kNF4Bits[nibble & 15]);
}

void quantize_4bit(int32_t quant_type, int32_t dtype, const void* A, int64_t n, int64_t blocksize,
                   uint8_t* packed, float* absmax) {
  const int64_t padded = n + (n & 1);
  std::vector<uint8_t> codes(static_cast<size_t>(padded));
  for (int64_t b = 0; b < num_blocks(n, blocksize); ++b) {
    const int64_t begin = b * blocksize;
    const int64_t end = begin + blocksize < n ? begin + blocksize : n;
    const float m = block_absmax(dtype, A, begin, end, blocksize);
    absmax[b] = m;
    const float inv = rcp_approx(m);
    // The padding element of an odd n is 0.0 under the last block's scale.
    const int64_t stop = end == n ? padded : end;
    for (int64_t i = begin; i < stop; ++i) {
      const float x = scale(i < n ? load_element(dtype, A, i) : 0.0f, inv);
      codes[i] = quant_type == BNB_FP4 ? encode_fp4(x) : encode_nf4(x);
    }
  }
  for (int64_t j = 0; j < padded / 2; ++j) packed[j] = static_cast<uint8_t>((codes[2 * j] << 4) | codes[2 * j + 1]);
}

void dequantize_4bit(int32_t quant_type, const uint8_t* packed, const float* absmax, int64_t n,
                     int64_t blocksize, int32_t out_dtype, void* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t byte = packed[i / 2];
    const uint8_t nibble = (i & 1) ? (byte & 15) : (byte >> 4);
    store_element(out_dtype, out, i, decode_4bit(quant_type, nibble) * absmax[i / blocksize]);
  }
}

void compress_absmax(const float* absmax, int64_t nblocks, uint8_t* absmax_q, float* absmax2,
                     float* offset) {
  double sum = 0.0;
  for (int64_t i = 0; i < nblocks; ++i) sum += absmax[i];
  const float mean = static_cast<float>(sum / static_cast<double>(nblocks));
  std::vector<float> r(static_cast<size_t>(nblocks));
  for (int64_t i = 0; i < nblocks; ++i) r[i] = absmax[i] - mean;
  float code[256];
  copy_code_table(BNB_CODE_DYNAMIC_SIGNED, code);
  quantize_blockwise(BNB_F32, r.data(), nblocks, 256, code, absmax_q, absmax2);
  *offset = mean;
}

void decompress_absmax(const uint8_t* absmax_q, const float* absmax2, const float* code2, float offset,
                       int64_t nblocks, int64_t blocksize2, float* absmax) {
  float dyn[256];
  if (code2 == nullptr) {
    copy_code_table(BNB_CODE_DYNAMIC_SIGNED, dyn);
    code2 = dyn;
  }
  for (int64_t i = 0; i < nblocks; ++i) {
    const float scaled = code2[absmax_q[i]] * absmax2[i / blocksize2];
    absmax[i] = scaled + offset;
  }
}

}  // namespace ref
}  // namespace bnb
