// The gemm_4bit GPU kernels (src/gpu/gemm4_kernels.cuh) compiled as host C++ and run with one
// std::thread per CUDA thread: a check of their indexing (nibble order, swizzled shared memory,
// block scales, K chunks, A tiles, row groups, the misaligned-load variant) on machines without
// a GPU. Barriers stand in for __syncthreads, a per-warp exchange for the shuffles; arithmetic is
// the same binary32 operations. Compared with a float64 product of reference-decoded weights
// (tests/ref) within the op's bounds, and the dequantize kernel bit for bit with the reference.
// It says nothing about speed, occupancy or the memory model: tests/gpu does that on a device.
#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "half.h"
#include "ref.h"
#include "tables.h"

// ---------------------------------------------------------------- the CUDA subset, on the host
#define BNB_GPU_GPU_PORT_H_  // the real gpu_port.h needs a CUDA compiler
#define BNB_GEMM4_DYNAMIC_SHARED extern
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static  // one copy shared by the block's threads (blocks run one at a time)

namespace {

struct Dim {
  unsigned x = 0, y = 0, z = 0;
};
thread_local Dim threadIdx, blockIdx;
Dim blockDim, gridDim;

// A reusable barrier for `count` threads.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t gen = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_, arrived_ = 0;
  int64_t generation_ = 0;
};

constexpr int kMaxThreads = 256;
Barrier* g_block = nullptr;
Barrier* g_warp[kMaxThreads / 32] = {};
float g_exchange[kMaxThreads / 32][32];

}  // namespace

struct uint4 {
  uint32_t x, y, z, w;
};
struct float4 {
  float x, y, z, w;
};
inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return {a, b, c, d}; }
inline void __syncthreads() { g_block->wait(); }
template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcs(const T* p) {
  return *p;
}
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;  // one rounding, never contracted
  return r;
}
inline float __fadd_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
struct __half {
  uint16_t bits;
};
inline __half __ushort_as_half(uint16_t b) { return {b}; }
inline uint16_t __half_as_ushort(__half h) { return h.bits; }
inline float __half2float(__half h) { return bnb::f16_to_f32(h.bits); }
inline __half __float2half_rn(float f) { return {bnb::f32_to_f16(f)}; }

namespace bnb {
namespace gpu {
inline float gpu_shfl_xor(float v, int mask, int /*width*/) {
  const int w = static_cast<int>(threadIdx.x) / 32, l = static_cast<int>(threadIdx.x) % 32;
  g_exchange[w][l] = v;
  g_warp[w]->wait();
  const float r = g_exchange[w][l ^ mask];
  g_warp[w]->wait();
  return r;
}
}  // namespace gpu
}  // namespace bnb

#include "gemm4_kernels.cuh"

namespace bnb {
namespace gpu {
namespace gemm4 {
float smem[16 * 1024 + 64];  // the kernels' dynamic shared memory (64 KiB)
}  // namespace gemm4
}  // namespace gpu
}  // namespace bnb

namespace {

using namespace bnb::gpu::gemm4;

// Runs body() as a grid of gx x gy blocks of `threads` threads, one block at a time.
template <class F>
void launch(unsigned gx, unsigned gy, unsigned threads, const F& body) {
  blockDim.x = threads;
  gridDim.x = gx;
  gridDim.y = gy;
  for (unsigned by = 0; by < gy; ++by) {
    for (unsigned bx = 0; bx < gx; ++bx) {
      Barrier block(static_cast<int>(threads));
      std::vector<std::unique_ptr<Barrier>> warps;
      g_block = &block;
      for (unsigned w = 0; w < threads / 32; ++w) {
        warps.push_back(std::make_unique<Barrier>(32));
        g_warp[w] = warps.back().get();
      }
      std::vector<std::thread> ts;
      for (unsigned t = 0; t < threads; ++t) {
        ts.emplace_back([&, t, bx, by] {
          threadIdx.x = t;
          blockIdx.x = bx;
          blockIdx.y = by;
          body();
        });
      }
      for (auto& t : ts) t.join();
    }
  }
}

struct Case {
  int64_t M, N, K, bs;
  int32_t qt;
  bool nested, bias;
  int kc;        // K chunk staged in shared memory (the launcher uses 8192 / MB)
  unsigned gx;   // blocks along N: fewer than the row groups, so blocks loop
  int offset;    // byte offset of W: > 0 takes the misaligned-load variant
};

double tolerance(int D) { return D == kF32 ? 1e-5 : D == kF16 ? 2e-3 : 1e-2; }

template <int D, int MB, int NR, int U, bool ALIGNED>
void check(const Case& c, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "D=" << D << " MB=" << MB << " NR=" << NR << " U=" << U << " M=" << c.M << " N=" << c.N
                                    << " K=" << c.K << " bs=" << c.bs << " kc=" << c.kc);
  ASSERT_EQ(c.K % c.bs, 0);
  ASSERT_LE(MB * c.kc + 16 + 256, static_cast<int>(sizeof smem / sizeof(float)));
  using T = typename Elem<D>::T;
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = c.N * c.K, nb = n / c.bs;
  std::vector<float> w(static_cast<size_t>(n));
  for (auto& v : w) v = normal(rng);
  std::vector<uint8_t> packed_buf(static_cast<size_t>(n / 2 + 16));
  uint8_t* packed = packed_buf.data() + c.offset;
  std::vector<float> absmax(static_cast<size_t>(nb));
  bnb::ref::quantize_4bit(c.qt, BNB_F32, w.data(), n, c.bs, packed, absmax.data());
  std::vector<uint8_t> absmax_q(static_cast<size_t>(nb));
  std::vector<float> absmax2(static_cast<size_t>((nb + 255) / 256)), effective = absmax, code2(256);
  float offset = 0.0f;
  Gemm4Scales scales{absmax.data(), nullptr, nullptr, nullptr, nullptr, 8};
  if (c.nested) {
    bnb::ref::compress_absmax(absmax.data(), nb, absmax_q.data(), absmax2.data(), &offset);
    for (int i = 0; i < 256; ++i) code2[static_cast<size_t>(i)] = bnb::bits_to_float(bnb::BNB_DYNAMIC_SIGNED_BITS[i]);
    bnb::ref::decompress_absmax(absmax_q.data(), absmax2.data(), code2.data(), offset, nb, 256, effective.data());
    scales = Gemm4Scales{nullptr, absmax_q.data(), absmax2.data(), code2.data(), &offset, 8};
  }
  std::vector<float> wdq(static_cast<size_t>(n));
  bnb::ref::dequantize_4bit(c.qt, packed, effective.data(), n, c.bs, BNB_F32, wdq.data());
  Table16 table;
  const uint32_t* bits = c.qt == BNB_FP4 ? bnb::kFP4DecodeBits : bnb::kNF4Bits;
  for (int i = 0; i < 16; ++i) table.v[i] = bnb::bits_to_float(bits[i]);
  int log2_bs = 0;
  while ((int64_t{1} << log2_bs) < c.bs) ++log2_bs;

