// bnb_context_probe: creates one context in a fresh process and reports how it went, for tests of
// what a process reads once (the CPU plugin's BNB_CPU_MAX_TARGET) or must not share with the test
// runner (a lowered address-space limit).
//
//   bnb_context_probe [--threads N] [--address-space-mb MB]
//
// Prints "status: <name>" and "message: <last error>" and exits with the status (0..6), or 100
// for bad usage. --address-space-mb loads the plugins first, then caps the address space at what
// is mapped plus MB, so that starting N threads (each with its own stack) runs out of room.
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "bnb.h"

namespace {

// Bytes of address space mapped now (VmSize in /proc/self/status), 0 if unknown.
unsigned long long mapped_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmSize:", 0) == 0) return std::strtoull(line.c_str() + 7, nullptr, 10) * 1024ull;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0;
  long long extra_mb = -1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--address-space-mb") == 0 && i + 1 < argc) {
      extra_mb = std::atoll(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--threads N] [--address-space-mb MB]\n", argv[0]);
      return 100;
    }
  }
  if (extra_mb >= 0) {
    int32_t count = 0;
    bnb_backend_count(&count);  // loads the plugins while there is room
    const unsigned long long now = mapped_bytes();
    if (now == 0) {
      std::fprintf(stderr, "cannot read VmSize from /proc/self/status\n");
      return 100;
    }
    const rlim_t room = static_cast<rlim_t>(now + (static_cast<unsigned long long>(extra_mb) << 20));
    const rlimit limit = {room, room};
    if (setrlimit(RLIMIT_AS, &limit) != 0) {
      std::perror("setrlimit(RLIMIT_AS)");
      return 100;
    }
  }
  bnb_context_options_t options;
  bnb_context_options_init(&options);
  options.num_threads = threads;
  bnb_context_t ctx = nullptr;
  const bnb_status_t status = bnb_context_create(&options, &ctx);
  std::printf("status: %s\nmessage: %s\n", bnb_status_string(status),
              status == BNB_SUCCESS ? "" : bnb_last_error_message());
  if (ctx != nullptr) bnb_context_destroy(ctx);
  return static_cast<int>(status);
}
