// Entry points: 4-bit matmul, LLM.int8(), optimizers and paged memory. The core checks the
// arguments; each backend offers the ops it implements (NULL = BNB_ERR_NOT_SUPPORTED).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "context.h"
#include "optim_traits.h"

using namespace bnb;

#define BNB_OFFERED(op, fname) BNB_CHECK(check_offered(ctx, op, fname))

// A 4-bit matmul's arguments that do not depend on the activations: checked once by
// check_gemm4_weight, shared by bnb_gemm_4bit (a plan on the stack) and the prepared call.
struct bnb_gemm4_plan {
  static constexpr uint64_t kMagic = 0x626e6267346eull;  // "bnbg4n"
  uint64_t magic = kMagic;
  bnb_context_t ctx = nullptr;
  int32_t dtype = 0, quant_type = 0;
  int64_t N = 0, K = 0, blocksize = 0;
  const uint8_t* W = nullptr;
  bnb_scales_resolved_t scales{};
  const void* bias = nullptr;
};

namespace {

bnb_status_t check_gemm4_weight(bnb_context_t ctx, int32_t dtype, int64_t N, int64_t K, const uint8_t* W,
                                const bnb_scales_t* scales, int32_t quant_type, int64_t blocksize, const void* bias,
                                bnb_gemm4_plan* p) {
  BNB_CHECK(check_float_dtype(dtype, "dtype"));
  BNB_CHECK(check_count(N, "N"));
  BNB_CHECK(check_count(K, "K"));
  BNB_CHECK(check_quant_type(quant_type));
  BNB_CHECK(check_blocksize(blocksize, kBlocksize4Min, kBlocksize4Max, "blocksize"));
  if (K % blocksize != 0)
    return failf(BNB_ERR_INVALID_ARGUMENT, "K = %lld is not a multiple of blocksize %lld", static_cast<long long>(K),
                 static_cast<long long>(blocksize));
  int64_t elems = 0;
  BNB_CHECK(check_product(N, K, "N*K", &elems));
  BNB_CHECK(check_array(ctx, W, "W", elems / 2));  // K is a multiple of blocksize: even
  BNB_CHECK(check_memory(ctx, bias, "bias", dtype_bytes(dtype), N));
  BNB_CHECK(resolve_scales(ctx, scales, elems / blocksize, &p->scales));
  p->ctx = ctx;
  p->dtype = dtype;
  p->quant_type = quant_type;
  p->N = N;
  p->K = K;
  p->blocksize = blocksize;
  p->W = W;
  p->bias = bias;
  return BNB_SUCCESS;
}

// The per-call part: M, A and out, then the backend's op.
bnb_status_t run_gemm4(const bnb_gemm4_plan& p, int64_t M, const void* A, void* out, void* stream,
                       const char* function) {
  bnb_context_t ctx = p.ctx;
  BNB_CHECK(check_count(M, "M"));
  int64_t a_elems = 0, out_elems = 0;
  BNB_CHECK(check_product(M, p.K, "M*K", &a_elems));
  BNB_CHECK(check_product(M, p.N, "M*N", &out_elems));
  BNB_CHECK(check_array(ctx, A, "A", dtype_bytes(p.dtype), a_elems));
  BNB_CHECK(check_array(ctx, out, "out", dtype_bytes(p.dtype), out_elems));
  BNB_OFFERED(BNB_OP_GEMM_4BIT, function);
  BNB_CHECK(check_finite(ctx, p.dtype, A, a_elems, "A", stream));
  return ctx->backend->ops.gemm_4bit(ctx->impl, p.dtype, M, p.N, p.K, A, p.W, &p.scales, p.quant_type, p.blocksize,
                                     p.bias, out, stream);
}

}  // namespace

// M, N, K of an int8 product C[M,N] = A[M,K] B[N,K]^T: positive, products within the limit, and
// K small enough for exact int32 sums (127 * 128 * K < 2^31).
static bnb_status_t check_int8_product_dims(int64_t M, int64_t N, int64_t K) {
  BNB_CHECK(check_count(M, "M"));
  BNB_CHECK(check_count(N, "N"));
  BNB_CHECK(check_count(K, "K"));
  int64_t elems = 0;
  BNB_CHECK(check_product(M, K, "M*K", &elems));
  BNB_CHECK(check_product(N, K, "N*K", &elems));
  BNB_CHECK(check_product(M, N, "M*N", &elems));
  if (K > kInt8MaxK)
    return failf(BNB_ERR_INVALID_ARGUMENT, "K = %lld is too large: int32 accumulation is exact only for K <= %lld",
                 static_cast<long long>(K), static_cast<long long>(kInt8MaxK));
  return BNB_SUCCESS;
}

