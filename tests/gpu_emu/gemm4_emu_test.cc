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

#include "gpu_emu.h"
#include "half.h"
#include "ref.h"
#include "tables.h"

// ---------------------------------------------------------------- the CUDA subset, on the host
#define BNB_GEMM4_DYNAMIC_SHARED extern

namespace {

using bnb_emu::Barrier;

constexpr int kMaxThreads = 256;
Barrier* g_block = nullptr;
Barrier* g_warp[kMaxThreads / 32] = {};
float g_exchange[kMaxThreads / 32][32];

}  // namespace

struct uint4 {
  uint32_t x, y, z, w;
};
struct uint2 {
  uint32_t x, y;
};
inline uint2 make_uint2(uint32_t a, uint32_t b) { return {a, b}; }
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
// PTX prmt (default mode): byte i of the result is byte (s >> 4 i) & 7 of the 8 bytes {x, y}.
inline uint32_t __byte_perm(uint32_t x, uint32_t y, uint32_t s) {
  const uint64_t both = (static_cast<uint64_t>(y) << 32) | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((both >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
  return r;
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
inline float gpu_shfl(float v, int src, int width) {
  const int w = static_cast<int>(threadIdx.x) / 32, l = static_cast<int>(threadIdx.x) % 32;
  g_exchange[w][l] = v;
  g_warp[w]->wait();
  const float r = g_exchange[w][(l & ~(width - 1)) | (src & (width - 1))];
  g_warp[w]->wait();
  return r;
}
// cp.async (gpu_port.h): the copy happens at once, so commits and waits have nothing to do.
inline void gpu_cp_async16(void* smem, const void* gmem) { std::memcpy(smem, gmem, 16); }
inline void gpu_cp_async_commit() {}
template <int N>
void gpu_cp_async_wait() {}
}  // namespace gpu
}  // namespace bnb

std::mutex g_atomic_mu;
inline float atomicAdd(float* p, float v) {
  std::lock_guard<std::mutex> lock(g_atomic_mu);
  const float old = *p;
  *p = old + v;
  return old;
}

#define BNB_GEMM4_HOST_MMA  // gemm4_mma.cuh: the mma below instead of the PTX instruction
#include "gemm4_kernels.cuh"
#include "gemm4_mma.cuh"
#include "gemm4_tile.cuh"

namespace bnb {
namespace gpu {
namespace gemm4 {
float smem[16 * 1024 + 64];  // the kernels' dynamic shared memory (64 KiB)
uint16_t gemm4_mma_smem[8 * 8 * kMmaRowHalves];
uint32_t gemm4_small_smem[gemm4_mma_small_smem_bytes(2) / 4];
uint32_t gemm4_tile_smem[gemm4_tile_smem_bytes(8) / 4];

// mma.sync m16n8k16 (row.col, binary32 accumulation) over the 32 lanes of a warp, with the PTX
// fragment layout: lane (g, t) holds A rows g / g + 8, columns 2t, 2t + 1 (regs 0, 1) and
// 2t + 8, 2t + 9 (regs 2, 3); B rows 2t, 2t + 1 (reg 0) and 2t + 8, 2t + 9 (reg 1) of column g;
// C rows g / g + 8, columns 2t, 2t + 1.
uint32_t g_mma_a[kMaxThreads / 32][32][4];
uint32_t g_mma_b[kMaxThreads / 32][32][2];

template <int D>
float half_value(uint32_t h) {
  return D == kF16 ? bnb::f16_to_f32(static_cast<uint16_t>(h)) : bnb::bf16_to_f32(static_cast<uint16_t>(h));
}

template <int D>
void gemm4_mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const int w = static_cast<int>(threadIdx.x) / 32, l = static_cast<int>(threadIdx.x) % 32;
  for (int i = 0; i < 4; ++i) g_mma_a[w][l][i] = a[i];
  g_mma_b[w][l][0] = b0;
  g_mma_b[w][l][1] = b1;
  g_warp[w]->wait();
  float A[16][16], B[16][8];
  for (int L = 0; L < 32; ++L) {
    const int g = L >> 2, t = L & 3;
    const uint32_t* r = g_mma_a[w][L];
    for (int h = 0; h < 2; ++h) {
      A[g][2 * t + h] = half_value<D>(r[0] >> (16 * h) & 0xffffu);
      A[g + 8][2 * t + h] = half_value<D>(r[1] >> (16 * h) & 0xffffu);
      A[g][2 * t + 8 + h] = half_value<D>(r[2] >> (16 * h) & 0xffffu);
      A[g + 8][2 * t + 8 + h] = half_value<D>(r[3] >> (16 * h) & 0xffffu);
      B[2 * t + h][g] = half_value<D>(g_mma_b[w][L][0] >> (16 * h) & 0xffffu);
      B[2 * t + 8 + h][g] = half_value<D>(g_mma_b[w][L][1] >> (16 * h) & 0xffffu);
    }
  }
  g_warp[w]->wait();
  const int g = l >> 2, t = l & 3;
  for (int e = 0; e < 4; ++e) {
    const int row = e < 2 ? g : g + 8, col = 2 * t + (e & 1);
    float sum = 0.0f;
    for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
    c[e] += sum;
  }
}
}  // namespace gemm4
}  // namespace gpu
}  // namespace bnb

