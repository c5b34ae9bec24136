// The CPU kernels of the optimizer family (docs/OPS.md §6), callable without the plugin (the
// per-target tests and bench/optim link bnb_cpu_kernels directly). Arguments are assumed valid
// (the core checked them, optim.cc the family's own rules); std::bad_alloc may escape.
#ifndef BNB_BACKEND_CPU_OPTIM_KERNELS_H_
#define BNB_BACKEND_CPU_OPTIM_KERNELS_H_

#include <cstdint>

#include "backend_abi.h"
#include "code8_select.h"
#include "thread_pool.h"

namespace bnb {
namespace cpu {

// Elements per 8-bit state block (docs/FORMATS.md §5.6).
constexpr int64_t kOptimBlock = 256;

// Search plan of one 8-bit state table: the decoding values and the encoder's forms of the
// table's bnb::Code8Plan (src/common/code8_select.h: thresholds, fast, negative_count).
struct OptimCodePlan {
  alignas(64) float values[256];
  // Fast plans: the thresholds in search-tree order (bnb::code8_levels).
  alignas(64) float levels[256 + 64];
  // The last three levels at once: tail[r][c] = threshold 8c + r (r = 0..6, c = 0..31).
  alignas(64) float tail[7][32];
  // The first three levels at once: thresholds 32k + 31 (k = 0..6).
  float top[7];
  // Byte planes of `values` (plane k = byte k of each entry): decoding by byte permutes (AVX-512
  // VBMI), 64 codes at a time.
  alignas(64) uint8_t value_bytes[4][256];
  // Bucketed encoder (AVX-512 VBMI, optim_codes-inl.h; built in optim_plan.cc): kBucketNone,
  // kBucketPositive (every threshold > 0: the unsigned layout, 256 buckets of |x|) or
  // kBucketSigned (both signs, no threshold is 0, #{thresholds < 0} == negative_count: 128
  // buckets per sign).
  int32_t bucket_kind = 0;
  // Per binade of |x| (biased exponent 96..127 by its low 5 bits; smaller |x| share binade 96):
  // shift = 7 - r (the binade holds 2^r buckets), offset = its first bucket << 16.
  alignas(64) int32_t bucket_shift[32];
  alignas(64) int32_t bucket_offset[32];
  // Per bucket (the negative half of kBucketSigned at 128..255): [0] count of thresholds below
  // every x of the bucket, then for two slots the 16 bits of |x| below the bucket's bits (high
  // byte, low byte) of a threshold inside it (complemented for negative x; 0xffff = empty).
  alignas(64) uint8_t bucket_table[5][256];
  // Last: only the tie fallback reads its thresholds, and the encoders its negative_count once
  // per block (keeps the hot tables above where they were before the plan moved in).
  Code8Plan code8;
};
constexpr int32_t kBucketNone = 0;
constexpr int32_t kBucketPositive = 1;
constexpr int32_t kBucketSigned = 2;
void build_optim_code_plan(const float* table, OptimCodePlan* plan);

// Everything a kernel needs besides the tensors, computed once per call in binary32.
struct OptimConsts {
  int32_t optimizer;   // bnb_optimizer_t
  int32_t dtype;       // of p and g
  int32_t skip_zeros;
  int32_t first_step;  // step == 1 (Momentum starts its state from g)
  int64_t n;
  float lr, beta1, beta2, beta3, alpha, eps, weight_decay, gnorm_scale;
  float one_minus_beta1, one_minus_beta2, one_minus_beta3;
  float rcp_c1;         // 1 / (1 - beta1^t)
  float rcp_c2;         // 1 / sqrt(1 - beta2^t)
  float rcp_bias2;      // 1 / (1 - beta2^t) (update norm of Adam/LAMB)
  float step_size;      // RN32(-lr * c2) / c1
  float eps_c2;         // eps * c2
  float decay;          // 1 - lr * wd
  float update_scale;   // 1 unless clipping (docs/OPS.md §6.4) is on
  float adam_scale;     // RN32(update_scale * step_size)
  float neg_lr;         // -lr
  float neg_lr_scaled;  // RN32(-lr * update_scale)
  int32_t state1_copies;  // optim_traits(optimizer).state1_copies, read in the block loops
};
void make_optim_consts(const bnb_optimizer_params_t& params, OptimConsts* k);

struct Optim32Args {
  const OptimConsts* k;
  void* p;
  const void* g;
  float* s1;  // AdEMAMix: m1 in [0, n), m2 in [n, 2n)
  float* s2;
};

struct Optim8Args {
  const OptimConsts* k;
  const OptimCodePlan* plan1;
  const OptimCodePlan* plan2;
  void* p;
  const void* g;
  uint8_t* c1;       // AdEMAMix: m1 codes in [0, n), m2 codes in [n, 2n)
  uint8_t* c2;
  float* absmax1;    // AdEMAMix: [0, nblocks) for m1, [nblocks, 2 nblocks) for m2
  float* absmax2;
};

// Highway-dispatched kernels (optim32_simd.cc, optim8_simd.cc), each over a range of one tensor.
void optim32_update(const Optim32Args& a, int64_t begin, int64_t end);
// Sum of squares of the update-norm quantity of docs/OPS.md §6.4 over [begin, end) (states not written).
double optim32_unorm(const Optim32Args& a, int64_t begin, int64_t end);
void optim8_update(const Optim8Args& a, int64_t block_begin, int64_t block_end);
double optim8_unorm(const Optim8Args& a, int64_t block_begin, int64_t block_end);

// Phase D of one block alone (for bench/optim's exhaustive check): the codes of values[0..255]
// normalised by inv, with the sign fix when sign_fix, through the bucketed encoder when `bucketed`
// and the target, the plan and inv allow it (then true is returned), else the level search.
bool optim8_encode_block(const OptimCodePlan& plan, bool sign_fix, bool bucketed, const float* values, float inv,
                         uint8_t* codes);

// The whole operation on one tensor, threaded over `pool`: clipping pre-pass when
// params.max_unorm > 0, then the update. qmap1/qmap2 NULL = the dynamic signed/unsigned maps.
// The core has checked the arguments, the update rules' conditions included (api_ops.cc).
void optimizer_run(ThreadPool& pool, const bnb_optimizer_params_t& params, const bnb_optimizer_tensors_t& tensors);

}  // namespace cpu
}  // namespace bnb

#endif  // BNB_BACKEND_CPU_OPTIM_KERNELS_H_
