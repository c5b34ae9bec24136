// bnb: command-line front end. `bnb info` reports the version, every backend and the host CPU;
// `bnb bench` measures the ops on the selected backend against copy bandwidth.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bnb.h"
#include "cli.h"

#if BNB_HAVE_CPU_FEATURES
#include "cpu_features_macros.h"
#include "cpuinfo_x86.h"
#endif

namespace {

void print_cpu() {
#if BNB_HAVE_CPU_FEATURES && defined(CPU_FEATURES_ARCH_X86)
  const cpu_features::X86Info info = cpu_features::GetX86Info();
  std::printf("cpu:      %s\n", info.brand_string);
  const cpu_features::X86Features& f = info.features;
  const std::pair<const char*, int> flags[] = {
      {"sse4_2", f.sse4_2},         {"avx", f.avx},           {"avx2", f.avx2},
      {"fma3", f.fma3},             {"f16c", f.f16c},         {"avx512f", f.avx512f},
      {"avx512bw", f.avx512bw},     {"avx512vl", f.avx512vl}, {"avx512dq", f.avx512dq},
      {"avx512vnni", f.avx512vnni}, {"avx512_bf16", f.avx512_bf16}, {"avx512vbmi", f.avx512vbmi},
      {"avx512vbmi2", f.avx512vbmi2}, {"amx_bf16", f.amx_bf16}, {"amx_int8", f.amx_int8}};
  std::printf("isa:     ");
  for (const auto& flag : flags)
    if (flag.second) std::printf(" %s", flag.first);
  std::printf("\n");
#else
  std::printf("cpu:      (cpu_features not available in this build)\n");
#endif
}

int run_info() {
  std::printf("bnb %s (version number %d)\n", bnb_version_string(), bnb_version_number());
  print_cpu();
  int32_t count = 0;
  if (bnb_backend_count(&count) != BNB_SUCCESS) {
    std::fprintf(stderr, "bnb_backend_count: %s\n", bnb_last_error_message());
    return 1;
  }
  std::printf("backends:\n");
  for (int32_t i = 0; i < count; ++i) {
    bnb_backend_info_t info;
    info.struct_size = sizeof info;
    if (bnb_backend_get_info(i, &info) != BNB_SUCCESS) continue;
    std::printf("  %-5s %-12s devices=%d  %s\n", info.name, info.available ? "available" : "unavailable",
                info.device_count, info.detail);
  }
  bnb_context_t ctx = nullptr;
  if (bnb_context_create(nullptr, &ctx) == BNB_SUCCESS) {
    int32_t kind = 0, device = 0;
    bnb_context_get_backend(ctx, &kind, &device);
    const char* names[] = {"auto", "cpu", "cuda", "hip"};
    std::printf("selected: %s (device %d)\n", names[kind >= 0 && kind <= 3 ? kind : 0], device);
    bnb_context_destroy(ctx);
  } else {
    std::printf("selected: none: %s\n", bnb_last_error_message());
    return 1;
  }
  return 0;
}

void usage() {
  std::printf(
      "usage: bnb info\n"
      "       bnb bench [--backend auto|cpu|cuda|hip] [--n ELEMENTS] [--threads T] [--reps R]\n"
      "                 [--dtype f32|f16|bf16|all] [--json FILE]\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage();
    return 2;
  }
  const std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "info") return run_info();
  if (cmd == "bench") return run_bench(args);
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    usage();
    return 0;
  }
  usage();
  return 2;
}
