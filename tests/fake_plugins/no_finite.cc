// A plugin that runs (host memory, one op) but has no find_nonfinite slot: a context that asks
// for the finite check must get BNB_ERR_NOT_SUPPORTED naming the backend from an op that scans,
// and a context that does not must run the op as before. It also reports a step limit of 5 for
// optimizers it does not offer (the core checks the limit before it looks for the op).
#include "fake_plugin.h"

namespace {

int32_t one_device(void) { return 1; }
void describe(char* buf, size_t cap) { std::strncpy(buf, "fake plugin without find_nonfinite", cap - 1); }
// Marks its outputs so the test sees that it ran.
bnb_status_t quantize_blockwise(void*, int32_t, const void*, int64_t n, int64_t, const float*, uint8_t* out,
                                float*, void*) {
  std::memset(out, 0x42, static_cast<size_t>(n));
  return BNB_SUCCESS;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int32_t bnb_backend_score(void) { return 1; }

extern "C" __attribute__((visibility("default"))) const bnb_backend_ops_t* bnb_backend_init(const bnb_host_api_t*) {
  static bnb_backend_ops_t ops = [] {
    bnb_backend_ops_t t = fake::host_table();
    t.device_count = one_device;
    t.describe = describe;
    t.quantize_blockwise = quantize_blockwise;
    t.optimizer_max_step = 5;
    return t;
  }();
  return &ops;
}
