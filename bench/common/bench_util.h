// Shared by the benchmark programs: stop on the first failed bnb call, wall-clock timing and
// parsing of comma/x-separated command-line lists.
#ifndef BNB_BENCH_COMMON_BENCH_UTIL_H_
#define BNB_BENCH_COMMON_BENCH_UTIL_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bnb.h"

#define BNB_OK(expr)                                                                               \
  do {                                                                                             \
    const bnb_status_t s_ = (expr);                                                                \
    if (s_ != BNB_SUCCESS) {                                                                       \
      std::fprintf(stderr, "%s:%d %s: %s: %s\n", __FILE__, __LINE__, #expr, bnb_status_string(s_), \
                   bnb_last_error_message());                                                      \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// "a,b,c" -> {"a", "b", "c"} (empty fields kept).
inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

// "1,16,256" -> {1, 16, 256}.
inline std::vector<int64_t> parse_int_list(const std::string& s) {
  std::vector<int64_t> out;
  for (const std::string& field : split(s, ',')) out.push_back(std::atoll(field.c_str()));
  return out;
}

#endif  // BNB_BENCH_COMMON_BENCH_UTIL_H_
