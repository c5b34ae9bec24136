// The LLM.int8() GPU kernels of bnb_int8_linear_outliers (src/gpu/int8_kernels.cuh) compiled as
// host C++ and run with one std::thread per GPU thread, blocks one after another: the outlier
// flags written into the caller's column buffer and compacted there in place (bnb_int8_outlier_columns),
// and the layer's outlier step (the quantization pass's zeroing kernel writing the flags, then
// the product that also writes the column list and count; for one row the product alone)
// against the CPU backend's int8_add_outlier_product bit for bit (docs/OPS.md §5.10, which
// tests/unit/test_int8.cc holds to an independent reference). The prefix sums take the kernels'
// HIP path (shared memory; the CUDA path scans with warp shuffles instead). The arithmetic is
// the device's: binary32, one rounding per operation, subnormal operands and results flushed (the
// HIP build's -fgpu-flush-denormals-to-zero; CUDA's .ftz instructions). Says nothing about speed
// or the memory model (the last-block pattern's fences and atomics): tests/gpu does that on a
// device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "code8_select.h"
#include "gpu_emu.h"
#include "half.h"
#include "int8_kernels.h"  // the CPU backend's int8_add_outlier_product

// ---------------------------------------------------------------- the HIP subset, on the host
#define BNB_GPU_HIP 1

namespace {
bnb_emu::Barrier* g_block = nullptr;
}  // namespace

