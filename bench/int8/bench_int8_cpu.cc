// LLM.int8() on the CPU backend: bnb_int8_matmul through the public API against oneDNN's own
// s8 x s8 -> s32 matmul primitive timed directly (created once, benchdnn-style: plain layouts as
// bnb passes them, and weights pre-packed in oneDNN's preferred layout, packing not timed); the
// Highway small-M kernel and oneDNN side by side for small M; the whole layer forward
// (quantize fp16 activations, int8 matmul, dequantize with bias to fp16); and, for M = 1, the
// weight bytes read per second as a share of the machine's copy bandwidth.
//
//   bnb_bench_int8_cpu [--threads 2] [--shapes 2048x2048x2048,1x4096x4096,...] (MxNxK)
//                      [--min-ms 300] [--copies N (weight copies rotated; default 768 MiB worth for
//                      M <= 16, 1 otherwise)] [--json out.json]
//
// Copy bandwidth: `threads` threads each memcpy one part of a 256 MiB buffer into another,
// counted STREAM-style as bytes read + bytes written, best of 5 (as bench/gemm4). For M <= 16
// the weights rotate over 768 MiB of copies, so no cache (the VM may hide a large L3) holds them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "bnb.h"
#include "bench_util.h"
#include "int8_kernels.h"
#include "thread_pool.h"

namespace {

double copy_bandwidth(int threads) {
  const size_t bytes = size_t{256} << 20;
  std::vector<uint8_t> src(bytes, 1), dst(bytes, 0);
  double best = 0.0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const size_t b = bytes * t / threads, e = bytes * (t + 1) / threads;
        std::memcpy(dst.data() + b, src.data() + b, e - b);
      });
    }
    for (auto& th : pool) th.join();
    best = std::max(best, 2.0 * static_cast<double>(bytes) / seconds_since(t0) / 1e9);
  }
  return best;
}

