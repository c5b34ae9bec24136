// Backend registry: finds, loads and scores the plugins, once per process.
#ifndef BNB_CORE_REGISTRY_H_
#define BNB_CORE_REGISTRY_H_

#include <string>
#include <vector>

#include "backend_abi.h"

namespace bnb {

struct Backend {
  std::string name;                          // "cpu", "cuda", "hip"
  int32_t kind = 0;                          // bnb_backend_kind_t
  std::string path;                          // plugin file, once found
  void* handle = nullptr;                    // dlopen handle, kept for the process lifetime
  bnb_backend_ops_t ops{};                   // zero-filled past the plugin's struct_size
  bool loaded = false;                       // the table was accepted
  int32_t score = 0;                         // 0 = cannot run here
  int32_t device_count = 0;
  std::string detail;                        // what was found, or why it is unavailable
  bool available() const { return loaded && score > 0; }
};

// Every known backend, in bnb_backend_kind_t order (cpu, cuda, hip); loaded on first use.
const std::vector<Backend>& backends();
const Backend* find_backend(int32_t kind);
const char* backend_name(int32_t kind);

}  // namespace bnb

#endif  // BNB_CORE_REGISTRY_H_