namespace {

using namespace bnb::gpu;  // the dtype tags (gpu_dtype.h)
using namespace bnb::gpu::gemm4;

// Runs body() as a grid of gx x gy (x gz) blocks of `threads` threads, one block at a time.
template <class F>
void launch(unsigned gx, unsigned gy, unsigned threads, const F& body, unsigned gz = 1) {
  blockDim.x = threads;
  gridDim.x = gx;
  gridDim.y = gy;
  gridDim.z = gz;
  for (unsigned bz = 0; bz < gz; ++bz)
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
        ts.emplace_back([&, t, bx, by, bz] {
          threadIdx.x = t;
          blockIdx.x = bx;
          blockIdx.y = by;
          blockIdx.z = bz;
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

// ||out - ref|| / ||ref|| within the op's bound for dtype D over the rows x cols outputs (row-major
// in dtype D), ref(r, c) the float64 product; every output written (finite: it was NaN-poisoned).
template <class Ref>
void expect_within_bound(int D, const void* out, int64_t rows, int64_t cols, const Ref& ref) {
  double num = 0.0, den = 0.0;
  bool finite = true;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double want = ref(r, c);
      const float o = bnb::ref::load_element(D, out, r * cols + c);
      finite = finite && std::isfinite(o);
      num += (o - want) * (o - want);
      den += want * want;
    }
  }
  EXPECT_TRUE(finite) << "an output was not written";
  EXPECT_LE(std::sqrt(num / den), tolerance(D));
}

// A random problem: packed weights (plain or nested scales) and their reference decoding, A and
// bias in dtype D, the kernels' arguments.
template <int D>
struct Problem {
  using T = typename Elem<D>::T;
  Case c;
  std::vector<uint8_t> packed_buf, absmax_q;
  uint8_t* packed = nullptr;
  std::vector<float> absmax, absmax2, effective, code2, wdq, a_exact, b_exact;
  float offset = 0.0f;
  Scales4 scales{};
  Table16 table{};
  int log2_bs = 0;
  std::vector<T> A, bias, out;

  Problem(const Case& cs, uint64_t seed) : c(cs) {
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int64_t n = c.N * c.K, nb = n / c.bs;
    std::vector<float> w(static_cast<size_t>(n));
    for (auto& v : w) v = normal(rng);
    packed_buf.resize(static_cast<size_t>(n / 2 + 16));
    packed = packed_buf.data() + c.offset;
    absmax.resize(static_cast<size_t>(nb));
    bnb::ref::quantize_4bit(c.qt, BNB_F32, w.data(), n, c.bs, packed, absmax.data());
    absmax_q.resize(static_cast<size_t>(nb));
    absmax2.resize(static_cast<size_t>((nb + 255) / 256));
    effective = absmax;
    code2.resize(256);
    scales = Scales4{absmax.data(), nullptr, nullptr, nullptr, nullptr, 8};
    if (c.nested) {
      bnb::ref::compress_absmax(absmax.data(), nb, absmax_q.data(), absmax2.data(), &offset);
      for (int i = 0; i < 256; ++i) code2[static_cast<size_t>(i)] = bnb::bits_to_float(bnb::BNB_DYNAMIC_SIGNED_BITS[i]);
      bnb::ref::decompress_absmax(absmax_q.data(), absmax2.data(), code2.data(), offset, nb, 256, effective.data());
      scales = Scales4{nullptr, absmax_q.data(), absmax2.data(), code2.data(), &offset, 8};
    }
    wdq.resize(static_cast<size_t>(n));
    bnb::ref::dequantize_4bit(c.qt, packed, effective.data(), n, c.bs, BNB_F32, wdq.data());
    const uint32_t* bits = c.qt == BNB_FP4 ? bnb::kFP4DecodeBits : bnb::kNF4Bits;
    for (int i = 0; i < 16; ++i) table.v[i] = bnb::bits_to_float(bits[i]);
    while ((int64_t{1} << log2_bs) < c.bs) ++log2_bs;
    A.resize(static_cast<size_t>(c.M * c.K));
    bias.resize(static_cast<size_t>(c.N));
    out.resize(static_cast<size_t>(c.M * c.N));
    a_exact.resize(A.size());
    b_exact.resize(bias.size());
    for (size_t i = 0; i < A.size(); ++i) {
      bnb::ref::store_element(D, A.data(), static_cast<int64_t>(i), normal(rng));
      a_exact[i] = bnb::ref::load_element(D, A.data(), static_cast<int64_t>(i));
    }
    for (size_t i = 0; i < bias.size(); ++i) {
      bnb::ref::store_element(D, bias.data(), static_cast<int64_t>(i), normal(rng));
      b_exact[i] = bnb::ref::load_element(D, bias.data(), static_cast<int64_t>(i));
    }
    std::memset(out.data(), 0xff, out.size() * sizeof(T));  // NaN: unwritten elements fail
  }

  // ||out - ref|| / ||ref|| against the float64 product of A and the reference-decoded weights.
  void expect_close() const {
    expect_within_bound(D, out.data(), c.M, c.N, [&](int64_t m, int64_t j) {
      double s = c.bias ? b_exact[static_cast<size_t>(j)] : 0.0;
      for (int64_t k = 0; k < c.K; ++k)
        s += static_cast<double>(a_exact[static_cast<size_t>(m * c.K + k)]) * wdq[static_cast<size_t>(j * c.K + k)];
      return s;
    });
  }
};

template <int D, int MB, int NR, int U, bool ALIGNED>
void check(const Case& c, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "D=" << D << " MB=" << MB << " NR=" << NR << " U=" << U << " M=" << c.M << " N=" << c.N
                                    << " K=" << c.K << " bs=" << c.bs << " kc=" << c.kc);
  ASSERT_EQ(c.K % c.bs, 0);
  ASSERT_LE(MB * c.kc + 16 + 256, static_cast<int>(sizeof smem / sizeof(float)));
  Problem<D> p(c, seed);
  const unsigned gy = static_cast<unsigned>((c.M + MB - 1) / MB);
  launch(c.gx, gy, kGemm4Warps * 32, [&] {
    gemm4_simt_kernel<D, MB, NR, U, ALIGNED>(p.A.data(), p.packed, p.scales, p.table, c.bias ? p.bias.data() : nullptr,
                                             p.out.data(), c.M, c.N, c.K, p.log2_bs, c.kc);
  });
  p.expect_close();
}

// The tensor-core kernel with MT tiles of 8 rows of A; k_split < K runs the split-K variant
// (binary32 partial sums, then the finishing kernel).
template <int D, int MT>
void check_mma(const Case& c, int64_t k_split, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "mma D=" << D << " MT=" << MT << " M=" << c.M << " N=" << c.N << " K=" << c.K
                                    << " bs=" << c.bs << " k_split=" << k_split);
  ASSERT_EQ(c.K % 64, 0);
  ASSERT_EQ(k_split % 64, 0);
  Problem<D> p(c, seed);
  const unsigned gx = static_cast<unsigned>((c.N + kMmaRows - 1) / kMmaRows);
  const unsigned gy = static_cast<unsigned>((c.K + k_split - 1) / k_split);
  const unsigned gz = static_cast<unsigned>((c.M + 8 * MT - 1) / (8 * MT));
  std::vector<float> partial(static_cast<size_t>(c.M * c.N), 0.0f);
  const bool split = gy > 1;
  const auto* bias = c.bias ? p.bias.data() : nullptr;
  launch(
      gx, gy, kMmaWarps * 32,
      [&] {
        gemm4_mma_kernel<D, MT>(p.A.data(), p.packed, p.scales, p.table, bias, p.out.data(),
                                split ? partial.data() : nullptr, c.M, c.N, c.K, p.log2_bs, k_split);
      },
      gz);
  if (split) launch(2, 1, 64, [&] { gemm4_finish_kernel<D>(partial.data(), bias, p.out.data(), c.M, c.N); });
  p.expect_close();
}

