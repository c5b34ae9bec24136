// The optimizer family's op: a thin adapter from the plugin ABI to optim_kernels.h. Paged memory
// stays NULL here: on the CPU the core serves bnb_paged_* with ordinary host memory.
#include <new>

#include "optim_kernels.h"
#include "plugin.h"

namespace bnb {
namespace cpu {
namespace {

bnb_status_t op_optimizer_update(void* impl, const bnb_optimizer_params_t* params,
                                 const bnb_optimizer_tensors_t* tensors, void* /*stream*/) {
  if (const char* why = optim_check_args(*params, *tensors)) return fail(BNB_ERR_INVALID_ARGUMENT, why);
  try {
    optimizer_run(context_of(impl)->pool, *params, *tensors);
    return BNB_SUCCESS;
  } catch (const std::bad_alloc&) {
    return fail(BNB_ERR_OUT_OF_MEMORY, "optimizer_update: out of memory");
  } catch (...) {
    return fail(BNB_ERR_INTERNAL, "optimizer_update: unexpected exception");
  }
}

}  // namespace

void register_optim_ops(bnb_backend_ops_t* ops) { ops->optimizer_update = op_optimizer_update; }

}  // namespace cpu
}  // namespace bnb
