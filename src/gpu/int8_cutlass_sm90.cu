// int8_cutlass_linear (int8_cutlass.h): the LLM.int8() product and dequantization as one CUTLASS
// sm_90a kernel (int8_cutlass_sm90.cuh). Built only with -DBNB_INT8_CUTLASS=ON, as an object
// library of its own compiled for sm_90a alone (src/backend_cuda/CMakeLists.txt).
//
// BNB_INT8_CUTLASS (read once): "0..." = off; a configuration's name (cfg::*::kName, as
// bench_int8_cutlass prints them, e.g. "coop_128x256x128_c1") = that configuration for every
// shape (A/B measurements); unset or anything else = config_for_shape's rule.
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "int8_cutlass.h"
#include "int8_cutlass_sm90.cuh"

namespace bnb {
namespace gpu {
namespace {

using namespace int8_cutlass;

struct Problem {
  int M, N, K;
  const int8_t* q;
  const int8_t* W;
  const float* row_stats;
  const float* SCB;
  const void* bias;
  void* out;
};

// false: configuration G can't run p (nothing launched); else *status is the launch's.
template <class G>
bool run_config(const GpuContext& ctx, const Problem& p, gpuStream_t s, bnb_status_t* status) {
  using Gemm = typename G::Gemm;
  cutlass::KernelHardwareInfo hw;
  hw.device_id = ctx.device;
  hw.sm_count = ctx.sm_count;
  const typename Gemm::Arguments args =
      make_arguments<G>(p.M, p.N, p.K, p.q, p.W, p.row_stats, p.SCB, p.bias, p.out, hw);
  if (Gemm::can_implement(args) != cutlass::Status::kSuccess) return false;
  // None of the configurations asks for a workspace today (no stream-K); stream-ordered if one does.
  StreamScratch workspace(Gemm::get_workspace_size(args), s);
  if (!workspace.ok()) return false;
  // initialize builds the TMA descriptors on the host and sets the kernel's shared-memory limit.
  Gemm gemm;
  cutlass::Status st = gemm.initialize(args, workspace.get(), s);
  if (st == cutlass::Status::kSuccess) st = gemm.run(s, nullptr, cutlass_pdl());
  if (st != cutlass::Status::kSuccess) {
    const gpuError_t err = gpuGetLastError();
    *status = workspace.finish(fail(BNB_ERR_DEVICE, "int8 CUTLASS product %s failed: %s (%s)", G::kName,
                                    cutlass::cutlassGetStatusString(st), gpuGetErrorString(err)),
                               "the int8 CUTLASS product's workspace");
    return true;
  }
  *status = workspace.finish(check_launch(G::kName), "the int8 CUTLASS product's workspace");
  return true;
}

using RunFn = bool (*)(const GpuContext&, const Problem&, gpuStream_t, bnb_status_t*);
struct Config {
  const char* name;
  RunFn run;
};
template <class... G>
constexpr std::array<Config, sizeof...(G)> config_table(cfg::List<G...>) {
  return {{{G::kName, run_config<G>}...}};
}
constexpr auto kConfigs = config_table(cfg::All{});
constexpr int kOff = -2, kRule = -1;

// BNB_INT8_CUTLASS as kOff, kRule or an index of kConfigs.
int configured() {
  static const int choice = [] {
    const char* e = std::getenv("BNB_INT8_CUTLASS");
    if (e == nullptr) return kRule;
    if (e[0] == '0') return kOff;
    for (int i = 0; i < static_cast<int>(kConfigs.size()); ++i)
      if (std::strcmp(e, kConfigs[i].name) == 0) return i;
    return kRule;
  }();
  return choice;
}

// The configuration for a shape, from bench_int8_cutlass (product + dequantization, us): an H100
// (bench/results/h100_run21) at M = 64 / 256 / 2048 and an H200 (bench/results/h200_run22) at
// M = 16 .. 2048, N = K = 4096 and 8192. Small M streams W: the narrowest tiles that still fill at
// most one wave of the multiprocessors win (64 x 64: M = 64 at 4096 7.0 against 8.5 for 64 x 128,
// M = 16 .. 64 at 8192 19.7-22.2 against 21.7-22.7; 64 x 128: M = 256 at 4096 9.4, M = 128 at 8192
// 21.5). Past one wave of 64-row tiles, 128-row cooperative tiles: 128 x 256 where they fill
// at least three quarters of a wave (M = 512 at 8192 44.4 against 47.5 for 128 x 128, M >= 1024
// 23.8-167.1 against 25.2-190.9), else 128 x 128 (M = 512 at 4096 13.9 against 23.0, M = 256 at
// 8192 27.2 against 42.3).
RunFn config_for_shape(const GpuContext& ctx, int64_t M, int64_t N) {
  const auto tiles = [&](int64_t tm, int64_t tn) { return (M + tm - 1) / tm * ((N + tn - 1) / tn); };
  if (tiles(64, 64) <= ctx.sm_count) return run_config<cfg::Ws64x64>;
  if (tiles(64, 128) <= ctx.sm_count) return run_config<cfg::Ws64x128>;
  return 4 * tiles(128, 256) >= 3 * int64_t{ctx.sm_count} ? run_config<cfg::Coop128x256>
                                                             : run_config<cfg::Coop128x128>;
}

bool aligned16_all(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (!aligned16(p)) return false;
  return true;
}

}  // namespace

bool int8_cutlass_linear(const GpuContext& ctx, int64_t M, int64_t N, int64_t K, const int8_t* q, const int8_t* W,
                         const float* row_stats, const float* SCB, const void* bias, void* out, gpuStream_t s,
                         bnb_status_t* status) {
  const int choice = configured();
  // sm_90a cubins run on compute capability 9.0 only (the one 9.x there is).
  if (choice == kOff || ctx.cc_major != 9) return false;
  if (M < 1 || N < 1 || K < 1 || M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) return false;
  if (K % 16 != 0 || N % 8 != 0) return false;  // TMA: 16-byte strides
  if (!aligned16_all({q, W, row_stats, SCB, bias, out})) return false;  // aligned16(nullptr) holds
  const Problem p{static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), q, W, row_stats, SCB, bias, out};
  const RunFn run = choice == kRule ? config_for_shape(ctx, M, N) : kConfigs[choice].run;
  return run(ctx, p, s, status);
}

}  // namespace gpu
}  // namespace bnb