// An LLM.int8() threshold: finite and >= 0 (0 = no outliers).
static bnb_status_t check_int8_threshold(float threshold) {
  if (!(threshold >= 0.0f) || std::isinf(threshold))
    return failf(BNB_ERR_INVALID_ARGUMENT, "threshold %g must be finite and >= 0 (0 = no outliers)", threshold);
  return BNB_SUCCESS;
}

// The arguments bnb_int8_linear and bnb_int8_linear_outliers share.
static bnb_status_t check_int8_linear(bnb_context_t ctx, int32_t dtype, int64_t M, int64_t N, int64_t K,
                                      const void* A, float threshold, const int8_t* W, const float* SCB,
                                      const void* bias, const int8_t* q, const float* row_stats, const int32_t* C,
                                      const void* out) {
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_float_dtype(dtype, "dtype"));
  BNB_CHECK(check_int8_product_dims(M, N, K));
  BNB_CHECK(check_int8_threshold(threshold));
  BNB_CHECK(check_array(ctx, A, "A", dtype_bytes(dtype), M * K));
  BNB_CHECK(check_array(ctx, W, "W", N * K));
  BNB_CHECK(check_array(ctx, SCB, "SCB", N));
  BNB_CHECK(check_memory(ctx, bias, "bias", dtype_bytes(dtype), N));
  BNB_CHECK(check_array(ctx, q, "q", M * K));
  BNB_CHECK(check_array(ctx, row_stats, "row_stats", M));
  BNB_CHECK(check_array(ctx, C, "C", M * N));
  return check_array(ctx, out, "out", dtype_bytes(dtype), M * N);
}

