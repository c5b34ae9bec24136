// The LLM.int8() family's ops: thin adapters from the plugin ABI to int8_kernels.h.
#include <mutex>
#include <string>

#include "int8_kernels.h"
#include "onednn.h"
#include "plugin.h"

namespace bnb {
namespace cpu {
namespace {

bnb_status_t op_int8_vectorwise_quant(void* impl, int32_t dtype, int64_t rows, int64_t cols, const void* A,
                                      float threshold, int8_t* q, float* row_stats, void* /*stream*/) {
  return guarded("int8_vectorwise_quant", [&] {
    int8_vectorwise_quant(context_of(impl)->pool, dtype, rows, cols, A, threshold, q, row_stats);
  });
}

bnb_status_t op_int8_outlier_columns(void* impl, int32_t dtype, int64_t rows, int64_t cols, const void* A,
                                     float threshold, int32_t* columns, int64_t capacity, int64_t* count,
                                     void* /*stream*/) {
  return guarded("int8_outlier_columns", [&] {
    *count = int8_outlier_columns(context_of(impl)->pool, dtype, rows, cols, A, threshold, columns, capacity);
  });
}

// Says once (log level 2, info) which kernel computes the products: loading oneDNN is
// decided on the first product.
void log_int8_matmul_path() {
  static std::once_flag once;
  std::call_once(once, [] {
    const bnb_host_api_t* h = host();
    if (h == nullptr || h->log == nullptr) return;
    std::string msg;
    if (onednn_available()) {
      msg = std::string("cpu: int8_matmul: oneDNN ") + onednn_description() + " for M > " +
            std::to_string(int8_rows_kernel_max_m()) + ", Highway kernel otherwise";
    } else {
      msg = std::string("cpu: int8_matmul: Highway kernel for every shape; oneDNN ") + onednn_description();
    }
    h->log(2, msg.c_str());
  });
}

bnb_status_t op_int8_matmul(void* impl, int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                            int32_t* C, void* /*stream*/) {
  return guarded("int8_matmul", [&] {
    log_int8_matmul_path();
    int8_matmul(context_of(impl)->pool, M, N, K, A, B, C);
  });
}

bnb_status_t op_int8_mm_dequant(void* impl, int64_t M, int64_t N, const int32_t* C, const float* row_stats,
                                const float* col_stats, const void* bias, int32_t out_dtype, void* out,
                                void* /*stream*/) {
  return guarded("int8_mm_dequant", [&] {
    int8_mm_dequant(context_of(impl)->pool, M, N, C, row_stats, col_stats, bias, out_dtype, out);
  });
}

// Everything on the caller's thread in order, so *count is ready when this returns; the
// columns buffer holds K entries, so every outlier column fits.
bnb_status_t op_int8_linear_outliers(void* impl, int32_t dtype, int64_t M, int64_t N, int64_t K, const void* A,
                                     float threshold, const int8_t* W, const float* SCB, const void* bias, int8_t* q,
                                     float* row_stats, int32_t* C, int32_t* columns, int64_t* count, void* out,
                                     void* /*stream*/) {
  return guarded("int8_linear_outliers", [&] {
    ThreadPool& pool = context_of(impl)->pool;
    log_int8_matmul_path();
    int8_vectorwise_quant(pool, dtype, M, K, A, threshold, q, row_stats);
    int8_matmul(pool, M, N, K, q, W, C);
    int8_mm_dequant(pool, M, N, C, row_stats, SCB, bias, dtype, out);
    *count = threshold > 0.0f ? int8_outlier_columns(pool, dtype, M, K, A, threshold, columns, K) : 0;
    int8_add_outlier_product(pool, dtype, M, N, K, A, W, SCB, columns, *count, out);
  });
}

}  // namespace

void register_int8_ops(bnb_backend_ops_t* ops) {
  ops->int8_vectorwise_quant = op_int8_vectorwise_quant;
  ops->int8_outlier_columns = op_int8_outlier_columns;
  ops->int8_matmul = op_int8_matmul;
  ops->int8_mm_dequant = op_int8_mm_dequant;
  ops->int8_linear_outliers = op_int8_linear_outliers;
}

}  // namespace cpu
}  // namespace bnb
