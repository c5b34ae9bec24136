// A plugin that is valid in every respect but fills describe()'s whole buffer without a
// terminating NUL: the core must copy at most the buffer, never read past it. It scores 0
// (cannot run here), so it is loaded and described but never chosen.
#include <cstring>

#include "backend_abi.h"

namespace {

void describe_unterminated(char* buf, size_t cap) { std::memset(buf, 'x', cap); }
bnb_status_t no_context(const bnb_context_options_t*, void** impl) {
  *impl = nullptr;
  return BNB_ERR_NOT_SUPPORTED;
}
void no_destroy(void*) {}
const float* no_code(void*, int32_t) { return nullptr; }
bnb_status_t no_alloc(void*, int64_t, void** ptr) {
  *ptr = nullptr;
  return BNB_ERR_NOT_SUPPORTED;
}
bnb_status_t no_free(void*, void*) { return BNB_ERR_NOT_SUPPORTED; }
bnb_status_t no_copy(void*, void*, const void*, int64_t, int32_t, void*) { return BNB_ERR_NOT_SUPPORTED; }
bnb_status_t no_sync(void*, void*) { return BNB_ERR_NOT_SUPPORTED; }

}  // namespace

extern "C" __attribute__((visibility("default"))) int32_t bnb_backend_score(void) { return 0; }

extern "C" __attribute__((visibility("default"))) const bnb_backend_ops_t* bnb_backend_init(const bnb_host_api_t*) {
  static bnb_backend_ops_t ops = {};
  ops.struct_size = sizeof ops;
  ops.abi_version = BNB_BACKEND_ABI_VERSION;
  ops.kind = BNB_BACKEND_HIP;
  ops.name = "hip";
  ops.describe = describe_unterminated;
  ops.context_create = no_context;
  ops.context_destroy = no_destroy;
  ops.default_code = no_code;
  ops.mem_alloc = no_alloc;
  ops.mem_free = no_free;
  ops.mem_copy = no_copy;
  ops.synchronize = no_sync;
  return &ops;
}