extern "C" {

BNB_API bnb_status_t bnb_gemm_4bit(bnb_context_t ctx, int32_t dtype, int64_t M, int64_t N, int64_t K,
                                   const void* A, const uint8_t* W, const bnb_scales_t* scales, int32_t quant_type,
                                   int64_t blocksize, const void* bias, void* out, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_count(M, "M"));
  bnb_gemm4_plan plan;
  BNB_CHECK(check_gemm4_weight(ctx, dtype, N, K, W, scales, quant_type, blocksize, bias, &plan));
  return run_gemm4(plan, M, A, out, stream, "bnb_gemm_4bit");
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_gemm_4bit_transposed(bnb_context_t ctx, int32_t dtype, int64_t M, int64_t N, int64_t K,
                                              const void* A, const uint8_t* W, const bnb_scales_t* scales,
                                              int32_t quant_type, int64_t blocksize, void* out, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_count(M, "M"));
  bnb_gemm4_plan p;
  BNB_CHECK(check_gemm4_weight(ctx, dtype, N, K, W, scales, quant_type, blocksize, nullptr, &p));
  int64_t a_elems = 0, out_elems = 0;
  BNB_CHECK(check_product(M, N, "M*N", &a_elems));
  BNB_CHECK(check_product(M, K, "M*K", &out_elems));
  BNB_CHECK(check_array(ctx, A, "A", dtype_bytes(dtype), a_elems));
  BNB_CHECK(check_array(ctx, out, "out", dtype_bytes(dtype), out_elems));
  BNB_OFFERED(BNB_OP_GEMM_4BIT_TRANSPOSED, "bnb_gemm_4bit_transposed");
  BNB_CHECK(check_finite(ctx, dtype, A, a_elems, "A", stream));
  return ctx->backend->ops.gemm_4bit_transposed(ctx->impl, dtype, M, N, K, A, W, &p.scales, quant_type, blocksize,
                                                out, stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_gemm_4bit_plan_create(bnb_context_t ctx, int32_t dtype, int64_t N, int64_t K,
                                               const uint8_t* W, const bnb_scales_t* scales, int32_t quant_type,
                                               int64_t blocksize, const void* bias, bnb_gemm4_plan_t* plan) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_not_null(plan, "plan"));
  *plan = nullptr;
  BNB_CHECK(check_context(ctx));
  auto p = std::make_unique<bnb_gemm4_plan>();
  BNB_CHECK(check_gemm4_weight(ctx, dtype, N, K, W, scales, quant_type, blocksize, bias, p.get()));
  BNB_OFFERED(BNB_OP_GEMM_4BIT, "bnb_gemm_4bit_plan_create");
  *plan = p.release();
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_gemm_4bit_plan_run(bnb_gemm4_plan_t plan, int64_t M, const void* A, void* out,
                                            void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_not_null(plan, "plan"));
  if (plan->magic != bnb_gemm4_plan::kMagic)
    return fail(BNB_ERR_INVALID_ARGUMENT, "plan is not a live gemm_4bit plan (destroyed or corrupted)");
  BNB_CHECK(check_context(plan->ctx));
  return run_gemm4(*plan, M, A, out, stream, "bnb_gemm_4bit_plan_run");
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_gemm_4bit_plan_destroy(bnb_gemm4_plan_t plan) {
  BNB_API_GUARD_BEGIN
  if (plan == nullptr) return BNB_SUCCESS;
  if (plan->magic != bnb_gemm4_plan::kMagic)
    return fail(BNB_ERR_INVALID_ARGUMENT, "plan is not a live gemm_4bit plan (destroyed or corrupted)");
  plan->magic = 0;
  delete plan;
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_int8_vectorwise_quant(bnb_context_t ctx, int32_t dtype, int64_t rows, int64_t cols,
                                               const void* A, float threshold, int8_t* q, float* row_stats,
                                               void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_float_dtype(dtype, "dtype"));
  BNB_CHECK(check_count(rows, "rows"));
  BNB_CHECK(check_count(cols, "cols"));
  int64_t elems = 0;
  BNB_CHECK(check_product(rows, cols, "rows*cols", &elems));
  BNB_CHECK(check_int8_threshold(threshold));
  BNB_CHECK(check_array(ctx, A, "A", dtype_bytes(dtype), elems));
  BNB_CHECK(check_array(ctx, q, "q", elems));
  BNB_CHECK(check_array(ctx, row_stats, "row_stats", rows));
  BNB_OFFERED(BNB_OP_INT8_VECTORWISE_QUANT, "bnb_int8_vectorwise_quant");
  BNB_CHECK(check_finite(ctx, dtype, A, elems, "A", stream));
  return ctx->backend->ops.int8_vectorwise_quant(ctx->impl, dtype, rows, cols, A, threshold, q, row_stats, stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_int8_outlier_columns(bnb_context_t ctx, int32_t dtype, int64_t rows, int64_t cols,
                                              const void* A, float threshold, int32_t* columns, int64_t capacity,
                                              int64_t* count, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_float_dtype(dtype, "dtype"));
  BNB_CHECK(check_count(rows, "rows"));
  BNB_CHECK(check_count(cols, "cols"));
  int64_t elems = 0;
  BNB_CHECK(check_product(rows, cols, "rows*cols", &elems));
  if (!(threshold > 0.0f) || std::isinf(threshold))
    return failf(BNB_ERR_INVALID_ARGUMENT, "threshold %g must be finite and > 0", threshold);
  if (capacity < 0)
    return failf(BNB_ERR_INVALID_ARGUMENT, "capacity = %lld is negative", static_cast<long long>(capacity));
  BNB_CHECK(check_array(ctx, A, "A", dtype_bytes(dtype), elems));
  if (capacity > 0) BNB_CHECK(check_array(ctx, columns, "columns", capacity));
  BNB_CHECK(check_not_null(count, "count"));
  BNB_CHECK(check_declared(count, "count", sizeof *count, 1));
  BNB_OFFERED(BNB_OP_INT8_OUTLIER_COLUMNS, "bnb_int8_outlier_columns");
  BNB_CHECK(check_finite(ctx, dtype, A, elems, "A", stream));
  return ctx->backend->ops.int8_outlier_columns(ctx->impl, dtype, rows, cols, A, threshold, columns, capacity, count,
                                                stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_int8_matmul(bnb_context_t ctx, int64_t M, int64_t N, int64_t K, const int8_t* A,
                                     const int8_t* B, int32_t* C, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_int8_product_dims(M, N, K));
  BNB_CHECK(check_array(ctx, A, "A", M * K));
  BNB_CHECK(check_array(ctx, B, "B", N * K));
  BNB_CHECK(check_array(ctx, C, "C", M * N));
  BNB_OFFERED(BNB_OP_INT8_MATMUL, "bnb_int8_matmul");
  return ctx->backend->ops.int8_matmul(ctx->impl, M, N, K, A, B, C, stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_int8_mm_dequant(bnb_context_t ctx, int64_t M, int64_t N, const int32_t* C,
                                         const float* row_stats, const float* col_stats, const void* bias,
                                         int32_t out_dtype, void* out, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_count(M, "M"));
  BNB_CHECK(check_count(N, "N"));
  int64_t elems = 0;
  BNB_CHECK(check_product(M, N, "M*N", &elems));
  BNB_CHECK(check_float_dtype(out_dtype, "out_dtype"));
  BNB_CHECK(check_array(ctx, C, "C", elems));
  BNB_CHECK(check_array(ctx, row_stats, "row_stats", M));
  BNB_CHECK(check_array(ctx, col_stats, "col_stats", N));
  BNB_CHECK(check_memory(ctx, bias, "bias", dtype_bytes(out_dtype), N));
  BNB_CHECK(check_array(ctx, out, "out", dtype_bytes(out_dtype), elems));
  BNB_OFFERED(BNB_OP_INT8_MM_DEQUANT, "bnb_int8_mm_dequant");
  return ctx->backend->ops.int8_mm_dequant(ctx->impl, M, N, C, row_stats, col_stats, bias, out_dtype, out, stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_int8_linear(bnb_context_t ctx, int32_t dtype, int64_t M, int64_t N, int64_t K,
                                     const void* A, float threshold, const int8_t* W, const float* SCB,
                                     const void* bias, int8_t* q, float* row_stats, int32_t* C, void* out,
                                     void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_int8_linear(ctx, dtype, M, N, K, A, threshold, W, SCB, bias, q, row_stats, C, out));
  const bnb_backend_ops_t& ops = ctx->backend->ops;
  BNB_OFFERED(BNB_OP_INT8_LINEAR, "bnb_int8_linear");
  BNB_CHECK(check_finite(ctx, dtype, A, M * K, "A", stream));
  if (ops.int8_linear != nullptr)
    return ops.int8_linear(ctx->impl, dtype, M, N, K, A, threshold, W, SCB, bias, q, row_stats, C, out, stream);
  BNB_CHECK(ops.int8_vectorwise_quant(ctx->impl, dtype, M, K, A, threshold, q, row_stats, stream));
  BNB_CHECK(ops.int8_matmul(ctx->impl, M, N, K, q, W, C, stream));
  return ops.int8_mm_dequant(ctx->impl, M, N, C, row_stats, SCB, bias, dtype, out, stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_int8_linear_outliers(bnb_context_t ctx, int32_t dtype, int64_t M, int64_t N, int64_t K,
                                              const void* A, float threshold, const int8_t* W, const float* SCB,
                                              const void* bias, int8_t* q, float* row_stats, int32_t* C,
                                              int32_t* columns, int64_t* count, void* out, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_int8_linear(ctx, dtype, M, N, K, A, threshold, W, SCB, bias, q, row_stats, C, out));
  BNB_CHECK(check_array(ctx, columns, "columns", K));
  BNB_CHECK(check_array(ctx, count, "count", 1));
  BNB_OFFERED(BNB_OP_INT8_LINEAR_OUTLIERS, "bnb_int8_linear_outliers");
  BNB_CHECK(check_finite(ctx, dtype, A, M * K, "A", stream));
  return ctx->backend->ops.int8_linear_outliers(ctx->impl, dtype, M, N, K, A, threshold, W, SCB, bias, q, row_stats,
                                                C, columns, count, out, stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_optimizer_params_init(bnb_optimizer_params_t* params) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_not_null(params, "params"));
  std::memset(params, 0, sizeof *params);
  params->struct_size = sizeof *params;
  params->optimizer = BNB_OPT_ADAM;
  params->state_bits = 32;
  params->param_dtype = BNB_F32;
  params->lr = 1e-3f;
  params->beta1 = 0.9f;
  params->beta2 = 0.999f;
  params->beta3 = 0.9999f;
  params->alpha = 5.0f;
  params->eps = 1e-8f;
  params->gnorm_scale = 1.0f;
  params->step = 1;
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_optimizer_tensors_init(bnb_optimizer_tensors_t* tensors) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_not_null(tensors, "tensors"));
  std::memset(tensors, 0, sizeof *tensors);
  tensors->struct_size = sizeof *tensors;
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

}  // extern "C"

namespace {

// The parameter checks of both optimizer calls: the optimizers' traits (optim_traits.h) and the
// largest step of the context's backend.
bnb_status_t check_optimizer_params(bnb_context_t ctx, const bnb_optimizer_params_t* params) {
  BNB_CHECK(check_not_null(params, "params"));
  if (params->struct_size < sizeof(bnb_optimizer_params_t))
    return failf(BNB_ERR_INVALID_ARGUMENT, "params->struct_size %u is smaller than %zu: call bnb_optimizer_params_init",
                 params->struct_size, sizeof(bnb_optimizer_params_t));
  const int32_t opt = params->optimizer;
  if (!optim_known(opt))
    return failf(BNB_ERR_INVALID_ARGUMENT, "params->optimizer %d is not a bnb_optimizer_t (1..%d)", opt, kOptimCount);
  const OptimTraits& traits = optim_traits(opt);
  if (params->state_bits != 32 && params->state_bits != 8)
    return failf(BNB_ERR_INVALID_ARGUMENT, "params->state_bits %d is not supported: use 32 or 8", params->state_bits);
  BNB_CHECK(check_float_dtype(params->param_dtype, "params->param_dtype"));
  if (params->step < 1)
    return failf(BNB_ERR_INVALID_ARGUMENT, "params->step = %lld: steps are 1-based",
                 static_cast<long long>(params->step));
  const int64_t max_step = ctx->backend->ops.optimizer_max_step;
  if (max_step > 0 && params->step > max_step)
    return failf(BNB_ERR_INVALID_ARGUMENT, "params->step = %lld is beyond the %s backend's largest step %lld",
                 static_cast<long long>(params->step), ctx->backend->name.c_str(), static_cast<long long>(max_step));
  if (!std::isfinite(params->lr)) return fail(BNB_ERR_INVALID_ARGUMENT, "params->lr is not finite");
  // The update rules' own conditions (docs/OPS.md §6), the same on every backend.
  const bnb_optimizer_params_t& P = *params;
  const struct {
    const char* name;
    float value;
  } scalars[] = {{"beta1", P.beta1}, {"beta2", P.beta2},       {"beta3", P.beta3},
                 {"alpha", P.alpha}, {"eps", P.eps},           {"weight_decay", P.weight_decay},
                 {"gnorm_scale", P.gnorm_scale}};
  for (const auto& s : scalars)
    if (!std::isfinite(s.value))
      return failf(BNB_ERR_INVALID_ARGUMENT, "params->%s = %g is not finite", s.name, static_cast<double>(s.value));
  if (!(P.max_unorm >= 0.0f) || std::isinf(P.max_unorm))
    return fail(BNB_ERR_INVALID_ARGUMENT, "params->max_unorm must be finite and >= 0 (0 = no clipping)");
  if (P.max_unorm > 0.0f && !traits.clipping)
    return fail(BNB_ERR_INVALID_ARGUMENT,
                "update-norm clipping (max_unorm > 0) is defined for Adam/LAMB, Momentum/LARS, RMSprop and Adagrad only");
  if (P.max_unorm > 0.0f && !(P.param_norm >= 0.0f && std::isfinite(P.param_norm)))
    return fail(BNB_ERR_INVALID_ARGUMENT, "params->param_norm must be finite and >= 0 when max_unorm > 0");
  if (traits.bias_correction && (!(P.beta1 < 1.0f) || !(P.beta2 < 1.0f)))
    return fail(BNB_ERR_INVALID_ARGUMENT,
                "beta1 and beta2 must be < 1 for Adam, LAMB and AdEMAMix (bias correction divides by 1 - beta^t)");
  if (P.weight_decay < 0.0f) return fail(BNB_ERR_INVALID_ARGUMENT, "params->weight_decay must be >= 0");
  return BNB_SUCCESS;
}

// `what` names the struct in messages ("tensors", "tensors[3]"); NULL checks without building
// names (the hot path: callers repeat a failed check with a name for the message).
bnb_status_t check_optimizer_tensors_named(bnb_context_t ctx, const bnb_optimizer_params_t* params, int64_t n,
                                           const bnb_optimizer_tensors_t* tensors, const char* what) {
  if (tensors->struct_size < sizeof(bnb_optimizer_tensors_t))
    return failf(BNB_ERR_INVALID_ARGUMENT, "%s->struct_size %u is smaller than %zu: call bnb_optimizer_tensors_init",
                 what != nullptr ? what : "tensors", tensors->struct_size, sizeof(bnb_optimizer_tensors_t));
  const OptimTraits& traits = optim_traits(params->optimizer);
  char name[64];
  auto named = [&](const char* field) -> const char* {
    if (what == nullptr) return field;
    std::snprintf(name, sizeof name, "%s->%s", what, field);
    return name;
  };
  const size_t param_bytes = dtype_bytes(params->param_dtype), state_bytes = params->state_bits == 8 ? 1 : 4;
  // AdEMAMix's state1 holds its two EMAs, and absmax1 their two sets of scales (docs/OPTIMIZERS.md).
  const int64_t copies = traits.state1_copies, nblocks = ceil_div(n, kOptimBlock);
  BNB_CHECK(check_array(ctx, tensors->p, named("p"), param_bytes, n));
  BNB_CHECK(check_array(ctx, tensors->g, named("g"), param_bytes, n));
  BNB_CHECK(check_array(ctx, tensors->state1, named("state1"), state_bytes, copies * n));
  const bool two_states = traits.states == 2;
  if (two_states) BNB_CHECK(check_array(ctx, tensors->state2, named("state2"), state_bytes, n));
  else BNB_CHECK(check_memory(ctx, tensors->state2, named("state2"), state_bytes, n));
  if (params->state_bits == 8) {
    BNB_CHECK(check_array(ctx, tensors->absmax1, named("absmax1"), copies * nblocks));
    if (two_states) BNB_CHECK(check_array(ctx, tensors->absmax2, named("absmax2"), nblocks));
    BNB_CHECK(check_memory(ctx, tensors->qmap1, named("qmap1"), kCodeEntries));
    BNB_CHECK(check_memory(ctx, tensors->qmap2, named("qmap2"), kCodeEntries));
  }
  if (params->max_unorm > 0.0f) BNB_CHECK(check_array(ctx, tensors->unorm_vec, named("unorm_vec"), 1));
  return BNB_SUCCESS;
}

bnb_status_t check_optimizer_tensors(bnb_context_t ctx, const bnb_optimizer_params_t* params,
                                     const bnb_optimizer_tensors_t* tensors, const char* what) {
  if (check_optimizer_tensors_named(ctx, params, params->n, tensors, nullptr) == BNB_SUCCESS) return BNB_SUCCESS;
  return check_optimizer_tensors_named(ctx, params, params->n, tensors, what);
}

}  // namespace

extern "C" {

BNB_API bnb_status_t bnb_optimizer_update(bnb_context_t ctx, const bnb_optimizer_params_t* params,
                                          const bnb_optimizer_tensors_t* tensors, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_optimizer_params(ctx, params));
  BNB_CHECK(check_not_null(tensors, "tensors"));
  BNB_CHECK(check_count(params->n, "params->n"));
  BNB_CHECK(check_optimizer_tensors(ctx, params, tensors, "tensors"));
  BNB_OFFERED(BNB_OP_OPTIMIZER_UPDATE, "bnb_optimizer_update");
  BNB_CHECK(check_finite(ctx, params->param_dtype, tensors->g, params->n, "tensors->g", stream));
  return ctx->backend->ops.optimizer_update(ctx->impl, params, tensors, stream);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_optimizer_update_multi(bnb_context_t ctx, const bnb_optimizer_params_t* params,
                                                int32_t count, const bnb_optimizer_tensors_t* tensors,
                                                const int64_t* n, void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_optimizer_params(ctx, params));
  if (count <= 0) return failf(BNB_ERR_INVALID_ARGUMENT, "count = %d: must be positive", count);
  BNB_CHECK(check_not_null(tensors, "tensors"));
  BNB_CHECK(check_not_null(n, "n"));
  BNB_CHECK(check_declared(tensors, "tensors", sizeof *tensors, count));
  BNB_CHECK(check_declared(n, "n", sizeof *n, count));
  BNB_OFFERED(BNB_OP_OPTIMIZER_UPDATE, "bnb_optimizer_update_multi");
  if (params->max_unorm > 0.0f)
    return fail(BNB_ERR_INVALID_ARGUMENT,
                "bnb_optimizer_update_multi does not clip (max_unorm > 0 needs each tensor's own param_norm and "
                "unorm_vec): call bnb_optimizer_update per tensor");
  for (int32_t i = 0; i < count; ++i) {
    if (check_count(n[i], "n") != BNB_SUCCESS ||
        check_optimizer_tensors_named(ctx, params, n[i], &tensors[i], nullptr) != BNB_SUCCESS) {
      char name[40];  // again, with the index in the message
      std::snprintf(name, sizeof name, "n[%d]", i);
      BNB_CHECK(check_count(n[i], name));
      std::snprintf(name, sizeof name, "tensors[%d]", i);
      return check_optimizer_tensors_named(ctx, params, n[i], &tensors[i], name);
    }
  }
  if (ctx->check_finite) {
    for (int32_t i = 0; i < count; ++i) {
      char name[40];
      std::snprintf(name, sizeof name, "tensors[%d]->g", i);
      BNB_CHECK(check_finite(ctx, params->param_dtype, tensors[i].g, n[i], name, stream));
    }
  }
  if (ctx->backend->ops.optimizer_update_multi != nullptr)
    return ctx->backend->ops.optimizer_update_multi(ctx->impl, params, count, tensors, n, stream);
  // A backend without a multi-tensor op: one update per tensor, in order.
  bnb_optimizer_params_t one = *params;
  for (int32_t i = 0; i < count; ++i) {
    one.n = n[i];
    const bnb_status_t st = ctx->backend->ops.optimizer_update(ctx->impl, &one, &tensors[i], stream);
    if (st != BNB_SUCCESS) return st;
  }
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_paged_alloc(bnb_context_t ctx, int64_t bytes, void** ptr) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_not_null(ptr, "ptr"));
  *ptr = nullptr;
  BNB_CHECK(check_count(bytes, "bytes"));
  // Paged memory on the CPU is ordinary host memory.
  if (ctx->backend->ops.paged_alloc == nullptr && ctx->kind == BNB_BACKEND_CPU)
    return ctx->backend->ops.mem_alloc(ctx->impl, bytes, ptr);
  BNB_OFFERED(BNB_OP_PAGED_MEMORY, "bnb_paged_alloc");
  return ctx->backend->ops.paged_alloc(ctx->impl, bytes, ptr);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_paged_free(bnb_context_t ctx, void* ptr) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  if (ptr == nullptr) return BNB_SUCCESS;
  forget_declared(ptr);
  if (ctx->backend->ops.paged_free == nullptr && ctx->kind == BNB_BACKEND_CPU)
    return ctx->backend->ops.mem_free(ctx->impl, ptr);
  BNB_OFFERED(BNB_OP_PAGED_MEMORY, "bnb_paged_free");
  return ctx->backend->ops.paged_free(ctx->impl, ptr);
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_paged_prefetch(bnb_context_t ctx, void* ptr, int64_t bytes, int32_t to_device,
                                        void* stream) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_context(ctx));
  BNB_CHECK(check_not_null(ptr, "ptr"));
  BNB_CHECK(check_count(bytes, "bytes"));
  if (to_device != 0 && to_device != 1)
    return failf(BNB_ERR_INVALID_ARGUMENT, "to_device %d must be 0 (host) or 1 (device)", to_device);
  BNB_CHECK(check_declared(ptr, "ptr", 1, bytes));
  if (ctx->backend->ops.paged_prefetch == nullptr && ctx->kind == BNB_BACKEND_CPU) return BNB_SUCCESS;
  BNB_OFFERED(BNB_OP_PAGED_MEMORY, "bnb_paged_prefetch");
  return ctx->backend->ops.paged_prefetch(ctx->impl, ptr, bytes, to_device, stream);
  BNB_API_GUARD_END
}

}  // extern "C"
