/* bnb — 8-bit and 4-bit quantization, 4-bit/int8 inference matmuls and 8-bit optimizers.
 *
 * The one public header: plain C99, stable ABI. The contract is docs/API.md (formats and
 * semantics: docs/FORMATS.md, docs/OPS.md); every function returns a bnb_status_t and writes
 * results through pointers. On failure bnb_last_error_message() names the argument that was
 * wrong.
 */
#ifndef BNB_H_
#define BNB_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(BNB_BUILDING_LIBRARY)
#    define BNB_API __declspec(dllexport)
#  else
#    define BNB_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define BNB_API __attribute__((visibility("default")))
#else
#  define BNB_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- version, status, errors */
#define BNB_VERSION_MAJOR 0
#define BNB_VERSION_MINOR 1
#define BNB_VERSION_PATCH 0
#define BNB_VERSION_NUMBER (BNB_VERSION_MAJOR * 10000 + BNB_VERSION_MINOR * 100 + BNB_VERSION_PATCH)

BNB_API int32_t bnb_version_number(void);
BNB_API const char* bnb_version_string(void);

typedef enum bnb_status {
  BNB_SUCCESS = 0,
  BNB_ERR_INVALID_ARGUMENT = 1,
  BNB_ERR_NOT_SUPPORTED = 2,
  BNB_ERR_OUT_OF_MEMORY = 3,
  BNB_ERR_BACKEND_UNAVAILABLE = 4,
  BNB_ERR_DEVICE = 5,
  BNB_ERR_INTERNAL = 6,
  BNB_STATUS_FORCE_32BIT = 0x7fffffff
} bnb_status_t;

BNB_API const char* bnb_status_string(bnb_status_t status);
/* The calling thread's last failure; "" if none. Valid until this thread's next failing call. */
BNB_API const char* bnb_last_error_message(void);

/* ---------------------------------------------------------------- types */
typedef enum bnb_dtype { BNB_F32 = 0, BNB_F16 = 1, BNB_BF16 = 2, BNB_U8 = 3, BNB_I8 = 4, BNB_I32 = 5 } bnb_dtype_t;
typedef enum bnb_quant4 { BNB_FP4 = 1, BNB_NF4 = 2 } bnb_quant4_t; /* reference's numbering */
typedef enum bnb_code_table {
  BNB_CODE_DYNAMIC_SIGNED = 0,
  BNB_CODE_DYNAMIC_UNSIGNED = 1,
  BNB_CODE_NF4 = 2,
  BNB_CODE_FP4 = 3
} bnb_code_table_t;
typedef enum bnb_backend_kind {
  BNB_BACKEND_AUTO = 0,
  BNB_BACKEND_CPU = 1,
  BNB_BACKEND_CUDA = 2,
  BNB_BACKEND_HIP = 3
} bnb_backend_kind_t;

/* ---------------------------------------------------------------- backends and contexts */
typedef struct bnb_backend_info {
  uint32_t struct_size;
  int32_t kind;         /* bnb_backend_kind_t */
  char name[32];        /* "cpu", "cuda", "hip" */
  int32_t available;    /* 1 if loaded and usable */
  int32_t device_count;
  char detail[256];     /* why not available, or what was found (ISA, GPU names, versions) */
} bnb_backend_info_t;

BNB_API bnb_status_t bnb_backend_count(int32_t* count);
BNB_API bnb_status_t bnb_backend_get_info(int32_t index, bnb_backend_info_t* info);

/* Extension: what a loaded backend runs and the limits every call to it is checked against, for
   callers who need to know before calling. An op whose bit is set does not fail with
   BNB_ERR_NOT_SUPPORTED for want of the op (where the core composes it from other ops, e.g.
   bnb_int8_linear, its bit is set too). Masks hold bit (1 << value) for each supported value. */
