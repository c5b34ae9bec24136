// Every configuration of the LLM.int8() product and dequantization as ONE Hopper kernel: the
// CUTLASS 3.x sm_90a int8 GEMMs of src/gpu/int8_cutlass_sm90.cuh (TMA loads, wgmma, the
// warp-specialized kernels; the dequantization in an epilogue visitor tree, bit for bit
// bnb_int8_mm_dequant's for an fp16 out; the formula is in that header). Built where the CUTLASS
// path is (BNB_INT8_CUTLASS ON, given or resolved from AUTO). The same kernels are the CUDA
// plugin's path wherever its M <= 16 kernels don't take the shape (int8_cutlass_sm90.cu), so the
// "linear us" column times the library's layer on it (its shape rule; BNB_INT8_CUTLASS=0: on
// cuBLASLt, =<configuration name>: one of the names printed here), and its bit check against the
// three calls checks the path too.
//
// For each (M, N = K): A [M, K] random fp16 activations (1/8 <= |x| < 2; row 1 all zero) ->
// bnb_int8_vectorwise_quant (threshold 0) -> q [M, K] int8, row_stats [M]; W [N, K] random int8
// in [-127, 127] (row 3 all zero), SCB [N] random in [0.5, 2), fp16 bias [N] (1/8 <= |b| < 2).
//   1. Check: every CUTLASS configuration's out against bnb_int8_matmul + bnb_int8_mm_dequant, bit
//      for bit (number of fp16 elements whose bits differ), without and with the bias. A
//      configuration that cannot run a shape (can_implement) is reported as skipped. The program
//      exits with 1 if any configuration that ran differs. The comparer itself is checked in every
//      run (one element of a copy of the reference flipped must be reported) and by --selftest
//      (host only, no GPU needed).
//   2. Timing (bias on), microseconds per call: each measurement is a CUDA graph of R back-to-back
//      calls, each on its own weight copy (the copies together at least 4x the L2 cache), CUDA
//      events around graph replays, median over --reps replays, divided by R (as
//      bnb_bench_int8_cuda): fp16 cuBLAS GEMM (cublasGemmEx, fp16 in/out, fp32 compute) of the
//      same shape; bnb_int8_linear (the one-call layer, threshold 0; the plugin's CUTLASS path
//      where it is built); bnb_int8_matmul +
//      bnb_int8_mm_dequant; bnb_int8_vectorwise_quant alone; each CUTLASS configuration alone
//      (product + dequantization fused); and the layer as bnb_int8_vectorwise_quant + the
//      fastest CUTLASS configuration for the shape. Speedups are over the fp16 GEMM.
//
// Build (sm_90a only; CUTLASS's headers from BNB_CUTLASS_INCLUDE, or from the PyPI package
// nvidia-cutlass in the Python 3 CMake finds: cmake/cutlass.cmake):
//   python3 -m venv /tmp/cutvenv && /tmp/cutvenv/bin/pip install nvidia-cutlass
//   cmake -S . -B build-cut -G Ninja -DCMAKE_BUILD_TYPE=Release -DBNB_BUILD_CUDA=ON
//         -DBNB_CUDA_ARCHITECTURES=90 -DBNB_BUILD_CPU=OFF -DBNB_BUILD_TESTS=OFF -DBNB_BUILD_TOOLS=OFF
//         -DBNB_BUILD_PYTHON_EXT=OFF -DBNB_INT8_CUTLASS=ON -DPython3_EXECUTABLE=/tmp/cutvenv/bin/python
//         [-DBNB_CUTLASS_INCLUDE=/path/to/cutlass/include]          (one command line)
//   ninja -C build-cut bnb_bench_int8_cutlass     (the TU: about 80 s on one core, CUDA 13.0)
// Run (an H100; the CUDA plugin libbnb_backend_cuda is found beside libbnb in build-cut/lib):
//   [BNB_INT8_CUTLASS=0|<name>] build-cut/bin/bnb_bench_int8_cutlass [--m 64,128,256,512,1024,2048]
//                                        [--nk 4096,8192] [--reps 20] [--json out.json] [--selftest]
//
// cuBLAS is loaded with dlopen (libcublas.so.13/.12); without it the fp16 column is empty.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "int8_cutlass_sm90.cuh"  // src/gpu: the GEMM types and their arguments

