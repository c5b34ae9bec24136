// A plugin that is valid in every respect but fills describe()'s whole buffer without a
// terminating NUL: the core must copy at most the buffer, never read past it. It scores 0
// (cannot run here), so it is loaded and described but never chosen.
#include "fake_plugin.h"

namespace {

void describe_unterminated(char* buf, size_t cap) { std::memset(buf, 'x', cap); }
bnb_status_t no_context(const bnb_context_options_t*, void** impl) {
  *impl = nullptr;
  return BNB_ERR_NOT_SUPPORTED;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int32_t bnb_backend_score(void) { return 0; }

extern "C" __attribute__((visibility("default"))) const bnb_backend_ops_t* bnb_backend_init(const bnb_host_api_t*) {
  static bnb_backend_ops_t ops = [] {
    bnb_backend_ops_t t = fake::host_table();
    t.describe = describe_unterminated;
    t.context_create = no_context;
    return t;
  }();
  return &ops;
}
