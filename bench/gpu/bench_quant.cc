// Bandwidth of the GPU quantization ops through the public API, against the device's own copy
// bandwidth measured in the same run. CUDA events around each call, median of repeated runs.
// Bytes counted = every input read once + every output written once.
//
//   bnb_bench_gpu_quant [--n 268435456] [--reps 30] [--json out.json]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bnb.h"
#include "bench_check.h"

namespace {

struct Result {
  std::string op, dtype;
  int64_t blocksize;
  double bytes, ms, gbps, pct_copy;
};

// Median time in milliseconds of `fn` on `stream`, after three warm-up calls.
double time_ms(cudaStream_t stream, int reps, const std::function<void()>& fn) { return time_events(stream, reps, 3, fn); }

uint16_t to_half_bits(float f, bool bf16) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if (bf16) return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
  // fp16 for |f| well inside the normal range (normal(0,1) data)
  const uint32_t sign = (b >> 16) & 0x8000u;
  const uint32_t abs = b & 0x7fffffffu;
  if (abs < 0x38800000u) return static_cast<uint16_t>(sign);
  const uint32_t m = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((m - 0x38000000u) >> 13));
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = int64_t{1} << 28;
  int reps = 30;
  std::string json;
  Args args(argc, argv);
  for (std::string a; args.next_flag(a);) {  // other arguments are ignored
    if (a == "--n") n = args.int_value();
    else if (a == "--reps") reps = args.int_value();
    else if (a == "--json") json = args.value();
  }
  bnb_context_options_t opts;
  bnb_context_options_init(&opts);
  opts.backend = BNB_BACKEND_CUDA;
  bnb_context_t ctx = nullptr;
  BNB_OK(bnb_context_create(&opts, &ctx));
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  // Random normal data: a 16M-element pattern tiled over the input (well past the L2 size).
  const int64_t pattern = std::min<int64_t>(n, int64_t{1} << 24);
  std::vector<float> host(static_cast<size_t>(pattern));
  std::mt19937_64 rng(42);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (float& x : host) x = dist(rng);

  void *A = nullptr, *Y = nullptr, *Q = nullptr, *S = nullptr, *AQ = nullptr, *A2 = nullptr, *OFF = nullptr;
  const int64_t nb_max = (n + 63) / 64;
  BNB_OK(bnb_malloc(ctx, n * 2, &A));
  BNB_OK(bnb_malloc(ctx, n * 2, &Y));
  BNB_OK(bnb_malloc(ctx, n, &Q));
  BNB_OK(bnb_malloc(ctx, nb_max * 4, &S));
  BNB_OK(bnb_malloc(ctx, nb_max, &AQ));
  BNB_OK(bnb_malloc(ctx, (nb_max + 255) / 256 * 4, &A2));
  BNB_OK(bnb_malloc(ctx, 4, &OFF));

  std::vector<Result> results;
  // Copy bandwidth: a device-to-device copy of the largest buffer the ops move (2n bytes).
  const double copy_ms = time_ms(stream, reps, [&] { CUDA_OK(cudaMemcpyAsync(Y, A, n * 2, cudaMemcpyDeviceToDevice, stream)); });
  const double copy_gbps = 2.0 * n * 2 / (copy_ms * 1e-3) / 1e9;
  results.push_back({"device_copy", "-", 0, 2.0 * n * 2, copy_ms, copy_gbps, 100.0});

  auto add = [&](const std::string& op, const char* dtype, int64_t bs, double bytes, const std::function<void()>& fn) {
    const double ms = time_ms(stream, reps, fn);
    const double gbps = bytes / (ms * 1e-3) / 1e9;
    results.push_back({op, dtype, bs, bytes, ms, gbps, 100.0 * gbps / copy_gbps});
  };

  // Write-only reference: the decoders' traffic is 67-80 % writes, the copy's 50 %. cudaMemset of
  // the 16-bit output (2n bytes) shows what the memory reaches when it only writes.
  add("device_memset_write_only", "-", 0, 2.0 * n, [&] { CUDA_OK(cudaMemsetAsync(Y, 0, n * 2, stream)); });

  for (int32_t dtype : {BNB_F16, BNB_BF16}) {
    const char* dname = dtype == BNB_F16 ? "fp16" : "bf16";
    {
      std::vector<uint16_t> h(static_cast<size_t>(pattern));
      for (size_t i = 0; i < h.size(); ++i) h[i] = to_half_bits(host[i], dtype == BNB_BF16);
      for (int64_t off = 0; off < n; off += pattern) {
        CUDA_OK(cudaMemcpy(static_cast<uint16_t*>(A) + off, h.data(), std::min(pattern, n - off) * 2,
                           cudaMemcpyHostToDevice));
      }
    }
    const double in = 2.0 * n;
    for (int64_t bs : {256, 4096}) {
      const int64_t nb = (n + bs - 1) / bs;
      add("quantize_blockwise", dname, bs, in + n + nb * 4.0, [&] {
        BNB_OK(bnb_quantize_blockwise(ctx, dtype, A, n, bs, nullptr, static_cast<uint8_t*>(Q), static_cast<float*>(S), stream));
      });
      add("dequantize_blockwise", dname, bs, n + nb * 4.0 + in, [&] {
        BNB_OK(bnb_dequantize_blockwise(ctx, static_cast<uint8_t*>(Q), static_cast<float*>(S), nullptr, n, bs, dtype, Y, stream));
      });
    }
    const int64_t bs = 64;
    const int64_t nb = (n + bs - 1) / bs;
    for (int32_t qt : {BNB_NF4, BNB_FP4}) {
      add(qt == BNB_NF4 ? "quantize_4bit_nf4" : "quantize_4bit_fp4", dname, bs, in + n / 2.0 + nb * 4.0, [&] {
        BNB_OK(bnb_quantize_4bit(ctx, qt, dtype, A, n, bs, static_cast<uint8_t*>(Q), static_cast<float*>(S), stream));
      });
    }
    BNB_OK(bnb_quantize_4bit(ctx, BNB_NF4, dtype, A, n, bs, static_cast<uint8_t*>(Q), static_cast<float*>(S), stream));
    bnb_scales_t plain;
    bnb_scales_init(&plain);
    plain.absmax = static_cast<float*>(S);
    add("dequantize_4bit_nf4", dname, bs, n / 2.0 + nb * 4.0 + in, [&] {
      BNB_OK(bnb_dequantize_4bit(ctx, BNB_NF4, static_cast<uint8_t*>(Q), &plain, n, bs, dtype, Y, stream));
    });
    BNB_OK(bnb_compress_absmax(ctx, static_cast<float*>(S), nb, static_cast<uint8_t*>(AQ), static_cast<float*>(A2),
                               static_cast<float*>(OFF), stream));
    bnb_scales_t nested;
    bnb_scales_init(&nested);
    nested.absmax = nullptr;
    nested.absmax_q = static_cast<uint8_t*>(AQ);
    nested.absmax2 = static_cast<float*>(A2);
    nested.offset = static_cast<float*>(OFF);
    nested.blocksize2 = 256;
    add("dequantize_4bit_nf4_nested", dname, bs, n / 2.0 + nb + (nb + 255) / 256 * 4.0 + 4 + in, [&] {
      BNB_OK(bnb_dequantize_4bit(ctx, BNB_NF4, static_cast<uint8_t*>(Q), &nested, n, bs, dtype, Y, stream));
    });
    add("compress_absmax", "fp32", 256, nb * 4.0 + nb + (nb + 255) / 256 * 4.0 + 4, [&] {
      BNB_OK(bnb_compress_absmax(ctx, static_cast<float*>(S), nb, static_cast<uint8_t*>(AQ), static_cast<float*>(A2),
                                 static_cast<float*>(OFF), stream));
    });
  }

  std::printf("bnb GPU quantization, %s (sm_%d%d), n = %lld, median of %d\n", prop.name, prop.major, prop.minor,
              static_cast<long long>(n), reps);
  std::printf("%-28s %-5s %6s %10s %10s %8s\n", "op", "dtype", "bs", "ms", "GB/s", "%copy");
  for (const Result& r : results) {
    std::printf("%-28s %-5s %6lld %10.4f %10.1f %7.1f%%\n", r.op.c_str(), r.dtype.c_str(),
                static_cast<long long>(r.blocksize), r.ms, r.gbps, r.pct_copy);
  }
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (f != nullptr) {
      std::fprintf(f, "{\"impl\": \"bnb\", \"device\": \"%s\", \"n\": %lld, \"reps\": %d, \"results\": [\n", prop.name,
                   static_cast<long long>(n), reps);
      for (size_t i = 0; i < results.size(); ++i) {
        const Result& r = results[i];
        std::fprintf(f,
                     "  {\"op\": \"%s\", \"dtype\": \"%s\", \"blocksize\": %lld, \"bytes\": %.0f, \"ms\": %.6f, "
                     "\"gbps\": %.2f, \"pct_copy\": %.2f}%s\n",
                     r.op.c_str(), r.dtype.c_str(), static_cast<long long>(r.blocksize), r.bytes, r.ms, r.gbps,
                     r.pct_copy, i + 1 < results.size() ? "," : "");
      }
      std::fprintf(f, "]}\n");
      std::fclose(f);
    }
  }
  for (void* p : {A, Y, Q, S, AQ, A2, OFF}) bnb_free(ctx, p);
  bnb_context_destroy(ctx);
  return 0;
}
