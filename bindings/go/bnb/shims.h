// C helpers for the cgo binding. bnb_scales_t and bnb_optimizer_tensors_t hold pointers, and Go
// memory handed to C may not hold Go pointers; so these take them as flat arguments and build
// the struct on the C stack. The backend info and capabilities helpers set struct_size, which cgo cannot take
// sizeof of portably.
#ifndef BNB_GO_SHIMS_H_
#define BNB_GO_SHIMS_H_

#include "bnb.h"

bnb_status_t go_bnb_dequantize_4bit(bnb_context_t ctx, int32_t quant_type, const uint8_t* packed,
                                    const float* absmax, const uint8_t* absmax_q, const float* absmax2,
                                    const float* code2, const float* offset, int64_t blocksize2, int64_t n,
                                    int64_t blocksize, int32_t out_dtype, void* out);
bnb_status_t go_bnb_gemm_4bit(bnb_context_t ctx, int32_t dtype, int64_t m, int64_t n, int64_t k,
                              const void* a, const uint8_t* w, const float* absmax, const uint8_t* absmax_q,
                              const float* absmax2, const float* code2, const float* offset,
                              int64_t blocksize2, int32_t quant_type, int64_t blocksize, const void* bias,
                              void* out);
bnb_status_t go_bnb_gemm_4bit_transposed(bnb_context_t ctx, int32_t dtype, int64_t m, int64_t n, int64_t k,
                                         const void* a, const uint8_t* w, const float* absmax,
                                         const uint8_t* absmax_q, const float* absmax2, const float* code2,
                                         const float* offset, int64_t blocksize2, int32_t quant_type,
                                         int64_t blocksize, void* out);
bnb_status_t go_bnb_backend_info(int32_t index, bnb_backend_info_t* info);
bnb_status_t go_bnb_backend_capabilities(int32_t index, bnb_backend_capabilities_t* caps);
bnb_status_t go_bnb_gemm_4bit_plan_create(bnb_context_t ctx, int32_t dtype, int64_t n, int64_t k, const uint8_t* w,
                                          const float* absmax, const uint8_t* absmax_q, const float* absmax2,
                                          const float* code2, const float* offset, int64_t blocksize2,
                                          int32_t quant_type, int64_t blocksize, const void* bias,
                                          bnb_gemm4_plan_t* plan);
/* bnb_optimizer_tensors_t holds pointers too: one tensor set, built here from flat arguments. */
bnb_status_t go_bnb_optimizer_update(bnb_context_t ctx, const bnb_optimizer_params_t* params, void* p,
                                     const void* g, void* state1, void* state2, float* absmax1, float* absmax2,
                                     const float* qmap1, const float* qmap2, float* unorm_vec);

#endif  // BNB_GO_SHIMS_H_