typedef enum bnb_op {
  BNB_OP_QUANTIZE_BLOCKWISE = 0,
  BNB_OP_DEQUANTIZE_BLOCKWISE = 1,
  BNB_OP_QUANTIZE_4BIT = 2,
  BNB_OP_DEQUANTIZE_4BIT = 3,
  BNB_OP_COMPRESS_ABSMAX = 4,
  BNB_OP_GEMM_4BIT = 5,              /* bnb_gemm_4bit and its plan */
  BNB_OP_INT8_VECTORWISE_QUANT = 6,
  BNB_OP_INT8_OUTLIER_COLUMNS = 7,
  BNB_OP_INT8_MATMUL = 8,
  BNB_OP_INT8_MM_DEQUANT = 9,
  BNB_OP_INT8_LINEAR = 10,
  BNB_OP_OPTIMIZER_UPDATE = 11,      /* bnb_optimizer_update and bnb_optimizer_update_multi */
  BNB_OP_PAGED_MEMORY = 12,          /* bnb_paged_alloc, bnb_paged_free, bnb_paged_prefetch */
  BNB_OP_CHECK_FINITE = 13,          /* contexts with check_finite on */
  BNB_OP_GEMM_4BIT_TRANSPOSED = 14,  /* bnb_gemm_4bit_transposed */
  BNB_OP_INT8_LINEAR_OUTLIERS = 15   /* bnb_int8_linear_outliers */
} bnb_op_t;

typedef struct bnb_backend_capabilities {
  uint32_t struct_size;
  int32_t kind;                  /* bnb_backend_kind_t */
  uint64_t ops;                  /* bnb_op_t */
  uint32_t float_dtypes;         /* bnb_dtype_t of float data: A, out, p and g, bias */
  uint32_t quant_types;          /* bnb_quant4_t */
  uint32_t optimizers;           /* bnb_optimizer_t */
  int32_t device_count;
  uint64_t optimizer_state_bits; /* params->state_bits: (1 << 8) | (1 << 32) */
  int64_t max_elements;          /* of any tensor or product of dimensions */
  int64_t blocksize_8bit_min;    /* blockwise 8-bit and scales->blocksize2: powers of two in [min, max] */
  int64_t blocksize_8bit_max;
  int64_t blocksize_4bit_min;    /* 4-bit and bnb_gemm_4bit: powers of two in [min, max] */
  int64_t blocksize_4bit_max;
  int64_t int8_max_k;            /* K of the int8 products */
  int64_t optimizer_block;       /* elements per 8-bit optimizer state block (one absmax each) */
  int64_t optimizer_max_step;    /* largest params->step */
} bnb_backend_capabilities_t;

/* caps->struct_size: at least sizeof(bnb_backend_capabilities_t) as first published; on return,
   the bytes the library filled. BNB_ERR_BACKEND_UNAVAILABLE (with the reason) for a backend that
   did not load. */
BNB_API bnb_status_t bnb_backend_get_capabilities(int32_t index, bnb_backend_capabilities_t* caps);

typedef struct bnb_context* bnb_context_t;
typedef struct bnb_context_options {
  uint32_t struct_size;
  int32_t backend;      /* bnb_backend_kind_t; AUTO = $BNB_BACKEND, else the best available */
  int32_t device;       /* device index on GPU backends */
  int32_t num_threads;  /* CPU threads; 0 = $BNB_NUM_THREADS, else all cores */
  /* Appended in 0.1 (a caller built without it passes the smaller struct_size and gets 0):
     1 = before an op, scan its float inputs (what is quantized, activations, gradients) and fail
     with BNB_ERR_INVALID_ARGUMENT naming the first NaN or infinity; -1 = never;
     0 = $BNB_CHECK_FINITE (0 or 1), off when unset. */
  int32_t check_finite;
} bnb_context_options_t;

BNB_API bnb_status_t bnb_context_options_init(bnb_context_options_t* options);
BNB_API bnb_status_t bnb_context_create(const bnb_context_options_t* options /* NULL = defaults */,
                                        bnb_context_t* ctx);
BNB_API bnb_status_t bnb_context_destroy(bnb_context_t ctx);
BNB_API bnb_status_t bnb_context_get_backend(bnb_context_t ctx, int32_t* kind, int32_t* device);

/* ---------------------------------------------------------------- code tables */
/* Writes the table to host memory `out` (room for 256 floats); *count = 256 or 16. */
BNB_API bnb_status_t bnb_get_code_table(int32_t which /* bnb_code_table_t */, float* out, int64_t* count);

/* ---------------------------------------------------------------- blockwise 8-bit */
/* code: a 256-entry table in the backend's memory, or NULL for the signed dynamic map.
   absmax gets ceil(n / blocksize) floats. blocksize: 64..4096, a power of two. */
BNB_API bnb_status_t bnb_quantize_blockwise(bnb_context_t ctx, int32_t dtype, const void* A, int64_t n,
                                            int64_t blocksize, const float* code, uint8_t* out,
                                            float* absmax, void* stream);
