// The contract between libbnb (the core) and a backend plugin (libbnb_backend_<name>.so).
//
// Internal: not installed, not part of the public ABI. The core validates every argument before
// it calls into a plugin, so an op here may assume: pointers non-NULL where required and in the
// backend's memory, n > 0, sizes that fit, supported dtype/blocksize/quant type.
//
// A plugin exports exactly two C symbols:
//   int32_t bnb_backend_score(void);                       0 = cannot run on this machine
//   const bnb_backend_ops_t* bnb_backend_init(const bnb_host_api_t* host);
// The core rejects a table whose abi_version differs from BNB_BACKEND_ABI_VERSION or whose
// struct_size is smaller than the core expects. A NULL op means "not offered here".
#ifndef BNB_COMMON_BACKEND_ABI_H_
#define BNB_COMMON_BACKEND_ABI_H_

#include <stddef.h>
#include <stdint.h>

#include "bnb.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BNB_BACKEND_ABI_VERSION 1

// What the core offers a plugin.
typedef struct bnb_host_api {
  uint32_t struct_size;
  // Records the calling thread's error message (returned by bnb_last_error_message) and
  // returns `status`, so a plugin can write `return host->fail(BNB_ERR_DEVICE, "...")`.
  bnb_status_t (*fail)(bnb_status_t status, const char* message);
  // Prints `message` to stderr when BNB_LOG_LEVEL >= level (1 error, 2 info, 3 debug).
  void (*log)(int32_t level, const char* message);
} bnb_host_api_t;

// Where a pointer lives, as a GPU plugin sees it.
enum bnb_pointer_kind {
  BNB_PTR_HOST = 0,      // ordinary or pinned host memory, or unknown to this backend
  BNB_PTR_DEVICE = 1,    // device memory of `*device`
  BNB_PTR_MANAGED = 2,   // unified/managed memory (usable from host and device)
};

// Scales of a 4-bit tensor after the core has checked them and filled defaults.
typedef struct bnb_scales_resolved {
  const float* absmax;     // plain: per-block floats; NULL when nested
  const uint8_t* absmax_q; // nested: codes
  const float* absmax2;    // nested: one float per blocksize2 codes
  const float* code2;      // nested: 256-entry table in backend memory (never NULL: the core passes
                           // default_code(impl, BNB_CODE_DYNAMIC_SIGNED) for the caller's NULL)
  const float* offset;     // nested: one float in backend memory
  int64_t blocksize2;      // nested
} bnb_scales_resolved_t;

