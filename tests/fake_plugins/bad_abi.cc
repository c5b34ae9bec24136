// A plugin whose table has the wrong ABI version: the core must refuse it and say why.
#include "backend_abi.h"

extern "C" __attribute__((visibility("default"))) int32_t bnb_backend_score(void) { return 1000; }

extern "C" __attribute__((visibility("default"))) const bnb_backend_ops_t* bnb_backend_init(const bnb_host_api_t*) {
  static bnb_backend_ops_t ops = {};
  ops.struct_size = sizeof ops;
  ops.abi_version = BNB_BACKEND_ABI_VERSION + 1000;
  ops.kind = BNB_BACKEND_HIP;
  ops.name = "hip";
  return &ops;
}
