// Exhaustive check of the 8-bit optimizer encoders: for every binary32 x with |x| < 2 (the range
// the bucketed encoder is used on: no NaN, |value| <= absmax, RCP(absmax) normal), the bucketed
// encoder's code (phase D, with and without the sign fix) must equal the level search's, for the
// built-in DYN8S (signed, sign fix) and DYN8U (unsigned) plans.
//
//   bnb_check_optim_codes [--stride K]    (every K-th bit pattern; default 1 = all)
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "optim_kernels.h"
#include "tables.h"

using bnb::cpu::OptimCodePlan;

int main(int argc, char** argv) {
  uint32_t stride = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--stride" && i + 1 < argc) stride = static_cast<uint32_t>(std::atoi(argv[++i]));
  }
  int failures = 0;
  for (int which = 0; which < 2; ++which) {
    const int32_t code = which == 0 ? BNB_CODE_DYNAMIC_SIGNED : BNB_CODE_DYNAMIC_UNSIGNED;
    const bool sign_fix = which == 0;
    float table[256];
    bnb::copy_code_table(code, table);
    auto* plan = new OptimCodePlan;
    bnb::cpu::build_optim_code_plan(table, plan);
    std::printf("%s: fast %d, bucket kind %d\n", which == 0 ? "DYN8S" : "DYN8U", plan->fast ? 1 : 0,
                plan->bucket_kind);
    std::vector<float> xs(256);
    uint8_t a[256], b[256];
    uint64_t checked = 0, mismatches = 0, bucketed_calls = 0;
    // |x| < 2: magnitudes below 0x40000000, both signs.
    const uint64_t total = uint64_t{0x40000000} * 2;
    uint64_t fill = 0;
    auto flush = [&](size_t count) {
      bucketed_calls += bnb::cpu::optim8_encode_block(*plan, sign_fix, true, xs.data(), 1.0f, a) ? 1 : 0;
      bnb::cpu::optim8_encode_block(*plan, sign_fix, false, xs.data(), 1.0f, b);
      for (size_t j = 0; j < count; ++j) {
        if (a[j] != b[j]) {
          if (++mismatches <= 10) {
            uint32_t bits;
            std::memcpy(&bits, &xs[j], 4);
            std::printf("  mismatch x=%.9g (0x%08x): bucketed %d, levels %d\n", xs[j], bits, a[j], b[j]);
          }
        }
      }
      checked += count;
    };
    for (uint64_t i = 0; i < total; i += stride) {
      const uint32_t mag = static_cast<uint32_t>(i >> 1);
      const uint32_t bits = (i & 1) ? (mag | 0x80000000u) : mag;
      std::memcpy(&xs[fill], &bits, 4);
      if (++fill == 256) {
        flush(256);
        fill = 0;
      }
    }
    if (fill > 0) {
      for (size_t j = fill; j < 256; ++j) xs[j] = 0.0f;
      flush(fill);
    }
    std::printf("  %llu values, %llu mismatches, bucketed blocks %llu\n", static_cast<unsigned long long>(checked),
                static_cast<unsigned long long>(mismatches), static_cast<unsigned long long>(bucketed_calls));
    if (mismatches != 0) ++failures;
    delete plan;
  }
  std::printf(failures == 0 ? "PASS\n" : "FAIL\n");
  return failures == 0 ? 0 : 1;
}
