// Host-side planning of the optimizer kernels (optim_kernels.h): the 8-bit code plans (level
// search, bucketed encoder) built from a table, and the per-step constants.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "code8_select.h"
#include "optim_kernels.h"
#include "optim_traits.h"
#include "tables.h"

namespace bnb {
namespace cpu {
namespace {

// The bucketed encoder of a fast `plan` from its thresholds, or kBucketNone when the table does
// not fit it (then the level search encodes).
void build_buckets(OptimCodePlan* plan) {
  const float* t = plan->code8.t;
  plan->bucket_kind = kBucketNone;
  int negatives = 0;
  for (int j = 0; j < 255; ++j) {
    const uint32_t mag = float_to_bits(t[j]) & 0x7fffffffu;
    // Every |t| in binades 97..127 (|t| in [2^-30, 2)): binade 96 and below is one empty bucket.
    if (mag < (97u << 23) || mag >= (128u << 23)) return;
    if (t[j] < 0.0f) ++negatives;
  }
  const bool is_signed = negatives > 0;
  if (is_signed && negatives != plan->code8.negative_count) return;
  const int per_sign = is_signed ? 128 : 256;
  int shift[32], first[32], total = 0;
  for (int e = 96; e < 128; ++e) {
    int r = 0;
    for (; r <= 7; ++r) {
      bool ok = true;
      for (int sign = 0; sign < 2 && ok; ++sign) {
        int run = 0;
        uint32_t last_key = 0xffffffffu;
        for (int j = 0; j < 255; ++j) {  // ascending |t| of this sign: walk in the right order
          const int jj = sign ? 254 - j : j;
          if ((t[jj] < 0.0f) != (sign == 1)) continue;
          const uint32_t mag = float_to_bits(t[jj]) & 0x7fffffffu;
          if (static_cast<int>(mag >> 23) != e) continue;
          const uint32_t key = (mag & 0x7fffffu) >> (23 - r);
          run = key == last_key ? run + 1 : 1;
          last_key = key;
          if (run > 2) ok = false;
        }
      }
      if (ok) break;
    }
    if (r > 7) return;
    shift[e - 96] = 7 - r;
    first[e - 96] = total;
    total += 1 << r;
  }
  if (total > per_sign) return;
  for (int e = 96; e < 128; ++e) {
    plan->bucket_shift[e & 31] = shift[e - 96];
    plan->bucket_offset[e & 31] = first[e - 96] << 16;
  }
  std::memset(plan->bucket_table, 0xff, sizeof plan->bucket_table);
  for (int e = 96; e < 128; ++e) {
    const int r = 7 - shift[e - 96];
    for (uint32_t k = 0; k < (1u << r); ++k) {
      const uint32_t lo_bits = e == 96 ? 0u : (static_cast<uint32_t>(e) << 23) | (k << (23 - r));
      const uint32_t hi_bits = (static_cast<uint32_t>(e) << 23) + ((k + 1) << (23 - r));
      const int bucket = first[e - 96] + static_cast<int>(k);
      for (int sign = 0; sign < (is_signed ? 2 : 1); ++sign) {
        // The bucket's x are [lo, hi) for sign 0, (-hi, -lo] for sign 1: count below the least.
        const float xmin = sign ? -bits_to_float(hi_bits - 1u) : bits_to_float(lo_bits);
        plan->bucket_table[0][bucket + 128 * sign] = static_cast<uint8_t>(code8_count_below(t, xmin));
        int slot = 0;
        for (int j = 0; j < 255; ++j) {
          const uint32_t mag = float_to_bits(t[j]) & 0x7fffffffu;
          const bool inside = (t[j] < 0.0f) == (sign == 1) && mag >= lo_bits && mag < hi_bits;
          if (inside) {
            uint32_t low16 = ((mag & 0x7fffffu) >> (7 - r)) & 0xffffu;
            if (sign) low16 ^= 0xffffu;
            plan->bucket_table[1 + 2 * slot][bucket + 128 * sign] = static_cast<uint8_t>(low16 >> 8);
            plan->bucket_table[2 + 2 * slot][bucket + 128 * sign] = static_cast<uint8_t>(low16 & 0xffu);
            ++slot;
          }
        }
      }
    }
  }
  plan->bucket_kind = is_signed ? kBucketSigned : kBucketPositive;
}

}  // namespace

void build_optim_code_plan(const float* table, OptimCodePlan* plan) {
  std::memcpy(plan->values, table, sizeof plan->values);
  std::memset(plan->levels, 0, sizeof plan->levels);
  for (int c = 0; c < 256; ++c)
    for (int k = 0; k < 4; ++k) plan->value_bytes[k][c] = static_cast<uint8_t>(float_to_bits(table[c]) >> (8 * k));
  plan->bucket_kind = kBucketNone;
  code8_plan(table, false, &plan->code8);
  if (!plan->code8.fast) return;
  const float* t = plan->code8.t;
  code8_levels(plan->code8, plan->levels);
  for (int r = 0; r < 7; ++r)
    for (int c = 0; c < 32; ++c) plan->tail[r][c] = t[8 * c + r];
  for (int k = 0; k < 7; ++k) plan->top[k] = t[32 * k + 31];
  build_buckets(plan);
}

void make_optim_consts(const bnb_optimizer_params_t& P, OptimConsts* k) {
  k->optimizer = P.optimizer;
  k->dtype = P.param_dtype;
  k->skip_zeros = P.skip_zeros != 0;
  k->first_step = P.step == 1;
  k->n = P.n;
  k->lr = P.lr;
  k->beta1 = P.beta1;
  k->beta2 = P.beta2;
  k->beta3 = P.beta3;
  k->alpha = P.alpha;
  k->eps = P.eps;
  k->weight_decay = P.weight_decay;
  k->gnorm_scale = P.gnorm_scale;
  k->one_minus_beta1 = 1.0f - P.beta1;
  k->one_minus_beta2 = 1.0f - P.beta2;
  k->one_minus_beta3 = 1.0f - P.beta3;
  const double t = static_cast<double>(P.step);
  const float beta1_t = static_cast<float>(std::pow(static_cast<double>(P.beta1), t));
  const float beta2_t = static_cast<float>(std::pow(static_cast<double>(P.beta2), t));
  const float c1 = 1.0f - beta1_t;
  const float bias2 = 1.0f - beta2_t;
  const float c2 = std::sqrt(bias2);
  k->rcp_c1 = 1.0f / c1;
  k->rcp_c2 = 1.0f / c2;
  k->rcp_bias2 = 1.0f / bias2;
  k->step_size = (-P.lr * c2) / c1;
  k->eps_c2 = P.eps * c2;
  k->decay = 1.0f - P.lr * P.weight_decay;
  k->neg_lr = -P.lr;
  k->update_scale = 1.0f;
  k->adam_scale = k->step_size;
  k->neg_lr_scaled = -P.lr;
  k->state1_copies = optim_traits(P.optimizer).state1_copies;
}

}  // namespace cpu
}  // namespace bnb