#include "bnb.h"
#include "bench_check.h"
#include "cublas_loader.h"
#include "tables.h"  // src/common: kDequantScaleBits

namespace {

namespace cfg = bnb::gpu::int8_cutlass::cfg;
constexpr uint32_t kDqBits = bnb::kDequantScaleBits;

// One configuration at run time: prepare() builds the kernel's parameters for every weight copy
// (host work, outside any graph capture), try_launch(i) enqueues the product on copy i (false
// and why if the launch failed), launch(i) the same, stopping the program on a failure.
struct Config {
  virtual ~Config() = default;
  virtual const char* name() const = 0;
  // False (and why) when the configuration cannot run the shape.
  virtual bool prepare(int M, int N, int K, const int8_t* A, const std::vector<void*>& W, const float* row_stats,
                       const float* col_stats, const void* bias, void* D, std::string* why) = 0;
  virtual bool try_launch(int i, cudaStream_t stream, std::string* why) = 0;
  void launch(int i, cudaStream_t stream) {
    std::string why;
    if (!try_launch(i, stream, &why)) {
      std::fprintf(stderr, "%s: %s\n", name(), why.c_str());
      std::exit(1);
    }
  }
};

template <class G>
struct ConfigImpl final : Config {
  using Gemm = typename G::Gemm;
  std::vector<std::unique_ptr<Gemm>> gemms;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  ~ConfigImpl() override {
    if (workspace != nullptr) cudaFree(workspace);
  }
  const char* name() const override { return G::kName; }

  bool prepare(int M, int N, int K, const int8_t* A, const std::vector<void*>& W, const float* row_stats,
               const float* col_stats, const void* bias, void* D, std::string* why) override {
    gemms.clear();
    cutlass::KernelHardwareInfo hw;
    hw.device_id = 0;
    hw.sm_count = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(0);
    for (void* w : W) {
      const typename Gemm::Arguments args = bnb::gpu::int8_cutlass::make_arguments<G>(
          M, N, K, A, static_cast<const int8_t*>(w), row_stats, col_stats, bias, D, hw);
      if (Gemm::can_implement(args) != cutlass::Status::kSuccess) {
        *why = "can_implement";
        gemms.clear();
        return false;
      }
      const size_t ws = Gemm::get_workspace_size(args);
      if (ws > workspace_bytes) {
        if (workspace != nullptr) CUDA_OK(cudaFree(workspace));
        CUDA_OK(cudaMalloc(&workspace, ws));
        workspace_bytes = ws;
      }
      auto g = std::make_unique<Gemm>();
      const cutlass::Status st = g->initialize(args, workspace);
      if (st != cutlass::Status::kSuccess) {
        *why = std::string("initialize: ") + cutlass::cutlassGetStatusString(st);
        gemms.clear();
        return false;
      }
      gemms.push_back(std::move(g));
    }
    return true;
  }

