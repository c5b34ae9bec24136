// Host-side planning of the quantization kernels (quant_plan.h): the 8-bit selector plans and
// bucket tables, and the NF4/FP4 cell tables. Built once per table (cached) or once per call.
#include "quant_plan.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "code8_select.h"
#include "tables.h"

namespace bnb {
namespace cpu {
namespace {

int32_t nf4_cell_key(float x, int parity) {
  return static_cast<int32_t>(std::fma(x, 15.5f, parity ? 48.0f : 16.0f));
}

int nf4_code_of(float x) {
  int c = 0;
  for (uint32_t t : bnb::kNF4ThresholdBits) c += x > bnb::bits_to_float(t) ? 1 : 0;
  return c;
}

// Floats of [-1, 1] in increasing order <-> 0 .. 2 * 0x3f800000.
float nf4_ordered_float(uint32_t i) {
  return i < 0x3f800000u ? -bnb::bits_to_float(0x3f800000u - i) : bnb::bits_to_float(i - 0x3f800000u);
}

NF4CellTables build_nf4_cells() {
  NF4CellTables tab;
  constexpr uint32_t kLast = 2u * 0x3f800000u;
  bool have_t[32] = {};
  for (int parity = 0; parity < 2; ++parity) {
    for (int32_t k = 0; k < 32; ++k) {
      const int32_t key = k + 32 * parity;
      // First ordered float whose key is >= key (keys are monotone in x).
      const auto first_at_least = [&](int32_t want) {
        uint32_t lo = 0, hi = kLast + 1;
        while (lo < hi) {
          const uint32_t mid = lo + (hi - lo) / 2;
          if (nf4_cell_key(nf4_ordered_float(mid), parity) >= want) hi = mid; else lo = mid + 1;
        }
        return lo;
      };
      const uint32_t b = first_at_least(key), e = first_at_least(key + 1);  // cell = [b, e)
      int g = 0, top = 0;
      if (b < e) {
        g = nf4_code_of(nf4_ordered_float(b));
        top = nf4_code_of(nf4_ordered_float(e - 1));
      } else {
        g = top = k == 0 ? 0 : 15;  // empty cell (none expected)
      }
      if (top > g + 1) tab.ok = false;
      const float t = g < 15 ? bnb::bits_to_float(bnb::kNF4ThresholdBits[g]) : bnb::bits_to_float(0x7f800000u);
      // A cell without a threshold may use either neighbour bound; prefer the other parity's.
      if (have_t[k] && tab.t[k] != t) {
        if (top == g && g > 0 && tab.t[k] == bnb::bits_to_float(bnb::kNF4ThresholdBits[g - 1])) {
          g -= 1;  // x > t[g - 1] holds for the whole cell: same code
        } else {
          tab.ok = false;
        }
      }
      tab.t[k] = have_t[k] ? tab.t[k] : t;
      have_t[k] = true;
      tab.g[key] = static_cast<uint8_t>(parity ? g : g << 4);
    }
  }
  // A NaN x converts to 0x80000000: key byte 0, which must decode as code 0 in either lane.
  if (tab.g[0] != 0 || nf4_code_of(-1.0f) != 0) tab.ok = false;
  // x = +inf is clamped to 1 for its cell but compared itself: that cell's threshold is +inf.
  for (int parity = 0; parity < 2; ++parity) {
    if (!(tab.t[nf4_cell_key(1.0f, parity) & 31] > 3.0e38f)) tab.ok = false;
  }
  return tab;
}

int fp4_count_of(float a) {
  int k = 0;
  for (uint32_t t : bnb::kFP4ThresholdBits) k += a > bnb::bits_to_float(t) ? 1 : 0;
  return k;
}

FP4CellTables build_fp4_cells() {
  FP4CellTables tab;
  std::memset(tab.lo, 0, sizeof tab.lo);
  std::memset(tab.hi, 0, sizeof tab.hi);
  const auto key_of = [](uint32_t bits, int parity) {
    return static_cast<int32_t>(std::fma(bnb::bits_to_float(bits), 15.5f, parity ? 16.0f : 0.0f));
  };
  for (int parity = 0; parity < 2; ++parity) {
    for (int32_t k = 0; k < 16; ++k) {
      const int32_t key = k + 16 * parity;
      const auto first_at_least = [&](int32_t want) {  // over the bits of [0, 1]
        uint32_t lo = 0, hi = 0x3f800000u + 1;
        while (lo < hi) {
          const uint32_t mid = lo + (hi - lo) / 2;
          if (key_of(mid, parity) >= want) hi = mid; else lo = mid + 1;
        }
        return lo;
      };
      const uint32_t b = first_at_least(key), e = first_at_least(key + 1);
      if (b >= e) {
        tab.ok = false;
        continue;
      }
      const int g = fp4_count_of(bnb::bits_to_float(b));
      const int top = fp4_count_of(bnb::bits_to_float(e - 1));
      if (top > g + 1) tab.ok = false;
      const int shift = parity ? 0 : 4;
      tab.lo[key] = static_cast<uint8_t>(bnb::kFP4Pattern[g] << shift);
      tab.hi[key] = static_cast<uint8_t>(bnb::kFP4Pattern[g < 7 ? g + 1 : 7] << shift);
      tab.t[key] = g < 7 ? bnb::bits_to_float(bnb::kFP4ThresholdBits[g]) : bnb::bits_to_float(0x7f800000u);
    }
  }
  if (tab.lo[0] != 0) tab.ok = false;  // a NaN: key byte 0 in either lane, a > t false
  // |x| = inf is clamped to 1 for its cell but compared itself: that cell's threshold is +inf.
  for (int parity = 0; parity < 2; ++parity) {
    if (!(tab.t[key_of(0x3f800000u, parity)] > 3.0e38f)) tab.ok = false;
  }
  return tab;
}

// Fills the bucket table from a fast plan's thresholds; false if a bucket holds two.
bool build_buckets(const Code8Plan& code8, uint32_t* buckets) {
  for (uint32_t key = 0; key < 65536; ++key) {
    const bool negative = key >= 0x8000u;
    float xmin, xmax;
    if (((key >> 7) & 0xffu) == 0xffu) {
      if ((key & 0x7fu) != 0) {  // NaN payloads (x is a product: quiet NaNs): code 0
        buckets[key] = 0;
        continue;
      }
      xmin = xmax = bits_to_float(key << 16);  // +-inf alone (no x is a signalling NaN)
    } else {
      const float first = bits_to_float(key << 16);
      const float last = bits_to_float((key << 16) | 0xffffu);
      xmin = negative ? last : first;
      xmax = negative ? first : last;
    }
    const Code8Bucket b = code8_bucket(code8.t, xmin, xmax);
    if (b.inside > 1) return false;
    // Without a threshold inside nothing may carry: low = 0 (x's addend is at most 0xffff).
    const uint32_t t_low = float_to_bits(code8.t[b.lo]) & 0xffffu;
    const uint32_t low = b.inside == 0 ? 0u : negative ? t_low : 0xffffu - t_low;
    buckets[key] = (static_cast<uint32_t>(b.lo) << 16) | low;
  }
  return true;
}

void build_plan(const Code8Plan& code8, Quant8Plan* plan) {
  plan->fast = code8.fast;
  if (code8.fast) code8_levels(code8, plan->levels);
}

// A plan with buckets, built once, for one of the built-in tables (they are what almost every
// call uses: optimizer states, nested statistics, the default of quantize_blockwise).
struct CachedPlan {
  explicit CachedPlan(int32_t which) : buckets(65536) {
    copy_code_table(which, code);
    Code8Plan code8;
    code8_plan(code, false, &code8);
    build_plan(code8, &plan);
    if (plan.fast && build_buckets(code8, buckets.data())) plan.buckets = buckets.data();
  }
  float code[256];
  Quant8Plan plan;
  std::vector<uint32_t> buckets;
};

const Quant8Plan* cached_plan(const float* code) {
  static const CachedPlan signed_plan(BNB_CODE_DYNAMIC_SIGNED);
  static const CachedPlan unsigned_plan(BNB_CODE_DYNAMIC_UNSIGNED);
  if (std::memcmp(code, signed_plan.code, sizeof signed_plan.code) == 0) return &signed_plan.plan;
  if (std::memcmp(code, unsigned_plan.code, sizeof unsigned_plan.code) == 0) return &unsigned_plan.plan;
  return nullptr;
}

}  // namespace

const NF4CellTables& nf4_cells() {
  static const NF4CellTables tab = build_nf4_cells();
  return tab;
}

const FP4CellTables& fp4_cells() {
  static const FP4CellTables tab = build_fp4_cells();
  return tab;
}

const Quant8Plan* quant8_plan(const float* code, int64_t n, Quant8Plan* own, std::vector<uint32_t>* own_buckets) {
  // Building a table's buckets costs about as much as quantizing ~1M elements by level search.
  constexpr int64_t kBucketsWorthIt = int64_t{1} << 20;
  const Quant8Plan* plan = cached_plan(code);
  if (plan != nullptr) return plan;
  Code8Plan code8;
  code8_plan(code, false, &code8);
  build_plan(code8, own);
  if (own->fast && n >= kBucketsWorthIt) {
    own_buckets->resize(65536);
    if (build_buckets(code8, own_buckets->data())) own->buckets = own_buckets->data();
  }
  return own;
}

}  // namespace cpu
}  // namespace bnb