// The small-M tensor-core kernel on gx persistent blocks (fewer than the tiles: blocks loop).
// expand_absmax2: nested scales rewritten with one absmax2 entry per block (each a little
// different, the reference decoding redone), so a warp's chunk range meets more absmax2 entries
// than the two it keeps per tile.
template <int D, int MT>
void check_mma_small(const Case& c, uint64_t seed, bool expand_absmax2 = false) {
  SCOPED_TRACE(::testing::Message() << "mma_small D=" << D << " MT=" << MT << " M=" << c.M << " N=" << c.N
                                    << " K=" << c.K << " bs=" << c.bs << " gx=" << c.gx << " expand=" << expand_absmax2);
  ASSERT_EQ(c.K % 64, 0);
  Problem<D> p(c, seed);
  std::vector<float> per_block;
  if (expand_absmax2) {
    ASSERT_TRUE(c.nested);
    for (size_t b = 0; b < p.absmax_q.size(); ++b) {
      per_block.push_back(p.absmax2[b >> 8] * (1.0f + 0.05f * static_cast<float>(b % 7)));
      p.effective[b] = __fadd_rn(__fmul_rn(p.code2[p.absmax_q[b]], per_block[b]), p.offset);
    }
    p.scales.absmax2 = per_block.data();
    p.scales.log2_blocksize2 = 0;
    bnb::ref::dequantize_4bit(c.qt, p.packed, p.effective.data(), c.N * c.K, c.bs, BNB_F32, p.wdq.data());
  }
  launch(c.gx, 1, kSmallWarps * 32, [&] {
    if (c.nested) {
      gemm4_mma_small_kernel<D, MT, true>(p.A.data(), p.packed, p.scales, p.table, c.bias ? p.bias.data() : nullptr,
                                          p.out.data(), c.M, c.N, c.K, p.log2_bs);
    } else {
      gemm4_mma_small_kernel<D, MT, false>(p.A.data(), p.packed, p.scales, p.table, c.bias ? p.bias.data() : nullptr,
                                           p.out.data(), c.M, c.N, c.K, p.log2_bs);
    }
  });
  p.expect_close();
}

