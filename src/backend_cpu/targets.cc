// Which Highway target the CPU kernels dispatch to, which are compiled in, and the cap
// BNB_CPU_MAX_TARGET sets (declared in quant_kernels.h). Host code: Highway's dispatch state is
// one for the whole library, whatever file a kernel is in.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "quant_kernels.h"

namespace bnb {
namespace cpu {

const char* chosen_target_name() {
  const int64_t targets = hwy::SupportedTargets() & HWY_TARGETS;
  return hwy::TargetName(targets & -targets);  // best = lowest bit
}

std::string compiled_target_names() {
  std::string names;
  for (int64_t t = HWY_TARGETS; t != 0; t &= t - 1) names += std::string(names.empty() ? "" : " ") + hwy::TargetName(t & -t);
  return names;
}

// The names BNB_CPU_MAX_TARGET takes, best first. Only targets compiled into this build count
// (x86 names on x86, Arm names on aarch64); "emu128" and "scalar" both name the portable fallback,
// HWY_EMU128 or, from GCC < 12.3, HWY_SCALAR, where the build has one (aarch64 builds have NEON as
// their baseline and no fallback).
namespace {
struct Cap {
  const char* name;
  int64_t targets;
};
constexpr Cap kCaps[] = {
    {"avx3_dl", HWY_AVX3_DL},   {"avx3", HWY_AVX3},       {"avx2", HWY_AVX2},
    {"sse4", HWY_SSE4},         {"sve2_128", HWY_SVE2_128}, {"sve_256", HWY_SVE_256},
    {"sve2", HWY_SVE2},         {"sve", HWY_SVE},         {"neon", HWY_NEON},
    {"emu128", HWY_EMU128 | HWY_SCALAR}, {"scalar", HWY_EMU128 | HWY_SCALAR}};

bool cap_compiled(const Cap& c) { return (c.targets & HWY_TARGETS) != 0; }
}  // namespace

bool cap_target(const char* name) {
  for (const Cap& c : kCaps) {
    if (cap_compiled(c) && std::strcmp(name, c.name) == 0) {
      // Every better (lower-bit) target.
      const int64_t target = c.targets & -c.targets;
      hwy::DisableTargets(target - 1);
      hwy::GetChosenTarget().Update(hwy::SupportedTargets());
      return true;
    }
  }
  return false;
}

std::string cap_target_names() {
  std::vector<const char*> names;
  for (const Cap& c : kCaps)
    if (cap_compiled(c)) names.push_back(c.name);
  std::string list;
  for (size_t i = 0; i < names.size(); ++i)
    list += std::string(i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return list;
}

}  // namespace cpu
}  // namespace bnb