BNB_API bnb_status_t bnb_dequantize_blockwise(bnb_context_t ctx, const uint8_t* q, const float* absmax,
                                              const float* code, int64_t n, int64_t blocksize,
                                              int32_t out_dtype, void* out, void* stream);

/* ---------------------------------------------------------------- 4-bit and double quantization */
/* How a 4-bit tensor's per-block scales are held: plain (absmax != NULL) or nested. */
typedef struct bnb_scales {
  uint32_t struct_size;
  const float* absmax;     /* plain: one float per block; NULL when nested */
  const uint8_t* absmax_q; /* nested: one 8-bit code per block */
  const float* absmax2;    /* nested: one float per `blocksize2` codes */
  const float* code2;      /* nested: the 8-bit table; NULL = signed dynamic map */
  const float* offset;     /* nested: pointer to the single float added back (the mean) */
  int64_t blocksize2;      /* nested: 256 */
} bnb_scales_t;

BNB_API bnb_status_t bnb_scales_init(bnb_scales_t* scales);

/* packed gets (n + 1) / 2 bytes, even element in the high nibble; blocksize 32..4096. */
BNB_API bnb_status_t bnb_quantize_4bit(bnb_context_t ctx, int32_t quant_type, int32_t dtype, const void* A,
                                       int64_t n, int64_t blocksize, uint8_t* packed, float* absmax,
                                       void* stream);
BNB_API bnb_status_t bnb_dequantize_4bit(bnb_context_t ctx, int32_t quant_type, const uint8_t* packed,
                                         const bnb_scales_t* scales, int64_t n, int64_t blocksize,
                                         int32_t out_dtype, void* out, void* stream);
/* Double quantization: offset = mean(absmax); absmax - offset quantized 8-bit, blocksize2 256. */
BNB_API bnb_status_t bnb_compress_absmax(bnb_context_t ctx, const float* absmax, int64_t nblocks,
                                         uint8_t* absmax_q, float* absmax2, float* offset, void* stream);

/* ---------------------------------------------------------------- 4-bit inference matmul */
/* out[M,N] = A[M,K] @ W[N,K]^T (+ bias[N]), W quantized by bnb_quantize_4bit from its [N,K]
   row-major form. A, bias and out share `dtype` (F32, F16, BF16); rows are contiguous. */
BNB_API bnb_status_t bnb_gemm_4bit(bnb_context_t ctx, int32_t dtype, int64_t M, int64_t N, int64_t K,
                                   const void* A, const uint8_t* W, const bnb_scales_t* scales,
                                   int32_t quant_type, int64_t blocksize, const void* bias, void* out,
                                   void* stream);
/* Extension: the other orientation of the same weight, out[M,K] = A[M,N] @ W[N,K] (what the
   input gradient of out = x @ W^T needs), W, scales, quant_type and blocksize exactly as
   bnb_gemm_4bit takes them (no transposed copy). A and out share `dtype`; no bias. */
BNB_API bnb_status_t bnb_gemm_4bit_transposed(bnb_context_t ctx, int32_t dtype, int64_t M, int64_t N, int64_t K,
                                              const void* A, const uint8_t* W, const bnb_scales_t* scales,
                                              int32_t quant_type, int64_t blocksize, void* out, void* stream);
/* Extension: the arguments of bnb_gemm_4bit that stay fixed across calls with one weight,
   checked once. The plan keeps the pointers (W, the scales' arrays, bias), not copies: they and
   ctx must outlive it. bnb_gemm_4bit_plan_run gives the result bnb_gemm_4bit gives. */
typedef struct bnb_gemm4_plan* bnb_gemm4_plan_t;
BNB_API bnb_status_t bnb_gemm_4bit_plan_create(bnb_context_t ctx, int32_t dtype, int64_t N, int64_t K,
                                               const uint8_t* W, const bnb_scales_t* scales, int32_t quant_type,
                                               int64_t blocksize, const void* bias, bnb_gemm4_plan_t* plan);
BNB_API bnb_status_t bnb_gemm_4bit_plan_run(bnb_gemm4_plan_t plan, int64_t M, const void* A, void* out,
                                            void* stream);
BNB_API bnb_status_t bnb_gemm_4bit_plan_destroy(bnb_gemm4_plan_t plan); /* NULL is a no-op */

/* ---------------------------------------------------------------- LLM.int8() */
/* Row-wise: row_stats[r] = absmax of row r over entries with |x| < threshold (all when
   threshold == 0); entries at or above threshold are written as 0 in q — as in the reference,
   every entry of a column that holds such an entry is written as 0 (docs/FORMATS.md §6.1). */
