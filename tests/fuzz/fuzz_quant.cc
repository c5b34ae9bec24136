// libFuzzer target: the quantization family (8-bit blockwise, 4-bit, double quantization, code
// tables). See fuzz_common.h for the oracle.
#include "fuzz_common.h"

using namespace bnb_fuzz;

namespace {

bnb_scales_t scales_arg(FuzzedDataProvider& in, int64_t nblocks, Buffer& absmax, Buffer& absmax_q, Buffer& absmax2,
                        Buffer& code2, Buffer& offset, bool nested) {
  bnb_scales_t s;
  bnb_scales_init(&s);
  if (nested) {
    s.absmax_q = absmax_q.get<uint8_t>();
    s.absmax2 = absmax2.get<float>();
    s.code2 = in.ConsumeBool() ? nullptr : code2.get<float>();
    s.offset = offset.get<float>();
    s.blocksize2 = in.ConsumeBool() ? 256 : blocksize_arg(in);
  } else {
    s.absmax = absmax.get<float>();
  }
  (void)nblocks;
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  bnb_context_t ctx = in.ConsumeIntegralInRange<int>(0, 63) == 0 ? nullptr : context();
  switch (in.ConsumeIntegralInRange<int>(0, 6)) {
    case 0: {  // bnb_quantize_blockwise
      const int32_t dtype = dtype_arg(in);
      const int64_t n = size_arg(in), bs = blocksize_arg(in);
      Buffer A(in, n, dtype_bytes(dtype)), code(in, 256, 4), out(in, n, 1), absmax(in, ceil_div(n, bs), 4);
      check(bnb_quantize_blockwise(ctx, dtype, A.get(), n, bs, in.ConsumeBool() ? nullptr : code.get<float>(),
                                   out.get<uint8_t>(), absmax.get<float>(), nullptr));
      break;
    }
    case 1: {  // bnb_dequantize_blockwise
      const int32_t dtype = dtype_arg(in);
      const int64_t n = size_arg(in), bs = blocksize_arg(in);
      Buffer q(in, n, 1), absmax(in, ceil_div(n, bs), 4), code(in, 256, 4), out(in, n, dtype_bytes(dtype));
      check(bnb_dequantize_blockwise(ctx, q.get<uint8_t>(), absmax.get<float>(),
                                     in.ConsumeBool() ? nullptr : code.get<float>(), n, bs, dtype, out.get(), nullptr));
      break;
    }
    case 2: {  // bnb_quantize_4bit
      const int32_t qt = in.PickValueInArray<int32_t>({BNB_FP4, BNB_NF4, BNB_NF4, 0, 3, -1});
      const int32_t dtype = dtype_arg(in);
      const int64_t n = size_arg(in), bs = blocksize_arg(in);
      Buffer A(in, n, dtype_bytes(dtype)), packed(in, ceil_div(n, 2), 1), absmax(in, ceil_div(n, bs), 4);
      check(bnb_quantize_4bit(ctx, qt, dtype, A.get(), n, bs, packed.get<uint8_t>(), absmax.get<float>(), nullptr));
      break;
    }
    case 3: {  // bnb_dequantize_4bit, plain or nested scales
      const int32_t qt = in.PickValueInArray<int32_t>({BNB_FP4, BNB_NF4, BNB_NF4, 0, 3});
      const int32_t dtype = dtype_arg(in);
      const int64_t n = size_arg(in), bs = blocksize_arg(in);
      const int64_t nblocks = ceil_div(n, bs);
      const bool nested = in.ConsumeBool();
      Buffer packed(in, ceil_div(n, 2), 1), absmax(in, nblocks, 4), absmax_q(in, nblocks, 1),
          absmax2(in, ceil_div(nblocks, 256), 4), code2(in, 256, 4), offset(in, 1, 4), out(in, n, dtype_bytes(dtype));
      bnb_scales_t s = scales_arg(in, nblocks, absmax, absmax_q, absmax2, code2, offset, nested);
      check(bnb_dequantize_4bit(ctx, qt, packed.get<uint8_t>(), in.ConsumeIntegralInRange<int>(0, 31) ? &s : nullptr,
                                n, bs, dtype, out.get(), nullptr));
      break;
    }
    case 4: {  // bnb_compress_absmax
      const int64_t nblocks = size_arg(in);
      Buffer absmax(in, nblocks, 4), absmax_q(in, nblocks, 1), absmax2(in, ceil_div(nblocks, 256), 4),
          offset(in, 1, 4);
      check(bnb_compress_absmax(ctx, absmax.get<float>(), nblocks, absmax_q.get<uint8_t>(), absmax2.get<float>(),
                                offset.get<float>(), nullptr));
      break;
    }
    case 5: {  // bnb_get_code_table
      const int32_t which = in.PickValueInArray({0, 1, 2, 3, -1, 4, 1 << 30});
      Buffer out(in, 256, 4);
      int64_t count = 0;
      check(bnb_get_code_table(which, out.get<float>(), in.ConsumeIntegralInRange<int>(0, 15) ? &count : nullptr));
      break;
    }
    default: {  // bnb_status_string on any value, including ones outside the enum
      const int32_t v = in.ConsumeIntegral<int32_t>();
      const char* s = bnb_status_string(static_cast<bnb_status_t>(v));
      if (s == nullptr || s[0] == '\0') __builtin_trap();
      break;
    }
  }
  return 0;
}