inline void __syncthreads() { g_block->wait(); }
[[noreturn]] inline void __trap() { std::abort(); }
template <class T>
T __ldg(const T* p) {
  return *p;
}
inline float ftz(float x) { return bnb::c8_ftz(x); }
inline float __int2float_rn(int32_t i) { return static_cast<float>(i); }
// cvt.rni.s32.f32: saturates (+-inf and beyond the range to INT_MAX / INT_MIN), NaN gives 0.
inline int __float2int_rn(float f) {
  if (std::isnan(f)) return 0;
  const float r = std::nearbyint(f);
  if (r >= 2147483648.0f) return INT32_MAX;
  if (r < -2147483648.0f) return INT32_MIN;
  return static_cast<int>(r);
}
inline float __shfl_xor(float, int, int) { std::abort(); }  // not in the kernels run here
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
// The threads of a block run at once: a real atomic.
inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
// Blocks run one at a time and only one thread of a block counts it in: a plain add is atomic here.
inline void __threadfence() {}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p = old + v;
  return old;
}
struct int4 {
  int32_t x, y, z, w;
};
inline int4 make_int4(int32_t a, int32_t b, int32_t c, int32_t d) { return {a, b, c, d}; }
struct float4 {
  float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct uint2 {
  uint32_t x, y;
};
inline uint2 make_uint2(uint32_t a, uint32_t b) { return {a, b}; }

namespace bnb {
namespace gpu {
constexpr int kWarpSize = 32;
inline float gpu_mul_ftz(float a, float b) { return ftz(ftz(a) * ftz(b)); }
inline float gpu_add_ftz(float a, float b) { return ftz(ftz(a) + ftz(b)); }
inline float gpu_fma_ftz(float a, float b, float c) { return ftz(std::fma(ftz(a), ftz(b), ftz(c))); }
inline float gpu_max_ftz(float a, float b) { return std::fmax(a, b); }
inline float gpu_block_reciprocal(float m) { return 1.0f / m; }
// A warp's exchange, through the block's barrier: every thread of the block makes the same calls
// (block_max's butterfly does), so each finds its partner's value in the slot it wrote.
inline float gpu_shfl_xor(float v, int off, int width) {
  static float slot[1024];
  const unsigned t = threadIdx.x + threadIdx.y * blockDim.x, base = t / width * width;
  slot[t] = v;
  g_block->wait();
  const float r = slot[base + ((t - base) ^ static_cast<unsigned>(off))];
  g_block->wait();
  return r;
}
}  // namespace gpu
}  // namespace bnb

#include "int8_kernels.cuh"

namespace {

using namespace bnb::gpu;
using namespace bnb::gpu::int8;

// Runs body() as a grid of gx x gy blocks of bx x by threads, one block at a time. The same bx x by
// threads run every block in turn, a barrier between blocks (their __shared__ memory is one): a
// thread per GPU thread and block was 280,000 thread starts in OutlierStepMatchesCpu (24,000
// now), most of its minute under AddressSanitizer.
template <class F>
void launch(unsigned gx, unsigned gy, unsigned bx, unsigned by, const F& body) {
  blockDim = {bx, by, 1};
  gridDim = {gx, gy, 1};
  bnb_emu::Barrier block(static_cast<int>(bx * by));
  g_block = &block;
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < bx * by; ++t) {
    ts.emplace_back([&, t] {
      threadIdx = {t % bx, t / bx, 0};
      for (unsigned y = 0; y < gy; ++y) {
        for (unsigned x = 0; x < gx; ++x) {
          blockIdx = {x, y, 0};
          body();
          block.wait();  // the whole block is done before the next one starts
        }
      }
    });
  }
  for (auto& t : ts) t.join();
}

// fp16 activations [rows, cols]: |x| < 4 except at the given columns, which hold one |x| >= 6.
std::vector<uint16_t> activations(int64_t rows, int64_t cols, const std::vector<int32_t>& outliers, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> a(static_cast<size_t>(rows * cols));
  for (auto& h : a) h = bnb::f32_to_f16(std::fmax(-3.9f, std::fmin(3.9f, normal(rng))));
  for (const int32_t c : outliers)
    a[static_cast<size_t>(static_cast<int64_t>(rng() % static_cast<uint64_t>(rows)) * cols + c)] =
        bnb::f32_to_f16((rng() % 2 ? 1.0f : -1.0f) * (6.0f + static_cast<float>(rng() % 500) / 10.0f));
  return a;
}

std::vector<int32_t> random_columns(int64_t cols, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> c;
  while (static_cast<int64_t>(c.size()) < n) {
    const auto v = static_cast<int32_t>(rng() % static_cast<uint64_t>(cols));
    if (std::find(c.begin(), c.end(), v) == c.end()) c.push_back(v);
  }
  std::sort(c.begin(), c.end());
  return c;
}

// The flags written into `columns` itself, then compacted there (one block of 1024 threads
// walks the columns 64 per thread per step): the ascending outlier columns and their count.
TEST(Int8KernelsOnHost, OutlierColumnsCompactInPlace) {
  const int64_t shapes[][3] = {{1, 1, 1}, {3, 33, 2}, {7, 1000, 9}, {2, 2053, 40}, {5, 2100, 2100}};
  uint64_t seed = 11;
  for (const auto& s : shapes) {
    const int64_t rows = s[0], cols = s[1];
    SCOPED_TRACE(testing::Message() << "rows " << rows << " cols " << cols << " outliers " << s[2]);
    const std::vector<int32_t> want = s[2] == cols ? [&] {
      std::vector<int32_t> all(static_cast<size_t>(cols));
      for (int64_t c = 0; c < cols; ++c) all[static_cast<size_t>(c)] = static_cast<int32_t>(c);
      return all;
    }()
                                                   : random_columns(cols, s[2], ++seed);
    const std::vector<uint16_t> a = activations(rows, cols, want, ++seed);
    std::vector<int32_t> columns(static_cast<size_t>(cols), -7);
    int64_t count = -1;
    const float t = 6.0f;
    // The launcher's blocks are 32 x 32; the kernel takes any number of row phases (4 here: fewer threads).
    launch(static_cast<unsigned>((cols + 31) / 32), 1, 32, 4,
           [&] { outlier_columns_kernel<kF16>(a.data(), rows, cols, t, nullptr, columns.data(), nullptr); });
    launch(1, 1, 1024, 1, [&] { compact_columns_kernel(columns.data(), cols, columns.data(), cols, &count); });
    ASSERT_EQ(count, static_cast<int64_t>(want.size()));
    columns.resize(static_cast<size_t>(count));
    EXPECT_EQ(columns, want);
  }
}

// More columns than one step of the walk (1024 x 64), into a separate list of fewer entries than
// there are outlier columns: the count is the total, the first `capacity` columns are written.
TEST(Int8KernelsOnHost, CompactColumnsTakesSeveralStepsAndCapacity) {
  const int64_t cols = 1024 * 64 * 2 + 77, capacity = 3000;
  const std::vector<int32_t> want = random_columns(cols, 5000, 7);
  std::vector<int32_t> flags(static_cast<size_t>(cols), 0), columns(static_cast<size_t>(capacity + 8), -7);
  for (const int32_t c : want) flags[static_cast<size_t>(c)] = 1;
  int64_t count = -1;
  launch(1, 1, 1024, 1, [&] { compact_columns_kernel(flags.data(), cols, columns.data(), capacity, &count); });
  ASSERT_EQ(count, 5000);
  EXPECT_EQ(std::vector<int32_t>(columns.begin(), columns.begin() + capacity),
            std::vector<int32_t>(want.begin(), want.begin() + capacity));
  EXPECT_EQ(std::vector<int32_t>(columns.begin() + capacity, columns.end()), std::vector<int32_t>(8, -7));
}

// row_quant_kernel's runs of 16 elements a thread (16-byte loads and stores: cols % 16 == 0,
// aligned) against its one-element-a-thread loop, bit for bit, with and without a threshold;
// the row statistic is also the plain max over |x| (below the threshold). Rows of several runs a
// thread and a last run that only some threads have.
template <int kThreads>
void check_row_quant_runs(int64_t rows, int64_t cols, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "threads " << kThreads << " rows " << rows << " cols " << cols);
  const std::vector<uint16_t> a = activations(rows, cols, random_columns(cols, 3, seed), seed + 1);
  alignas(16) static int8_t q_vec[1 << 16], q_one[1 << 16];
  ASSERT_LE(rows * cols, int64_t{1} << 16);
  for (const float t : {0.0f, 6.0f}) {
    SCOPED_TRACE(testing::Message() << "threshold " << t);
    std::vector<float> stats_vec(static_cast<size_t>(rows), -1.0f), stats_one(static_cast<size_t>(rows), -2.0f);
    std::memset(q_vec, 0x55, sizeof q_vec);
    std::memset(q_one, 0x77, sizeof q_one);
    // With a threshold, the flag bits of the columns holding an |x| >= t (the others keep their 0)
    // and the block counter zeroed.
    const size_t words = static_cast<size_t>((cols + 31) / 32);
    std::vector<uint32_t> bits_vec(words, 0), bits_one(words, 0), want_bits(words, 0);
    int64_t arrivals_vec = 5, arrivals_one = 5;
    uint32_t* bv = t > 0.0f ? bits_vec.data() : nullptr;
    uint32_t* bo = t > 0.0f ? bits_one.data() : nullptr;
    launch(static_cast<unsigned>(rows), 1, kThreads, 1, [&] {
      row_quant_kernel<kF16, kThreads>(a.data(), rows, cols, t > 0.0f, t, q_vec, stats_vec.data(), true, bv,
                                       &arrivals_vec);
    });
    launch(static_cast<unsigned>(rows), 1, kThreads, 1, [&] {
      row_quant_kernel<kF16, kThreads>(a.data(), rows, cols, t > 0.0f, t, q_one, stats_one.data(), false, bo,
                                       &arrivals_one);
    });
    EXPECT_EQ(arrivals_vec, 0);
    EXPECT_EQ(arrivals_one, 0);
    EXPECT_EQ(std::memcmp(q_vec, q_one, static_cast<size_t>(rows * cols)), 0);
    if (t > 0.0f) {
      int flagged = 0;
      for (int64_t c = 0; c < cols; ++c) {
        bool any = false;
        for (int64_t r = 0; r < rows; ++r) any |= std::fabs(bnb::f16_to_f32(a[static_cast<size_t>(r * cols + c)])) >= t;
        if (any) want_bits[static_cast<size_t>(c / 32)] |= 1u << (c % 32), ++flagged;
      }
      EXPECT_EQ(flagged, 3);
    }
    EXPECT_EQ(bits_vec, want_bits);
    EXPECT_EQ(bits_one, want_bits);
    EXPECT_EQ(q_vec[rows * cols], 0x55);  // nothing written past the rows
    for (int64_t r = 0; r < rows; ++r) {
      float m = 0.0f;
      for (int64_t c = 0; c < cols; ++c) {
        const float x = std::fabs(bnb::f16_to_f32(a[static_cast<size_t>(r * cols + c)]));
        if (t == 0.0f || x < t) m = std::fmax(m, x);
      }
      EXPECT_EQ(stats_vec[static_cast<size_t>(r)], m) << "row " << r;
      EXPECT_EQ(stats_one[static_cast<size_t>(r)], m) << "row " << r;
    }
  }
}

