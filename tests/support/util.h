// Test helpers shared by the suites: contexts, backend buffers, random data, dtype conversions.
#ifndef BNB_TESTS_UTIL_H_
#define BNB_TESTS_UTIL_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bnb.h"

namespace bnb_test {

#define ASSERT_BNB_OK(expr)                                                                     \
  do {                                                                                          \
    const bnb_status_t s_ = (expr);                                                             \
    ASSERT_EQ(s_, BNB_SUCCESS) << #expr << ": " << bnb_status_string(s_) << ": "                \
                               << bnb_last_error_message();                                      \
  } while (0)

// Expects `call` to return `expected` and the thread's message to mention `needle`.
#define EXPECT_FAILS(call, expected, needle)                                                     \
  do {                                                                                           \
    const bnb_status_t s_ = (call);                                                              \
    EXPECT_EQ(s_, expected) << #call << " -> " << bnb_status_string(s_);                         \
    EXPECT_NE(std::string(bnb_last_error_message()).find(needle), std::string::npos)             \
        << #call << ": message \"" << bnb_last_error_message() << "\" lacks \"" << needle << "\""; \
  } while (0)

// The kinds of every backend that is available on this machine.
std::vector<int32_t> available_backends();
// Whether the CPU backend is among them.
bool cpu_available();
std::string backend_label(int32_t kind);

// RAII context on one backend (device 0); check_finite as bnb_context_options_t's.
class Context {
 public:
  explicit Context(int32_t kind, int32_t num_threads = 0, int32_t check_finite = 0);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  bnb_context_t get() const { return ctx_; }
  int32_t kind() const { return kind_; }
  bool ok() const { return ctx_ != nullptr; }

 private:
  bnb_context_t ctx_ = nullptr;
  int32_t kind_;
};

// Memory of a context's backend, filled from and read back to the host.
class Buffer {
 public:
  Buffer(const Context& ctx, size_t bytes);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  void upload(const void* host, size_t bytes);
  void fill(uint8_t byte);  // poison
  std::vector<uint8_t> download() const;
  template <typename T>
  std::vector<T> download_as() const {
    std::vector<uint8_t> raw = download();
    std::vector<T> out(raw.size() / sizeof(T));
    std::memcpy(out.data(), raw.data(), out.size() * sizeof(T));
    return out;
  }

 private:
  const Context& ctx_;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

size_t dtype_size(int32_t dtype);
int32_t dtype_from_name(const std::string& name);  // "float32" -> BNB_F32 ...
// Converts floats to the storage bytes of `dtype` (RNE) and back (exact widening).
std::vector<uint8_t> to_dtype(const std::vector<float>& values, int32_t dtype);
std::vector<float> from_dtype(const std::vector<uint8_t>& bytes, int32_t dtype);

// Random test data: normal(0, scale), with occasional zero blocks, tiny values and outliers when
// `features` is set; reproducible from the seed.
std::vector<float> random_normal(int64_t n, uint64_t seed, float scale = 1.0f);
std::vector<float> random_with_features(int64_t n, int64_t blocksize, uint64_t seed);

}  // namespace bnb_test

#endif  // BNB_TESTS_UTIL_H_
