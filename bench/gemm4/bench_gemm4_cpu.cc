// bnb_gemm_4bit (or, with --transposed, bnb_gemm_4bit_transposed: out[M,K] = A[M,N] @ W) on the
// CPU backend through the public API: time per call, weight bandwidth (packed bytes + scales read
// once per call) and its share of the machine's copy bandwidth measured in the same run with the
// same thread count, and GFLOP/s (2*M*N*K per call).
// The weights rotate over enough copies that the last-level cache never holds the one in use.
//
//   bnb_bench_gemm4_cpu [--threads 2] [--shapes 11008x4096,4096x4096] [--m 1,4,16]
//                       [--dtypes bf16,f32,f16] [--quant nf4|fp4] [--blocksize 64] [--plain]
//                       [--min-ms 400] [--transposed] [--json out.json]
//
// Copy bandwidth: `threads` threads each memcpy one part of a 256 MiB buffer into another;
// counted STREAM-style as bytes read + bytes written, best of 5. Read bandwidth: the threads scan
// one 256 MiB buffer with memchr (bytes read, best of 5): the ceiling for a kernel that
// streams its weights in (%read).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bnb.h"
#include "bench_util.h"

namespace {

int32_t dtype_of(const std::string& name) {
  if (name == "f32" || name == "fp32") return BNB_F32;
  if (name == "f16" || name == "fp16") return BNB_F16;
  if (name == "bf16") return BNB_BF16;
  std::fprintf(stderr, "unknown dtype %s\n", name.c_str());
  std::exit(2);
}

// Best of 5 runs of part(b, e) over [0, 256 MiB) split among `threads` threads: GB/s of
// `counted` bytes per byte of the range.
template <class Part>
double bandwidth(int threads, double counted, const Part& part) {
  const size_t bytes = size_t{256} << 20;
  double best = 0.0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] { part(bytes * t / threads, bytes * (t + 1) / threads); });
    }
    for (auto& th : pool) th.join();
    const double s = seconds_since(t0);
    best = std::max(best, counted * static_cast<double>(bytes) / s / 1e9);
  }
  return best;
}

// STREAM-style copy bandwidth (GB/s, read + write bytes) with `threads` threads.
double copy_bandwidth(int threads) {
  std::vector<uint8_t> src(size_t{256} << 20, 1), dst(src.size(), 0);
  return bandwidth(threads, 2.0, [&](size_t b, size_t e) { std::memcpy(dst.data() + b, src.data() + b, e - b); });
}

// Read bandwidth (GB/s of bytes read) with `threads` threads: what a kernel that only streams its
// weights in could reach at best.
double read_bandwidth(int threads) {
  // memchr for a byte that is not there: the C library's vector scan reads every byte once.
  std::vector<uint8_t> src(size_t{256} << 20, 1);
  std::atomic<size_t> found{0};  // stored, so the scans stay
  return bandwidth(threads, 1.0, [&](size_t b, size_t e) {
    if (std::memchr(src.data() + b, 0, e - b) != nullptr) ++found;
  });
}

struct Result {
  int64_t M, N, K;
  std::string dtype;
  double ms, weight_gbps, pct_copy, pct_read, gflops;
};