TEST(Int8KernelsOnHost, RowQuantRunsMatchOneElementSteps) {
  check_row_quant_runs<64>(3, 4096, 21);  // four runs a thread
  check_row_quant_runs<64>(2, 1008, 23);  // 63 runs: the last step's runs on 63 of 64 threads
  check_row_quant_runs<256>(1, 4112, 25);  // one run a thread, one more on thread 0
}

// row_quant_outliers_kernel (one block, at most 16 rows) against row_quant_kernel with the flag
// bits followed by zero_outlier_columns_kernel, bit for bit: codes, statistics, flag words (it
// writes them all: the buffer starts dirty) and the block counter. Outliers in several rows, a
// row of outliers only (statistic -0.0), rows of one run a thread and of several; row counts that
// fill the groups of threads (1, 2, 16) and that leave groups idle (3, 5, 9, 12).
TEST(Int8KernelsOnHost, SmallQuantWithOutliersMatchesTwoKernels) {
  const int64_t shapes[][2] = {{1, 64}, {2, 4096}, {3, 4096}, {9, 1008}, {12, 16}, {16, 1040}, {5, 20000}, {16, 4096}};
  uint64_t seed = 41;
  for (const auto& sh : shapes) {
    const int64_t rows = sh[0], cols = sh[1];
    SCOPED_TRACE(testing::Message() << "rows " << rows << " cols " << cols);
    seed += 2;
    std::vector<uint16_t> a = activations(rows, cols, random_columns(cols, 5, seed - 1), seed);
    if (rows > 2) {
      for (int64_t c = 0; c < cols; ++c) a[static_cast<size_t>(2 * cols + c)] = bnb::f32_to_f16(c % 2 ? 7.0f : -9.0f);
    }
    const float t = 6.0f;
    const size_t n = static_cast<size_t>(rows * cols), words = static_cast<size_t>((cols + 31) / 32);
    alignas(16) static int8_t q_two[1 << 17], q_one[1 << 17];
    ASSERT_LE(n, sizeof q_one);
    std::memset(q_two, 0x55, n);
    std::memset(q_one, 0x77, n);
    std::vector<float> stats_two(static_cast<size_t>(rows), -1.0f), stats_one(static_cast<size_t>(rows), -2.0f);
    std::vector<uint32_t> bits_two(words, 0), bits_one(words, 0xdeadbeefu);
    int64_t arrivals_two = 3, arrivals_one = 4;
    launch(static_cast<unsigned>(rows), 1, 256, 1, [&] {
      row_quant_kernel<kF16, 256>(a.data(), rows, cols, true, t, q_two, stats_two.data(), true, bits_two.data(),
                                  &arrivals_two);
    });
    launch(static_cast<unsigned>((rows + kZeroRows - 1) / kZeroRows), 1, kZeroThreads, 1,
           [&] { zero_outlier_columns_kernel(bits_two.data(), rows, cols, q_two); });
    launch(1, 1, kOutlierQuantThreads, 1, [&] {
      row_quant_outliers_kernel<kF16>(a.data(), rows, cols, t, q_one, stats_one.data(), bits_one.data(),
                                      &arrivals_one);
    });
    EXPECT_EQ(std::memcmp(q_two, q_one, n), 0);
    EXPECT_EQ(std::memcmp(stats_two.data(), stats_one.data(), stats_one.size() * 4), 0);
    EXPECT_EQ(bits_one, bits_two);
    EXPECT_EQ(arrivals_two, 0);
    EXPECT_EQ(arrivals_one, 0);
    EXPECT_GE(std::count_if(bits_one.begin(), bits_one.end(), [](uint32_t b) { return b != 0; }), 1);
  }
}

