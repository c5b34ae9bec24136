// Declared buffer lengths (bnb_buffer_declare / bnb_buffer_forget): the C ABI takes pointers
// without lengths, so a C caller may tell the core how long a buffer is. Every entry point's
// check_memory / check_array then compares the extent the op needs from a pointer with the end of
// the declared buffer that pointer lies in. The table is the calling thread's own (no locks on
// the hot path, and an empty table costs one comparison).
#include <cstdint>
#include <iterator>
#include <map>

#include "context.h"

using namespace bnb;

namespace {

// Declared buffers of this thread: start address -> end address (one past the last byte).
// Declarations never overlap.
thread_local std::map<uintptr_t, uintptr_t> t_declared;

// The declaration holding address `at`, or end().
std::map<uintptr_t, uintptr_t>::const_iterator holding(uintptr_t at) {
  auto it = t_declared.upper_bound(at);
  if (it == t_declared.begin()) return t_declared.end();
  --it;
  return at < it->second ? it : t_declared.end();
}

}  // namespace

namespace bnb {

bnb_status_t check_declared(const void* ptr, const char* name, size_t element_bytes, int64_t count) {
  if (t_declared.empty() || ptr == nullptr) return BNB_SUCCESS;
  const uintptr_t at = reinterpret_cast<uintptr_t>(ptr);
  const auto it = holding(at);
  if (it == t_declared.end()) return BNB_SUCCESS;
  const uint64_t left = it->second - at;
  unsigned __int128 needed = static_cast<unsigned __int128>(count < 0 ? 0 : count) * element_bytes;
  if (needed <= left) return BNB_SUCCESS;
  return failf(BNB_ERR_INVALID_ARGUMENT,
               "%s needs %llu bytes (%lld elements of %zu) but its declared buffer has %llu bytes from there "
               "(bnb_buffer_declare: %llu bytes at %p)",
               name, static_cast<unsigned long long>(needed), static_cast<long long>(count), element_bytes,
               static_cast<unsigned long long>(left), static_cast<unsigned long long>(it->second - it->first),
               reinterpret_cast<const void*>(it->first));
}

void forget_declared(const void* ptr) {
  if (!t_declared.empty()) t_declared.erase(reinterpret_cast<uintptr_t>(ptr));
}

}  // namespace bnb

extern "C" {

BNB_API bnb_status_t bnb_buffer_declare(const void* ptr, int64_t bytes) {
  BNB_API_GUARD_BEGIN
  BNB_CHECK(check_not_null(ptr, "ptr"));
  BNB_CHECK(check_count(bytes, "bytes"));
  const uintptr_t start = reinterpret_cast<uintptr_t>(ptr);
  if (start > UINTPTR_MAX - static_cast<uintptr_t>(bytes))
    return failf(BNB_ERR_INVALID_ARGUMENT, "ptr %p + bytes %lld wraps around the address space", ptr,
                 static_cast<long long>(bytes));
  const uintptr_t end = start + static_cast<uintptr_t>(bytes);
  // Another declaration may not overlap this one (the same start is a new length for it).
  const auto first_at_or_after = t_declared.lower_bound(start);
  const auto prev = first_at_or_after == t_declared.begin() ? t_declared.end() : std::prev(first_at_or_after);
  const auto next = t_declared.upper_bound(start);
  for (const auto& other : {prev, next}) {
    if (other == t_declared.end()) continue;
    if (other->first < end && start < other->second)
      return failf(BNB_ERR_INVALID_ARGUMENT,
                   "ptr %p (%lld bytes) overlaps the buffer declared at %p (%llu bytes): forget it first", ptr,
                   static_cast<long long>(bytes), reinterpret_cast<const void*>(other->first),
                   static_cast<unsigned long long>(other->second - other->first));
  }
  t_declared[start] = end;
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

BNB_API bnb_status_t bnb_buffer_forget(const void* ptr) {
  BNB_API_GUARD_BEGIN
  if (ptr == nullptr) return BNB_SUCCESS;
  if (t_declared.erase(reinterpret_cast<uintptr_t>(ptr)) == 0)
    return failf(BNB_ERR_INVALID_ARGUMENT, "ptr %p is not the start of a buffer this thread declared", ptr);
  return BNB_SUCCESS;
  BNB_API_GUARD_END
}

}  // extern "C"
