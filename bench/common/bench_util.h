// Shared by the benchmark programs: stop on the first failed bnb call, wall-clock timing, the
// command-line flags and parsing of comma/x-separated command-line lists.
#ifndef BNB_BENCH_COMMON_BENCH_UTIL_H_
#define BNB_BENCH_COMMON_BENCH_UTIL_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
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

// argv flag by flag; a flag's value is the argument after it:
//   Args args(argc, argv);
//   for (std::string a; args.next_flag(a);) {
//     if (a == "--n") n = args.int_value();
//     else if (a == "--plain") plain = true;
//     else args.usage("[--n N] [--plain]");
//   }
class Args {
 public:
  Args(int argc, char** argv) : argc_(argc), argv_(argv) {}

  // The next argument into `name`; false after the last.
  bool next_flag(std::string& name) {
    if (i_ + 1 >= argc_) return false;
    name = flag_ = argv_[++i_];
    return true;
  }

  // The current flag's value; without one, "<prog>: <flag> needs a value" and exit 2.
  std::string value() {
    if (i_ + 1 >= argc_) {
      std::fprintf(stderr, "%s: %s needs a value\n", argv_[0], flag_.c_str());
      std::exit(2);
    }
    return argv_[++i_];
  }
  // The value as a number (atoll, atof: 0 where it is none).
  int64_t int_value() { return std::atoll(value().c_str()); }
  double real_value() { return std::atof(value().c_str()); }

  // An unknown flag: "usage: <prog> <synopsis>" and exit 2.
  [[noreturn]] void usage(const char* synopsis) const {
    std::fprintf(stderr, "usage: %s %s\n", argv_[0], synopsis);
    std::exit(2);
  }

  // An unknown flag: "unknown argument <flag> (<hint>)" and exit 2.
  [[noreturn]] void unknown(const char* hint) const {
    std::fprintf(stderr, "unknown argument %s (%s)\n", flag_.c_str(), hint);
    std::exit(2);
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
  std::string flag_;
};

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

// n random fp16 values (bits) of either sign, exponents 12 .. max_exponent (the default: 1/8 <= |x|
// < 2), random mantissas: plausible activations.
inline std::vector<uint16_t> random_f16(size_t n, uint64_t seed, int max_exponent = 15) {
  std::mt19937_64 rng(seed);
  std::vector<uint16_t> v(n);
  const uint64_t span = static_cast<uint64_t>(max_exponent - 11);
  for (auto& h : v) h = static_cast<uint16_t>(((rng() & 1) << 15) | ((12 + rng() % span) << 10) | (rng() & 0x3ff));
  return v;
}

#endif  // BNB_BENCH_COMMON_BENCH_UTIL_H_
