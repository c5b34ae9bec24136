// The quantization family's kernels (quant_kernels.h): each call planned on the host
// (quant_plan.h) and split over the thread pool in ranges of whole blocks; every task runs the
// per-target kernel of quant8_simd.cc or quant4_simd.cc.
#include <cstdint>
#include <vector>

#include "int_math.h"
#include "quant_kernels.h"
#include "quant_plan.h"
#include "tables.h"

namespace bnb {
namespace cpu {
namespace {

// Splits [0, nblocks) into contiguous ranges of whole blocks (ThreadPool::task_count of them).
template <class Fn>
void for_block_ranges(ThreadPool& pool, int64_t nblocks, int64_t blocksize, const Fn& fn) {
  const int64_t tasks = pool.task_count(nblocks, blocksize);
  pool.run(tasks, [&](int64_t t) { fn(t * nblocks / tasks, (t + 1) * nblocks / tasks); });
}

}  // namespace

void quantize_blockwise(ThreadPool& pool, int32_t dtype, const void* A, int64_t n, int64_t blocksize,
                        const float* code, uint8_t* out, float* absmax) {
  Quant8Plan own;
  std::vector<uint32_t> own_buckets;
  const Quant8Plan* plan = quant8_plan(code, n, &own, &own_buckets);
  const Quant8Args args{dtype, A, n, blocksize, code, plan, out, absmax, use_streaming(out, n)};
  for_block_ranges(pool, ceil_div(n, blocksize), blocksize,
                   [&](int64_t b0, int64_t b1) { quantize_blocks8(args, b0, b1); });
}

void dequantize_blockwise(ThreadPool& pool, const uint8_t* q, const float* absmax, const float* code,
                          int64_t n, int64_t blocksize, int32_t out_dtype, void* out) {
  const Dequant8Args args{q, absmax, code, n, blocksize, out_dtype, out, use_streaming(out, n, out_dtype)};
  for_block_ranges(pool, ceil_div(n, blocksize), blocksize, [&](int64_t b0, int64_t b1) {
    dequantize_blocks8(args, b0, b1);
  });
}

void quantize_4bit(ThreadPool& pool, int32_t quant_type, int32_t dtype, const void* A, int64_t n,
                   int64_t blocksize, uint8_t* packed, float* absmax) {
  const Quant4Args args{quant_type, dtype, A, n, blocksize, packed, absmax, use_streaming(packed, ceil_div(n, 2))};
  for_block_ranges(pool, ceil_div(n, blocksize), blocksize, [&](int64_t b0, int64_t b1) {
    quantize_blocks4(args, b0, b1);
  });
}

void dequantize_4bit(ThreadPool& pool, int32_t quant_type, const uint8_t* packed,
                     const bnb_scales_resolved_t& scales, int64_t n, int64_t blocksize, int32_t out_dtype,
                     void* out) {
  const Dequant4Args args{quant_type, packed, scales, n, blocksize, out_dtype, out,
                          use_streaming(out, n, out_dtype)};
  for_block_ranges(pool, ceil_div(n, blocksize), blocksize, [&](int64_t b0, int64_t b1) {
    dequantize_blocks4(args, b0, b1);
  });
}

void compress_absmax(ThreadPool& pool, const float* absmax, int64_t nblocks, uint8_t* absmax_q,
                     float* absmax2, float* offset) {
  double sum = 0.0;  // sequential binary64 sum: reproducible regardless of threads
  for (int64_t i = 0; i < nblocks; ++i) sum += absmax[i];
  const float mean = static_cast<float>(sum / static_cast<double>(nblocks));
  std::vector<float> r(static_cast<size_t>(nblocks));
  for (int64_t i = 0; i < nblocks; ++i) r[static_cast<size_t>(i)] = absmax[i] - mean;
  float code[256];
  bnb::copy_code_table(BNB_CODE_DYNAMIC_SIGNED, code);
  quantize_blockwise(pool, BNB_F32, r.data(), nblocks, 256, code, absmax_q, absmax2);
  *offset = mean;
}

}  // namespace cpu
}  // namespace bnb