BNB_API bnb_status_t bnb_int8_vectorwise_quant(bnb_context_t ctx, int32_t dtype, int64_t rows, int64_t cols,
                                               const void* A, float threshold, int8_t* q, float* row_stats,
                                               void* stream);
/* Columns holding any |x| >= threshold, ascending; host-visible *count (this call may sync). */
BNB_API bnb_status_t bnb_int8_outlier_columns(bnb_context_t ctx, int32_t dtype, int64_t rows, int64_t cols,
                                              const void* A, float threshold, int32_t* columns,
                                              int64_t capacity, int64_t* count, void* stream);
/* C[M,N] (int32) = A[M,K] (int8) @ B[N,K]^T (int8). */
BNB_API bnb_status_t bnb_int8_matmul(bnb_context_t ctx, int64_t M, int64_t N, int64_t K, const int8_t* A,
                                     const int8_t* B, int32_t* C, void* stream);
/* out[M,N] = C * row_stats[m] * col_stats[n] / (127*127) (+ bias[n]), in out_dtype. */
BNB_API bnb_status_t bnb_int8_mm_dequant(bnb_context_t ctx, int64_t M, int64_t N, const int32_t* C,
                                         const float* row_stats, const float* col_stats, const void* bias,
                                         int32_t out_dtype, void* out, void* stream);
/* Extension: the LLM.int8() layer without its outlier product, in one call. Gives what
   bnb_int8_vectorwise_quant(A, threshold) -> q, row_stats; bnb_int8_matmul(q, W) -> C;
   bnb_int8_mm_dequant(C, row_stats, SCB, bias, out_dtype = dtype) -> out give, bit for bit.
   A [M,K] and out [M,N] have `dtype`, bias (NULL or [N]) too; W [N,K] int8 with SCB [N].
   q [M*K] and row_stats [M] are outputs; C [M*N] is scratch (contents unspecified after). */
BNB_API bnb_status_t bnb_int8_linear(bnb_context_t ctx, int32_t dtype, int64_t M, int64_t N, int64_t K,
                                     const void* A, float threshold, const int8_t* W, const float* SCB,
                                     const void* bias, int8_t* q, float* row_stats, int32_t* C, void* out,
                                     void* stream);
/* Extension: the whole LLM.int8() layer, outlier product included, without a host
   synchronisation or an allocation (capturable in a CUDA graph). out is first what
   bnb_int8_linear gives (same arguments), bit for bit. Then the columns of A holding any
   |x| >= threshold (threshold rounded to dtype, as in bnb_int8_outlier_columns) are written,
   ascending, to columns[0 .. *count) and their number to *count; columns [K] and count [1] are
   in the context's memory (device memory on a GPU: *count is never read on the host, and
   columns[*count ..] are unspecified after). When *count > 0, for every m, n:
     out[m,n] = RN_D(out[m,n] + RN_D(s[m,n])),
     s[m,n]   = fma(A[m,c], Wc[n,c], s) over the outlier columns c ascending, from s = +0,
     Wc[n,c]  = RN_D(RN32(RN32(W[n,c] * SCB[n]) * RN32(1/127)))
   in binary32 with subnormal operands and results flushed to zero (docs/OPS.md §5.10).
   threshold == 0: *count = 0 and out is bnb_int8_linear's. */
BNB_API bnb_status_t bnb_int8_linear_outliers(bnb_context_t ctx, int32_t dtype, int64_t M, int64_t N, int64_t K,
                                              const void* A, float threshold, const int8_t* W, const float* SCB,
                                              const void* bias, int8_t* q, float* row_stats, int32_t* C,
                                              int32_t* columns, int64_t* count, void* out, void* stream);

/* ---------------------------------------------------------------- optimizers */
typedef enum bnb_optimizer {
  BNB_OPT_ADAM = 1,
  BNB_OPT_MOMENTUM = 2,
  BNB_OPT_RMSPROP = 3,
  BNB_OPT_LION = 4,
  BNB_OPT_ADAGRAD = 5,
  BNB_OPT_ADEMAMIX = 6,
  BNB_OPT_LAMB = 7,
  BNB_OPT_LARS = 8
} bnb_optimizer_t;

