// C helpers for the cgo binding (see shims.h).
#include "shims.h"

// bnb_scales_t holds pointers, which Go memory handed to C may not; so the struct is built
// here, on the C stack, from flat arguments.
static bnb_status_t go_bnb_scales(bnb_scales_t* s, const float* absmax, const uint8_t* absmax_q,
                                  const float* absmax2, const float* code2, const float* offset,
                                  int64_t blocksize2) {
  bnb_status_t st = bnb_scales_init(s);
  if (st != BNB_SUCCESS) return st;
  s->struct_size = sizeof(*s);
  s->absmax = absmax;
  s->absmax_q = absmax_q;
  s->absmax2 = absmax2;
  s->code2 = code2;
  s->offset = offset;
  s->blocksize2 = blocksize2;
  return BNB_SUCCESS;
}

bnb_status_t go_bnb_dequantize_4bit(bnb_context_t ctx, int32_t quant_type, const uint8_t* packed,
                                           const float* absmax, const uint8_t* absmax_q,
                                           const float* absmax2, const float* code2, const float* offset,
                                           int64_t blocksize2, int64_t n, int64_t blocksize,
                                           int32_t out_dtype, void* out) {
  bnb_scales_t s;
  bnb_status_t st = go_bnb_scales(&s, absmax, absmax_q, absmax2, code2, offset, blocksize2);
  if (st != BNB_SUCCESS) return st;
  return bnb_dequantize_4bit(ctx, quant_type, packed, &s, n, blocksize, out_dtype, out, NULL);
}

bnb_status_t go_bnb_gemm_4bit(bnb_context_t ctx, int32_t dtype, int64_t m, int64_t n, int64_t k,
                                     const void* a, const uint8_t* w, const float* absmax,
                                     const uint8_t* absmax_q, const float* absmax2, const float* code2,
                                     const float* offset, int64_t blocksize2, int32_t quant_type,
                                     int64_t blocksize, const void* bias, void* out) {
  bnb_scales_t s;
  bnb_status_t st = go_bnb_scales(&s, absmax, absmax_q, absmax2, code2, offset, blocksize2);
  if (st != BNB_SUCCESS) return st;
  return bnb_gemm_4bit(ctx, dtype, m, n, k, a, w, &s, quant_type, blocksize, bias, out, NULL);
}

bnb_status_t go_bnb_gemm_4bit_transposed(bnb_context_t ctx, int32_t dtype, int64_t m, int64_t n, int64_t k,
                                         const void* a, const uint8_t* w, const float* absmax,
                                         const uint8_t* absmax_q, const float* absmax2, const float* code2,
                                         const float* offset, int64_t blocksize2, int32_t quant_type,
                                         int64_t blocksize, void* out) {
  bnb_scales_t s;
  bnb_status_t st = go_bnb_scales(&s, absmax, absmax_q, absmax2, code2, offset, blocksize2);
  if (st != BNB_SUCCESS) return st;
  return bnb_gemm_4bit_transposed(ctx, dtype, m, n, k, a, w, &s, quant_type, blocksize, out, NULL);
}

bnb_status_t go_bnb_backend_info(int32_t index, bnb_backend_info_t* info) {
  info->struct_size = sizeof(*info);
  return bnb_backend_get_info(index, info);
}

bnb_status_t go_bnb_backend_capabilities(int32_t index, bnb_backend_capabilities_t* caps) {
  caps->struct_size = sizeof(*caps);
  return bnb_backend_get_capabilities(index, caps);
}

bnb_status_t go_bnb_gemm_4bit_plan_create(bnb_context_t ctx, int32_t dtype, int64_t n, int64_t k, const uint8_t* w,
                                          const float* absmax, const uint8_t* absmax_q, const float* absmax2,
                                          const float* code2, const float* offset, int64_t blocksize2,
                                          int32_t quant_type, int64_t blocksize, const void* bias,
                                          bnb_gemm4_plan_t* plan) {
  bnb_scales_t s;
  bnb_status_t st = go_bnb_scales(&s, absmax, absmax_q, absmax2, code2, offset, blocksize2);
  if (st != BNB_SUCCESS) return st;
  return bnb_gemm_4bit_plan_create(ctx, dtype, n, k, w, &s, quant_type, blocksize, bias, plan);
}

bnb_status_t go_bnb_optimizer_update(bnb_context_t ctx, const bnb_optimizer_params_t* params, void* p,
                                     const void* g, void* state1, void* state2, float* absmax1, float* absmax2,
                                     const float* qmap1, const float* qmap2, float* unorm_vec) {
  bnb_optimizer_tensors_t t;
  bnb_status_t st = bnb_optimizer_tensors_init(&t);
  if (st != BNB_SUCCESS) return st;
  t.p = p;
  t.g = g;
  t.state1 = state1;
  t.state2 = state2;
  t.absmax1 = absmax1;
  t.absmax2 = absmax2;
  t.qmap1 = qmap1;
  t.qmap2 = qmap2;
  t.unorm_vec = unorm_vec;
  return bnb_optimizer_update(ctx, params, &t, NULL);
}