typedef struct bnb_backend_ops {
  uint32_t struct_size;    // sizeof(bnb_backend_ops_t) as the plugin was built
  uint32_t abi_version;    // BNB_BACKEND_ABI_VERSION
  int32_t kind;            // bnb_backend_kind_t
  const char* name;        // "cpu", "cuda", "hip"

  // ---- probing and contexts
  int32_t (*device_count)(void);
  // Human-readable description of what was found (ISA and SIMD target, GPU names, versions).
  void (*describe)(char* buf, size_t cap);
  // GPU plugins: classify a pointer (enum bnb_pointer_kind); CPU: NULL.
  int32_t (*pointer_kind)(const void* ptr, int32_t* device);
  bnb_status_t (*context_create)(const bnb_context_options_t* options, void** impl);
  void (*context_destroy)(void* impl);

  // ---- blockwise 8-bit (code is never NULL here: when the caller gave NULL the core passes
  //      default_code(impl, BNB_CODE_DYNAMIC_SIGNED), the backend's own copy of the table)
  bnb_status_t (*quantize_blockwise)(void* impl, int32_t dtype, const void* A, int64_t n, int64_t blocksize,
                                     const float* code, uint8_t* out, float* absmax, void* stream);
  bnb_status_t (*dequantize_blockwise)(void* impl, const uint8_t* q, const float* absmax, const float* code,
                                       int64_t n, int64_t blocksize, int32_t out_dtype, void* out, void* stream);

  // ---- 4-bit
  bnb_status_t (*quantize_4bit)(void* impl, int32_t quant_type, int32_t dtype, const void* A, int64_t n,
                                int64_t blocksize, uint8_t* packed, float* absmax, void* stream);
  bnb_status_t (*dequantize_4bit)(void* impl, int32_t quant_type, const uint8_t* packed,
                                  const bnb_scales_resolved_t* scales, int64_t n, int64_t blocksize,
                                  int32_t out_dtype, void* out, void* stream);
  bnb_status_t (*compress_absmax)(void* impl, const float* absmax, int64_t nblocks, uint8_t* absmax_q,
                                  float* absmax2, float* offset, void* stream);

  // ---- 4-bit matmul
  bnb_status_t (*gemm_4bit)(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                            const uint8_t* W, const bnb_scales_resolved_t* scales, int32_t quant_type,
                            int64_t blocksize, const void* bias, void* out, void* stream);

  // ---- LLM.int8()
  bnb_status_t (*int8_vectorwise_quant)(void* impl, int32_t dtype, int64_t rows, int64_t cols, const void* A,
                                        float threshold, int8_t* q, float* row_stats, void* stream);
  bnb_status_t (*int8_outlier_columns)(void* impl, int32_t dtype, int64_t rows, int64_t cols, const void* A,
                                       float threshold, int32_t* columns, int64_t capacity, int64_t* count,
                                       void* stream);
  bnb_status_t (*int8_matmul)(void* impl, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                              int32_t* C, void* stream);
  bnb_status_t (*int8_mm_dequant)(void* impl, int64_t M, int64_t N, const int32_t* C, const float* row_stats,
                                  const float* col_stats, const void* bias, int32_t out_dtype, void* out,
                                  void* stream);

  // ---- optimizers and paged memory
  bnb_status_t (*optimizer_update)(void* impl, const bnb_optimizer_params_t* params,
                                   const bnb_optimizer_tensors_t* tensors, void* stream);
  bnb_status_t (*paged_alloc)(void* impl, int64_t bytes, void** ptr);
  bnb_status_t (*paged_free)(void* impl, void* ptr);
  bnb_status_t (*paged_prefetch)(void* impl, void* ptr, int64_t bytes, int32_t to_device, void* stream);

  // ---- required of every backend
  // The backend's copy of a built-in code table (bnb_code_table_t) in its own memory
  // (CPU: a static host array). Valid for the context's lifetime.
  const float* (*default_code)(void* impl, int32_t which);
  bnb_status_t (*mem_alloc)(void* impl, int64_t bytes, void** ptr);
  bnb_status_t (*mem_free)(void* impl, void* ptr);
  bnb_status_t (*mem_copy)(void* impl, void* dst, const void* src, int64_t bytes, int32_t kind, void* stream);
  bnb_status_t (*synchronize)(void* impl, void* stream);

  // ---- optional, appended after ABI 1 was first published (a plugin built before has a smaller
  // struct_size, and the core reads NULL for it)
  // `count` tensors sharing `params` except n (the core checked every tensor; max_unorm == 0).
  // NULL: the core calls optimizer_update once per tensor.
  bnb_status_t (*optimizer_update_multi)(void* impl, const bnb_optimizer_params_t* params, int32_t count,
                                         const bnb_optimizer_tensors_t* tensors, const int64_t* n, void* stream);
  // bnb_int8_linear (the core checked every argument; out and bias have dtype). NULL: the core
  // runs int8_vectorwise_quant, int8_matmul and int8_mm_dequant in turn.
  bnb_status_t (*int8_linear)(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                              float threshold, const int8_t* W, const float* SCB, const void* bias, int8_t* q,
                              float* row_stats, int32_t* C, void* out, void* stream);
  // The finite check (bnb_context_options_t.check_finite): *first = the index of the first NaN or
  // infinity among the n elements of x (F32, F16 or BF16, in the backend's memory), -1 if there is
  // none. Runs where the data lives; a GPU plugin waits for `stream`. NULL: contexts asking for
  // the check get BNB_ERR_NOT_SUPPORTED from every op that would scan.
  bnb_status_t (*find_nonfinite)(void* impl, int32_t dtype, const void* x, int64_t n, int64_t* first,
                                 void* stream);
  // bnb_gemm_4bit_transposed: out[M,K] = A[M,N] @ dequant(W)[N,K] (the core checked the weight as
  // for gemm_4bit, A as M*N and out as M*K elements of dtype). NULL: not offered.
  bnb_status_t (*gemm_4bit_transposed)(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                                       const uint8_t* W, const bnb_scales_resolved_t* scales, int32_t quant_type,
                                       int64_t blocksize, void* out, void* stream);
  // The largest params->step the plugin's optimizer kernels take (the core checks it and reports
  // it in bnb_backend_capabilities_t). 0: no limit of the plugin's own.
  int64_t optimizer_max_step;
  // bnb_int8_linear_outliers (the core checked every argument as for int8_linear, and columns [K]
  // and count [1]): in `stream`, without a host synchronisation or an allocation on a GPU.
  // NULL: not offered.
  bnb_status_t (*int8_linear_outliers)(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                                       float threshold, const int8_t* W, const float* SCB, const void* bias,
                                       int8_t* q, float* row_stats, int32_t* C, int32_t* columns, int64_t* count,
                                       void* out, void* stream);
} bnb_backend_ops_t;

typedef int32_t (*bnb_backend_score_fn)(void);
typedef const bnb_backend_ops_t* (*bnb_backend_init_fn)(const bnb_host_api_t* host);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // BNB_COMMON_BACKEND_ABI_H_
