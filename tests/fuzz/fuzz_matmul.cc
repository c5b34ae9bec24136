// libFuzzer target: the products (4-bit matmul and its plan, the LLM.int8() ops). See
// fuzz_common.h for the oracle. Dimensions stay small (a product's cost is M*N*K).
#include "fuzz_common.h"

using namespace bnb_fuzz;

namespace {

constexpr int64_t kDim = 96;

int32_t quant_type_arg(FuzzedDataProvider& in) { return in.PickValueInArray<int32_t>({BNB_FP4, BNB_NF4, BNB_NF4, 0, 7}); }

// The 4-bit weight of an [N, K] matrix and its scales (plain or nested), owned together.
struct Weight4 {
  Weight4(FuzzedDataProvider& in, int64_t N, int64_t K, int64_t bs)
      : n(mul(N, K)),
        nblocks(ceil_div(n, bs)),
        W(in, ceil_div(n, 2), 1),
        absmax(in, nblocks, 4),
        absmax_q(in, nblocks, 1),
        absmax2(in, ceil_div(nblocks, 256), 4),
        code2(in, 256, 4),
        offset(in, 1, 4) {
    bnb_scales_init(&scales);
    if (in.ConsumeBool()) {
      scales.absmax_q = absmax_q.get<uint8_t>();
      scales.absmax2 = absmax2.get<float>();
      scales.code2 = in.ConsumeBool() ? nullptr : code2.get<float>();
      scales.offset = offset.get<float>();
      scales.blocksize2 = in.ConsumeIntegralInRange<int>(0, 7) ? 256 : blocksize_arg(in);
    } else {
      scales.absmax = absmax.get<float>();
    }
  }
  int64_t n, nblocks;
  Buffer W, absmax, absmax_q, absmax2, code2, offset;
  bnb_scales_t scales;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  bnb_context_t ctx = in.ConsumeIntegralInRange<int>(0, 63) == 0 ? nullptr : context();
  const int op = in.ConsumeIntegralInRange<int>(0, 7);
  const int32_t dtype = dtype_arg(in);
  const int64_t M = size_arg(in, kDim), N = size_arg(in, kDim), K = size_arg(in, 4 * kDim);
  const int64_t es = dtype_bytes(dtype);
  switch (op) {
    case 0: {  // bnb_gemm_4bit
      const int32_t qt = quant_type_arg(in);
      const int64_t bs = blocksize_arg(in);
      Weight4 w(in, N, K, bs);
      Buffer A(in, mul(M, K), es), bias(in, N, es), out(in, mul(M, N), es);
      check(bnb_gemm_4bit(ctx, dtype, M, N, K, A.get(), w.W.get<uint8_t>(),
                          in.ConsumeIntegralInRange<int>(0, 31) ? &w.scales : nullptr, qt, bs,
                          in.ConsumeBool() ? nullptr : bias.get(), out.get(), nullptr));
      break;
    }
    case 7: {  // bnb_gemm_4bit_transposed
      const int32_t qt = quant_type_arg(in);
      const int64_t bs = blocksize_arg(in);
      Weight4 w(in, N, K, bs);
      Buffer A(in, mul(M, N), es), out(in, mul(M, K), es);
      check(bnb_gemm_4bit_transposed(ctx, dtype, M, N, K, A.get(), w.W.get<uint8_t>(),
                                     in.ConsumeIntegralInRange<int>(0, 31) ? &w.scales : nullptr, qt, bs, out.get(),
                                     nullptr));
      break;
    }
    case 1: {  // bnb_gemm_4bit_plan_create / run / destroy
      const int32_t qt = quant_type_arg(in);
      const int64_t bs = blocksize_arg(in);
      Weight4 w(in, N, K, bs);
      Buffer A(in, mul(M, K), es), bias(in, N, es), out(in, mul(M, N), es);
      bnb_gemm4_plan_t plan = nullptr;
      const bnb_status_t s = bnb_gemm_4bit_plan_create(ctx, dtype, N, K, w.W.get<uint8_t>(), &w.scales, qt, bs,
                                                       in.ConsumeBool() ? nullptr : bias.get(),
                                                       in.ConsumeIntegralInRange<int>(0, 31) ? &plan : nullptr);
      check(s);
      if (s == BNB_SUCCESS) {
        check(bnb_gemm_4bit_plan_run(plan, M, A.get(), out.get(), nullptr));
        check(bnb_gemm_4bit_plan_destroy(plan));
      } else if (plan != nullptr) {
        __builtin_trap();  // a failed creation leaves *plan NULL (docs/API.md)
      }
      break;
    }
    case 2: {  // bnb_int8_vectorwise_quant
      const float t = in.PickValueInArray({0.0f, 6.0f, -1.0f, 1e30f, std::numeric_limits<float>::infinity(),
                                           std::numeric_limits<float>::quiet_NaN()});
      Buffer A(in, mul(M, K), es), q(in, mul(M, K), 1), stats(in, M, 4);
      check(bnb_int8_vectorwise_quant(ctx, dtype, M, K, A.get(), t, q.get<int8_t>(), stats.get<float>(), nullptr));
      break;
    }
    case 3: {  // bnb_int8_outlier_columns
      const float t = in.PickValueInArray({6.0f, 0.5f, 0.0f, -1.0f, std::numeric_limits<float>::quiet_NaN()});
      // The buffer holds what `capacity` promises (the library may fill all of it); a negative
      // capacity must be refused.
      const int64_t capacity = in.ConsumeIntegralInRange<int>(0, 15) == 0
                                   ? -in.ConsumeIntegralInRange<int64_t>(1, int64_t{1} << 40)
                                   : in.ConsumeIntegralInRange<int64_t>(0, 4 * kDim);
      Buffer A(in, mul(M, K), es), cols(in, capacity, 4);
      int64_t count = 0;
      check(bnb_int8_outlier_columns(ctx, dtype, M, K, A.get(), t, cols.get<int32_t>(), capacity,
                                     in.ConsumeIntegralInRange<int>(0, 15) ? &count : nullptr, nullptr));
      break;
    }
    case 4: {  // bnb_int8_matmul
      Buffer A(in, mul(M, K), 1), B(in, mul(N, K), 1), C(in, mul(M, N), 4);
      check(bnb_int8_matmul(ctx, M, N, K, A.get<int8_t>(), B.get<int8_t>(), C.get<int32_t>(), nullptr));
      break;
    }
    case 5: {  // bnb_int8_mm_dequant
      Buffer C(in, mul(M, N), 4), rs(in, M, 4), cs(in, N, 4), bias(in, N, es), out(in, mul(M, N), es);
      check(bnb_int8_mm_dequant(ctx, M, N, C.get<int32_t>(), rs.get<float>(), cs.get<float>(),
                                in.ConsumeBool() ? nullptr : bias.get(), dtype, out.get(), nullptr));
      break;
    }
    default: {  // bnb_int8_linear
      const float t = in.PickValueInArray({0.0f, 6.0f, -2.0f, std::numeric_limits<float>::quiet_NaN()});
      Buffer A(in, mul(M, K), es), W(in, mul(N, K), 1), SCB(in, N, 4), bias(in, N, es), q(in, mul(M, K), 1),
          rs(in, M, 4), C(in, mul(M, N), 4), out(in, mul(M, N), es);
      check(bnb_int8_linear(ctx, dtype, M, N, K, A.get(), t, W.get<int8_t>(), SCB.get<float>(),
                            in.ConsumeBool() ? nullptr : bias.get(), q.get<int8_t>(), rs.get<float>(),
                            C.get<int32_t>(), out.get(), nullptr));
      break;
    }
  }
  return 0;
}