// The large-M tensor-core kernel: blocks of 64 W rows x 8 MT rows of A over K ranges of k_split
// (< K: binary32 partial sums, then the finishing kernel).
template <int D, int MT>
void check_tile(const Case& c, int64_t k_split, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "tile D=" << D << " MT=" << MT << " M=" << c.M << " N=" << c.N << " K=" << c.K
                                    << " bs=" << c.bs << " nested=" << c.nested << " k_split=" << k_split);
  ASSERT_EQ(c.K % 64, 0);
  ASSERT_EQ(k_split % 64, 0);
  Problem<D> p(c, seed);
  const unsigned gx = static_cast<unsigned>((c.M + 8 * MT - 1) / (8 * MT));
  const unsigned gy = static_cast<unsigned>((c.N + kTileRows - 1) / kTileRows);
  const unsigned gz = static_cast<unsigned>((c.K + k_split - 1) / k_split);
  std::vector<float> partial(static_cast<size_t>(c.M * c.N), 0.0f);
  const bool split = gz > 1;
  const auto* bias = c.bias ? p.bias.data() : nullptr;
  std::memset(gemm4_tile_smem, 0xff, sizeof gemm4_tile_smem);  // NaN: a read of an unwritten stage shows
  launch(
      gx, gy, kTileWarps * 32,
      [&] {
        float* part = split ? partial.data() : nullptr;
        if (c.nested) {
          gemm4_tile_kernel<D, MT, true>(p.A.data(), p.packed, p.scales, p.table, bias, p.out.data(), part, c.M, c.N,
                                         c.K, p.log2_bs, k_split);
        } else {
          gemm4_tile_kernel<D, MT, false>(p.A.data(), p.packed, p.scales, p.table, bias, p.out.data(), part, c.M, c.N,
                                          c.K, p.log2_bs, k_split);
        }
      },
      gz);
  if (split) launch(2, 1, 64, [&] { gemm4_finish_kernel<D>(partial.data(), bias, p.out.data(), c.M, c.N); });
  p.expect_close();
}