// The layer's outlier step on A [M, K] (dtype D) whose outlier columns (|x| >= 6 in one row; row
// 0 when M = 1) are n_cols random ones, against the CPU backend's int8_add_outlier_product bit
// for bit, on a grid of gx x gy blocks. M > 1: the quantization pass's outlier_columns_kernel
// zeroes those columns of q, writes their flags into `columns` and 0 into the count, and the
// product reads them there (the last block writes the list over the flags); M = 1: the product
// finds the columns in A's row. Either way columns[0 .. count) and count are checked. kEpi: out
// holds the int8 term before (in place; with no outlier column it is left untouched), or the
// kernel dequantizes it from a random int32 product C (with a bias for kOutlierDequantBias),
// against the CPU backend's int8_mm_dequant. kR > 0: instead of outlier_product_kernel,
// block_outlier_sums for blocks of kR rows of W and kM rows of A (M <= kM), as
// int8_mm_rows_kernel runs it, and its epilogue's use of the sums (grid gx x 1, every n).
// kTiled: the path of BNB_INT8_OUTLIER_TILED instead: the flag bits as row_quant_kernel writes them
// (and *count = 0), for M > 1 zero_outlier_columns_kernel, then outlier_epilogue_kernel on gx = its
// column tiles x gy blocks, vec as given.
template <int D, int kEpi, int kR = 0, int kM = 0, bool kTiled = false>
void check_outlier_step(int64_t M, int64_t N, int64_t K, int64_t n_cols, unsigned gx, unsigned gy, uint64_t seed,
                        bool vec = false) {
  SCOPED_TRACE(testing::Message() << "D " << D << " epilogue " << kEpi << " rows " << kR << " x " << kM << " tiled "
                                  << kTiled << " vec " << vec << " M " << M << " N " << N << " K " << K
                                  << " columns " << n_cols << " grid " << gx << " x " << gy);
  using T = typename Elem<D>::T;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto as_d = [](float v) {
    T out;
    bnb::store_from_f32(D, &out, 0, v);
    return out;
  };
  const std::vector<int32_t> want_cols = random_columns(K, n_cols, seed + 1);
  std::vector<T> A(static_cast<size_t>(M * K)), out(static_cast<size_t>(M * N));
  for (auto& v : A) v = as_d(std::fmax(-3.9f, std::fmin(3.9f, normal(rng) * 2.0f)));
  for (const int32_t c : want_cols) {
    const int64_t r = M == 1 ? 0 : static_cast<int64_t>(rng() % static_cast<uint64_t>(M));
    A[static_cast<size_t>(r * K + c)] = as_d((rng() % 2 ? 1.0f : -1.0f) * (6.0f + static_cast<float>(rng() % 500) / 10.0f));
  }
  for (auto& v : out) v = as_d(normal(rng) * 4.0f);
  std::vector<int8_t> W(static_cast<size_t>(N * K));
  for (auto& w : W) w = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  std::vector<float> scb(static_cast<size_t>(N));
  for (auto& v : scb) v = bnb::round_to_dtype(BNB_F16, 0.05f + static_cast<float>(rng() % 1000) / 300.0f);
  std::vector<T> want = out, got = out;
  bnb::cpu::ThreadPool pool(1);
  std::vector<int32_t> C(static_cast<size_t>(M * N));
  std::vector<float> row_stats(static_cast<size_t>(M));
  std::vector<T> bias(static_cast<size_t>(N));
  if (kEpi != kOutlierInPlace) {
    for (auto& c : C) c = static_cast<int32_t>(rng() % 2000001) - 1000000;
    for (auto& r : row_stats) r = 0.5f + static_cast<float>(rng() % 1000) / 250.0f;
    for (auto& b : bias) b = as_d(normal(rng));
    bnb::cpu::int8_mm_dequant(pool, M, N, C.data(), row_stats.data(), scb.data(),
                              kEpi == kOutlierDequantBias ? bias.data() : nullptr, D, want.data());
    out = want;
  }
  bnb::cpu::int8_add_outlier_product(pool, D, M, N, K, A.data(), W.data(), scb.data(), want_cols.data(),
                                     static_cast<int64_t>(want_cols.size()), want.data());

  const float t = 6.0f;
  std::vector<int32_t> columns(static_cast<size_t>(K), -7);
  int64_t count = -1;
  // int8_mma_rows_kernel's outlier sums and their use in its epilogue.
  const auto rows_kernel = [&] {
    using Smem = OutlierRowsSmem<kR, kM, 128>;
    __shared__ Smem sm;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kR;
    const int64_t total = block_outlier_sums<D, kR, kM, 128>(A.data(), W.data(), scb.data(), t, columns.data(),
                                                             &count, M, N, K, n0, M == 1, sm);
    __syncthreads();
    for (int o = static_cast<int>(threadIdx.x); o < kR * kM; o += 128) {
      const int64_t n = n0 + o / kM, m = o % kM, e = m * N + n;
      if (n >= N || m >= M) continue;
      if constexpr (kEpi == kOutlierInPlace) {
        if (total > 0) store_with_outlier_sum<D>(got.data(), e, load_f32<D>(got.data(), e), sm.sums[o / kM][m]);
      } else {
        dequant_store_outliers<D, kEpi == kOutlierDequantBias>(C[static_cast<size_t>(e)], row_stats[static_cast<size_t>(m)],
                                                               scb[static_cast<size_t>(n)], bias.data(), n, got.data(),
                                                               e, total > 0, sm.sums[o / kM][m]);
      }
    }
  };
  if (kTiled) {
    std::vector<uint32_t> bits(static_cast<size_t>((K + 31) / 32), 0);
    for (const int32_t c : want_cols) bits[static_cast<size_t>(c / 32)] |= 1u << (c % 32);
    std::memcpy(columns.data(), bits.data(), bits.size() * 4);
    count = 0;
    if (M > 1) {
      std::vector<int8_t> q(static_cast<size_t>(M * K), 5);
      launch(static_cast<unsigned>((M + kZeroRows - 1) / kZeroRows), 1, kZeroThreads, 1, [&] {
        zero_outlier_columns_kernel(reinterpret_cast<const uint32_t*>(columns.data()), M, K, q.data());
      });
      for (int64_t i = 0; i < M * K; ++i) {
        const int64_t c = i % K;
        ASSERT_EQ(q[static_cast<size_t>(i)], bits[static_cast<size_t>(c / 32)] >> (c % 32) & 1u ? 0 : 5)
            << "q element " << i;
      }
    }
    launch(gx, gy, kEpiThreads, 1, [&] {
      outlier_epilogue_kernel<D, kEpi>(A.data(), W.data(), scb.data(), columns.data(), &count, M, N, K, C.data(),
                                       row_stats.data(), bias.data(), got.data(), vec);
    });
  } else if (M > 1) {
    std::vector<int8_t> q(static_cast<size_t>(M * K), 5);
    launch(static_cast<unsigned>((K + 31) / 32), 1, 32, 4,
           [&] { outlier_columns_kernel<D>(A.data(), M, K, t, q.data(), columns.data(), &count); });
    ASSERT_EQ(count, 0);
    std::vector<int32_t> flags(static_cast<size_t>(K), 0);
    for (const int32_t c : want_cols) flags[static_cast<size_t>(c)] = 1;
    ASSERT_EQ(columns, flags);
    for (int64_t i = 0; i < M * K; ++i) {
      ASSERT_EQ(q[static_cast<size_t>(i)], flags[static_cast<size_t>(i % K)] ? 0 : 5) << "q element " << i;
    }
    if constexpr (kR > 0) {
      launch(gx, 1, 128, 1, rows_kernel);
    } else {
      launch(gx, gy, kOutlierThreads, 1, [&] {
        outlier_product_kernel<D, false, kEpi>(A.data(), W.data(), scb.data(), t, columns.data(), &count, M, N, K,
                                               C.data(), row_stats.data(), bias.data(), got.data());
      });
    }
  } else if constexpr (kR > 0) {
    launch(gx, 1, 128, 1, rows_kernel);
  } else {
    launch(gx, gy, kOutlierThreads, 1, [&] {
      outlier_product_kernel<D, true, kEpi>(A.data(), W.data(), scb.data(), t, columns.data(), &count, M, N, K,
                                            C.data(), row_stats.data(), bias.data(), got.data());
    });
  }
  ASSERT_EQ(count, n_cols);
  columns.resize(static_cast<size_t>(count));
  EXPECT_EQ(columns, want_cols);
  EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(T)));
  if (n_cols > 0) {
    EXPECT_NE(0, std::memcmp(got.data(), out.data(), got.size() * sizeof(T)));
  }
}

