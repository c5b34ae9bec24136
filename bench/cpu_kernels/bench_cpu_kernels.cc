// Micro-benchmark of the CPU quantization kernels (bnb_cpu_kernels), without the core:
// GB/s = (input bytes read + output bytes written) / best time, next to the copy bandwidth of
// the same thread pool. Prints a table and writes JSON (default bench_cpu_kernels.json).
//   bnb_bench_cpu_kernels [--n N] [--threads T] [--reps R] [--json PATH]
// (bnb bench measures the same ops through the public API.)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "quant_kernels.h"
#include "tables.h"

namespace {

struct Result {
  std::string name;
  double seconds;
  double bytes;
};

double best_seconds(int reps, const std::function<void()>& fn) {
  fn();  // warm-up: page faults, caches
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

template <class T>
T* alloc(int64_t count) {
  const size_t bytes = (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
  T* p = static_cast<T*>(std::aligned_alloc(64, bytes));
  std::memset(p, 0, bytes);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = int64_t{64} << 20;
  int threads = 2, reps = 5;
  std::string json = "bench_cpu_kernels.json";
  Args args(argc, argv);
  for (std::string a; args.next_flag(a);) {  // other arguments are ignored
    if (a == "--n") n = args.int_value();
    else if (a == "--threads") threads = args.int_value();
    else if (a == "--reps") reps = args.int_value();
    else if (a == "--json") json = args.value();
  }
  bnb::cpu::ThreadPool pool(threads);
  float* A = alloc<float>(n);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < n; ++i) A[i] = normal(rng);
  uint8_t* q = alloc<uint8_t>(n);
  float* y = alloc<float>(n);
  float* absmax = alloc<float>(n / 32 + 1);
  float code[256];
  bnb::copy_code_table(BNB_CODE_DYNAMIC_SIGNED, code);

  std::vector<Result> results;
  const double fn = static_cast<double>(n);
  {
    const int64_t tasks = threads * 4;
    const double s = best_seconds(reps, [&] {
      pool.run(tasks, [&](int64_t t) {
        const int64_t b = t * n / tasks, e = (t + 1) * n / tasks;
        std::memcpy(y + b, A + b, static_cast<size_t>(e - b) * 4);
      });
    });
    results.push_back({"copy fp32 (memcpy)", s, 8 * fn});
  }
  for (int64_t bs : {4096, 256, 64}) {
    const double s = best_seconds(reps, [&] { bnb::cpu::quantize_blockwise(pool, BNB_F32, A, n, bs, code, q, absmax); });
    results.push_back({"quantize_blockwise bs=" + std::to_string(bs), s, 5 * fn + 4 * fn / bs});
    const double d = best_seconds(reps, [&] { bnb::cpu::dequantize_blockwise(pool, q, absmax, code, n, bs, BNB_F32, y); });
    results.push_back({"dequantize_blockwise bs=" + std::to_string(bs), d, 5 * fn + 4 * fn / bs});
  }
  for (int32_t qt : {BNB_NF4, BNB_FP4}) {
    const char* name = qt == BNB_NF4 ? "nf4" : "fp4";
    for (int64_t bs : {64, 4096}) {
      const double s = best_seconds(reps, [&] { bnb::cpu::quantize_4bit(pool, qt, BNB_F32, A, n, bs, q, absmax); });
      results.push_back({std::string("quantize_4bit ") + name + " bs=" + std::to_string(bs), s, 4.5 * fn + 4 * fn / bs});
      bnb_scales_resolved_t scales{};
      scales.absmax = absmax;
      const double d = best_seconds(reps, [&] { bnb::cpu::dequantize_4bit(pool, qt, q, scales, n, bs, BNB_F32, y); });
      results.push_back({std::string("dequantize_4bit ") + name + " bs=" + std::to_string(bs), d, 4.5 * fn + 4 * fn / bs});
    }
  }

  std::printf("bnb CPU kernels: n=%lld fp32, %d threads, SIMD target %s\n", static_cast<long long>(n), threads,
              bnb::cpu::chosen_target_name());
  std::printf("%-32s %10s %10s %8s\n", "op", "ms", "GB/s", "%copy");
  const double copy_gbs = results[0].bytes / results[0].seconds / 1e9;
  for (const Result& r : results) {
    const double gbs = r.bytes / r.seconds / 1e9;
    std::printf("%-32s %10.2f %10.2f %7.0f%%\n", r.name.c_str(), r.seconds * 1e3, gbs, 100.0 * gbs / copy_gbs);
  }
  if (FILE* f = std::fopen(json.c_str(), "w")) {
    std::fprintf(f, "{\"n\": %lld, \"threads\": %d, \"target\": \"%s\", \"results\": [",
                 static_cast<long long>(n), threads, bnb::cpu::chosen_target_name());
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f, "%s\n  {\"op\": \"%s\", \"seconds\": %.6f, \"bytes\": %.0f, \"gb_per_s\": %.3f}", i ? "," : "",
                   r.name.c_str(), r.seconds, r.bytes, r.bytes / r.seconds / 1e9);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  std::free(A);
  std::free(q);
  std::free(y);
  std::free(absmax);
  return 0;
}