  std::vector<T> A(static_cast<size_t>(c.M * c.K)), bias(static_cast<size_t>(c.N)), out(static_cast<size_t>(c.M * c.N));
  std::vector<float> a_exact(A.size()), b_exact(bias.size());
  for (size_t i = 0; i < A.size(); ++i) {
    bnb::ref::store_element(D, A.data(), static_cast<int64_t>(i), normal(rng));
    a_exact[i] = bnb::ref::load_element(D, A.data(), static_cast<int64_t>(i));
  }
  for (size_t i = 0; i < bias.size(); ++i) {
    bnb::ref::store_element(D, bias.data(), static_cast<int64_t>(i), normal(rng));
    b_exact[i] = bnb::ref::load_element(D, bias.data(), static_cast<int64_t>(i));
  }
  std::memset(out.data(), 0xff, out.size() * sizeof(T));  // NaN: unwritten elements fail
  const unsigned gy = static_cast<unsigned>((c.M + MB - 1) / MB);
  launch(c.gx, gy, kGemm4Warps * 32, [&] {
    gemm4_simt_kernel<D, MB, NR, U, ALIGNED>(A.data(), packed, scales, table, c.bias ? bias.data() : nullptr, out.data(),
                                         c.M, c.N, c.K, log2_bs, c.kc);
  });
  double num = 0.0, den = 0.0;
  bool finite = true;
  for (int64_t m = 0; m < c.M; ++m) {
    for (int64_t j = 0; j < c.N; ++j) {
      double s = c.bias ? b_exact[static_cast<size_t>(j)] : 0.0;
      for (int64_t k = 0; k < c.K; ++k)
        s += static_cast<double>(a_exact[static_cast<size_t>(m * c.K + k)]) * wdq[static_cast<size_t>(j * c.K + k)];
      const float o = bnb::ref::load_element(D, out.data(), m * c.N + j);
      finite = finite && std::isfinite(o);
      num += (o - s) * (o - s);
      den += s * s;
    }
  }
  EXPECT_TRUE(finite) << "an output was not written";
  EXPECT_LE(std::sqrt(num / den), tolerance(D));

  // The dequantize kernel on rows [N/3, N): RN_D(RN32(LUT * absmax)), bit for bit.
  const int64_t n0 = c.N / 3, rows = c.N - n0;
  std::vector<T> ws(static_cast<size_t>(rows * c.K)), want(static_cast<size_t>(n));
  bnb::ref::dequantize_4bit(c.qt, packed, effective.data(), n, c.bs, D, want.data());
  launch(3, 1, 256, [&] {
    gemm4_dequantize_kernel<D, ALIGNED>(packed, scales, table, n0, rows, c.K, log2_bs, ws.data());
  });
  EXPECT_EQ(std::memcmp(ws.data(), want.data() + n0 * c.K, ws.size() * sizeof(T)), 0);
}

}  // namespace

TEST(Gemm4KernelsOnHost, GemvAndSmallBatch) {
  // M, N, K, bs, quant, nested, bias, kc, gx, W offset
  check<kF32, 1, 4, 2, true>({1, 70, 2048, 64, BNB_NF4, false, true, 8192, 2, 0}, 1);
  check<kF32, 1, 4, 2, true>({1, 37, 2048, 32, BNB_FP4, true, false, 1024, 2, 0}, 2);
  check<kF16, 1, 4, 2, true>({1, 45, 5120, 64, BNB_NF4, true, true, 5120, 1, 0}, 9);
  check<kBF16, 2, 4, 2, false>({2, 33, 1056, 32, BNB_NF4, true, true, 4096, 1, 3}, 3);
  check<kBF16, 2, 4, 2, true>({2, 33, 1056, 32, BNB_FP4, false, true, 512, 2, 0}, 4);
  check<kF16, 4, 4, 2, true>({3, 67, 1024, 128, BNB_FP4, false, true, 512, 2, 0}, 5);
  check<kF16, 4, 4, 2, true>({4, 35, 3072, 64, BNB_NF4, true, false, 2560, 1, 0}, 10);
  check<kBF16, 8, 4, 2, true>({11, 65, 2080, 32, BNB_NF4, true, false, 1024, 1, 0}, 6);
  check<kF32, 8, 4, 2, false>({8, 20, 4096, 4096, BNB_NF4, false, true, 1024, 3, 5}, 7);
  check<kF16, 1, 4, 2, false>({1, 9, 96, 32, BNB_NF4, true, true, 96, 1, 1}, 8);
}