// {M, N, K, outlier columns, grid x, grid y}: tails in M and N; grids of fewer blocks than tiles
// (blocks stride over n- and m-tiles) and of more blocks than m-tiles (idle blocks still count
// themselves in); more than one chunk of A's columns; more outlier columns than a block keeps
// (kOutlierCached: the block walks the flags again per m-tile); more columns than one step of
// the flag walk (256 x 64, for one row and for many); no outlier column; every column an outlier. The dequantizing epilogues
// on a subset.
TEST(Int8KernelsOnHost, OutlierStepMatchesCpu) {
  static_assert(kOutlierCached == 128, "the cases below straddle kOutlierCached");
  const int64_t cases[][6] = {{65, 64, 100, 33, 1, 1},   {130, 129, 200, 70, 2, 2}, {5, 7, 40, 40, 1, 2},
                              {9, 20, 50, 0, 1, 1},      {70, 70, 400, 129, 1, 2},  {3, 130, 300, 300, 2, 1},
                              {2, 10, 1500, 5, 1, 1},    {140, 65, 140, 128, 1, 2}, {2, 10, 16500, 140, 1, 1},
                              {1, 20, 17000, 9, 1, 1},   {1, 70, 300, 3, 2, 1},     {1, 200, 2000, 150, 2, 1},
                              {1, 10, 50, 0, 1, 1},      {1, 65, 64, 64, 1, 1}};
  uint64_t seed = 100;
  for (const auto& c : cases) {
    const auto gx = static_cast<unsigned>(c[4]), gy = static_cast<unsigned>(c[5]);
    check_outlier_step<kF16, kOutlierInPlace>(c[0], c[1], c[2], c[3], gx, gy, ++seed);
    check_outlier_step<kBF16, kOutlierInPlace>(c[0], c[1], c[2], c[3], gx, gy, ++seed);
    check_outlier_step<kF32, kOutlierInPlace>(c[0], c[1], c[2], c[3], gx, gy, ++seed);
  }
  const int64_t dequant_cases[][6] = {{130, 129, 200, 70, 2, 2}, {9, 20, 50, 0, 1, 1}, {70, 70, 400, 129, 1, 2},
                                      {1, 70, 300, 3, 2, 1},     {1, 10, 50, 0, 1, 1}};
  for (const auto& c : dequant_cases) {
    const auto gx = static_cast<unsigned>(c[4]), gy = static_cast<unsigned>(c[5]);
    check_outlier_step<kF16, kOutlierDequant>(c[0], c[1], c[2], c[3], gx, gy, ++seed);
    check_outlier_step<kF16, kOutlierDequantBias>(c[0], c[1], c[2], c[3], gx, gy, ++seed);
    check_outlier_step<kBF16, kOutlierDequant>(c[0], c[1], c[2], c[3], gx, gy, ++seed);
    check_outlier_step<kBF16, kOutlierDequantBias>(c[0], c[1], c[2], c[3], gx, gy, ++seed);
    check_outlier_step<kF32, kOutlierDequant>(c[0], c[1], c[2], c[3], gx, gy, ++seed);
    check_outlier_step<kF32, kOutlierDequantBias>(c[0], c[1], c[2], c[3], gx, gy, ++seed);
  }
}

