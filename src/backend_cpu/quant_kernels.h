// The CPU kernels of the quantization family, callable without the plugin (the per-target
// tests and the micro-benchmark link bnb_cpu_kernels directly). Arguments are assumed valid
// (the core checked them): n > 0, blocksize a power of two in [64, 4096] (8-bit) or
// [32, 4096] (4-bit); std::bad_alloc may escape. Safe to call from many threads at once,
// also on one pool.
#ifndef BNB_BACKEND_CPU_QUANT_KERNELS_H_
#define BNB_BACKEND_CPU_QUANT_KERNELS_H_

#include <cstdint>
#include <string>

#include "backend_abi.h"
#include "thread_pool.h"

namespace bnb {
namespace cpu {

// 8-bit blockwise with any 256-entry table (docs/FORMATS.md §2.2-2.4). dtype: BNB_F32/F16/BF16.
void quantize_blockwise(ThreadPool& pool, int32_t dtype, const void* A, int64_t n, int64_t blocksize,
                        const float* code, uint8_t* out, float* absmax);
void dequantize_blockwise(ThreadPool& pool, const uint8_t* q, const float* absmax, const float* code,
                          int64_t n, int64_t blocksize, int32_t out_dtype, void* out);

// NF4 / FP4 (docs/FORMATS.md §3.3-3.6); quant_type is BNB_NF4 or BNB_FP4.
void quantize_4bit(ThreadPool& pool, int32_t quant_type, int32_t dtype, const void* A, int64_t n,
                   int64_t blocksize, uint8_t* packed, float* absmax);
void dequantize_4bit(ThreadPool& pool, int32_t quant_type, const uint8_t* packed,
                     const bnb_scales_resolved_t& scales, int64_t n, int64_t blocksize, int32_t out_dtype,
                     void* out);

// Double quantization of absmax (docs/FORMATS.md §4.1).
void compress_absmax(ThreadPool& pool, const float* absmax, int64_t nblocks, uint8_t* absmax_q,
                     float* absmax2, float* offset);

// ---- SIMD target selection (Highway dynamic dispatch)
// Name of the target the kernels dispatch to now ("AVX3_DL", "AVX2", "EMU128", ...).
const char* chosen_target_name();
// The targets compiled into the plugin, best first ("AVX3_SPR AVX3_DL AVX3 AVX2 SSE4 EMU128").
std::string compiled_target_names();
// Caps dispatch at a target named as in cap_target_names(). Returns false (and changes nothing)
// for an unknown name or one of a target this build lacks.
bool cap_target(const char* name);
// The names cap_target takes in this build, best first ("avx3_dl, avx3, avx2, sse4, emu128 or
// scalar" on x86, "neon" on aarch64).
std::string cap_target_names();

}  // namespace cpu
}  // namespace bnb

#endif  // BNB_BACKEND_CPU_QUANT_KERNELS_H_