  bool try_launch(int i, cudaStream_t stream, std::string* why) override {
    // As the plugin launches it (a programmatic dependent of the kernel before it with BNB_INT8_CUTLASS_PDL=1).
    const cutlass::Status st =
        gemms[static_cast<size_t>(i) % gemms.size()]->run(stream, nullptr, bnb::gpu::int8_cutlass::cutlass_pdl());
    if (st != cutlass::Status::kSuccess) {
      *why = std::string("run: ") + cutlass::cutlassGetStatusString(st) + " (" + cudaGetErrorString(cudaGetLastError()) +
             ")";
      return false;
    }
    return true;
  }
};

template <class... G>
std::vector<std::unique_ptr<Config>> make_configs(cfg::List<G...>) {
  std::vector<std::unique_ptr<Config>> c;
  (c.push_back(std::make_unique<ConfigImpl<G>>()), ...);
  return c;
}

// ------------------------------------------------------------------ host helpers

// dequant_f16 on the host, for the diagnostics only: binary32 operations in round-to-nearest (no
// flushing: the values here are far from the denormal range), fp16 from cuda_fp16's host
// conversion (round to nearest even).
uint16_t host_dequant(int32_t c, float rs, float cs, const uint16_t* bias) {
  float kdq;
  const uint32_t bits = kDqBits;
  std::memcpy(&kdq, &bits, 4);
  volatile float t0 = static_cast<float>(c) * rs;  // volatile: one rounding per operation
  volatile float t = t0 * cs;
  float v;
  if (bias != nullptr) {
    __half_raw hb;
    hb.x = *bias;
    v = std::fmaf(t, kdq, __half2float(__half(hb)));
  } else {
    volatile float p = t * kdq;
    v = p;
  }
  const __half_raw h = __half(__float2half_rn(v));
  return h.x;
}

// The number of elements whose 16 bits differ (and the first such index, n if none): a bit
// comparison, so -0 vs +0 and different NaN payloads count as mismatches too.
struct Mismatch {
  size_t count = 0;
  size_t first = 0;
};
Mismatch compare_bits(const uint16_t* ref, const uint16_t* got, size_t n) {
  Mismatch r;
  r.first = n;
  for (size_t i = 0; i < n; ++i)
    if (ref[i] != got[i]) {
      if (r.count == 0) r.first = i;
      ++r.count;
    }
  return r;
}

// The comparer reports exactly the elements changed: equal arrays 0; one element's lowest bit, a
// sign of zero, a NaN payload, the last element; two far-apart elements 2.
bool selftest_compare() {
  std::mt19937_64 rng(1);
  std::vector<uint16_t> a(4096);
  for (auto& h : a) h = static_cast<uint16_t>(rng());
  a[17] = 0x0000;     // +0
  a[33] = 0x7e00;     // a NaN
  bool ok = true;
  const auto expect = [&](const char* what, const std::vector<uint16_t>& b, size_t count, size_t first) {
    const Mismatch m = compare_bits(a.data(), b.data(), a.size());
    const bool pass = m.count == count && m.first == first;
    std::printf("selftest %-22s mismatches %zu (first %zu): %s\n", what, m.count, m.first, pass ? "ok" : "FAILED");
    ok = ok && pass;
  };
  expect("equal", a, 0, a.size());
  std::vector<uint16_t> b = a;
  b[1234] ^= 1;
  expect("lowest bit", b, 1, 1234);
  b = a;
  b[17] = 0x8000;  // -0
  expect("sign of zero", b, 1, 17);
  b = a;
  b[33] = 0x7e01;
  expect("NaN payload", b, 1, 33);
  b = a;
  b[a.size() - 1] ^= 0x8000;
  expect("last element", b, 1, a.size() - 1);
  b = a;
  b[5] ^= 0x0400;
  b[4000] ^= 0x0001;
  expect("two elements", b, 2, 5);
  // The host model: 127 * 127 * K_DQ rounds to fp16 1.0; with a bias of 1.0, 2.0; 0 is +0.
  const uint16_t one = 0x3c00;
  const bool model = host_dequant(127 * 127, 1.0f, 1.0f, nullptr) == 0x3c00 &&
                     host_dequant(127 * 127, 1.0f, 1.0f, &one) == 0x4000 &&
                     host_dequant(-127 * 127, 2.0f, 0.5f, nullptr) == 0xbc00 && host_dequant(0, 1.0f, 1.0f, nullptr) == 0;
  std::printf("selftest %-22s %s\n", "host model", model ? "ok" : "FAILED");
  return ok && model;
}




std::vector<uint16_t> download_f16(const void* d, size_t n) {
  std::vector<uint16_t> h(n);
  CUDA_OK(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost));
  return h;
}