// The transposed product's SIMT kernel: out[M,K] = A[M,N] @ Wdq[N,K], W rows split over
// gz = ceil(N / n_split) blocks (more than one: partial sums, then the finishing kernel).
template <int D, int MB>
void check_transposed(const Case& c, int64_t n_split, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "transposed D=" << D << " MB=" << MB << " M=" << c.M << " N=" << c.N
                                    << " K=" << c.K << " bs=" << c.bs << " n_split=" << n_split);
  using T = typename Elem<D>::T;
  Case forward = c;
  forward.M = 1;  // Problem's A is [M, K]; this product's A is [M, N], made below
  Problem<D> p(forward, seed);
  std::mt19937 rng(static_cast<uint32_t>(seed + 1));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<T> A(static_cast<size_t>(c.M * c.N)), out(static_cast<size_t>(c.M * c.K));
  std::vector<double> a(A.size());
  for (size_t i = 0; i < A.size(); ++i) {
    bnb::ref::store_element(D, A.data(), static_cast<int64_t>(i), normal(rng));
    a[i] = bnb::ref::load_element(D, A.data(), static_cast<int64_t>(i));
  }
  std::memset(out.data(), 0xff, out.size() * sizeof(T));  // NaN: unwritten elements fail
  const unsigned gx = static_cast<unsigned>((c.K + kTransposedCols - 1) / kTransposedCols);
  const unsigned gy = static_cast<unsigned>((c.M + MB - 1) / MB);
  const unsigned gz = static_cast<unsigned>((c.N + n_split - 1) / n_split);
  std::vector<float> partial(out.size(), 0.0f);
  const bool split = gz > 1;
  launch(
      gx, gy, kTransposedThreads,
      [&] {
        gemm4_transposed_simt_kernel<D, MB>(A.data(), p.packed, p.scales, p.table, split ? partial.data() : nullptr,
                                            out.data(), c.M, c.N, c.K, p.log2_bs, n_split);
      },
      gz);
  if (split) launch(2, 1, 64, [&] { gemm4_finish_kernel<D>(partial.data(), nullptr, out.data(), c.M, c.K); });
  expect_within_bound(D, out.data(), c.M, c.K, [&](int64_t m, int64_t k) {
    double ref = 0.0;
    for (int64_t n = 0; n < c.N; ++n) ref += a[static_cast<size_t>(m * c.N + n)] * p.wdq[static_cast<size_t>(n * c.K + k)];
    return ref;
  });
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