// Host bytes of `dtype` holding normal(0, scale) values (RNE).
std::vector<uint8_t> random_bytes(int64_t n, int32_t dtype, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> f(static_cast<size_t>(n));
  for (auto& v : f) v = dist(rng);
  if (dtype == BNB_F32) {
    std::vector<uint8_t> out(f.size() * 4);
    std::memcpy(out.data(), f.data(), out.size());
    return out;
  }
  std::vector<uint8_t> out(f.size() * 2);
  for (size_t i = 0; i < f.size(); ++i) {
    uint32_t b;
    std::memcpy(&b, &f[i], 4);
    uint16_t h;
    if (dtype == BNB_BF16) {
      h = static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
    } else {  // values are small and normal: a simple RNE conversion suffices
      const uint32_t sign = (b >> 16) & 0x8000u, a = b & 0x7fffffffu;
      if (a < 0x38800000u) {
        h = static_cast<uint16_t>(sign);
      } else {
        h = static_cast<uint16_t>(sign | ((a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13));
      }
    }
    std::memcpy(&out[i * 2], &h, 2);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  std::string shapes = "11008x4096,4096x4096,4096x11008", ms_list = "1,4,16,64,256", dtypes = "bf16,f32,f16";
  std::string quant = "nf4", json;
  int64_t blocksize = 64;
  bool nested = true, transposed = false;
  double min_ms = 400.0;
  Args args(argc, argv);
  for (std::string a; args.next_flag(a);) {
    if (a == "--threads") threads = args.int_value();
    else if (a == "--shapes") shapes = args.value();
    else if (a == "--m") ms_list = args.value();
    else if (a == "--dtypes") dtypes = args.value();
    else if (a == "--quant") quant = args.value();
    else if (a == "--blocksize") blocksize = args.int_value();
    else if (a == "--plain") nested = false;
    else if (a == "--transposed") transposed = true;
    else if (a == "--min-ms") min_ms = args.real_value();
    else if (a == "--json") json = args.value();
    else args.unknown("see the comment at the top of bench_gemm4_cpu.cc");
  }
  const int32_t qt = quant == "fp4" ? BNB_FP4 : BNB_NF4;

  bnb_context_options_t opts;
  BNB_OK(bnb_context_options_init(&opts));
  opts.backend = BNB_BACKEND_CPU;
  opts.num_threads = threads;
  bnb_context_t ctx = nullptr;
  BNB_OK(bnb_context_create(&opts, &ctx));

  const double copy_gbps = copy_bandwidth(threads);
  const double read_gbps = read_bandwidth(threads);
  std::printf("CPU gemm_4bit%s, %d threads, %s bs%lld %s; copy bandwidth %.1f GB/s (read+write), read %.1f GB/s\n",
              transposed ? "_transposed" : "", threads, quant.c_str(), static_cast<long long>(blocksize), nested ? "nested" : "plain", copy_gbps,
              read_gbps);
  std::printf("%7s %6s %6s %5s %10s %10s %8s %8s %9s\n", "N", "K", "M", "dtype", "ms", "W GB/s", "%copy", "%read",
              "GFLOP/s");

  std::vector<Result> results;
  for (const std::string& shape : split(shapes, ',')) {
    const auto nk = split(shape, 'x');
    if (nk.size() != 2) {
      std::fprintf(stderr, "bad shape %s (want NxK)\n", shape.c_str());
      return 2;
    }
    const int64_t N = std::atoll(nk[0].c_str()), K = std::atoll(nk[1].c_str());
    const int64_t n = N * K, nb = n / blocksize;
    // One quantized weight, copied so the set in rotation exceeds the last-level cache 4x.
    const std::vector<uint8_t> w_f32 = random_bytes(n, BNB_F32, 1, static_cast<float>(1.0 / std::sqrt(double(K))));
    std::vector<uint8_t> packed(static_cast<size_t>(n / 2));
    std::vector<float> absmax(static_cast<size_t>(nb));
    BNB_OK(bnb_quantize_4bit(ctx, qt, BNB_F32, w_f32.data(), n, blocksize, packed.data(), absmax.data(), nullptr));
    std::vector<uint8_t> absmax_q(static_cast<size_t>(nb));
    std::vector<float> absmax2(static_cast<size_t>((nb + 255) / 256));
    float offset = 0.0f;
    BNB_OK(bnb_compress_absmax(ctx, absmax.data(), nb, absmax_q.data(), absmax2.data(), &offset, nullptr));
    const double scale_bytes = nested ? static_cast<double>(nb) + 4.0 * absmax2.size() : 4.0 * nb;
    const double weight_bytes = static_cast<double>(packed.size()) + scale_bytes;
    const int copies = static_cast<int>(std::max<double>(2.0, std::ceil((128.0 * (1 << 20)) / weight_bytes)));
    std::vector<std::vector<uint8_t>> packed_copies(copies, packed), q_copies(copies, absmax_q);
    std::vector<std::vector<float>> absmax_copies(copies, absmax);

    for (const std::string& dname : split(dtypes, ',')) {
      const int32_t dtype = dtype_of(dname);
      const size_t es = dtype == BNB_F32 ? 4 : 2;
      for (const std::string& mstr : split(ms_list, ',')) {
        const int64_t M = std::atoll(mstr.c_str());
        // transposed: A is [M, N] and out [M, K] (no bias)
        const std::vector<uint8_t> A = random_bytes(M * (transposed ? N : K), dtype, 2, 1.0f);
        const std::vector<uint8_t> bias = random_bytes(N, dtype, 3, 0.1f);
        std::vector<uint8_t> out(static_cast<size_t>(M * (transposed ? K : N)) * es);
        int call = 0;
        const auto run = [&]() {
          const int c = call++ % copies;
          bnb_scales_t sc;
          BNB_OK(bnb_scales_init(&sc));
          if (nested) {
            sc.absmax_q = q_copies[c].data();
            sc.absmax2 = absmax2.data();
            sc.offset = &offset;
          } else {
            sc.absmax = absmax_copies[c].data();
          }
          if (transposed) {
            BNB_OK(bnb_gemm_4bit_transposed(ctx, dtype, M, N, K, A.data(), packed_copies[c].data(), &sc, qt,
                                            blocksize, out.data(), nullptr));
          } else {
            BNB_OK(bnb_gemm_4bit(ctx, dtype, M, N, K, A.data(), packed_copies[c].data(), &sc, qt, blocksize,
                                 bias.data(), out.data(), nullptr));
          }
        };
        for (int i = 0; i < copies; ++i) run();  // warm-up: touches every copy once
        std::vector<double> times;
        const auto start = Clock::now();
        while (times.size() < 5 || (seconds_since(start) * 1e3 < min_ms && times.size() < 1000)) {
          const auto t0 = Clock::now();
          run();
          times.push_back(seconds_since(t0) * 1e3);
        }
        std::sort(times.begin(), times.end());
        const double ms = times[times.size() / 2];
        Result r{M, N, K, dname, ms, weight_bytes / (ms * 1e6), 0.0, 0.0, 2.0 * M * N * K / (ms * 1e6)};
        r.pct_copy = 100.0 * r.weight_gbps / copy_gbps;
        r.pct_read = 100.0 * r.weight_gbps / read_gbps;
        std::printf("%7lld %6lld %6lld %5s %10.3f %10.1f %7.1f%% %7.1f%% %9.1f\n", static_cast<long long>(N),
                    static_cast<long long>(K), static_cast<long long>(M), dname.c_str(), ms, r.weight_gbps,
                    r.pct_copy, r.pct_read, r.gflops);
        std::fflush(stdout);
        results.push_back(r);
      }
    }
  }
  BNB_OK(bnb_context_destroy(ctx));

  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (f == nullptr) {
      std::perror(json.c_str());
      return 1;
    }
    std::fprintf(f, "{\n  \"benchmark\": \"%s\",\n  \"backend\": \"cpu\",\n  \"threads\": %d,\n",
                 transposed ? "gemm_4bit_transposed" : "gemm_4bit", threads);
    std::fprintf(f, "  \"quant_type\": \"%s\",\n  \"blocksize\": %lld,\n  \"nested\": %s,\n", quant.c_str(),
                 static_cast<long long>(blocksize), nested ? "true" : "false");
    std::fprintf(f, "  \"copy_gbps_read_plus_write\": %.3f,\n  \"read_gbps\": %.3f,\n  \"results\": [\n", copy_gbps,
                 read_gbps);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f,
                   "    {\"M\": %lld, \"N\": %lld, \"K\": %lld, \"dtype\": \"%s\", \"ms\": %.5f, \"weight_gbps\": %.3f, "
                   "\"pct_copy\": %.2f, \"pct_read\": %.2f, \"gflops\": %.3f}%s\n",
                   static_cast<long long>(r.M), static_cast<long long>(r.N), static_cast<long long>(r.K),
                   r.dtype.c_str(), r.ms, r.weight_gbps, r.pct_copy, r.pct_read, r.gflops,
                   i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
  }
  return 0;
}
