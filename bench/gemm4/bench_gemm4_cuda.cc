// bnb_gemm_4bit on the CUDA backend against dense cuBLAS (cublasGemmEx, same dtype, binary32
// compute) in the same run. Each measurement is a CUDA graph of R back-to-back calls, each on
// its own copy of the weights, the copies together at least 4x the L2 cache, so no call finds
// its weights in L2; CUDA events around graph replays, median over replays, divided by R.
// Reported: time per call, speedup vs dense, and at M = 1 the weight bandwidth (packed bytes +
// nested scales read once per call).
//
//   bnb_bench_gemm4_cuda [--shapes 4096x4096,11008x4096,...] [--m 1,4,16,64,256]
//                        [--dtypes bf16,f16] [--quant nf4] [--blocksize 64] [--plain]
//                        [--reps 20] [--json out.json]
// cuBLAS is loaded with dlopen (libcublas.so.13/.12); without it the dense column is empty.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bnb.h"
#include "bench_check.h"
#include "cublas_loader.h"

namespace {


struct Result {
  int64_t M, N, K;
  std::string dtype;
  double ms, dense_ms, speedup, weight_gbps;
};

}  // namespace

int main(int argc, char** argv) {
  std::string shapes = "4096x4096,11008x4096,4096x11008,14336x4096,28672x8192", ms_list = "1,4,16,64,256";
  std::string dtypes = "bf16,f16", quant = "nf4", json;
  int64_t blocksize = 64;
  bool nested = true;
  int reps = 20;
  Args args(argc, argv);
  for (std::string a; args.next_flag(a);) {
    if (a == "--shapes") shapes = args.value();
    else if (a == "--m") ms_list = args.value();
    else if (a == "--dtypes") dtypes = args.value();
    else if (a == "--quant") quant = args.value();
    else if (a == "--blocksize") blocksize = args.int_value();
    else if (a == "--plain") nested = false;
    else if (a == "--reps") reps = args.int_value();
    else if (a == "--json") json = args.value();
    else args.unknown("see the comment at the top of bench_gemm4_cuda.cc");
  }
  const int32_t qt = quant == "fp4" ? BNB_FP4 : BNB_NF4;

  bnb_context_options_t opts;
  BNB_OK(bnb_context_options_init(&opts));
  opts.backend = BNB_BACKEND_CUDA;
  bnb_context_t ctx = nullptr;
  BNB_OK(bnb_context_create(&opts, &ctx));
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  Cublas cublas;
  if (!cublas.load(stream)) std::printf("cuBLAS not loadable: no dense comparison\n");
  const double l2 = static_cast<double>(prop.l2CacheSize);
  const double rotate_bytes = std::max(4.0 * l2, 64.0 * (1 << 20));

  std::printf("CUDA gemm_4bit on %s (L2 %.0f MiB), %s bs%lld %s; dense = cublasGemmEx, same dtype\n", prop.name,
              l2 / (1 << 20), quant.c_str(), static_cast<long long>(blocksize), nested ? "nested" : "plain");
  std::printf("%7s %6s %5s %5s %10s %10s %8s %9s\n", "N", "K", "M", "dtype", "4bit us", "dense us", "speedup",
              "W GB/s");
  std::vector<Result> results;

  for (const std::string& shape : split(shapes, ',')) {
    const auto nk = split(shape, 'x');
    if (nk.size() != 2) {
      std::fprintf(stderr, "bad shape %s (want NxK)\n", shape.c_str());
      return 2;
    }
    const int64_t N = std::atoll(nk[0].c_str()), K = std::atoll(nk[1].c_str());
    const int64_t n = N * K, nb = n / blocksize, nb2 = (nb + 255) / 256;
    // One quantized weight from random data, then copies for the rotation.
    float* w32 = nullptr;
    CUDA_OK(cudaMalloc(&w32, static_cast<size_t>(n) * 4));
    {
      std::vector<float> host(static_cast<size_t>(n));
      uint64_t x = 88172645463325252ull;
      const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(K)));
      for (auto& v : host) {  // xorshift + sum of uniforms: roughly normal, fast
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        v = (static_cast<float>(x & 0xffff) + static_cast<float>((x >> 16) & 0xffff) +
             static_cast<float>((x >> 32) & 0xffff) - 98302.5f) / 32768.0f * scale;
      }
      CUDA_OK(cudaMemcpy(w32, host.data(), host.size() * 4, cudaMemcpyHostToDevice));
    }
    uint8_t* packed0;
    float* absmax;
    uint8_t* absmax_q0;
    float *absmax2, *offset;
    CUDA_OK(cudaMalloc(&packed0, static_cast<size_t>(n / 2)));
    CUDA_OK(cudaMalloc(&absmax, static_cast<size_t>(nb) * 4));
    CUDA_OK(cudaMalloc(&absmax_q0, static_cast<size_t>(nb)));
    CUDA_OK(cudaMalloc(&absmax2, static_cast<size_t>(nb2) * 4));
    CUDA_OK(cudaMalloc(&offset, 4));
    BNB_OK(bnb_quantize_4bit(ctx, qt, BNB_F32, w32, n, blocksize, packed0, absmax, nullptr));
    BNB_OK(bnb_compress_absmax(ctx, absmax, nb, absmax_q0, absmax2, offset, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const double weight_bytes = static_cast<double>(n / 2) + (nested ? nb + 4.0 * nb2 : 4.0 * nb);
    const int copies = static_cast<int>(std::max(2.0, std::ceil(rotate_bytes / weight_bytes)));
    std::vector<uint8_t*> packed(copies), aq(copies);
    std::vector<float*> am(copies);
    for (int c = 0; c < copies; ++c) {
      CUDA_OK(cudaMalloc(&packed[c], static_cast<size_t>(n / 2)));
      CUDA_OK(cudaMemcpy(packed[c], packed0, static_cast<size_t>(n / 2), cudaMemcpyDeviceToDevice));
      if (nested) {
        CUDA_OK(cudaMalloc(&aq[c], static_cast<size_t>(nb)));
        CUDA_OK(cudaMemcpy(aq[c], absmax_q0, static_cast<size_t>(nb), cudaMemcpyDeviceToDevice));
      } else {
        CUDA_OK(cudaMalloc(&am[c], static_cast<size_t>(nb) * 4));
        CUDA_OK(cudaMemcpy(am[c], absmax, static_cast<size_t>(nb) * 4, cudaMemcpyDeviceToDevice));
      }
    }
    CUDA_OK(cudaFree(w32));

    for (const std::string& dname : split(dtypes, ',')) {
      const int32_t dtype = dname == "f32" ? BNB_F32 : dname == "f16" ? BNB_F16 : BNB_BF16;
      const cudaDataType ct = dtype == BNB_F32 ? CUDA_R_32F : dtype == BNB_F16 ? CUDA_R_16F : CUDA_R_16BF;
      const size_t es = dtype == BNB_F32 ? 4 : 2;
      // Dense copies: the dequantized weight in the activation dtype.
      const double dense_bytes = static_cast<double>(n) * es;
      const int dense_copies = cublas.ok ? static_cast<int>(std::max(1.0, std::ceil(rotate_bytes / dense_bytes))) : 0;
      std::vector<void*> dense(dense_copies);
      bnb_scales_t sc0;
      BNB_OK(bnb_scales_init(&sc0));
      if (nested) {
        sc0.absmax_q = absmax_q0;
        sc0.absmax2 = absmax2;
        sc0.offset = offset;
      } else {
        sc0.absmax = absmax;
      }
      for (int c = 0; c < dense_copies; ++c) {
        CUDA_OK(cudaMalloc(&dense[c], static_cast<size_t>(dense_bytes)));
        BNB_OK(bnb_dequantize_4bit(ctx, qt, packed0, &sc0, n, blocksize, dtype, dense[c], nullptr));
      }
      CUDA_OK(cudaDeviceSynchronize());

      for (const std::string& mstr : split(ms_list, ',')) {
        const int64_t M = std::atoll(mstr.c_str());
        void *A, *out;
        CUDA_OK(cudaMalloc(&A, static_cast<size_t>(M * K) * es));
        CUDA_OK(cudaMalloc(&out, static_cast<size_t>(M * N) * es));
        CUDA_OK(cudaMemset(A, 0x3c, static_cast<size_t>(M * K) * es));  // ~1.0 in fp16, ~0.01 in bf16
        cudaGraphExec_t g4 = capture_calls(stream, copies, [&](int i) {
          bnb_scales_t sc;
          BNB_OK(bnb_scales_init(&sc));
          if (nested) {
            sc.absmax_q = aq[i];
            sc.absmax2 = absmax2;
            sc.offset = offset;
          } else {
            sc.absmax = am[i];
          }
          BNB_OK(bnb_gemm_4bit(ctx, dtype, M, N, K, A, packed[i], &sc, qt, blocksize, nullptr, out, stream));
        });
        const double ms = time_graph(g4, stream, reps) / copies;
        CUDA_OK(cudaGraphExecDestroy(g4));
        double dense_ms = NAN;
        if (cublas.ok) {
          const float alpha = 1.0f, beta = 0.0f;
          cudaGraphExec_t gd = capture_calls(stream, dense_copies, [&](int i) {
            const cublasStatus_t s =
                cublas.gemm_ex(cublas.handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                               static_cast<int>(K), &alpha, dense[i], ct, static_cast<int>(K), A, ct,
                               static_cast<int>(K), &beta, out, ct, static_cast<int>(N), CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT);
            if (s != CUBLAS_STATUS_SUCCESS) {
              std::fprintf(stderr, "cublasGemmEx: status %d\n", s);
              std::exit(1);
            }
          });
          dense_ms = time_graph(gd, stream, reps) / dense_copies;
          CUDA_OK(cudaGraphExecDestroy(gd));
        }
        Result r{M, N, K, dname, ms, dense_ms, dense_ms / ms, weight_bytes / (ms * 1e6)};
        std::printf("%7lld %6lld %5lld %5s %10.2f %10.2f %7.2fx %9.0f\n", static_cast<long long>(N),
                    static_cast<long long>(K), static_cast<long long>(M), dname.c_str(), ms * 1e3, dense_ms * 1e3,
                    r.speedup, r.weight_gbps);
        std::fflush(stdout);
        results.push_back(r);
        CUDA_OK(cudaFree(A));
        CUDA_OK(cudaFree(out));
      }
      for (void* d : dense) CUDA_OK(cudaFree(d));
    }
    for (int c = 0; c < copies; ++c) {
      CUDA_OK(cudaFree(packed[c]));
      if (nested) CUDA_OK(cudaFree(aq[c]));
      else CUDA_OK(cudaFree(am[c]));
    }
    CUDA_OK(cudaFree(packed0));
    CUDA_OK(cudaFree(absmax));
    CUDA_OK(cudaFree(absmax_q0));
    CUDA_OK(cudaFree(absmax2));
    CUDA_OK(cudaFree(offset));
  }
  BNB_OK(bnb_context_destroy(ctx));

  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (f == nullptr) {
      std::perror(json.c_str());
      return 1;
    }
    std::fprintf(f, "{\n  \"benchmark\": \"gemm_4bit\",\n  \"backend\": \"cuda\",\n  \"device\": \"%s\",\n", prop.name);
    std::fprintf(f, "  \"quant_type\": \"%s\",\n  \"blocksize\": %lld,\n  \"nested\": %s,\n  \"results\": [\n",
                 quant.c_str(), static_cast<long long>(blocksize), nested ? "true" : "false");
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      const auto num = [](double v) { return std::isfinite(v) ? std::to_string(v) : std::string("null"); };
      std::fprintf(f,
                   "    {\"M\": %lld, \"N\": %lld, \"K\": %lld, \"dtype\": \"%s\", \"us\": %s, \"dense_us\": %s, "
                   "\"speedup_vs_dense\": %s, \"weight_gbps\": %s}%s\n",
                   static_cast<long long>(r.M), static_cast<long long>(r.N), static_cast<long long>(r.K),
                   r.dtype.c_str(), num(r.ms * 1e3).c_str(), num(r.dense_ms * 1e3).c_str(), num(r.speedup).c_str(),
                   num(r.weight_gbps).c_str(), i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
  }
  return 0;
}