// Median seconds per call of fn(i) (i = call number), repeated for at least min_ms.
double time_calls(double min_ms, const std::function<void(int64_t)>& fn) {
  fn(0);  // warm-up
  std::vector<double> samples;
  const auto start = Clock::now();
  int64_t i = 1;
  while (seconds_since(start) * 1e3 < min_ms || samples.size() < 5) {
    const auto t0 = Clock::now();
    fn(i++);
    samples.push_back(seconds_since(t0));
    if (samples.size() > 2000) break;
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

std::vector<int8_t> random_int8(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int8_t> v(n);
  for (auto& b : v) b = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  return v;
}


struct Row {
  std::string what;
  int64_t M, N, K;
  double ms, gops, weight_gbps, pct_copy;
};

// oneDNN's primitive for the same problem, created once; weights either plain B[N,K] (as bnb
// passes them) or reordered once into the layout oneDNN prefers ("any").
// The weights rotate over the same copies as bnb's calls.
double onednn_reference_ms(int threads, bool packed, int64_t M, int64_t N, int64_t K, const std::vector<int8_t>& A,
                           const std::vector<std::vector<int8_t>>& W, std::vector<int32_t>& C, double min_ms,
                           std::string* impl) {
  (void)threads;
  using dnnl::memory;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  const memory::desc a_md({M, K}, memory::data_type::s8, memory::dims{K, 1});
  const memory::desc b_plain({K, N}, memory::data_type::s8, memory::dims{1, K});
  const memory::desc b_any({K, N}, memory::data_type::s8, memory::format_tag::any);
  const memory::desc c_md({M, N}, memory::data_type::s32, memory::dims{N, 1});
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, packed ? b_any : b_plain, c_md), eng);
  *impl = pd.impl_info_str();
  dnnl::matmul prim(pd);
  memory a_mem(a_md, eng, const_cast<int8_t*>(A.data()));
  std::vector<memory> b_mems;
  for (const std::vector<int8_t>& B : W) {
    memory b_user(b_plain, eng, const_cast<int8_t*>(B.data()));
    if (packed && pd.weights_desc() != b_plain) {
      memory b_packed(pd.weights_desc(), eng);
      dnnl::reorder(b_user, b_packed).execute(s, b_user, b_packed);
      s.wait();
      b_mems.push_back(b_packed);
    } else {
      b_mems.push_back(b_user);
    }
  }
  memory c_mem(c_md, eng, C.data());
  return 1e3 * time_calls(min_ms, [&](int64_t i) {
           const memory& b_mem = b_mems[static_cast<size_t>(i) % b_mems.size()];
           prim.execute(s, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
           s.wait();
         });
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  double min_ms = 300;
  int64_t copies_arg = 0;  // 0: rotate 768 MiB of weight copies for M <= 16
  std::string json_path;
  std::string shapes_arg = "2048x2048x2048,1x4096x4096,1x8192x8192,4x4096x4096,8x4096x4096,16x4096x4096,"
                           "64x4096x4096,256x4096x4096";
  Args args(argc, argv);
  for (std::string a; args.next_flag(a);) {
    if (a == "--threads") threads = args.int_value();
    else if (a == "--shapes") shapes_arg = args.value();
    else if (a == "--min-ms") min_ms = args.real_value();
    else if (a == "--json") json_path = args.value();
    else if (a == "--copies") copies_arg = args.int_value();
    else args.usage("[--threads N] [--shapes MxNxK,...] [--min-ms MS] [--copies N] [--json PATH]");
  }
  setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);  // oneDNN reference runs

  bnb_context_options_t opts;
  BNB_OK(bnb_context_options_init(&opts));
  opts.backend = BNB_BACKEND_CPU;
  opts.num_threads = threads;
  bnb_context_t ctx = nullptr;
  BNB_OK(bnb_context_create(&opts, &ctx));
  bnb::cpu::ThreadPool pool(threads);

  const double copy_gbps = copy_bandwidth(threads);
  // Other processes' load makes every number here (oneDNN's OpenMP barriers most) unreliable.
  double load[1] = {0.0};
  if (getloadavg(load, 1) != 1) load[0] = -1.0;
  std::printf("threads %d, copy bandwidth %.1f GB/s (read + write), load average %.2f on %u cpus\n\n", threads,
              copy_gbps, load[0], std::thread::hardware_concurrency());
  std::printf("%-26s %6s %6s %6s %10s %9s %9s %7s\n", "what", "M", "N", "K", "ms", "GOP/s", "W GB/s", "%copy");
  std::vector<Row> rows;
  const auto report = [&](const std::string& what, int64_t M, int64_t N, int64_t K, double ms) {
    const double s = ms / 1e3;
    Row r{what, M, N, K, ms, 2.0 * M * N * K / s / 1e9, static_cast<double>(N * K) / s / 1e9, 0.0};
    r.pct_copy = 100.0 * r.weight_gbps / copy_gbps;
    rows.push_back(r);
    std::printf("%-26s %6lld %6lld %6lld %10.4f %9.1f %9.2f %7.1f\n", what.c_str(), static_cast<long long>(M),
                static_cast<long long>(N), static_cast<long long>(K), ms, r.gops, r.weight_gbps, r.pct_copy);
    std::fflush(stdout);
  };

  for (const std::string& sh : split(shapes_arg, ',')) {
    const auto dims = split(sh, 'x');
    if (dims.size() != 3) {
      std::fprintf(stderr, "bad shape %s\n", sh.c_str());
      return 2;
    }
    const int64_t M = std::atoll(dims[0].c_str()), N = std::atoll(dims[1].c_str()), K = std::atoll(dims[2].c_str());
    const size_t wbytes = static_cast<size_t>(N * K);
    // Rotate weights for small M so they come from memory, as in a real layer.
    size_t copies = M <= 16 ? std::max<size_t>(1, std::min<size_t>(48, (size_t{768} << 20) / wbytes)) : 1;
    if (copies_arg > 0) copies = static_cast<size_t>(copies_arg);
    std::vector<std::vector<int8_t>> W;
    for (size_t c = 0; c < copies; ++c) W.push_back(random_int8(wbytes, 1000 + c));
    const std::vector<int8_t> A = random_int8(static_cast<size_t>(M * K), 7);
    std::vector<int32_t> C(static_cast<size_t>(M * N));
    const auto w = [&](int64_t i) { return W[static_cast<size_t>(i) % copies].data(); };

    report("bnb_int8_matmul", M, N, K, 1e3 * time_calls(min_ms, [&](int64_t i) {
             BNB_OK(bnb_int8_matmul(ctx, M, N, K, A.data(), w(i), C.data(), nullptr));
           }));
    if (M <= 64) {
      report("  highway rows kernel", M, N, K, 1e3 * time_calls(min_ms, [&](int64_t i) {
               bnb::cpu::int8_matmul_rows(pool, M, N, K, A.data(), w(i), C.data());
             }));
      report("  onednn via bnb", M, N, K, 1e3 * time_calls(min_ms, [&](int64_t i) {
               if (!bnb::cpu::int8_matmul_onednn(threads, M, N, K, A.data(), w(i), C.data())) std::exit(3);
             }));
    }
    std::string impl_plain, impl_packed;
    const double ref_plain = onednn_reference_ms(threads, false, M, N, K, A, W, C, min_ms, &impl_plain);
    report("  onednn primitive, plain", M, N, K, ref_plain);
    const double ref_packed = onednn_reference_ms(threads, true, M, N, K, A, W, C, min_ms, &impl_packed);
    report("  onednn primitive, packed", M, N, K, ref_packed);
    std::printf("%26s oneDNN impl: plain %s, packed %s\n", "", impl_plain.c_str(), impl_packed.c_str());

    // The layer forward: fp16 activations -> codes + stats, product, dequant with bias.
    const std::vector<uint16_t> X = random_f16(static_cast<size_t>(M * K), 9, 16);
    const std::vector<uint16_t> bias = random_f16(static_cast<size_t>(N), 10, 16);
    std::vector<float> col_stats(static_cast<size_t>(N), 1.5f), row_stats(static_cast<size_t>(M));
    std::vector<int8_t> CA(static_cast<size_t>(M * K));
    std::vector<uint16_t> out(static_cast<size_t>(M * N));
    for (const float threshold : {0.0f, 6.0f}) {
      char name[64];
      std::snprintf(name, sizeof name, "layer fp16, threshold %g", threshold);
      report(name, M, N, K, 1e3 * time_calls(min_ms, [&](int64_t i) {
               BNB_OK(bnb_int8_vectorwise_quant(ctx, BNB_F16, M, K, X.data(), threshold, CA.data(), row_stats.data(),
                                                nullptr));
               BNB_OK(bnb_int8_matmul(ctx, M, N, K, CA.data(), w(i), C.data(), nullptr));
               BNB_OK(bnb_int8_mm_dequant(ctx, M, N, C.data(), row_stats.data(), col_stats.data(), bias.data(),
                                          BNB_F16, out.data(), nullptr));
             }));
    }
    report("  vectorwise_quant (A)", M, N, K, 1e3 * time_calls(min_ms, [&](int64_t) {
             BNB_OK(bnb_int8_vectorwise_quant(ctx, BNB_F16, M, K, X.data(), 0.0f, CA.data(), row_stats.data(),
                                              nullptr));
           }));
    report("  mm_dequant (C)", M, N, K, 1e3 * time_calls(min_ms, [&](int64_t) {
             BNB_OK(bnb_int8_mm_dequant(ctx, M, N, C.data(), row_stats.data(), col_stats.data(), bias.data(), BNB_F16,
                                        out.data(), nullptr));
           }));
    std::printf("\n");
  }

  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::fprintf(f,
                 "{\n  \"bench\": \"int8_cpu\",\n  \"threads\": %d,\n  \"copy_gbps\": %.3f,\n  \"load_average\": %.2f,\n"
                 "  \"rows\": [\n",
                 threads, copy_gbps, load[0]);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::fprintf(f,
                   "    {\"what\": \"%s\", \"M\": %lld, \"N\": %lld, \"K\": %lld, \"ms\": %.6f, \"gops\": %.3f, "
                   "\"weight_gbps\": %.3f, \"pct_copy\": %.2f}%s\n",
                   r.what.c_str(), static_cast<long long>(r.M), static_cast<long long>(r.N),
                   static_cast<long long>(r.K), r.ms, r.gops, r.weight_gbps, r.pct_copy,
                   i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
  }
  BNB_OK(bnb_context_destroy(ctx));
  return 0;
}
