// Shared by the libFuzzer targets over the C ABI (tests/fuzz/README.md).
//
// Each target decodes the fuzzer's bytes into one call: scalar arguments drawn from the values the
// ABI must accept AND the ones it must refuse (negative sizes, products that overflow int64,
// unknown dtypes, enum values and blocksizes, NULL pointers), and buffers sized for what the
// arguments would need if they were valid. The oracle:
//   * no crash, hang or sanitizer report (a too-small buffer can only be touched if the library
//     accepted arguments that imply more than was passed: sizes that overflow must be refused);
//   * the status is one of the enum's values;
//   * a failed call leaves a non-empty message, and bnb_status_string names the status.
// Contents are fuzzer bytes, so NaN, inf and subnormals reach the kernels too.
#ifndef BNB_TESTS_FUZZ_COMMON_H_
#define BNB_TESTS_FUZZ_COMMON_H_

#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "bnb.h"

namespace bnb_fuzz {

// Arrays never get more than this many bytes: sizes past it come only from the refused values.
constexpr int64_t kMaxBytes = int64_t{1} << 20;
constexpr int64_t kMaxElems = 4096;

inline bnb_context_t context() {
  static bnb_context_t ctx = [] {
    bnb_context_options_t o;
    bnb_context_options_init(&o);
    o.backend = BNB_BACKEND_CPU;
    o.num_threads = 1;  // the fuzzer's own process: keep each run short and deterministic
    bnb_context_t c = nullptr;
    if (bnb_context_create(&o, &c) != BNB_SUCCESS) {
      std::fprintf(stderr, "bnb_fuzz: no CPU context: %s\n", bnb_last_error_message());
      std::abort();
    }
    return c;
  }();
  return ctx;
}

// A size: mostly small and valid, sometimes zero, negative or large enough that any product with
// an element size or another dimension overflows int64.
inline int64_t size_arg(FuzzedDataProvider& in, int64_t max_small = kMaxElems) {
  switch (in.ConsumeIntegralInRange<int>(0, 15)) {
    case 0: return 0;
    case 1: return -in.ConsumeIntegralInRange<int64_t>(1, int64_t{1} << 40);
    case 2: return std::numeric_limits<int64_t>::max();
    case 3: return std::numeric_limits<int64_t>::min();
    default: return in.ConsumeIntegralInRange<int64_t>(1, max_small);
  }
}

inline int32_t dtype_arg(FuzzedDataProvider& in) {
  static const int32_t kValues[] = {BNB_F32, BNB_F16, BNB_BF16, BNB_F32, BNB_F16, BNB_BF16,
                                    BNB_U8,  BNB_I8,  BNB_I32,  -1,      6,       1 << 20};
  return in.PickValueInArray(kValues);
}

inline int64_t blocksize_arg(FuzzedDataProvider& in) {
  static const int64_t kValues[] = {32, 64, 128, 256, 512, 1024, 2048, 4096, 64, 256,
                                    0,  -64, 16, 48, 8192, int64_t{1} << 40};
  return in.PickValueInArray(kValues);
}

inline int64_t dtype_bytes(int32_t dtype) {
  switch (dtype) {
    case BNB_F32: case BNB_I32: return 4;
    case BNB_F16: case BNB_BF16: return 2;
    case BNB_U8: case BNB_I8: return 1;
    default: return 4;
  }
}

// elems * bytes, or -1 when that is negative, overflows or passes kMaxBytes (the buffer is then
// a token 64 bytes: only a call that should be refused can see it).
inline int64_t bytes_for(int64_t elems, int64_t bytes) {
  if (elems < 0 || bytes <= 0 || elems > kMaxBytes / bytes) return -1;
  return elems * bytes;
}

inline int64_t mul(int64_t a, int64_t b) {
  if (a < 0 || b < 0) return -1;
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a) return -1;
  return a * b;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a < 0 || b <= 0) ? -1 : a / b + (a % b != 0); }

// One array argument: fuzzer bytes in a heap block of exactly the size needed (so ASan sees any
// access past it), or NULL now and then.
class Buffer {
 public:
  Buffer(FuzzedDataProvider& in, int64_t elems, int64_t elem_bytes) {
    null_ = in.ConsumeIntegralInRange<int>(0, 31) == 0;
    int64_t bytes = bytes_for(elems, elem_bytes);
    if (bytes < 0) bytes = 64;
    data_.resize(static_cast<size_t>(bytes) + (bytes == 0 ? 1 : 0));
    const std::vector<uint8_t> src = in.ConsumeBytes<uint8_t>(static_cast<size_t>(bytes));
    if (!src.empty()) std::memcpy(data_.data(), src.data(), src.size());
    size_ = static_cast<size_t>(bytes);
  }
  template <typename T = void>
  T* get() {
    if (null_) return nullptr;
    // An empty array still needs a valid address; vectors give one (data_ holds at least a byte).
    return reinterpret_cast<T*>(data_.data());
  }
  size_t size() const { return size_; }

 private:
  std::vector<uint8_t> data_;
  size_t size_ = 0;
  bool null_ = false;
};

// The oracle every call goes through.
inline void check(bnb_status_t s) {
  if (s < BNB_SUCCESS || s > BNB_ERR_INTERNAL) __builtin_trap();
  const char* name = bnb_status_string(s);
  if (name == nullptr || name[0] == '\0') __builtin_trap();
  if (s != BNB_SUCCESS) {
    const char* m = bnb_last_error_message();
    if (m == nullptr || m[0] == '\0') __builtin_trap();
  }
}

}  // namespace bnb_fuzz

#endif  // BNB_TESTS_FUZZ_COMMON_H_