typedef struct bnb_optimizer_params {
  uint32_t struct_size;
  int32_t optimizer;   /* bnb_optimizer_t */
  int32_t state_bits;  /* 32, or 8 (blockwise, blocksize 256) */
  int32_t param_dtype; /* F32, F16, BF16 (p and g share it) */
  int64_t n;
  float lr, beta1, beta2, beta3, alpha, eps, weight_decay, gnorm_scale, max_unorm, param_norm;
  int64_t step;        /* 1-based */
  int32_t skip_zeros;
} bnb_optimizer_params_t;

typedef struct bnb_optimizer_tensors {
  uint32_t struct_size;
  void* p;
  const void* g;
  void* state1;
  void* state2;                  /* float (32-bit) or uint8 codes (8-bit); state2 NULL if unused */
  float* absmax1;
  float* absmax2;                /* 8-bit only */
  const float* qmap1;
  const float* qmap2;            /* 8-bit only; NULL = signed / unsigned dynamic maps */
  float* unorm_vec;              /* LAMB/LARS (max_unorm > 0) only */
} bnb_optimizer_tensors_t;

BNB_API bnb_status_t bnb_optimizer_params_init(bnb_optimizer_params_t* params);
BNB_API bnb_status_t bnb_optimizer_tensors_init(bnb_optimizer_tensors_t* tensors);
BNB_API bnb_status_t bnb_optimizer_update(bnb_context_t ctx, const bnb_optimizer_params_t* params,
                                          const bnb_optimizer_tensors_t* tensors, void* stream);
/* Extension: `count` tensors that share every field of `params` except n (params->n is ignored;
   tensor i has n[i] elements) in as few launches as the backend needs. Clipping (max_unorm > 0)
   is not offered here. Results equal `count` calls of bnb_optimizer_update. */
BNB_API bnb_status_t bnb_optimizer_update_multi(bnb_context_t ctx, const bnb_optimizer_params_t* params,
                                                int32_t count, const bnb_optimizer_tensors_t* tensors,
                                                const int64_t* n, void* stream);

/* ---------------------------------------------------------------- paged (unified) memory */
BNB_API bnb_status_t bnb_paged_alloc(bnb_context_t ctx, int64_t bytes, void** ptr);
BNB_API bnb_status_t bnb_paged_free(bnb_context_t ctx, void* ptr);
/* to_device = 1 moves pages to the context's device, 0 to the host; asynchronous on stream. */
BNB_API bnb_status_t bnb_paged_prefetch(bnb_context_t ctx, void* ptr, int64_t bytes, int32_t to_device,
                                        void* stream);

/* ---------------------------------------------------------------- backend memory (extension)
   Memory in the context's backend: host memory for CPU, device memory of the context's device
   for CUDA/HIP. Lets tests, benchmarks and bindings stay backend-agnostic. */
typedef enum bnb_memcpy_kind {
  BNB_MEMCPY_HOST_TO_HOST = 0,
  BNB_MEMCPY_HOST_TO_BACKEND = 1,
  BNB_MEMCPY_BACKEND_TO_HOST = 2,
  BNB_MEMCPY_BACKEND_TO_BACKEND = 3
} bnb_memcpy_kind_t;
BNB_API bnb_status_t bnb_malloc(bnb_context_t ctx, int64_t bytes, void** ptr);
BNB_API bnb_status_t bnb_free(bnb_context_t ctx, void* ptr);
/* Asynchronous on `stream` for GPU backends (host memory involved: may be synchronous). */
BNB_API bnb_status_t bnb_memcpy(bnb_context_t ctx, void* dst, const void* src, int64_t bytes,
                                int32_t kind /* bnb_memcpy_kind_t */, void* stream);
/* Waits until all work queued on `stream` (NULL = the default stream) has finished. */
BNB_API bnb_status_t bnb_synchronize(bnb_context_t ctx, void* stream);

/* ---------------------------------------------------------------- declared buffer lengths (extension)
   The calls above take pointers without lengths. A caller may declare how many bytes a buffer
   has; then, on the declaring thread, every call that receives a pointer inside a declared buffer
   fails with BNB_ERR_INVALID_ARGUMENT (naming the argument, the bytes the op needs and the bytes
   the buffer has from there) instead of reading or writing past its end. Undeclared pointers are
   not affected. Declarations may not overlap; declaring a declared start again sets its length.
   bnb_free and bnb_paged_free forget a declaration of the pointer they free. */
BNB_API bnb_status_t bnb_buffer_declare(const void* ptr, int64_t bytes);
BNB_API bnb_status_t bnb_buffer_forget(const void* ptr); /* NULL is a no-op */

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BNB_H_ */
