// bnb: command-line front end. `bnb info` reports the version, every backend and the host CPU;
// `bnb bench` measures the ops on the selected backend against copy bandwidth; `bnb inspect` and
// `bnb quantize` read and write safetensors checkpoints (convert.cc).
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bnb.h"
#include "cli.h"

#if BNB_HAVE_CPU_FEATURES
#include "cpu_features_macros.h"
#if defined(CPU_FEATURES_ARCH_X86)
#include "cpuinfo_x86.h"
#elif defined(CPU_FEATURES_ARCH_AARCH64)
#include "cpuinfo_aarch64.h"
#endif
#endif

namespace {

// The line "isa: <each flag present>".
template <size_t N>
void print_isa(const std::pair<const char*, int> (&flags)[N]) {
  std::printf("isa:     ");
  for (const auto& flag : flags)
    if (flag.second) std::printf(" %s", flag.first);
  std::printf("\n");
}

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
  print_isa(flags);
#elif BNB_HAVE_CPU_FEATURES && defined(CPU_FEATURES_ARCH_AARCH64)
  // Linux gives no model name on Arm: MIDR_EL1's implementer and part numbers stand for it.
  const cpu_features::Aarch64Info info = cpu_features::GetAarch64Info();
  std::printf("cpu:      aarch64 (implementer 0x%02x, part 0x%03x)\n", info.implementer, info.part);
  const cpu_features::Aarch64Features& f = info.features;
  const std::pair<const char*, int> flags[] = {
      {"asimd", f.asimd}, {"asimdhp", f.asimdhp}, {"asimddp", f.asimddp}, {"i8mm", f.i8mm},       {"bf16", f.bf16},
      {"sve", f.sve},     {"sve2", f.sve2},       {"svebf16", f.svebf16}, {"svei8mm", f.svei8mm}};
  print_isa(flags);
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

const char kUsage[] =
    "usage: bnb info               version, backends (with why one is unavailable) and host CPU\n"
    "       bnb bench [OPTIONS]    time the quantization ops against a copy (bnb bench --help)\n"
    "       bnb inspect FILE       list a .safetensors file's tensors and totals, decode and check\n"
    "                              bitsandbytes 4-bit and int8 weights (bnb inspect --help)\n"
    "       bnb quantize IN OUT --to nf4|fp4|int8 [OPTIONS]\n"
    "                              quantize a checkpoint's linear weights (a .safetensors file or a\n"
    "                              sharded directory) into the layout transformers loads for\n"
    "                              bitsandbytes models, config.json included; lm_head and embeddings\n"
    "                              are kept, OUT appears only when complete (bnb quantize --help)\n"
    "       bnb --help | --version\n"
    "environment: BNB_BACKEND, BNB_NUM_THREADS, BNB_LOG_LEVEL, BNB_CPU_MAX_TARGET, BNB_BACKEND_PATH\n"
    "(docs/API.md lists their values)\n";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "bnb: %s\nrun 'bnb --help' for usage\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  const std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::printf("%s", kUsage);
    return 0;
  }
  if (cmd == "--version" || cmd == "-V") {
    std::printf("bnb %s\n", bnb_version_string());
    return 0;
  }
  if (cmd == "bench") return run_bench(args);
  if (cmd == "inspect") return run_inspect(args);
  if (cmd == "quantize") return run_quantize(args);
  if (cmd == "info") {
    if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
      std::printf("usage: bnb info\n");
      return 0;
    }
    if (!args.empty()) return usage_error("info takes no arguments (got '" + args[0] + "')");
    return run_info();
  }
  return usage_error("unknown command '" + cmd + "'");
}