// outlier_epilogue_kernel (BNB_INT8_OUTLIER_TILED): {M, N, K, outlier columns, grid y}, each with
// 16-byte accesses where N % 4 == 0 and one element at a time: tails in M (row steps of kEpiRows)
// and N (column tiles of kEpiCols, a last group of fewer than 4); more row steps than blocks;
// more outlier columns than the block keeps (kEpiList: spans); one row (flags from A's row); none;
// every column an outlier.
TEST(Int8KernelsOnHost, OutlierEpilogueMatchesCpu) {
  static_assert(kEpiList<kF16> == 128 && kEpiList<kF32> == 64 && kEpiRows == 16 && kEpiCols == 128,
                "the cases below straddle them");
  const int64_t cases[][5] = {{40, 300, 200, 20, 2}, {17, 130, 300, 129, 1}, {5, 20, 70, 70, 1},
                              {20, 10, 90, 0, 1},    {1, 260, 300, 7, 1},    {1, 12, 200, 140, 1},
                              {2, 8, 16500, 9, 1},   {1, 6, 40, 0, 1},      {3, 9, 9000, 65, 1}};
  uint64_t seed = 900;
  for (const auto& c : cases) {
    const auto gx = static_cast<unsigned>((c[1] + kEpiCols - 1) / kEpiCols), gy = static_cast<unsigned>(c[4]);
    for (const bool vec : {false, true}) {
      if (vec && c[1] % 4 != 0) continue;
      check_outlier_step<kF16, kOutlierInPlace, 0, 0, true>(c[0], c[1], c[2], c[3], gx, gy, ++seed, vec);
      check_outlier_step<kBF16, kOutlierDequant, 0, 0, true>(c[0], c[1], c[2], c[3], gx, gy, ++seed, vec);
      check_outlier_step<kF32, kOutlierDequantBias, 0, 0, true>(c[0], c[1], c[2], c[3], gx, gy, ++seed, vec);
      check_outlier_step<kF16, kOutlierDequantBias, 0, 0, true>(c[0], c[1], c[2], c[3], gx, gy, ++seed, vec);
      check_outlier_step<kBF16, kOutlierInPlace, 0, 0, true>(c[0], c[1], c[2], c[3], gx, gy, ++seed, vec);
      check_outlier_step<kF32, kOutlierInPlace, 0, 0, true>(c[0], c[1], c[2], c[3], gx, gy, ++seed, vec);
    }
  }
}