TEST(Gemm4KernelsOnHost, TensorCoreTiles) {
  // M, N, K, bs, quant, nested, bias, (kc, gx unused), W offset
  check_mma<kF16, 1>({3, 70, 1024, 64, BNB_NF4, true, true, 0, 0, 0}, 1024, 21);
  check_mma<kBF16, 1>({8, 64, 640, 64, BNB_FP4, false, false, 0, 0, 0}, 640, 22);
  check_mma<kF16, 2>({11, 130, 1152, 128, BNB_NF4, false, true, 0, 0, 0}, 384, 23);  // split K, K % 512 != 0
  check_mma<kBF16, 4>({20, 40, 512, 64, BNB_NF4, true, true, 0, 0, 0}, 512, 24);
  check_mma<kF16, 2>({37, 66, 768, 256, BNB_NF4, true, false, 0, 0, 0}, 256, 25);    // 3 tiles of A rows, split K
}

TEST(Gemm4KernelsOnHost, TensorCoreSmallM) {
  // M, N, K, bs, quant, nested, bias, (kc unused), gx, (W offset unused)
  check_mma_small<kF16, 1>({1, 70, 1024, 64, BNB_NF4, true, true, 0, 3, 0}, 31);   // 5 tiles on 3 blocks
  check_mma_small<kBF16, 1>({4, 48, 640, 64, BNB_FP4, false, false, 0, 2, 0}, 32);  // 10 chunks over 8 warps
  check_mma_small<kF16, 1>({7, 16, 64, 64, BNB_NF4, false, true, 0, 1, 0}, 33);     // one chunk: 7 warps idle
  check_mma_small<kF16, 2>({13, 33, 1152, 128, BNB_NF4, true, true, 0, 2, 0}, 34);
  check_mma_small<kBF16, 2>({16, 40, 2048, 256, BNB_NF4, true, false, 0, 3, 0}, 35);
  check_mma_small<kF16, 2>({20, 24, 512, 64, BNB_FP4, true, true, 0, 2, 0}, 36);    // 2 tiles of A rows
  check_mma_small<kF16, 1>({2, 20, 2048, 64, BNB_NF4, true, true, 0, 2, 0}, 37, true);
}

TEST(Gemm4KernelsOnHost, TensorCoreLargeM) {
  // M, N, K, bs, quant, nested, bias, (kc, gx, W offset unused)
  check_tile<kF16, 4>({20, 70, 640, 64, BNB_NF4, true, true, 0, 0, 0}, 640, 41);     // 3 steps, the last half empty
  check_tile<kBF16, 8>({70, 40, 1024, 128, BNB_FP4, false, false, 0, 0, 0}, 512, 42);  // 2 tiles of A, split K
  check_tile<kF16, 8>({64, 64, 2304, 256, BNB_NF4, true, false, 0, 0, 0}, 2304, 43);  // 9 steps: stages wrap
  check_tile<kBF16, 4>({17, 33, 1152, 64, BNB_NF4, true, true, 0, 0, 0}, 768, 44);     // split 768 + 384
}

TEST(Gemm4KernelsOnHost, TransposedSimt) {
  // M, N, K, bs, quant, nested, (bias, kc, gx, W offset unused)
  check_transposed<kF32, 1>({1, 70, 2080, 32, BNB_NF4, true, false, 0, 0, 0}, 70, 51);      // two column blocks
  check_transposed<kBF16, 8>({11, 130, 256, 64, BNB_FP4, false, false, 0, 0, 0}, 64, 52);   // 3 splits, 2 row tiles
  check_transposed<kF16, 8>({8, 33, 4096, 4096, BNB_NF4, true, false, 0, 0, 0}, 33, 53);   // one block per row
}
