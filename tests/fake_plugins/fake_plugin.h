// What the fake plugins of the loader tests share: an ops table of the hip kind whose required
// entries work on host memory. Each plugin then sets what it is about.
#ifndef BNB_TESTS_FAKE_PLUGIN_H_
#define BNB_TESTS_FAKE_PLUGIN_H_

#include <cstdlib>
#include <cstring>

#include "backend_abi.h"

namespace fake {

inline bnb_status_t make_context(const bnb_context_options_t*, void** impl) {
  static int token = 0;
  *impl = &token;
  return BNB_SUCCESS;
}
inline void destroy_context(void*) {}
inline const float* default_code(void*, int32_t) {
  static const float code[256] = {};
  return code;
}
inline bnb_status_t alloc(void*, int64_t bytes, void** ptr) {
  *ptr = std::malloc(static_cast<size_t>(bytes));
  return *ptr != nullptr ? BNB_SUCCESS : BNB_ERR_OUT_OF_MEMORY;
}
inline bnb_status_t release(void*, void* ptr) {
  std::free(ptr);
  return BNB_SUCCESS;
}
inline bnb_status_t copy(void*, void* dst, const void* src, int64_t bytes, int32_t, void*) {
  std::memmove(dst, src, static_cast<size_t>(bytes));
  return BNB_SUCCESS;
}
inline bnb_status_t sync(void*, void*) { return BNB_SUCCESS; }

// A complete table with no op: contexts on host memory.
inline bnb_backend_ops_t host_table() {
  bnb_backend_ops_t ops = {};
  ops.struct_size = sizeof ops;
  ops.abi_version = BNB_BACKEND_ABI_VERSION;
  ops.kind = BNB_BACKEND_HIP;
  ops.name = "hip";
  ops.context_create = make_context;
  ops.context_destroy = destroy_context;
  ops.default_code = default_code;
  ops.mem_alloc = alloc;
  ops.mem_free = release;
  ops.mem_copy = copy;
  ops.synchronize = sync;
  return ops;
}

}  // namespace fake

#endif  // BNB_TESTS_FAKE_PLUGIN_H_