struct ConfigResult {
  std::string name;
  bool ran = false;
  std::string why;
  size_t mismatch_nobias = 0, mismatch_bias = 0;
  double ms = 0;
};

struct Result {
  int64_t M, N, K;
  double fp16_ms = 0, linear_ms = 0, mm_dq_ms = 0, quant_ms = 0, layer_ms = 0;
  std::string best;
  size_t host_model_mismatches = 0;  // host_dequant against the library's two references
  size_t linear_mismatches = 0;      // bnb_int8_linear's out against the three calls'
  std::vector<ConfigResult> configs;
};

}  // namespace

int main(int argc, char** argv) {
  std::string nk_list = "4096,8192", m_list = "64,128,256,512,1024,2048", json;
  int reps = 20;
  bool selftest = false;
  Args args(argc, argv);
  for (std::string a; args.next_flag(a);) {
    if (a == "--nk") nk_list = args.value();
    else if (a == "--m") m_list = args.value();
    else if (a == "--reps") reps = args.int_value();
    else if (a == "--json") json = args.value();
    else if (a == "--selftest") selftest = true;
    else args.usage("[--m 64,128,256,512,1024,2048] [--nk 4096,8192] [--reps 20] [--json PATH] [--selftest]");
  }
  if (selftest) return selftest_compare() ? 0 : 1;

  bnb_context_options_t opts;
  BNB_OK(bnb_context_options_init(&opts));
  opts.backend = BNB_BACKEND_CUDA;
  bnb_context_t ctx = nullptr;
  BNB_OK(bnb_context_create(&opts, &ctx));
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  Cublas cublas;
  const bool have_cublas = cublas.load(stream);
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  if (prop.major != 9) {
    std::fprintf(stderr, "%s is sm_%d%d: this program's kernels are sm_90a only (H100/H200)\n", prop.name,
                 prop.major, prop.minor);
    return 1;
  }
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
  std::vector<std::unique_ptr<Config>> configs = make_configs(cfg::All{});
  std::printf("device %s, L2 %zu MiB, cuBLAS %s, %zu CUTLASS configurations\n", prop.name, l2 >> 20,
              have_cublas ? "loaded" : "missing", configs.size());
  if (!selftest_compare()) {
    std::fprintf(stderr, "the bit comparer's self-test failed\n");
    return 1;
  }
  std::printf("\n");

  bool any_mismatch = false;
  std::vector<Result> results;
  for (const int64_t NK : parse_int_list(nk_list)) {
    const int64_t N = NK, K = NK;
    if (N % 16 != 0 || K % 16 != 0) {
      std::fprintf(stderr, "N = K = %lld: must be a multiple of 16 (TMA alignment); skipped\n",
                   static_cast<long long>(NK));
      continue;
    }
    const size_t w8 = static_cast<size_t>(N * K), w16 = w8 * 2;
    const int copies8 = static_cast<int>(std::min<size_t>(16, std::max<size_t>(2, (4 * l2 + w8 - 1) / w8)));
    const int copies16 = static_cast<int>(std::min<size_t>(16, std::max<size_t>(2, (4 * l2 + w16 - 1) / w16)));
    std::vector<void*> W8, W16;
    {
      std::mt19937_64 rng(7);
      std::vector<int8_t> w(w8);
      for (auto& b : w) b = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
      std::fill(w.begin() + 3 * K, w.begin() + 4 * K, int8_t{0});  // row 3: c = 0 in column 3
      for (int c = 0; c < copies8; ++c) W8.push_back(device_upload(w.data(), w8));
      const std::vector<uint16_t> wf = random_f16(w8, 8);
      if (have_cublas)
        for (int c = 0; c < copies16; ++c) W16.push_back(device_upload(wf.data(), w16));
    }
    std::vector<float> scb(static_cast<size_t>(N));
    {
      std::mt19937_64 rng(11);
      std::uniform_real_distribution<float> u(0.5f, 2.0f);
      for (auto& s : scb) s = u(rng);
    }
    void* SCB = device_upload(scb.data(), scb.size() * 4);
    const std::vector<uint16_t> bias_h = random_f16(static_cast<size_t>(N), 9);
    void* bias = device_upload(bias_h.data(), bias_h.size() * 2);
    std::printf("N = K = %lld (%d int8 weight copies)\n", static_cast<long long>(NK), copies8);
    std::printf("%6s %9s %9s %9s %9s %9s %8s %8s  %s\n", "M", "fp16 us", "linear us", "mm+dq us", "quant us",
                "layer us", "lin x", "layer x", "CUTLASS product+dequant us (mismatches no bias/bias)");
    for (const int64_t M : parse_int_list(m_list)) {
      std::vector<uint16_t> xh = random_f16(static_cast<size_t>(M * K), 10);
      if (M > 1) std::fill(xh.begin() + K, xh.begin() + 2 * K, uint16_t{0});  // row 1 zero: row_stats 0
      void* X = device_upload(xh.data(), xh.size() * 2);
      void *CA, *SCA, *C, *O, *O16, *OC;
      const size_t mn = static_cast<size_t>(M * N);
      CUDA_OK(cudaMalloc(&CA, static_cast<size_t>(M * K)));
      CUDA_OK(cudaMalloc(&SCA, static_cast<size_t>(M) * 4));
      CUDA_OK(cudaMalloc(&C, mn * 4));
      CUDA_OK(cudaMalloc(&O, mn * 2));
      CUDA_OK(cudaMalloc(&O16, mn * 2));
      CUDA_OK(cudaMalloc(&OC, mn * 2));
      const auto quant = [&] {
        BNB_OK(bnb_int8_vectorwise_quant(ctx, BNB_F16, M, K, X, 0.0f, static_cast<int8_t*>(CA),
                                         static_cast<float*>(SCA), stream));
      };
      const auto matmul = [&](int i) {
        BNB_OK(bnb_int8_matmul(ctx, M, N, K, static_cast<int8_t*>(CA), static_cast<int8_t*>(W8[i % copies8]),
                               static_cast<int32_t*>(C), stream));
      };
      const auto dequant = [&](const void* b) {
        BNB_OK(bnb_int8_mm_dequant(ctx, M, N, static_cast<int32_t*>(C), static_cast<float*>(SCA),
                                   static_cast<float*>(SCB), b, BNB_F16, O, stream));
      };
      const auto linear = [&](int i) {
        BNB_OK(bnb_int8_linear(ctx, BNB_F16, M, N, K, X, 0.0f, static_cast<int8_t*>(W8[i % copies8]),
                               static_cast<float*>(SCB), bias, static_cast<int8_t*>(CA), static_cast<float*>(SCA),
                               static_cast<int32_t*>(C), O, stream));
      };

      // The references, without and with the bias.
      quant();
      matmul(0);
      dequant(nullptr);
      CUDA_OK(cudaStreamSynchronize(stream));
      const std::vector<uint16_t> ref_nobias = download_f16(O, mn);
      dequant(bias);
      CUDA_OK(cudaStreamSynchronize(stream));
      const std::vector<uint16_t> ref_bias = download_f16(O, mn);

      Result r;
      r.M = M;
      r.N = N;
      r.K = K;
      {
        // The host model of the formula (host_dequant) against the library's references, every
        // element: that the formula the EVT implements is the library's (a diagnostic; the pass or
        // fail of this program is the CUTLASS output against the library).
        std::vector<int32_t> ch(mn);
        std::vector<float> rsh(static_cast<size_t>(M));
        CUDA_OK(cudaMemcpy(ch.data(), C, mn * 4, cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(rsh.data(), SCA, rsh.size() * 4, cudaMemcpyDeviceToHost));
        for (size_t e = 0; e < mn; ++e) {
          const size_t mm = e / static_cast<size_t>(N), nn = e % static_cast<size_t>(N);
          r.host_model_mismatches += host_dequant(ch[e], rsh[mm], scb[nn], nullptr) != ref_nobias[e];
          r.host_model_mismatches += host_dequant(ch[e], rsh[mm], scb[nn], &bias_h[nn]) != ref_bias[e];
        }
        if (r.host_model_mismatches != 0)
          std::fprintf(stderr, "warning: M=%lld N=K=%lld: the host model of the formula differs from "
                       "bnb_int8_mm_dequant in %zu of %zu elements\n", static_cast<long long>(M),
                       static_cast<long long>(N), r.host_model_mismatches, 2 * mn);
      }
      const int calls = std::max(copies8, 8);
      for (auto& cfg : configs) {
        ConfigResult cr;
        cr.name = cfg->name();
        std::string why;
        const std::vector<void*> W0{W8[0]};
        // Check: copy 0, without then with the bias.
        if (!cfg->prepare(static_cast<int>(M), static_cast<int>(N), static_cast<int>(K),
                          static_cast<const int8_t*>(CA), W0, static_cast<const float*>(SCA),
                          static_cast<const float*>(SCB), nullptr, OC, &why)) {
          cr.why = why;
          r.configs.push_back(cr);
          continue;
        }
        CUDA_OK(cudaMemsetAsync(OC, 0xff, mn * 2, stream));
        if (!cfg->try_launch(0, stream, &why)) {
          cr.why = why;
          r.configs.push_back(cr);
          continue;
        }
        CUDA_OK(cudaStreamSynchronize(stream));
        CUDA_OK(cudaGetLastError());
        const std::vector<uint16_t> got_nobias = download_f16(OC, mn);
        const Mismatch m0 = compare_bits(ref_nobias.data(), got_nobias.data(), mn);
        if (!cfg->prepare(static_cast<int>(M), static_cast<int>(N), static_cast<int>(K),
                          static_cast<const int8_t*>(CA), W0, static_cast<const float*>(SCA),
                          static_cast<const float*>(SCB), bias, OC, &why)) {
          cr.why = "with bias: " + why;
          r.configs.push_back(cr);
          continue;
        }
        CUDA_OK(cudaMemsetAsync(OC, 0xff, mn * 2, stream));
        if (!cfg->try_launch(0, stream, &why)) {
          cr.why = "with bias: " + why;
          r.configs.push_back(cr);
          continue;
        }
        CUDA_OK(cudaStreamSynchronize(stream));
        CUDA_OK(cudaGetLastError());
        const std::vector<uint16_t> got_bias = download_f16(OC, mn);
        const Mismatch m1 = compare_bits(ref_bias.data(), got_bias.data(), mn);
        cr.ran = true;
        cr.mismatch_nobias = m0.count;
        cr.mismatch_bias = m1.count;
        if (m0.count + m1.count != 0) {
          any_mismatch = true;
          const Mismatch& m = m0.count != 0 ? m0 : m1;
          const auto& ref = m0.count != 0 ? ref_nobias : ref_bias;
          const auto& got = m0.count != 0 ? got_nobias : got_bias;
          // A third opinion: the formula on the host from bnb_int8_matmul's int32 product (C still
          // holds copy 0's, as the references).
          const size_t mm = m.first / static_cast<size_t>(N), nn = m.first % static_cast<size_t>(N);
          int32_t c = 0;
          float rs = 0;
          CUDA_OK(cudaMemcpy(&c, static_cast<const int32_t*>(C) + m.first, 4, cudaMemcpyDeviceToHost));
          CUDA_OK(cudaMemcpy(&rs, static_cast<const float*>(SCA) + mm, 4, cudaMemcpyDeviceToHost));
          const uint16_t model = host_dequant(c, rs, scb[nn], m0.count != 0 ? nullptr : &bias_h[nn]);
          std::fprintf(stderr,
                       "%s M=%lld N=K=%lld: %zu + %zu mismatches; first at [%zu, %zu] (%s): ref 0x%04x got 0x%04x "
                       "host model 0x%04x (c %d, row_stats %.9g, SCB %.9g)\n",
                       cr.name.c_str(), static_cast<long long>(M), static_cast<long long>(N), m0.count, m1.count, mm,
                       nn, m0.count != 0 ? "no bias" : "bias", ref[m.first], got[m.first], model, c, rs, scb[nn]);
        }
        {
          // The comparison is not trivially true: one flipped bit of a copy of the reference is seen.
          std::vector<uint16_t> flipped = ref_bias;
          flipped[mn / 2] ^= 1;
          const Mismatch mf = compare_bits(flipped.data(), got_bias.data(), mn);
          if (m1.count == 0 && mf.count != 1) {
            std::fprintf(stderr, "the comparer missed a flipped element (%zu)\n", mf.count);
            return 1;
          }
        }
        // Timing: every weight copy, with the bias.
        if (!cfg->prepare(static_cast<int>(M), static_cast<int>(N), static_cast<int>(K),
                          static_cast<const int8_t*>(CA), W8, static_cast<const float*>(SCA),
                          static_cast<const float*>(SCB), bias, OC, &why)) {
          cr.why = "copies: " + why;
          r.configs.push_back(cr);
          continue;
        }
        cr.ms = time_calls(stream, calls, reps, [&](int i) { cfg->launch(i, stream); });
        r.configs.push_back(cr);
      }

      r.linear_ms = time_calls(stream, calls, reps, [&](int i) { linear(i); });
      {
        // bnb_int8_linear promises the three calls' out bit for bit (include/bnb.h): a diagnostic.
        CUDA_OK(cudaStreamSynchronize(stream));
        const std::vector<uint16_t> lin = download_f16(O, mn);
        r.linear_mismatches = compare_bits(ref_bias.data(), lin.data(), mn).count;
        if (r.linear_mismatches != 0)
          std::fprintf(stderr, "warning: M=%lld N=K=%lld: bnb_int8_linear differs from the three calls in %zu elements\n",
                       static_cast<long long>(M), static_cast<long long>(N), r.linear_mismatches);
      }
      r.mm_dq_ms = time_calls(stream, calls, reps, [&](int i) {
        matmul(i);
        dequant(bias);
      });
      r.quant_ms = time_calls(stream, calls, reps, [&](int) { quant(); });
      Config* best = nullptr;
      double best_ms = 0;
      for (size_t c = 0; c < configs.size(); ++c)
        if (r.configs[c].ran && r.configs[c].ms > 0 && (best == nullptr || r.configs[c].ms < best_ms)) {
          best = configs[c].get();
          best_ms = r.configs[c].ms;
        }
      if (best != nullptr) {
        r.best = best->name();
        // best still holds its parameters for every weight copy, with the bias (its timing's).
        r.layer_ms = time_calls(stream, calls, reps, [&](int i) {
          quant();
          best->launch(i, stream);
        });
      }
      if (have_cublas) {
        const float one = 1.0f, zero = 0.0f;
        // Row-major out[M,N] = X[M,K] W[N,K]^T  <=>  column-major out^T[N,M] = op_T(W) X^T.
        r.fp16_ms = time_calls(stream, std::max(copies16, 8), reps, [&](int i) {
          const cublasStatus_t st = cublas.gemm_ex(cublas.handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N),
                                                   static_cast<int>(M), static_cast<int>(K), &one, W16[i % copies16],
                                                   CUDA_R_16F, static_cast<int>(K), X, CUDA_R_16F, static_cast<int>(K),
                                                   &zero, O16, CUDA_R_16F, static_cast<int>(N), CUBLAS_COMPUTE_32F,
                                                   CUBLAS_GEMM_DEFAULT);
          if (st != CUBLAS_STATUS_SUCCESS) {
            std::fprintf(stderr, "cublasGemmEx failed (%d)\n", static_cast<int>(st));
            std::exit(1);
          }
        });
      }
      std::printf("%6lld %9.2f %9.2f %9.2f %9.2f %9.2f %8.2f %8.2f ", static_cast<long long>(M), r.fp16_ms * 1e3,
                  r.linear_ms * 1e3, r.mm_dq_ms * 1e3, r.quant_ms * 1e3, r.layer_ms * 1e3,
                  r.linear_ms > 0 ? r.fp16_ms / r.linear_ms : 0.0, r.layer_ms > 0 ? r.fp16_ms / r.layer_ms : 0.0);
      for (const ConfigResult& c : r.configs) {
        if (c.ran)
          std::printf(" %s %.2f (%zu/%zu)", c.name.c_str(), c.ms * 1e3, c.mismatch_nobias, c.mismatch_bias);
        else
          std::printf(" %s skipped (%s)", c.name.c_str(), c.why.c_str());
      }
      std::printf("  best %s\n", r.best.empty() ? "-" : r.best.c_str());
      std::fflush(stdout);
      results.push_back(r);
      for (void* p : {X, CA, SCA, C, O, O16, OC}) CUDA_OK(cudaFree(p));
    }
    for (void* p : W8) CUDA_OK(cudaFree(p));
    for (void* p : W16) CUDA_OK(cudaFree(p));
    CUDA_OK(cudaFree(SCB));
    CUDA_OK(cudaFree(bias));
  }

  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", json.c_str());
      return 1;
    }
    std::fprintf(f, "{\n  \"bench\": \"int8_cutlass\",\n  \"device\": \"%s\",\n  \"bit_exact\": %s,\n  \"rows\": [\n",
                 prop.name, any_mismatch ? "false" : "true");
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f,
                   "    {\"M\": %lld, \"N\": %lld, \"K\": %lld, \"fp16_us\": %.3f, \"linear_us\": %.3f, "
                   "\"matmul_dequant_us\": %.3f, \"quant_us\": %.3f, \"layer_cutlass_us\": %.3f, "
                   "\"best_config\": \"%s\", \"linear_speedup_vs_fp16\": %.4f, \"layer_cutlass_speedup_vs_fp16\": %.4f, "
                   "\"host_model_mismatches\": %zu, \"linear_mismatches\": %zu, \"configs\": [",
                   static_cast<long long>(r.M), static_cast<long long>(r.N), static_cast<long long>(r.K),
                   r.fp16_ms * 1e3, r.linear_ms * 1e3, r.mm_dq_ms * 1e3, r.quant_ms * 1e3, r.layer_ms * 1e3,
                   r.best.c_str(), r.linear_ms > 0 ? r.fp16_ms / r.linear_ms : 0.0,
                   r.layer_ms > 0 ? r.fp16_ms / r.layer_ms : 0.0, r.host_model_mismatches, r.linear_mismatches);
      for (size_t c = 0; c < r.configs.size(); ++c) {
        const ConfigResult& x = r.configs[c];
        if (x.ran)
          std::fprintf(f, "{\"name\": \"%s\", \"us\": %.3f, \"mismatches_no_bias\": %zu, \"mismatches_bias\": %zu}%s",
                       x.name.c_str(), x.ms * 1e3, x.mismatch_nobias, x.mismatch_bias,
                       c + 1 < r.configs.size() ? ", " : "");
        else
          std::fprintf(f, "{\"name\": \"%s\", \"skipped\": \"%s\"}%s", x.name.c_str(), x.why.c_str(),
                       c + 1 < r.configs.size() ? ", " : "");
      }
      std::fprintf(f, "]}%s\n", i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
  }
  CUDA_OK(cudaStreamDestroy(stream));
  BNB_OK(bnb_context_destroy(ctx));
  if (any_mismatch) {
    std::fprintf(stderr, "FAILED: a CUTLASS configuration's output differs from bnb_int8_mm_dequant's\n");
    return 1;
  }
  std::printf("all CUTLASS configurations that ran are bit-exact with bnb_int8_matmul + bnb_int8_mm_dequant\n");
  return 0;
}