// block_outlier_sums (int8_mma_rows_kernel's outlier step, M <= 16) for its two block shapes
// ({16, 8} and {16, 16} outputs): {M, N, K, outlier columns}: one row (flags from A's row)
// and several (flags from the zeroing kernel, the last block lists the columns); N a multiple of
// the block's rows and not (every block counts itself in); more outlier columns than one chunk
// (64) and than a block lists at once (kOutlierList: it walks the flags again); none; all.
TEST(Int8KernelsOnHost, OutlierRowSumsMatchCpu) {
  static_assert(kOutlierList == 512, "the cases below straddle kOutlierList");
  const int64_t cases[][4] = {{1, 40, 300, 5},    {8, 33, 200, 70},  {3, 16, 1200, 600},
                              {1, 20, 1100, 513}, {5, 50, 90, 0},    {2, 17, 64, 64}};
  uint64_t seed = 500;
  for (const auto& c : cases) {
    const auto blocks = [&](int64_t r) { return static_cast<unsigned>((c[1] + r - 1) / r); };
    if (c[0] <= 8) {
      check_outlier_step<kF16, kOutlierInPlace, 16, 8>(c[0], c[1], c[2], c[3], blocks(16), 1, ++seed);
      check_outlier_step<kBF16, kOutlierDequant, 16, 8>(c[0], c[1], c[2], c[3], blocks(16), 1, ++seed);
      check_outlier_step<kF32, kOutlierDequantBias, 16, 8>(c[0], c[1], c[2], c[3], blocks(16), 1, ++seed);
    }
    check_outlier_step<kF16, kOutlierDequantBias, 16, 16>(c[0], c[1], c[2], c[3], blocks(16), 1, ++seed);
    check_outlier_step<kBF16, kOutlierInPlace, 16, 16>(c[0], c[1], c[2], c[3], blocks(16), 1, ++seed);
    check_outlier_step<kF32, kOutlierDequant, 16, 16>(c[0], c[1], c[2], c[3], blocks(16), 1, ++seed);
  }
}

}  // namespace
